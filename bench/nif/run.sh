#!/usr/bin/env bash
# The nif coupling's benchmark (bench/nif/README.md): camlbeam's nif against a hand-written C
# NIF that walks and rebuilds the same term, a local gen_server:call, and term_to_binary +
# binary_to_term; a CPU-bound export from 1 and 2 callers; the kernels against standalone
# ocamlopt and Erlang. One run, ratios, PASS/miss against the targets. Until the nif transport
# exists the report says "camlbeam nif: unavailable (...)" and measures the baselines only.
#
#   bench/nif/run.sh             Release build in ./build, full run (a few minutes), report
#   bench/nif/run.sh --smoke     every measurement for a few iterations, with its checks
#                                (each echo equals its payload, the kernels agree to the
#                                bit), no verdicts (~2 s once built)
#   options: --build-dir DIR (default ./build)   --no-build (use DIR as it is)
#            --nif-options MAP   an Erlang map merged into the nif pool's start options
#            --only SECTION      round_trips|throughput|kernels|responsiveness: that section only
#            --rt-payloads A,B   the round trips of these payloads only (e.g. floats_100,ints_100k)
#            --rt-rounds N       rounds of the round trips (default 15)
#
# Needs the compiled Erlang application (erlang/_build/default/lib/camlbeam/ebin, or
# $CAMLBEAM_EBIN); without it it exits 77 (the ctest's "skipped"). The report goes to
# BUILD/bench/results/nif-report[-smoke].txt.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
build="$root/build"
mode=full
do_build=1
driver_args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --smoke) mode=smoke ;;
    --no-build) do_build=0 ;;
    --build-dir) build=$(realpath -m "$2"); shift ;;
    --nif-options) driver_args+=(--nif-options "$2"); shift ;;
    --only|--rt-payloads|--rt-rounds) driver_args+=("$1" "$2"); shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "nif bench: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

say() { echo "nif bench: $*" >&2; }
die() { echo "nif bench: $*" >&2; exit 1; }

if [[ $do_build == 1 ]]; then
  generator=()
  [[ -f "$build/CMakeCache.txt" ]] || { command -v ninja >/dev/null && generator=(-G Ninja); }
  say "building the nif benchmark (Release) in $build"
  cmake -S "$root" -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DCAMLBEAM_BENCH=ON >/dev/null
  cmake --build "$build" --target nif_bench >/dev/null
  if [[ -z "${CAMLBEAM_EBIN:-}" && -f "$root/erlang/rebar.config" ]]; then
    say "compiling the Erlang application (rebar3 compile)"
    (cd "$root/erlang" && rebar3 compile >/dev/null)
  fi
fi
if [[ $mode == full ]]; then
  build_type=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$build/CMakeCache.txt")
  [[ "$build_type" == Release ]] || die "$build is a '$build_type' build; timings need Release (or use --smoke)"
fi

here="$build/bench/nif"
port="$build/bench/port"
ebin="${CAMLBEAM_EBIN:-$root/erlang/_build/default/lib/camlbeam/ebin}"
nif_library="$build/cpp/nif/camlbeam_nif"
for f in "$nif_library.so" "$here/camlbeam_bench_cnif.so" "$here/ebin/nif_bench.beam" "$here/ebin/camlbeam_bench_cnif.beam" \
         "$port/ebin/port_bench.beam" "$port/port_bench_exports.cmxs" "$port/kernels.cmxs" "$port/kernels_standalone"; do
  [[ -e "$f" ]] || die "$f not built (cmake --build $build --target nif_bench)"
done
[[ -e "$ebin/ocaml.beam" ]] || { say "skipped: $ebin/ocaml.beam does not exist (the Erlang application is needed)"; exit 77; }

payloads="$build/bench/payloads"
results="$build/bench/results"
mkdir -p "$payloads" "$results"
escript "$root/bench/etf_bench.escript" gen "$payloads"

out="$results/nif-report.txt"
[[ $mode == smoke ]] && out="$results/nif-report-smoke.txt"
flags=()
[[ $mode == smoke ]] && flags=(--smoke)
limit=900
[[ $mode == smoke ]] && limit=60
# port_bench (the payload names, the kernel helpers) and the Erlang kernels live in port's ebin;
# the application's dependencies, if any, sit beside it.
pa=(-pa "$here/ebin" -pa "$port/ebin" -pa "$ebin")
for d in "$(dirname "$ebin")"/../*/ebin; do [[ -d "$d" && "$d" != "$ebin" ]] && pa+=(-pa "$d"); done
say "running the $mode benchmark (report: $out)"
ERL_CRASH_DUMP_SECONDS=0 timeout --kill-after=10 "$limit" \
  erl -noshell "${pa[@]}" -run nif_bench main -extra "${flags[@]}" "${driver_args[@]}" \
  --cnif "$here/camlbeam_bench_cnif" --nif-library "$nif_library" --bench-plugin "$port/port_bench_exports.cmxs" \
  --kernels-plugin "$port/kernels.cmxs" --standalone "$port/kernels_standalone" \
  --payloads "$payloads" --out "$out" ||
  die "the benchmark failed (status $?)"
