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

# The in-tree OCaml library (ocaml/, dune) built into the CMake build tree, so the source
# tree stays clean and one `cmake --build` builds everything. Defines the target
# camlbeam_ocaml and CAMLBEAM_OCAML_LIBDIR (erl.cmxa, erl.cma and their .cmi/.cmx).
function(camlbeam_ocaml_library)
  if(TARGET camlbeam_ocaml)
    return()
  endif()
  set(build_dir "${CMAKE_BINARY_DIR}/ocaml")
  set(libdir "${build_dir}/default/src")
  file(GLOB sources CONFIGURE_DEPENDS "${CMAKE_SOURCE_DIR}/ocaml/src/*.ml" "${CMAKE_SOURCE_DIR}/ocaml/src/*.mli"
       "${CMAKE_SOURCE_DIR}/ocaml/src/dune" "${CMAKE_SOURCE_DIR}/ocaml/dune-project")
  add_custom_command(
    OUTPUT "${libdir}/erl.cmxa" "${libdir}/erl.a" "${libdir}/erl.cma"
    COMMAND dune build --root "${CMAKE_SOURCE_DIR}/ocaml" --build-dir "${build_dir}"
            --profile release ./src/erl.cmxa ./src/erl.cma
    DEPENDS ${sources}
    COMMENT "Building the OCaml library camlbeam (dune)"
    VERBATIM)
  add_custom_target(camlbeam_ocaml DEPENDS "${libdir}/erl.cmxa" "${libdir}/erl.cma")
  set(CAMLBEAM_OCAML_LIBDIR "${libdir}" CACHE INTERNAL "Where dune puts the Erl library")
endfunction()
