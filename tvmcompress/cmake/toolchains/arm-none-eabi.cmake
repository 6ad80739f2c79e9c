# Bare-metal Arm (Cortex-M) projects that use tvmcompress_add_model(... AOT BOARD <board> FIRMWARE), with Debian's
# gcc-arm-none-eabi + newlib:
#   cmake -S . -B build -DCMAKE_TOOLCHAIN_FILE="$(tvmcompress --cmake-dir)/toolchains/arm-none-eabi.cmake" -Dtvmcompress_DIR="$(tvmcompress --cmake-dir)"
# (apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm). The core's flags (-mcpu, FPU, float
# ABI) come from the board, per target; run the image with
#   qemu-system-arm -M <board's machine> -nographic -semihosting-config enable=on,target=native -kernel build/app
set(CMAKE_SYSTEM_NAME Generic)
set(CMAKE_SYSTEM_PROCESSOR arm)
set(CMAKE_C_COMPILER arm-none-eabi-gcc)
set(CMAKE_CXX_COMPILER arm-none-eabi-g++)
# No OS to link a test program against: CMake's compiler checks build a static library instead.
set(CMAKE_TRY_COMPILE_TARGET_TYPE STATIC_LIBRARY)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
