#!/usr/bin/env bash
# The nif transport's Common Test cases against camlbeam_nif.so built with ASan+UBSan
# (scripts/test.sh runs it after the sanitizer build's C++ tests). The VM itself is not
# instrumented: libasan is preloaded into it, so that the library's memory errors and
# undefined behaviour stop the run. Leaks are not checked: the VM keeps memory at exit
# by design, and so does the OCaml runtime inside it.
#
#   scripts/test-nif-sanitized.sh BUILD_DIR [OCAML_VERSION]
#
# BUILD_DIR: a -DCAMLBEAM_SANITIZE=ON build holding cpp/nif/camlbeam_nif.so. With
# OCAML_VERSION the pools ask for that OCaml (its plugins from build-ocaml5/erlang).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(realpath "$1")
ocaml=${2:-}
library="$build/cpp/nif/camlbeam_nif"
[[ -f $library.so ]] || { echo "test-nif-sanitized: $library.so not built" >&2; exit 1; }
libasan=$(gcc -print-file-name=libasan.so)
[[ -f $libasan ]] || { echo "test-nif-sanitized: no libasan.so (gcc)" >&2; exit 1; }

if [[ -n $ocaml ]]; then
  export CAMLBEAM_TEST_OCAML=$ocaml
  export CAMLBEAM_TEST_PLUGINS=$root/build-ocaml5/erlang
  export CAMLBEAM_TEST_OTHER_PLUGINS=$root/build/erlang
else
  export CAMLBEAM_TEST_PLUGINS=$root/build/erlang
  export CAMLBEAM_TEST_OTHER_PLUGINS=$root/build-ocaml5/erlang
fi
export CAMLBEAM_TEST_NIF_LIBRARY=$library REBAR_OFFLINE=1
cd "$root/erlang"
# Compiled before the preload: the compiler's VM needs no sanitizer.
rebar3 as test compile >/dev/null

status=0
# Not camlbeam_hostile_SUITE: its cases run in peer VMs of their own, which load the
# application's library, and measure memory, which ASan's allocator keeps.
for suite in camlbeam_nif_runtime_SUITE camlbeam_term_SUITE camlbeam_api_SUITE camlbeam_fault_SUITE camlbeam_handles_SUITE; do
  [[ -f test/$suite.erl ]] || continue
  group=(--group=nif)
  [[ $suite == camlbeam_nif_runtime_SUITE ]] && group=()
  echo "--- $suite (nif, ASan+UBSan)"
  if ! LD_PRELOAD=$libasan ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
       UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
       timeout --kill-after=10 600 rebar3 ct --suite="test/$suite" "${group[@]}"; then
    echo "--- $suite: FAILED"
    status=1
  fi
done
exit $status
