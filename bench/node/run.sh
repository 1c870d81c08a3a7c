#!/usr/bin/env bash
# The node coupling's benchmark (bench/node/README.md): gen_server:call to camlbeam-node
# against a hand-written libei C-node doing the same decode and re-encode, and against a
# second Erlang node; p50/p99 and calls/s of 1 and 2 callers for every payload of the port
# benchmark, then the call rate each target sustains from 4 Erlang nodes at once. Without a
# camlbeam-node (none built, none given) the report says "ocaml_node: unavailable (...)" and
# measures the baselines only.
#
#   bench/node/run.sh             Release build in ./build, full run (about 90 s), report
#   bench/node/run.sh --smoke     every measurement for a few iterations, every echo checked,
#                                 no verdicts (~3 s once built)
#   options: --build-dir DIR (default ./build)   --no-build (use DIR as it is)
#            --ocaml-node EXE    camlbeam-node to measure (default: one found in DIR, if any)
#            --plugin CMXS       its plugin (default DIR/bench/port/port_bench_exports.cmxs)
#            --rt-rounds N  --rt-cell-ms MS  --load-ms MS  --load-callers N   passed to the driver
#
# Loopback only: the nodes are -sname nodes of this host, listening on the loopback address
# its name resolves to, and epmd is started on 127.0.0.1 if none answers. Without epmd, or
# when the host's name does not resolve to a loopback address, it exits 77 (the ctest's
# "skipped"). The report goes to BUILD/bench/results/node-report[-smoke].txt.
set -euo pipefail

say() { echo "node bench: $*" >&2; }
die() { echo "node bench: $*" >&2; exit 1; }

root=$(cd "$(dirname "$0")/../.." && pwd)
build="$root/build"
mode=full
do_build=1
ocaml_node=
plugin=
driver_args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --smoke) mode=smoke ;;
    --no-build) do_build=0 ;;
    --build-dir) build=$(realpath -m "$2"); shift ;;
    --ocaml-node) ocaml_node=$(realpath "$2"); shift ;;
    --plugin) plugin=$(realpath "$2"); shift ;;
    --rt-rounds|--rt-cell-ms|--load-ms|--load-callers) driver_args+=("$1" "$2"); shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) die "unknown argument $1" ;;
  esac
  shift
done

# A build directory is configured once (Release, Ninja when there is one); after that only
# the benchmark's targets are brought up to date.
if (( do_build )); then
  if [[ ! -f "$build/CMakeCache.txt" ]]; then
    say "configuring a Release build in $build"
    generator=()
    command -v ninja >/dev/null && generator=(-G Ninja)
    cmake -S "$root" -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release >/dev/null
  fi
  say "building node_bench in $build"
  cmake --build "$build" --target node_bench >/dev/null
fi
if [[ $mode == full && "$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$build/CMakeCache.txt")" != Release ]]; then
  die "$build is not a Release build; timings need one (or use --smoke)"
fi

here="$build/bench/node"
port="$build/bench/port"
for f in "$here/c_node" "$here/ebin/node_bench.beam" "$port/ebin/port_bench.beam"; do
  [[ -e "$f" ]] || die "$f not built (cmake --build $build --target node_bench)"
done

# The OCaml node's column: the executable given, else one the build made (wherever its
# target puts it), else none and the column says why.
ocaml_args=()
if [[ -n "$ocaml_node" ]]; then
  ocaml_args=(--ocaml-node "$ocaml_node")
else
  found=$(find "$build" -name camlbeam-node -type f -executable -print -quit 2>/dev/null || true)
  [[ -n "$found" ]] && ocaml_args=(--ocaml-node-found "$found")
fi
[[ -n "$plugin" ]] || plugin="$port/port_bench_exports.cmxs"
if [[ ${#ocaml_args[@]} -gt 0 ]]; then
  [[ -e "$plugin" ]] || die "$plugin not built (cmake --build $build --target port_bench)"
  ocaml_args+=(--plugin "$plugin")
fi

command -v epmd >/dev/null || { say "skipped: no epmd (Erlang's distribution is needed)"; exit 77; }
if ! epmd -names >/dev/null 2>&1; then
  say "starting epmd on 127.0.0.1"
  epmd -daemon -address 127.0.0.1
  for _ in 1 2 3 4 5 6 7 8 9 10; do epmd -names >/dev/null 2>&1 && break; sleep 0.2; done
  epmd -names >/dev/null 2>&1 || { say "skipped: epmd does not answer"; exit 77; }
fi

# Every node listens on the address this host's name resolves to (-sname nodes connect to
# NAME@HOST there), and only if it is a loopback one.
address=$(getent ahostsv4 "$(hostname -s)" | awk 'NR == 1 { print $1 }')
[[ "$address" == 127.* ]] || { say "skipped: $(hostname -s) resolves to '$address', not to a loopback address"; exit 77; }

# The payload files are etf_bench.escript's, shared by every benchmark of the build.
payloads="$build/bench/payloads"
mkdir -p "$payloads" "$build/bench/results"
escript "$root/bench/etf_bench.escript" gen "$payloads"
case $mode in
  full) out="$build/bench/results/node-report.txt" limit=900 flags=() ;;
  smoke) out="$build/bench/results/node-report-smoke.txt" limit=60 flags=(--smoke) ;;
esac
# A fresh cookie per run: the nodes are reachable by anyone on this host who knows it.
cookie="nodebench_$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"
say "running the $mode benchmark (report: $out)"
ERL_CRASH_DUMP_SECONDS=0 timeout --kill-after=10 "$limit" \
  erl -noshell -sname "nb_driver_$$" -setcookie "$cookie" -connect_all false -kernel inet_dist_use_interface "{${address//./,}}" \
  -pa "$here/ebin" -pa "$port/ebin" -run node_bench main -extra "${flags[@]}" "${driver_args[@]}" \
  --address "$address" --c-node "$here/c_node" "${ocaml_args[@]}" --payloads "$payloads" --out "$out" ||
  die "the benchmark failed (status $?)"
