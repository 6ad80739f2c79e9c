# Cross-compile a project that uses tvmcompress_add_model(... TARGET riscv64) with Debian's riscv64-linux-gnu toolchain:
#   cmake -S . -B build -DCMAKE_TOOLCHAIN_FILE="$(tvmcompress --cmake-dir)/toolchains/riscv64.cmake" -Dtvmcompress_DIR="$(tvmcompress --cmake-dir)"
# (apt-get install g++-riscv64-linux-gnu; run the program on the device, or here with qemu-user: qemu-riscv64 -L /usr/riscv64-linux-gnu ./app)
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR riscv64)
set(CMAKE_C_COMPILER riscv64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER riscv64-linux-gnu-g++)
set(CMAKE_FIND_ROOT_PATH /usr/riscv64-linux-gnu)
# Programs (tvmcompress itself) come from the build machine; libraries and headers from the target's sysroot.
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)
