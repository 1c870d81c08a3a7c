#!/usr/bin/env bash
# bench/domains (README.md): fib_sum over 1 and 2 OCaml 5 domains in one port worker
# (examples/parallel's plugin, a pool with ocaml => "5.3.0") against the same kernel as a
# standalone ocamlopt program, interleaved; prints the speed-ups (target >= 1.8 for the port).
#
#   bench/domains/run.sh [--build-dir DIR] [--no-build] [--smoke] [--n N] [--count C] [--rounds R]
#
# DIR (default ./build-ocaml5) is an OCaml 5 build of this tree:
#   cmake -S . -B build-ocaml5 -G Ninja -DCMAKE_BUILD_TYPE=Release \
#         -DCAMLBEAM_OCAML_PREFIX="$(scripts/setup-ocaml5.sh --prefix)"
# Without --no-build it builds the worker (copied to erlang/priv/ocaml-5.3.0/), the plugin,
# the standalone program and the driver, and compiles the Erlang application.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build="$root/build-ocaml5" no_build=0 args=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --build-dir) build=$(realpath "$2"); shift 2 ;;
    --no-build) no_build=1; shift ;;
    --smoke) args+=(--smoke); shift ;;
    --n|--count|--rounds) args+=("$1" "$2"); shift 2 ;;
    *) echo "usage: bench/domains/run.sh [--build-dir DIR] [--no-build] [--smoke] [--n N] [--count C] [--rounds R]" >&2; exit 2 ;;
  esac
done
if [[ $no_build == 0 ]]; then
  cmake --build "$build" --target camlbeam-port parallel_example domains_bench >/dev/null
  (cd "$root/erlang" && REBAR_OFFLINE=1 rebar3 compile >/dev/null)
fi
here="$build/bench/domains"
plugin="$build/examples/parallel/parallel.cmxs"
ebin=${CAMLBEAM_EBIN:-$root/erlang/_build/default/lib/camlbeam/ebin}
for f in "$here/ebin/domains_bench.beam" "$here/domains_standalone" "$plugin" "$ebin/ocaml.beam"; do
  [[ -e $f ]] || { echo "bench/domains: $f is missing (an OCaml 5 build? see run.sh)" >&2; exit 77; }
done
exec erl -noshell -pa "$ebin" -pa "$here/ebin" -run domains_bench main -extra \
  --plugin "$plugin" --standalone "$here/domains_standalone" "${args[@]}"
