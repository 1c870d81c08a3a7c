#!/usr/bin/env bash
# The whole test suite (README: `make test`). Each stage is one suite; a failing stage does
# not stop the others, so one run shows everything that is broken. The last line is the
# tally CI reads.
set -uo pipefail
cd "$(dirname "$0")/.."

jobs=$(nproc)
generator=$(command -v ninja >/dev/null 2>&1 && echo Ninja || echo "Unix Makefiles")
passed=0
failed=0
failed_names=()
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
digest=$logs/digest

stage() {  # name command...
  local name=$1
  shift
  echo
  echo "=== $name"
  local start=$SECONDS log=$logs/stage-$((passed + failed))
  "$@" 2>&1 | tee "$log"
  if [[ ${PIPESTATUS[0]} -eq 0 ]]; then
    passed=$((passed + 1))
    echo "=== $name: passed in $((SECONDS - start)) s"
  else
    failed=$((failed + 1))
    failed_names+=("$name")
    echo "=== $name: FAILED after $((SECONDS - start)) s"
    # CI may keep only the end of the output: what failed is repeated there, bounded.
    { echo "--- $name:"
      grep -a -E -A4 'FAILED|Failed|failed|[Ee]rror[: ]|Assertion|not ok' "$log" | tail -n 60
    } >>"$digest"
  fi
}

configure_and_build() {  # dir cmake-args... -- targets...
  local dir=$1
  shift
  local args=() targets=()
  while [[ $# -gt 0 && $1 != -- ]]; do args+=("$1"); shift; done
  [[ ${1:-} == -- ]] && shift
  targets=("$@")
  cmake -S . -B "$dir" -G "$generator" "${args[@]}" >/dev/null || return 1
  local target_args=()
  for t in "${targets[@]}"; do target_args+=(--target "$t"); done
  cmake --build "$dir" -j "$jobs" "${target_args[@]}"
}

release_tests() {
  configure_and_build build -DCMAKE_BUILD_TYPE=Release -- || return 1
  ctest --test-dir build --output-on-failure -j "$jobs" --timeout 900
}

sanitizer_tests() {  # build-dir [cmake-args...] [-- more-targets...]
  local dir=$1 args=()
  shift
  while [[ $# -gt 0 && $1 != -- ]]; do args+=("$1"); shift; done
  [[ ${1:-} == -- ]] && shift
  configure_and_build "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCAMLBEAM_SANITIZE=ON \
    -DCAMLBEAM_BENCH=OFF "${args[@]}" -- etf_unit_tests camlbeam-etf conv_tests port_tests camlbeam_nif "$@" || return 1
  # The port tests spawn the workers of this build: they run sanitized too, and a leak or
  # an error in one makes it exit non-zero, which the tests check.
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
    LSAN_OPTIONS="suppressions=$PWD/scripts/lsan.supp" \
    ctest --test-dir "$dir" --output-on-failure -j "$jobs" -L 'unit|port' --timeout 900
}

# OCaml 5.3, installed outside the clone by scripts/setup-ocaml5.sh (make test runs it).
ocaml5_prefix=$(scripts/setup-ocaml5.sh --prefix)
ocaml5_version=5.3.0

# The distribution protocol (cpp/dist) and the node's processes (node_unit_tests) know no
# OCaml: the builds for 4.13 run their tests, those for 5.3 do not run them again.
ocaml5_tests() {
  configure_and_build build-ocaml5 -DCMAKE_BUILD_TYPE=Release -DCAMLBEAM_OCAML_PREFIX="$ocaml5_prefix" -- || return 1
  ctest --test-dir build-ocaml5 --output-on-failure -j "$jobs" --timeout 900 -LE 'dist|node'
}

ocaml5_dune_tests() {
  eval "$(scripts/setup-ocaml5.sh --print-env)"
  cd ocaml && dune build --build-dir _build-ocaml5 @all 2>&1 && dune test --build-dir _build-ocaml5 --force 2>&1
}

stage "C++ unit, conformance and tool tests (Release)" release_tests
stage "C++ unit tests under ASan+UBSan" sanitizer_tests build-asan -- dist_unit_tests node_unit_tests camlbeam-node
stage "C++ tests on OCaml $ocaml5_version (Release)" ocaml5_tests
stage "C++ unit tests on OCaml $ocaml5_version under ASan+UBSan" \
  sanitizer_tests build-asan-ocaml5 -DCAMLBEAM_OCAML_PREFIX="$ocaml5_prefix" -- conv_domains_tests
[[ -x scripts/fuzz-smoke.sh ]] && stage "libFuzzer smoke run" scripts/fuzz-smoke.sh
[[ -f ocaml/dune-project ]] && stage "OCaml library (dune test)" bash -c 'cd ocaml && dune build @all 2>&1 && dune test --force 2>&1'
stage "OCaml library on OCaml $ocaml5_version (dune test)" ocaml5_dune_tests
# After the Release builds: the Erlang suites run their workers and plugins.
stage "Erlang application (EUnit, Common Test with PropEr, dialyzer, xref, edoc)" scripts/test-erlang.sh
stage "Erlang Common Test suites on OCaml $ocaml5_version workers" scripts/test-erlang.sh --ocaml "$ocaml5_version"
stage "The nif transport's Common Test cases, camlbeam_nif.so under ASan+UBSan" \
  scripts/test-nif-sanitized.sh build-asan
stage "The nif transport's Common Test cases on OCaml $ocaml5_version, camlbeam_nif.so under ASan+UBSan" \
  scripts/test-nif-sanitized.sh build-asan-ocaml5 "$ocaml5_version"
stage "camlbeam-node under ASan+UBSan against real Erlang nodes" scripts/test-node-sanitized.sh build-asan
# The README's other command: every step of the demo checks what it shows, so a change that
# breaks its story (as counting timed-out calls in flight once did) fails here.
stage "The demo (make demo's scripts/demo.sh)" scripts/demo.sh

echo
if [[ $failed -gt 0 ]]; then
  echo "What failed, from each failing stage's output:"
  cat "$digest"
  echo
  printf 'failed: %s\n' "${failed_names[@]}"
fi
echo "suites: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
