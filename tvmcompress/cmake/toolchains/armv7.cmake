# Cross-compile a project that uses tvmcompress_add_model(... TARGET armv7) with Debian's arm-linux-gnueabihf toolchain:
#   cmake -S . -B build -DCMAKE_TOOLCHAIN_FILE="$(tvmcompress --cmake-dir)/toolchains/armv7.cmake" -Dtvmcompress_DIR="$(tvmcompress --cmake-dir)"
# (apt-get install g++-arm-linux-gnueabihf; run the program on the device, or here with qemu-user: qemu-arm -L /usr/arm-linux-gnueabihf ./app)
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR armv7-a)
set(CMAKE_C_COMPILER arm-linux-gnueabihf-gcc)
set(CMAKE_CXX_COMPILER arm-linux-gnueabihf-g++)
set(CMAKE_FIND_ROOT_PATH /usr/arm-linux-gnueabihf)
# Programs (tvmcompress itself) come from the build machine; libraries and headers from the target's sysroot.
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)
