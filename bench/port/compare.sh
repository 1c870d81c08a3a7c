#!/usr/bin/env bash
# The port benchmark's round trips, before and after a change, side by side in one run:
# the round_trips section of port_bench for the tree at BASE (a git revision, built in a
# temporary worktree outside this clone) and for this tree's build, alternated ROUNDS
# times, then the median over the rounds of each row's camlbeam / C port p50 ratio.
# Each tree is measured with its own C port, so each ratio is a like-for-like comparison;
# alternating spreads the machine's noise over both trees.
#
#   bench/port/compare.sh BASE [ROUNDS]     (default 3 rounds; about a minute each)
#
# Needs this tree built as bench/port/run.sh builds it (run it once first).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
base_rev=${1:?usage: bench/port/compare.sh BASE [ROUNDS]}
rounds=${2:-3}
work=$(mktemp -d)
base="$work/base"
cleanup() {
  git -C "$root" worktree remove --force "$base" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

say() { echo "compare: $*" >&2; }

say "building $base_rev in $base"
git -C "$root" worktree add -q --detach "$base" "$base_rev"
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
cmake -S "$base" -B "$base/build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$base/build" --target camlbeam-port port_bench >/dev/null
(cd "$base/erlang" && REBAR_OFFLINE=1 rebar3 compile >/dev/null)

# shellcheck source=lib.sh
source "$root/bench/port/lib.sh"

# One round_trips section of the tree at $1 into the report $2.
round_trips() {
  local tree=$1 out=$2
  mkdir -p "$tree/build/bench/payloads"
  escript "$root/bench/etf_bench.escript" gen "$tree/build/bench/payloads" >/dev/null
  port_round_trips "$tree/build" "$tree/erlang/_build/default/lib/camlbeam/ebin" "$tree/build/bench/payloads" "$out"
}

for i in $(seq 1 "$rounds"); do
  say "round $i of $rounds"
  round_trips "$base" "$work/base-$i.txt"
  round_trips "$root" "$work/this-$i.txt"
done

# Report rows: payload callers worker p50 ...; one ratio per (payload, callers) a round.
ratios() {  # reports... -> "payload callers ratio" lines, one per report and row
  awk '$3 == "camlbeam" || $3 == "c_port" { p50[FILENAME, $1, $2, $3] = $4 }
       END { for (k in p50) { split(k, a, SUBSEP)
               if (a[4] == "camlbeam" && ((a[1], a[2], a[3], "c_port") in p50))
                 print a[2], a[3], p50[k] / p50[a[1], a[2], a[3], "c_port"] } }' "$@"
}

echo "round-trip p50, camlbeam / C port, median of $rounds alternated rounds"
printf '%-12s %7s %10s %10s\n' payload callers "$base_rev" "this tree"
ratios "$work"/base-*.txt >"$work/base.ratios"
ratios "$work"/this-*.txt >"$work/this.ratios"
awk '{ print $1, $2 }' "$work/base.ratios" | sort -u | while read -r payload callers; do
  before=$(awk -v p="$payload" -v c="$callers" '$1 == p && $2 == c { print $3 }' "$work/base.ratios" | median)
  after=$(awk -v p="$payload" -v c="$callers" '$1 == p && $2 == c { print $3 }' "$work/this.ratios" | median)
  printf '%-12s %7s %10.3f %10.3f\n' "$payload" "$callers" "$before" "$after"
done
