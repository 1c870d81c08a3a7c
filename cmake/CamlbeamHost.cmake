# OCaml for host executables and plugins, built with ocamlfind against the in-tree OCaml
# packages exactly as users build against the installed ones (docs/plugins.md):
#
#   camlbeam_ocaml_packages()           the findlib tree of camlbeam and camlbeam.host
#   camlbeam_ocaml_host_object(...)     the OCaml half of a host executable
#   camlbeam_ocaml_plugin(...)          a plugin (.cmxs, .cma or .cmo)
#   camlbeam_port_static_worker(...)    a port worker with OCaml sources linked in
#
# Everything lands in the CMake build tree; the source tree stays clean.

# The OCaml standard library (runtime archives and caml/ headers) and zarith's directory.
function(camlbeam_find_ocaml)
  if(CAMLBEAM_OCAML_STDLIB AND CAMLBEAM_ZARITH_DIR)
    return()
  endif()
  execute_process(COMMAND ${CAMLBEAM_OCAMLFIND} ocamlc -where OUTPUT_VARIABLE stdlib OUTPUT_STRIP_TRAILING_WHITESPACE)
  execute_process(COMMAND ${CAMLBEAM_OCAMLFIND} query zarith OUTPUT_VARIABLE zarith OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(NOT EXISTS "${stdlib}/caml/mlvalues.h" OR NOT EXISTS "${zarith}/libzarith.a")
    message(FATAL_ERROR "OCaml (ocamlfind) or zarith not found; run scripts/setup.sh")
  endif()
  set(CAMLBEAM_OCAML_STDLIB "${stdlib}" CACHE INTERNAL "OCaml standard library directory")
  set(CAMLBEAM_ZARITH_DIR "${zarith}" CACHE INTERNAL "zarith's findlib directory")
endfunction()

# `dune build @install` of ocaml/ into the build tree: ${CAMLBEAM_OCAMLPATH} is then a
# findlib directory holding camlbeam and camlbeam.host, as after `dune install`. Target
# camlbeam_ocaml_packages; rules that read the packages depend on
# ${CAMLBEAM_OCAML_PACKAGES_STAMP}, touched on every dune run.
function(camlbeam_ocaml_packages)
  if(TARGET camlbeam_ocaml_packages)
    return()
  endif()
  # The same dune build directory and profile as camlbeam_ocaml_library (Camlbeam.cmake),
  # and run after it, never beside it: two dune processes must not share a build dir.
  camlbeam_ocaml_library()
  set(build_dir "${CMAKE_BINARY_DIR}/ocaml")
  set(stamp "${build_dir}/packages.stamp")
  file(GLOB sources CONFIGURE_DEPENDS "${CMAKE_SOURCE_DIR}/ocaml/src/*" "${CMAKE_SOURCE_DIR}/ocaml/host/*.ml"
       "${CMAKE_SOURCE_DIR}/ocaml/host/*.mli" "${CMAKE_SOURCE_DIR}/ocaml/host/dune"
       "${CMAKE_SOURCE_DIR}/ocaml/host/*.c" "${CMAKE_SOURCE_DIR}/ocaml/host/*.h"
       "${CMAKE_SOURCE_DIR}/ocaml/host/*.ocaml[45]"
       "${CMAKE_SOURCE_DIR}/ocaml/port/*.ml" "${CMAKE_SOURCE_DIR}/ocaml/port/*.mli" "${CMAKE_SOURCE_DIR}/ocaml/port/dune"
       "${CMAKE_SOURCE_DIR}/ocaml/nif/*.ml" "${CMAKE_SOURCE_DIR}/ocaml/nif/*.mli" "${CMAKE_SOURCE_DIR}/ocaml/nif/dune"
       "${CMAKE_SOURCE_DIR}/ocaml/nif/*.ocaml[45]")
  add_custom_command(
    OUTPUT "${stamp}"
    COMMAND ${CAMLBEAM_DUNE} build --root "${CMAKE_SOURCE_DIR}/ocaml" --build-dir "${build_dir}" --profile release
            --display quiet @install
    COMMAND ${CMAKE_COMMAND} -E touch "${stamp}"
    BYPRODUCTS "${build_dir}/install/default/lib/camlbeam/liberl_stubs.a"
               "${build_dir}/install/default/lib/camlbeam/host/liberl_host_stubs.a"
    DEPENDS ${sources} "${CMAKE_SOURCE_DIR}/ocaml/dune-project" camlbeam_ocaml
    COMMENT "Building the OCaml packages camlbeam and camlbeam.host (dune @install)"
    VERBATIM)
  # ALL: the findlib tree is a product of the build (make install-ocaml, docs/plugins.md).
  add_custom_target(camlbeam_ocaml_packages ALL DEPENDS "${stamp}")
  set(CAMLBEAM_OCAMLPATH "${build_dir}/install/default/lib" CACHE INTERNAL "findlib directory of the in-tree OCaml packages")
  set(CAMLBEAM_OCAML_PACKAGES_STAMP "${stamp}" CACHE INTERNAL "touched when the in-tree OCaml packages are rebuilt")
endfunction()

# Copies of OCaml sources in a private work directory: ocamlfind writes .cmi/.cmo/.cmx
# beside each source, and two rules compiling the same file must not share them.
function(_camlbeam_ocaml_copies work out_var)
  set(copies "")
  foreach(src IN LISTS ARGN)
    get_filename_component(name "${src}" NAME)
    list(APPEND copies "${work}/${name}")
  endforeach()
  set(${out_var} "${copies}" PARENT_SCOPE)
endfunction()

# What every host executable carries for its plugins besides the standard library, dynlink,
# camlbeam and zarith (docs/plugins.md, "What a plugin can use"). The port workers,
# camlbeam-call and the workers camlbeam-port-link makes all carry these, so that a plugin
# that loads in one loads in the others.
set(CAMLBEAM_PLUGIN_PACKAGES unix CACHE INTERNAL "findlib packages every host executable links for plugins")

# camlbeam_ocaml_host_object(<name> NATIVE|NATIVE_PIC|BYTECODE [SOURCES a.ml ...]
#                            [PACKAGES p ...] [C_LIBRARIES lib ...] [FLAGS flag ...])
#
# The OCaml half of a host executable, and the INTERFACE library <name> that links it. One
# object (-output-obj) holds camlbeam.host, dynlink, ${CAMLBEAM_PLUGIN_PACKAGES}, the given
# sources and packages, and every module of every library, Stdlib included (-linkall): a
# plugin can only use modules the executable has. The library brings the
# runtime (libasmrun.a or libcamlrun.a, chosen here at link time), camlbeam's and zarith's stubs, GMP,
# the C stubs of the PACKAGES (C_LIBRARIES, e.g. "${CAMLBEAM_OCAML_STDLIB}/libcamlstr.a": -output-obj
# does not bring them), and -Wl,-E, without which every .cmxs fails with "undefined symbol: caml...".
# An executable links exactly one of these, next to camlbeam::host: native and bytecode
# runtimes cannot share a process. NATIVE_PIC is NATIVE with the runtime built for a shared
# library (libasmrun_pic.a): the NIF's.
function(camlbeam_ocaml_host_object name flavour)
  cmake_parse_arguments(ARG "" "" "SOURCES;PACKAGES;C_LIBRARIES;FLAGS" ${ARGN})
  camlbeam_find_ocaml()
  camlbeam_ocaml_packages()
  if(flavour STREQUAL "NATIVE")
    set(compiler ocamlopt)
    set(runtime "${CAMLBEAM_OCAML_STDLIB}/libasmrun.a")
  elseif(flavour STREQUAL "NATIVE_PIC")
    set(compiler ocamlopt)
    set(runtime "${CAMLBEAM_OCAML_STDLIB}/libasmrun_pic.a")
    set(flavour NATIVE)
  elseif(flavour STREQUAL "BYTECODE")
    set(compiler ocamlc)
    set(runtime "${CAMLBEAM_OCAML_STDLIB}/libcamlrun.a")
  else()
    message(FATAL_ERROR "camlbeam_ocaml_host_object: NATIVE, NATIVE_PIC or BYTECODE, not '${flavour}'")
  endif()
  set(work "${CMAKE_CURRENT_BINARY_DIR}/${name}.ocaml")
  set(object "${CMAKE_CURRENT_BINARY_DIR}/${name}.o")
  file(MAKE_DIRECTORY "${work}")
  _camlbeam_ocaml_copies("${work}" copies ${ARG_SOURCES})
  set(copy_command "")
  if(ARG_SOURCES)
    set(copy_command COMMAND ${CMAKE_COMMAND} -E copy ${ARG_SOURCES} "${work}")
  endif()
  string(JOIN "," packages camlbeam.host ${CAMLBEAM_PLUGIN_PACKAGES} ${ARG_PACKAGES})
  # unix's C stubs, which -output-obj leaves out (CAMLBEAM_PLUGIN_PACKAGES).
  # OCaml 5 has one archive per flavour (libunixnat.a, libunixbyt.a), 4.13 one for both.
  if(EXISTS "${CAMLBEAM_OCAML_STDLIB}/libunix.a")
    list(PREPEND ARG_C_LIBRARIES "${CAMLBEAM_OCAML_STDLIB}/libunix.a")
  elseif(flavour STREQUAL "NATIVE")
    list(PREPEND ARG_C_LIBRARIES "${CAMLBEAM_OCAML_STDLIB}/libunixnat.a")
  else()
    list(PREPEND ARG_C_LIBRARIES "${CAMLBEAM_OCAML_STDLIB}/libunixbyt.a")
  endif()
  # -g: backtraces in {ocaml_exception, ...} errors (bytecode keeps its debug events).
  add_custom_command(
    OUTPUT "${object}"
    ${copy_command}
    COMMAND ${CMAKE_COMMAND} -E env "OCAMLPATH=${CAMLBEAM_OCAMLPATH}"
            ${CAMLBEAM_OCAMLFIND} ${compiler} -g ${ARG_FLAGS} -linkall -output-obj -package ${packages} -linkpkg ${copies} -o "${object}"
    WORKING_DIRECTORY "${work}"
    DEPENDS ${ARG_SOURCES} "${CAMLBEAM_OCAML_PACKAGES_STAMP}" camlbeam_ocaml_packages
    COMMENT "Linking the OCaml object ${name}.o (${compiler} -output-obj)"
    VERBATIM)
  add_custom_target(${name}_object DEPENDS "${object}")
  add_library(${name} INTERFACE)
  add_dependencies(${name} ${name}_object)
  # Order matters for static archives: the object, then the stubs it calls (camlbeam's,
  # camlbeam.host's and zarith's), then the runtime that all of them call, then the system
  # libraries.
  target_link_libraries(${name} INTERFACE "${object}" ${ARG_C_LIBRARIES} "${CAMLBEAM_OCAMLPATH}/camlbeam/liberl_stubs.a"
                        "${CAMLBEAM_OCAMLPATH}/camlbeam/host/liberl_host_stubs.a"
                        "${CAMLBEAM_ZARITH_DIR}/libzarith.a" "${runtime}" gmp m dl)
  target_link_options(${name} INTERFACE "LINKER:-E")
  set_property(TARGET ${name} PROPERTY INTERFACE_LINK_DEPENDS "${object}")
endfunction()

# camlbeam_ocaml_plugin(<output> SOURCES a.ml ... [PACKAGES p ...] [FLAGS flag ...])
#
# A plugin as users build it: <output> ending in .cmxs is
#   ocamlfind ocamlopt -shared -package camlbeam a.ml ... -o <output>
# .cma is `ocamlfind ocamlc -a ...`, .cmo `ocamlfind ocamlc -c ...` (one source). Relative
# outputs are in the current binary directory. Defines the target <output name>_plugin.
function(camlbeam_ocaml_plugin output)
  cmake_parse_arguments(ARG "" "" "SOURCES;PACKAGES;FLAGS" ${ARGN})
  camlbeam_ocaml_packages()
  if(NOT IS_ABSOLUTE "${output}")
    set(output "${CMAKE_CURRENT_BINARY_DIR}/${output}")
  endif()
  get_filename_component(file "${output}" NAME)
  get_filename_component(ext "${output}" LAST_EXT)
  if(ext STREQUAL ".cmxs")
    set(compile ocamlopt -shared)
  elseif(ext STREQUAL ".cma")
    set(compile ocamlc -a)
  elseif(ext STREQUAL ".cmo")
    set(compile ocamlc -c)
  else()
    message(FATAL_ERROR "camlbeam_ocaml_plugin: ${file} is not a .cmxs, .cma or .cmo")
  endif()
  set(work "${CMAKE_CURRENT_BINARY_DIR}/${file}.ocaml")
  file(MAKE_DIRECTORY "${work}")
  _camlbeam_ocaml_copies("${work}" copies ${ARG_SOURCES})
  string(JOIN "," packages camlbeam ${ARG_PACKAGES})
  add_custom_command(
    OUTPUT "${output}"
    COMMAND ${CMAKE_COMMAND} -E copy ${ARG_SOURCES} "${work}"
    COMMAND ${CMAKE_COMMAND} -E env "OCAMLPATH=${CAMLBEAM_OCAMLPATH}"
            ${CAMLBEAM_OCAMLFIND} ${compile} -g -package ${packages} ${ARG_FLAGS} ${copies} -o "${output}"
    WORKING_DIRECTORY "${work}"
    DEPENDS ${ARG_SOURCES} "${CAMLBEAM_OCAML_PACKAGES_STAMP}" camlbeam_ocaml_packages
    COMMENT "Building the plugin ${file}"
    VERBATIM)
  add_custom_target(${file}_plugin DEPENDS "${output}")
endfunction()

# camlbeam_port_static_worker(<target> OUTPUT <path> SOURCES a.ml ... [LINK_OPTIONS opt ...])
#
# A port worker with the sources linked in, made by camlbeam-port-link as users make theirs
# (docs/static-workers.md), given LINK_OPTIONS (-package p, -thread); <target> builds it. It
# is relinked when the sources, the script, camlbeam's archives or its OCaml packages
# change. Needs cpp/port (CAMLBEAM_PORT_LINK).
function(camlbeam_port_static_worker target)
  cmake_parse_arguments(ARG "" "OUTPUT" "SOURCES;LINK_OPTIONS" ${ARGN})
  if(NOT CAMLBEAM_PORT_LINK)
    message(FATAL_ERROR "camlbeam_port_static_worker: cpp/port (camlbeam-port-link) is not configured yet")
  endif()
  set(work "${CMAKE_CURRENT_BINARY_DIR}/${target}.ocaml")
  file(MAKE_DIRECTORY "${work}")
  set(names "")
  foreach(src IN LISTS ARG_SOURCES)
    get_filename_component(name "${src}" NAME)
    list(APPEND names "${name}")
  endforeach()
  add_custom_command(
    OUTPUT "${ARG_OUTPUT}"
    COMMAND ${CMAKE_COMMAND} -E copy ${ARG_SOURCES} "${work}"
    COMMAND "${CAMLBEAM_PORT_LINK}" -o "${ARG_OUTPUT}" ${ARG_LINK_OPTIONS} ${names}
    WORKING_DIRECTORY "${work}"
    DEPENDS ${ARG_SOURCES} camlbeam-port-link "${CAMLBEAM_PORT_LINK}" ${CAMLBEAM_PORT_LINK_ARCHIVES}
            "${CAMLBEAM_OCAML_PACKAGES_STAMP}"
    COMMENT "Linking ${names} into a worker of its own (camlbeam-port-link)"
    VERBATIM)
  add_custom_target(${target} DEPENDS "${ARG_OUTPUT}")
endfunction()
