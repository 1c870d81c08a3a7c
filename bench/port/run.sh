#!/usr/bin/env bash
# The port coupling's benchmark (bench/port/README.md): camlbeam-port against a C port on
# libei speaking the same protocol, the bare C port, a gen_server, the kernels standalone
# and in Erlang, and the cost of a worker; one run, ratios, PASS/miss against the targets.
#
#   bench/port/run.sh             Release build in ./build, full run (about 3 min), report
#   bench/port/run.sh --smoke     every measurement for a few iterations, with its checks
#                                 (each echo equals its payload, the kernels agree to the
#                                 bit), no verdicts (~10 s once built)
#   options: --build-dir DIR (default ./build)   --no-build (use DIR as it is)
#
# Needs the port worker (BUILD/cpp/port/camlbeam-port) and the compiled Erlang application
# (erlang/_build/default/lib/camlbeam/ebin, or $CAMLBEAM_EBIN). Without them it exits 77
# (the ctest's "skipped"). The report goes to BUILD/bench/results/port-report[-smoke].txt.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
build="$root/build"
mode=full
do_build=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --smoke) mode=smoke ;;
    --no-build) do_build=0 ;;
    --build-dir) build=$(realpath -m "$2"); shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "port bench: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

say() { echo "port bench: $*" >&2; }
die() { echo "port bench: $*" >&2; exit 1; }

if [[ $do_build == 1 ]]; then
  generator=()
  [[ -f "$build/CMakeCache.txt" ]] || { command -v ninja >/dev/null && generator=(-G Ninja); }
  say "building camlbeam-port and the port benchmark (Release) in $build"
  cmake -S "$root" -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DCAMLBEAM_BENCH=ON >/dev/null
  cmake --build "$build" --target camlbeam-port port_bench >/dev/null
  if [[ -z "${CAMLBEAM_EBIN:-}" && -f "$root/erlang/rebar.config" ]]; then
    say "compiling the Erlang application (rebar3 compile)"
    (cd "$root/erlang" && rebar3 compile >/dev/null)
  fi
fi
if [[ $mode == full ]]; then
  build_type=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$build/CMakeCache.txt")
  [[ "$build_type" == Release ]] || die "$build is a '$build_type' build; timings need Release (or use --smoke)"
fi

here="$build/bench/port"
ebin="${CAMLBEAM_EBIN:-$root/erlang/_build/default/lib/camlbeam/ebin}"
worker="$build/cpp/port/camlbeam-port"
for f in "$here/c_port" "$here/port_bench_exports.cmxs" "$here/kernels.cmxs" "$here/kernels_standalone" \
         "$here/ocaml_idle" "$here/ocaml_idle_linkall" "$here/ebin/port_bench.beam"; do
  [[ -e "$f" ]] || die "$f not built (cmake --build $build --target port_bench)"
done
for f in "$worker" "$ebin/ocaml.beam"; do
  [[ -e "$f" ]] || { say "skipped: $f does not exist (the port worker and the Erlang application are needed)"; exit 77; }
done

payloads="$build/bench/payloads"
results="$build/bench/results"
mkdir -p "$payloads" "$results"
escript "$root/bench/etf_bench.escript" gen "$payloads"

out="$results/port-report.txt"
[[ $mode == smoke ]] && out="$results/port-report-smoke.txt"
flags=()
[[ $mode == smoke ]] && flags=(--smoke)
limit=1500
[[ $mode == smoke ]] && limit=120
# The application's dependencies, if any, sit beside it.
pa=(-pa "$here/ebin" -pa "$ebin")
for d in "$(dirname "$ebin")"/../*/ebin; do [[ -d "$d" && "$d" != "$ebin" ]] && pa+=(-pa "$d"); done
say "running the $mode benchmark (report: $out)"
ERL_CRASH_DUMP_SECONDS=0 timeout --kill-after=10 "$limit" \
  erl -noshell "${pa[@]}" -run port_bench main -extra "${flags[@]}" \
  --c-port "$here/c_port" --worker "$worker" --bench-plugin "$here/port_bench_exports.cmxs" \
  --kernels-plugin "$here/kernels.cmxs" --standalone "$here/kernels_standalone" --idle "$here/ocaml_idle" \
  --idle-linkall "$here/ocaml_idle_linkall" \
  --payloads "$payloads" --out "$out" ||
  die "the benchmark failed (status $?)"
