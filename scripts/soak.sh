#!/usr/bin/env bash
# The soak of issue 11, by hand (not in CI): scripts/soak.escript on the Release build.
#   scripts/soak.sh [CALLS [CALLERS [KILL_EVERY_MS [POOL_SIZE]]]]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cmake --build build >/dev/null
(cd erlang && rebar3 compile >/dev/null)
export CAMLBEAM_TEST_PLUGINS=${CAMLBEAM_TEST_PLUGINS:-$root/build/erlang}
ERL_LIBS=$root/erlang/_build/default/lib exec escript scripts/soak.escript "$@"
