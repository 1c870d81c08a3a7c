# Warnings as errors on our own targets only; third-party headers come in as SYSTEM.
# -Wrestrict is off: GCC 12 reports false positives inside libstdc++'s string operator+
# at -O3 (GCC bug 105329); -Wnull-dereference is left out for the same reason with variant.
function(camlbeam_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Werror -Wshadow -Wnon-virtual-dtor
                                           -Wold-style-cast -Wcast-align
                                           $<$<CXX_COMPILER_ID:GNU>:-Wno-restrict>)
endfunction()

# libei from erlang-dev (erl_interface): a baseline and a test oracle, never our codec.
function(camlbeam_find_ei)
  if(TARGET camlbeam::ei)
    return()
  endif()
  execute_process(
    COMMAND erl -noshell -eval "io:format(\"~s\", [code:lib_dir(erl_interface)]), halt()."
    OUTPUT_VARIABLE EI_DIR RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0 OR NOT EXISTS "${EI_DIR}/include/ei.h")
    message(FATAL_ERROR "erl_interface not found; run scripts/setup.sh (package erlang-dev)")
  endif()
  add_library(camlbeam::ei STATIC IMPORTED GLOBAL)
  set_target_properties(camlbeam::ei PROPERTIES
    IMPORTED_LOCATION "${EI_DIR}/lib/libei.a"
    INTERFACE_INCLUDE_DIRECTORIES "${EI_DIR}/include"
    INTERFACE_COMPILE_DEFINITIONS "_REENTRANT"
    INTERFACE_LINK_LIBRARIES "pthread")
endfunction()
