# tvmcompress_add_model: compile an ONNX model with tvmcompress at build time and link it into a target.
#
#   tvmcompress_add_model(<cmake-target>
#       MODEL <model.onnx>            the ONNX file (relative paths: to the current source dir)
#       [TARGET <preset|json>]        tvmcompress target preset (default: x86-64); see `tvmcompress targets`
#       [NAME <c_name>]               C name of the API (<name>_create, ...; default: from the model's file name)
#       [OPTIONS <flag>...]           more `tvmcompress compile` flags, e.g. --quantize fp16 --max-ram 256K
#       [DEPENDS <file>...]           files the OPTIONS read (calibration .npz, ...): changing them rebuilds
#       [CACHE_DIR <dir> | NO_CACHE]  artifact cache (default: the user's, $XDG_CACHE_HOME/tvmcompress/artifacts)
#       [AOT]                         link the ahead-of-time bundle (`export --aot`): plain C, one static arena,
#                                     no TVM runtime; the project needs only C
#       [BOARD <name>]                with AOT: build the kernels for a microcontroller (cortex-m4, cortex-m7,
#                                     cortex-m55; TARGET then only verifies the compile, default x86-64)
#       [FIRMWARE])                   with BOARD: also add the bundle's bare-metal firmware (start-up code, a
#                                     main that runs the model on in.bin under qemu, the board's linker script)
#
# At build time a custom command runs `tvmcompress compile MODEL ... --cache-dir DIR` and
# `tvmcompress export ... --static`, into ${CMAKE_CURRENT_BINARY_DIR}/tvmcompress-models/<cmake-target>.<name>/.
# It reruns only when the model, a DEPENDS file, or the options change: the options are written to a stamp
# file at configure time, and the stamp is rewritten only when they differ. The program then includes
# "model.h" (<name>_create/_run/_destroy) and links lib<name>.a and the TVM runtime for the target (with AOT:
# lib<name>.a and libm only; configure a bare-metal project with toolchains/arm-none-eabi.cmake).
# The program's project must enable CXX (the model library is C++ inside). Cross-compiling: configure the
# project with a toolchain file for the same architecture as TARGET, e.g. the Debian cross toolchains in
# $(tvmcompress --cmake-dir)/toolchains/{aarch64,armv7,riscv64}.cmake.
#
# TVMCOMPRESS_EXECUTABLE (cache variable) is the tvmcompress command; by default the one on PATH.

# Not cmake_minimum_required: in an included module it would reset the including project's policies.
if(CMAKE_VERSION VERSION_LESS 3.19)
  message(FATAL_ERROR "tvmcompress_add_model needs CMake 3.19 or newer (string(JSON)); this is ${CMAKE_VERSION}")
endif()

set(_TVMCOMPRESS_MODULE_DIR "${CMAKE_CURRENT_LIST_DIR}")

if(NOT TVMCOMPRESS_EXECUTABLE)
  find_program(TVMCOMPRESS_EXECUTABLE tvmcompress)
endif()
set(TVMCOMPRESS_EXECUTABLE "${TVMCOMPRESS_EXECUTABLE}" CACHE STRING "the tvmcompress command line tool")

# The C name tvmcompress export derives from a file name: lower case, [a-z0-9_], no leading digit.
function(_tvmcompress_c_name text out_var)
  string(TOLOWER "${text}" name)
  string(REGEX REPLACE "[^a-z0-9_]+" "_" name "${name}")
  string(REGEX REPLACE "^_+|_+$" "" name "${name}")
  set(c_keywords auto break case char const continue default do double else enum extern float for goto if inline
      int long register restrict return short signed sizeof static struct switch typedef union unsigned void
      volatile while main)
  if(name STREQUAL "")
    set(name "model")
  elseif(name MATCHES "^[0-9]" OR name IN_LIST c_keywords)
    set(name "model_${name}")
  endif()
  set(${out_var} "${name}" PARENT_SCOPE)
endfunction()

