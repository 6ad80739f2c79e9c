# cmake -DBUNDLE=<bundle dir> -DOUTPUT=<file> -P TvmcompressLinkFile.cmake
# Writes the ld options that link a tvmcompress export bundle's runtime, from its bundle.json `link` entry:
# the runtime libraries inside --no-as-needed (nothing calls libtvm_runtime by name, but loading it registers
# the Relax VM), then the system libraries. Always rewritten: it is an OUTPUT of the custom command, so it
# must end up newer than the command's inputs.
file(READ "${BUNDLE}/bundle.json" bundle_json)
string(JSON runtime_count LENGTH "${bundle_json}" link runtime_libraries)
string(JSON system_count LENGTH "${bundle_json}" link system_libraries)
set(lines "--no-as-needed")
if(runtime_count GREATER 0)
  math(EXPR last "${runtime_count} - 1")
  foreach(i RANGE ${last})
    string(JSON lib GET "${bundle_json}" link runtime_libraries ${i})
    list(APPEND lines "\"${BUNDLE}/${lib}\"")
  endforeach()
endif()
list(APPEND lines "--as-needed")
if(system_count GREATER 0)
  math(EXPR last "${system_count} - 1")
  foreach(i RANGE ${last})
    string(JSON lib GET "${bundle_json}" link system_libraries ${i})
    list(APPEND lines "-l${lib}")
  endforeach()
endif()
list(JOIN lines "\n" text)
file(WRITE "${OUTPUT}" "${text}\n")
