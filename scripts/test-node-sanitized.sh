#!/usr/bin/env bash
# camlbeam_node_SUITE against camlbeam-node built with ASan+UBSan (scripts/test.sh runs it
# after the sanitizer build's C++ tests): real Erlang nodes, erl_call and Elixir talking to
# a node whose memory errors and undefined behaviour abort it, which fails the case that
# met them. The plugins are the Release build's (the same OCaml, the same camlbeam).
#
#   scripts/test-node-sanitized.sh BUILD_DIR
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(realpath "$1")
node="$build/cpp/node/camlbeam-node"
[[ -x $node ]] || { echo "test-node-sanitized: $node not built" >&2; exit 1; }
export CAMLBEAM_TEST_NODE=$node CAMLBEAM_TEST_PLUGINS=$root/build/erlang \
       CAMLBEAM_TEST_OTHER_PLUGINS=$root/build-ocaml5/erlang REBAR_OFFLINE=1
# The nodes are SIGKILLed at the end of each case: leaks cannot be checked there.
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
cd "$root/erlang"
timeout --kill-after=10 600 rebar3 ct --suite=test/camlbeam_node_SUITE