function(tvmcompress_add_model cmake_target)
  cmake_parse_arguments(PARSE_ARGV 1 ARG "NO_CACHE;AOT;FIRMWARE" "MODEL;TARGET;NAME;CACHE_DIR;BOARD" "OPTIONS;DEPENDS")
  if(ARG_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "tvmcompress_add_model: unknown arguments ${ARG_UNPARSED_ARGUMENTS}")
  endif()
  if(NOT TARGET ${cmake_target})
    message(FATAL_ERROR "tvmcompress_add_model: '${cmake_target}' is not a target; add_executable/add_library it first")
  endif()
  if(NOT ARG_MODEL)
    message(FATAL_ERROR "tvmcompress_add_model(${cmake_target}): MODEL <file.onnx> is required")
  endif()
  if(NOT TVMCOMPRESS_EXECUTABLE)
    message(FATAL_ERROR "tvmcompress not found: pip install tvmcompress, or set -DTVMCOMPRESS_EXECUTABLE=/path/to/tvmcompress")
  endif()
  if((ARG_BOARD OR ARG_FIRMWARE) AND NOT ARG_AOT)
    message(FATAL_ERROR "tvmcompress_add_model(${cmake_target}): BOARD and FIRMWARE need AOT")
  endif()
  if(ARG_FIRMWARE AND NOT ARG_BOARD)
    message(FATAL_ERROR "tvmcompress_add_model(${cmake_target}): FIRMWARE needs BOARD <name>")
  endif()
  if(NOT ARG_AOT AND NOT CMAKE_CXX_COMPILER_LOADED)
    message(FATAL_ERROR "tvmcompress_add_model: enable CXX in project() (the model library is C++ inside)")
  endif()
  get_filename_component(model "${ARG_MODEL}" ABSOLUTE BASE_DIR "${CMAKE_CURRENT_SOURCE_DIR}")
  if(NOT EXISTS "${model}")
    message(FATAL_ERROR "tvmcompress_add_model(${cmake_target}): model '${model}' does not exist")
  endif()
  if(NOT ARG_TARGET)
    set(ARG_TARGET "x86-64")
  endif()
  if(ARG_NAME)
    set(name "${ARG_NAME}")
  else()
    get_filename_component(stem "${model}" NAME_WE)
    _tvmcompress_c_name("${stem}" name)
  endif()

  set(work "${CMAKE_CURRENT_BINARY_DIR}/tvmcompress-models/${cmake_target}.${name}")
  set(artifact "${work}/artifact")
  set(bundle "${work}/bundle")
  set(header "${bundle}/model.h")
  set(library "${bundle}/lib${name}.a")
  set(link_file "${work}/link.txt")
  set(stamp "${work}/options.stamp")

  set(cache_args)
  if(NOT ARG_NO_CACHE)
    if(ARG_CACHE_DIR)
      get_filename_component(cache_dir "${ARG_CACHE_DIR}" ABSOLUTE BASE_DIR "${CMAKE_CURRENT_BINARY_DIR}")
      set(cache_args --cache-dir "${cache_dir}")
    else()
      set(cache_args --cache)
    endif()
  endif()

  # Everything that decides the output but is not a file: a changed option rewrites the stamp (configure_file
  # leaves an identical file alone), and the stamp is a dependency of the custom command.
  string(JOIN "\n" stamp_text "tvmcompress=${TVMCOMPRESS_EXECUTABLE}" "target=${ARG_TARGET}" "name=${name}"
         "options=${ARG_OPTIONS}" "cache=${cache_args}" "aot=${ARG_AOT}" "board=${ARG_BOARD}" "")
  file(MAKE_DIRECTORY "${bundle}")
  file(WRITE "${stamp}.new" "${stamp_text}")
  configure_file("${stamp}.new" "${stamp}" COPYONLY)

  if(ARG_AOT)
    _tvmcompress_add_aot_model()
    set(TVMCOMPRESS_${name}_BUNDLE_DIR "${bundle}" PARENT_SCOPE)
    return()
  endif()

  set(outputs "${header}" "${library}" "${link_file}")
  add_custom_command(
    OUTPUT ${outputs}
    COMMAND ${TVMCOMPRESS_EXECUTABLE} -q compile "${model}" -o "${artifact}" --target "${ARG_TARGET}"
            ${ARG_OPTIONS} ${cache_args}
    COMMAND ${TVMCOMPRESS_EXECUTABLE} -q export "${artifact}" -o "${bundle}" --name "${name}" --static
    COMMAND ${CMAKE_COMMAND} -DBUNDLE=${bundle} -DOUTPUT=${link_file}
            -P "${_TVMCOMPRESS_MODULE_DIR}/TvmcompressLinkFile.cmake"
    DEPENDS "${model}" "${stamp}" ${ARG_DEPENDS} "${_TVMCOMPRESS_MODULE_DIR}/TvmcompressLinkFile.cmake"
    COMMENT "tvmcompress: compiling ${ARG_MODEL} for ${ARG_TARGET} (${name})"
    VERBATIM)
  add_custom_target(${cmake_target}.${name}.tvmcompress DEPENDS ${outputs})
  add_dependencies(${cmake_target} ${cmake_target}.${name}.tvmcompress)

  # The runtime libraries and system libraries come from the bundle's bundle.json, read at build time into
  # link.txt, an ld response file (-Wl,@file keeps its position on the link line, after lib<name>.a).
  target_include_directories(${cmake_target} PRIVATE "${bundle}")
  target_link_libraries(${cmake_target} PRIVATE "${library}" "-Wl,@${link_file}")
  set_property(TARGET ${cmake_target} APPEND PROPERTY LINK_DEPENDS "${library}" "${link_file}")
  set_property(TARGET ${cmake_target} PROPERTY LINKER_LANGUAGE CXX)
  set_property(TARGET ${cmake_target} APPEND PROPERTY BUILD_RPATH "${bundle}/runtime/lib")
  set(TVMCOMPRESS_${name}_BUNDLE_DIR "${bundle}" PARENT_SCOPE)
