#!/usr/bin/env bash
# Instructions per operation of conv_bench rows on the OCaml 4.13 build and on the 5.3
# build (callgrind counts them deterministically, whatever the load): the check behind
# README.md's explanations.
#
#   bench/ocaml5/callgrind.sh PAYLOADS NAME:N...   e.g. roundtrip/ours_ocaml/int42:20000
#
# PAYLOADS: a directory of `escript bench/etf_bench.escript gen DIR`. Only the --loop
# iterations are counted (--toggle-collect), under the worker GC policy (--as-worker).
# Set OLD / NEW to other build directories (default ./build, ./build-ocaml5); KEEP=DIR
# keeps the callgrind files (callgrind_annotate them to see where the counts differ).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
payloads=${1:?usage: bench/ocaml5/callgrind.sh PAYLOADS NAME:N...}
shift
old=${OLD:-$root/build} new=${NEW:-$root/build-ocaml5}
keep=${KEEP:-$(mktemp -d)}
[[ -n ${KEEP:-} ]] || trap 'rm -rf "$keep"' EXIT
mkdir -p "$keep"
printf '%-36s %14s %14s %9s\n' benchmark "Ir/op 4.13" "Ir/op 5.3" "5.3/4.13"
for spec in "$@"; do
  name=${spec%:*} n=${spec##*:}
  counts=()
  for dir in "$old" "$new"; do
    file="$keep/$(echo "$name" | tr / _)-$(basename "$dir").callgrind"
    valgrind --tool=callgrind --callgrind-out-file="$file" --toggle-collect='*conv_bench_loop*' \
      "$dir/bench/conv_bench" --as-worker --payloads="$payloads" --loop="$spec" >/dev/null 2>&1
    counts+=("$(callgrind_annotate "$file" | awk -v n="$n" '/PROGRAM TOTALS/ { gsub(",", "", $1); printf "%.1f\n", $1 / n }')")
  done
  printf '%-36s %14.0f %14.0f %9.3f\n' "$name" "${counts[0]}" "${counts[1]}" "$(echo "${counts[1]} / ${counts[0]}" | bc -l)"
done
