#!/usr/bin/env bash
# The Erlang side's fuzzers (erlang/test/camlbeam_fuzz_SUITE.erl) for longer than the suite
# runs them: SECONDS per fuzzer (default 600), from SEED if given. Needs the Release build.
#   scripts/fuzz-erlang.sh [SECONDS [SEED]]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
export CAMLBEAM_FUZZ_SECONDS=${1:-600}
[[ $# -ge 2 ]] && export CAMLBEAM_FUZZ_SEED=$2
export CAMLBEAM_TEST_PLUGINS=${CAMLBEAM_TEST_PLUGINS:-$root/build/erlang}
cd "$root/erlang"
REBAR_OFFLINE=1 rebar3 ct --suite test/camlbeam_fuzz_SUITE
log=$(ls -td _build/test/logs/ct_run.* | head -n 1)
grep -rhoE "(parsers|worker_frames): #\{[^}]*\}" "$log" | sort -u
