#!/usr/bin/env bash
# The Erlang stage of the test suite (erlang/README.md): EUnit, Common Test (with PropEr)
# against the real port workers, dialyzer, xref and edoc of the application camlbeam, and
# camlbeam as a dependency: a rebar3 checkout (scripts/test-checkout.sh) and from Elixir
# (scripts/test-elixir.sh: docs/elixir.md's Mix project).
# Runs after the Release builds in build/ and build-ocaml5/ (scripts/test.sh builds them
# first): it needs the workers in erlang/priv and the test plugins in build/erlang, and the
# other OCaml's plugins, which the workers must refuse, in build-ocaml5/erlang.
#
#   scripts/test-erlang.sh                 everything, on the default OCaml's workers
#   scripts/test-erlang.sh --ocaml 5.3.0   the Common Test suites again, every pool with
#                                          ocaml => "5.3.0" and build-ocaml5's plugins
#
# Every step is bounded in time; the exit status is non-zero if any step failed.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root/erlang"

ocaml=""
if [[ ${1:-} == --ocaml ]]; then
  [[ $# -eq 2 ]] || { echo "usage: test-erlang.sh [--ocaml VERSION]" >&2; exit 2; }
  ocaml=$2
fi

if [[ -n $ocaml ]]; then
  export CAMLBEAM_TEST_OCAML=$ocaml
  export CAMLBEAM_TEST_PLUGINS=${CAMLBEAM_TEST_PLUGINS:-$root/build-ocaml5/erlang}
  export CAMLBEAM_TEST_OTHER_PLUGINS=${CAMLBEAM_TEST_OTHER_PLUGINS:-$root/build/erlang}
  workers=priv/ocaml-$ocaml
else
  export CAMLBEAM_TEST_PLUGINS=${CAMLBEAM_TEST_PLUGINS:-$root/build/erlang}
  export CAMLBEAM_TEST_OTHER_PLUGINS=${CAMLBEAM_TEST_OTHER_PLUGINS:-$root/build-ocaml5/erlang}
  workers=priv
fi
export REBAR_OFFLINE=1

missing=()
for f in "$workers/camlbeam-port" "$workers/camlbeam-port-bytecode" \
         "$CAMLBEAM_TEST_PLUGINS/camlbeam_test.cmxs" "$CAMLBEAM_TEST_PLUGINS/camlbeam_test.cma" \
         "$CAMLBEAM_TEST_OTHER_PLUGINS/camlbeam_extra.cmxs"; do
  [[ -e $f ]] || missing+=("$f")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  printf 'test-erlang: missing %s\n' "${missing[@]}"
  echo "test-erlang: build first: make test builds build/ (the OCaml on PATH) and build-ocaml5/ (OCaml 5.3)"
  exit 1
fi

failed=()
step() {  # seconds name command...
  local limit=$1 name=$2
  shift 2
  echo "--- $name"
  local start=$SECONDS
  # --kill-after: a VM that ignores SIGTERM still goes; its workers see their pipe close.
  # rebar3 may end its output without a newline: the verdict gets a line of its own.
  if timeout --kill-after=10 "$limit" "$@"; then
    printf '\n--- %s: passed in %d s\n' "$name" $((SECONDS - start))
  else
    printf '\n--- %s: FAILED after %d s\n' "$name" $((SECONDS - start))
    failed+=("$name")
  fi
}

# rebar3 ct exits 0 when a suite's all/0 (or groups/0) crashes: CT reports it as
# error_in_suite, runs none of its cases, and counts no failure. Such a suite fails here.
common_test() {
  rebar3 ct || return 1
  local broken
  broken=$(grep -l "error_in_suite" _build/test/logs/last/*/run.*/suite.log 2>/dev/null || true)
  if [[ -n $broken ]]; then
    printf '\ntest-erlang: a suite could not list its cases (error_in_suite): %s\n' $broken
    return 1
  fi
}
export -f common_test

if [[ -n $ocaml ]]; then
  step 600 "rebar3 ct (OCaml $ocaml)" bash -c common_test
  if [[ ${#failed[@]} -gt 0 ]]; then
    printf 'test-erlang: failed: %s\n' "${failed[@]}"
    exit 1
  fi
  exit 0
fi

step 120 "rebar3 eunit" rebar3 eunit
step 600 "rebar3 ct" bash -c common_test
step 300 "rebar3 dialyzer" rebar3 dialyzer
step 120 "rebar3 xref" rebar3 xref
step 120 "rebar3 edoc" rebar3 edoc
step 120 "checkout" "$root/scripts/test-checkout.sh"
step 300 "elixir" "$root/scripts/test-elixir.sh"

if [[ ${#failed[@]} -gt 0 ]]; then
  printf 'test-erlang: failed: %s\n' "${failed[@]}"
  exit 1
fi
