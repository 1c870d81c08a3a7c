#!/usr/bin/env bash
# The port benchmark's round trips and the conversion benchmark (conv_bench) of the OCaml
# 4.13 build and of the OCaml 5.3 build of this tree, side by side in one run, with the
# ratio 5.3 / 4.13 per row (README.md). In each of ROUNDS rounds: port_bench's round_trips
# section for each build's camlbeam-port (each with its own plugins and C port, the same
# payload files), then conv_bench of each build; the build that goes first alternates.
#
#   bench/ocaml5/compare.sh [ROUNDS]        (default 3; about 1.3 minutes a round)
#
# Options (before ROUNDS): --old DIR (default ./build, OCaml 4.13), --new DIR (default
# ./build-ocaml5, configured with -DCAMLBEAM_OCAML_PREFIX=$(scripts/setup-ocaml5.sh --prefix)),
# --no-build (use both as they are), --out DIR (raw results; default a temporary directory,
# removed at the end).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
old="$root/build" new="$root/build-ocaml5" build=1 out=""
while [[ $# -gt 0 && $1 == --* ]]; do
  case $1 in
    --old) old=$(realpath "$2"); shift 2 ;;
    --new) new=$(realpath "$2"); shift 2 ;;
    --no-build) build=0; shift ;;
    --out) out=$2; shift 2 ;;
    *) echo "usage: bench/ocaml5/compare.sh [--old DIR] [--new DIR] [--no-build] [--out DIR] [ROUNDS]" >&2; exit 2 ;;
  esac
done
rounds=${1:-3}
if [[ -z $out ]]; then
  out=$(mktemp -d)
  trap 'rm -rf "$out"' EXIT
fi
mkdir -p "$out"
say() { echo "ocaml5/compare: $*" >&2; }
# shellcheck source=../port/lib.sh
source "$root/bench/port/lib.sh"

if [[ $build == 1 ]]; then
  for dir in "$old" "$new"; do
    say "building $dir"
    cmake --build "$dir" --target camlbeam-port port_bench conv_bench >/dev/null
  done
  (cd "$root/erlang" && REBAR_OFFLINE=1 rebar3 compile >/dev/null)
fi
ebin=${CAMLBEAM_EBIN:-$root/erlang/_build/default/lib/camlbeam/ebin}
payloads="$out/payloads"
mkdir -p "$payloads"
escript "$root/bench/etf_bench.escript" gen "$payloads" >/dev/null
for dir in "$old" "$new"; do
  "$dir/bench/conv_bench" --payloads="$payloads" --check >/dev/null ||
    { say "conv_bench --check failed in $dir"; exit 1; }
done

# conv_bench: the OCaml rows (the round trip and its halves) and libei's round trip, which
# runs no OCaml and so is the control (its ratio is the noise); under the worker GC policy,
# how the conversion runs in a worker.
conv_flags=(--as-worker --payloads="$payloads"
            "--benchmark_filter=^(roundtrip|decode|encode)/ours_ocaml/|^roundtrip/libei_tree/"
            --benchmark_repetitions=3 --benchmark_min_time=0.05
            --benchmark_enable_random_interleaving=true --benchmark_report_aggregates_only=true
            --benchmark_format=json)

echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
for i in $(seq 1 "$rounds"); do
  order=(old new)
  ((i % 2 == 0)) && order=(new old)
  for which in "${order[@]}"; do
    dir=$old; [[ $which == new ]] && dir=$new
    say "round $i of $rounds: port round trips, $which ($dir)"
    port_round_trips "$dir" "$ebin" "$payloads" "$out/rt-$which-$i.txt" --rt-rounds 5 --rt-cell-ms 300
  done
  for which in "${order[@]}"; do
    dir=$old; [[ $which == new ]] && dir=$new
    say "round $i of $rounds: conv_bench, $which"
    "$dir/bench/conv_bench" "${conv_flags[@]}" >"$out/conv-$which-$i.json" 2>"$out/conv-$which-$i.err"
  done
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 "$root/bench/ocaml5/report.py" "$out" "$rounds"
