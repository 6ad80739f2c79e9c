# find_package(tvmcompress) entry point:
#   cmake -S . -B build -Dtvmcompress_DIR="$(tvmcompress --cmake-dir)"
# then, in CMakeLists.txt: find_package(tvmcompress REQUIRED) and tvmcompress_add_model(...).
include("${CMAKE_CURRENT_LIST_DIR}/TvmcompressModel.cmake")
set(tvmcompress_FOUND TRUE)
