#!/usr/bin/env bash
# The ETF codec benchmark: ours vs libei vs Erlang on the same bytes, and the round trip
# ETF -> Erl.Term.t -> ETF against libei into a C tree and back (see bench/README.md); then
# bench/port/run.sh in the same mode: the port coupling (bench/port/README.md).
#
#   bench/run.sh                  Release build in ./build, full run (about 2 min), tables
#                                 with PASS/MISS against the targets
#   bench/run.sh --smoke          a few iterations each (~5 s when built); checks that all
#                                 three decode the payloads to the same values and that every
#                                 round trip gives back the bytes it should; no targets
#   options: --build-dir DIR (default ./build)   --no-build (use DIR as it is)
#
# Results (JSON, raw lines, the report) go to BUILD/bench/results/.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bench_src="$root/bench"
build="$root/build"
mode=full
do_build=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --smoke) mode=smoke ;;
    --no-build) do_build=0 ;;
    --build-dir) build=$(realpath -m "$2"); shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

say() { echo "bench: $*" >&2; }
die() { echo "bench: $*" >&2; exit 1; }

if [[ $do_build == 1 ]]; then
  # Keep the generator of an existing build dir (make uses Unix Makefiles without ninja).
  generator=()
  [[ -f "$build/CMakeCache.txt" ]] || { command -v ninja >/dev/null && generator=(-G Ninja); }
  say "building etf_bench and conv_bench (Release) in $build"
  cmake -S "$root" -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DCAMLBEAM_BENCH=ON >/dev/null
  cmake --build "$build" --target etf_bench conv_bench >/dev/null
fi
bin="$build/bench/etf_bench"
conv_bin="$build/bench/conv_bench"
for b in "$bin" "$conv_bin"; do
  [[ -x "$b" ]] || die "$b not built (configure with -DCAMLBEAM_BENCH=ON)"
done
if [[ $mode == full ]]; then
  build_type=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$build/CMakeCache.txt")
  [[ "$build_type" == Release ]] || die "$build is a '$build_type' build; timings need Release (or use --smoke)"
fi

payloads="$build/bench/payloads"
results="$build/bench/results"
mkdir -p "$payloads" "$results"

# Erlang writes the payloads once; every decoder reads these same bytes.
say "generating payloads with term_to_binary"
escript "$bench_src/etf_bench.escript" gen "$payloads"

# Correctness before speed: the timed code must decode to what Erlang decodes to.
say "checking: ours (visitor, Term), libei and Erlang agree on every payload"
"$bin" --payloads="$payloads" --check >"$results/digest-ours.txt" || die "etf_bench --check failed"
escript "$bench_src/etf_bench.escript" digest "$payloads" >"$results/digest-erlang.txt"
diff -u "$results/digest-erlang.txt" "$results/digest-ours.txt" >&2 ||
  die "ours/libei and Erlang decode the payloads to different values (diff above)"
say "  $(wc -l <"$results/digest-ours.txt") payloads agree"
say "checking: ETF -> Erl.Term.t -> ETF and ETF -> etf::Term -> ETF give back the input bytes"
"$conv_bin" --payloads="$payloads" --check >"$results/roundtrip-check.txt" || die "conv_bench --check failed"
[[ $(wc -l <"$results/roundtrip-check.txt") == $(wc -l <"$results/digest-ours.txt") ]] ||
  die "conv_bench --check did not cover every payload (see $results/roundtrip-check.txt)"
say "  $(wc -l <"$results/roundtrip-check.txt") payloads round-trip byte for byte"

# Random interleaving spreads each benchmark's repetitions over the run, so a burst of
# noise from the other tenant of this 2-core machine hits a repetition, not a benchmark.
# conv_bench has 81 benchmarks to etf_bench's 54: half the time per repetition keeps the
# whole run near two minutes; each repetition still runs >= 10 iterations.
if [[ $mode == full ]]; then
  gbench_flags=(--benchmark_repetitions=9 --benchmark_min_time=0.1
                --benchmark_enable_random_interleaving=true --benchmark_report_aggregates_only=true)
  conv_flags=(--benchmark_repetitions=9 --benchmark_min_time=0.05
              --benchmark_enable_random_interleaving=true --benchmark_report_aggregates_only=true)
  erl_min_ms=50 erl_reps=9
else
  gbench_flags=(--benchmark_repetitions=1 --benchmark_min_time=0.001)
  conv_flags=("${gbench_flags[@]}")
  erl_min_ms=1 erl_reps=1
fi
say "timing ours and libei (Google Benchmark, $mode)"
"$bin" --payloads="$payloads" "${gbench_flags[@]}" \
  --benchmark_out="$results/gbench.json" --benchmark_out_format=json >"$results/gbench.txt" 2>&1 ||
  die "etf_bench failed: see $results/gbench.txt"
say "timing the round trips (Google Benchmark, $mode; OCaml runtime started once, its default GC)"
"$conv_bin" --payloads="$payloads" "${conv_flags[@]}" \
  --benchmark_out="$results/conv_gbench.json" --benchmark_out_format=json >"$results/conv_gbench.txt" 2>&1 ||
  die "conv_bench failed: see $results/conv_gbench.txt"
say "timing the round trips again under the worker GC policy (conv_bench --as-worker)"
"$conv_bin" --as-worker --payloads="$payloads" "${conv_flags[@]}" \
  --benchmark_out="$results/conv_gbench_worker.json" --benchmark_out_format=json \
  >"$results/conv_gbench_worker.txt" 2>&1 ||
  die "conv_bench --as-worker failed: see $results/conv_gbench_worker.txt"
say "timing binary_to_term/term_to_binary"
escript "$bench_src/etf_bench.escript" time "$payloads" "$erl_min_ms" "$erl_reps" >"$results/erlang.txt"

report_flags=()
[[ $mode == smoke ]] && report_flags=(--smoke)
python3 "$bench_src/report.py" --gbench "$results/gbench.json" --erlang "$results/erlang.txt" \
  --conv-gbench "$results/conv_gbench.json" --conv-worker-gbench "$results/conv_gbench_worker.json" \
  --payloads "$payloads" "${report_flags[@]}" |
  tee "$results/report.txt"

# The port coupling (issue 4): its own runner, report and targets (bench/port/README.md).
# Status 77: the port worker or the Erlang application is not built; reported, not fatal.
port_flags=(--build-dir "$build")
[[ $mode == smoke ]] && port_flags+=(--smoke)
[[ $do_build == 0 ]] && port_flags+=(--no-build)
port_status=0
"$bench_src/port/run.sh" "${port_flags[@]}" || port_status=$?
case $port_status in
  0) ;;
  77) say "port benchmark skipped: the port worker or the Erlang application is not built" ;;
  *) die "the port benchmark failed (status $port_status)" ;;
esac