endfunction()

# The AOT half of tvmcompress_add_model (a macro: it reads and sets the caller's variables).
macro(_tvmcompress_add_aot_model)
  set(export_args --aot)
  set(outputs "${header}" "${library}")
  set(firmware_sources)
  if(ARG_BOARD)
    list(APPEND export_args --board "${ARG_BOARD}")
    set(firmware_sources "${bundle}/firmware/main.c" "${bundle}/firmware/mcu_startup.c")
    list(APPEND outputs ${firmware_sources} "${bundle}/firmware/board.ld" "${bundle}/bundle.json")
  endif()
  add_custom_command(
    OUTPUT ${outputs}
    COMMAND ${TVMCOMPRESS_EXECUTABLE} -q compile "${model}" -o "${artifact}" --target "${ARG_TARGET}"
            ${ARG_OPTIONS} ${cache_args}
    # Ninja creates the outputs' folders first; export refuses a non-empty folder that is not a bundle.
    COMMAND ${CMAKE_COMMAND} -E rm -rf "${bundle}/firmware"
    COMMAND ${TVMCOMPRESS_EXECUTABLE} -q export "${artifact}" -o "${bundle}" --name "${name}" ${export_args}
    DEPENDS "${model}" "${stamp}" ${ARG_DEPENDS}
    COMMENT "tvmcompress: compiling ${ARG_MODEL} ahead of time (${name}) ${export_args}"
    VERBATIM)
  add_custom_target(${cmake_target}.${name}.tvmcompress DEPENDS ${outputs})
  add_dependencies(${cmake_target} ${cmake_target}.${name}.tvmcompress)
  target_include_directories(${cmake_target} PRIVATE "${bundle}")
  target_link_libraries(${cmake_target} PRIVATE "${library}" m)
  set_property(TARGET ${cmake_target} APPEND PROPERTY LINK_DEPENDS "${library}")
  if(ARG_FIRMWARE)
    # The board's core and float ABI must match the kernels': the flags come from the board table
    # (targets/mcu_boards.py), the same ones export compiled our C files with.
    execute_process(
      COMMAND ${TVMCOMPRESS_EXECUTABLE} targets --json
      OUTPUT_VARIABLE targets_json RESULT_VARIABLE status)
    if(NOT status EQUAL 0)
      message(FATAL_ERROR "tvmcompress_add_model(${cmake_target}): `tvmcompress targets --json` failed")
    endif()
    set(board_flags)
    string(JSON count LENGTH "${targets_json}")
    math(EXPR last "${count} - 1")
    foreach(index RANGE ${last})
      string(JSON entry_name GET "${targets_json}" ${index} name)
      if(entry_name STREQUAL ARG_BOARD)
        string(JSON board_flags_json GET "${targets_json}" ${index} gcc_flags)
        string(JSON flag_count LENGTH "${board_flags_json}")
        math(EXPR flag_last "${flag_count} - 1")
        foreach(flag_index RANGE ${flag_last})
          string(JSON flag GET "${board_flags_json}" ${flag_index})
          list(APPEND board_flags "${flag}")
        endforeach()
      endif()
    endforeach()
    if(NOT board_flags)
      message(FATAL_ERROR "tvmcompress_add_model(${cmake_target}): unknown BOARD '${ARG_BOARD}' (see `tvmcompress targets`)")
    endif()
    set_source_files_properties(${firmware_sources} PROPERTIES GENERATED TRUE)
    target_sources(${cmake_target} PRIVATE ${firmware_sources})
    target_include_directories(${cmake_target} PRIVATE "${bundle}/firmware")
    target_compile_options(${cmake_target} PRIVATE ${board_flags} -ffunction-sections -fdata-sections)
    target_link_options(${cmake_target} PRIVATE ${board_flags} -nostartfiles --specs=nano.specs
                        "-T${bundle}/firmware/board.ld" -Wl,--gc-sections)
    set_property(TARGET ${cmake_target} APPEND PROPERTY LINK_DEPENDS "${bundle}/firmware/board.ld")
  endif()
endmacro()
