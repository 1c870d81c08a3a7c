#!/usr/bin/env bash
# Instructions per request of the port worker itself, OCaml 4.13 build against 5.3 build:
# ocaml:call(Pool, id, [42]) N1 and N2 times through camlbeam-port under callgrind
# (--trace-children: the executable re-executes itself), (Ir(N2) - Ir(N1)) / (N2 - N1), and
# each build's functions with the most instructions in the N2 run. Deterministic, whatever
# the load: what README.md's explanation of the round trips rests on.
#
#   bench/ocaml5/worker_callgrind.sh [N1 N2]     (default 1000 6000; about a minute)
#
# OLD / NEW: other build directories (default ./build, ./build-ocaml5); KEEP=DIR keeps the
# callgrind files. Extra environment (e.g. OCAMLRUNPARAM) reaches the workers.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
n1=${1:-1000} n2=${2:-6000}
old=${OLD:-$root/build} new=${NEW:-$root/build-ocaml5}
ebin=${CAMLBEAM_EBIN:-$root/erlang/_build/default/lib/camlbeam/ebin}
work=${KEEP:-$(mktemp -d)}
[[ -n ${KEEP:-} ]] || trap 'rm -rf "$work"' EXIT
mkdir -p "$work"
erlc -o "$work" "$root/bench/ocaml5/worker_calls.erl"
total() { callgrind_annotate "$1" | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }'; }
for dir in "$old" "$new"; do
  tag=$(basename "$dir")
  declare -A ir=()
  for n in "$n1" "$n2"; do
    wrapper="$work/$tag-$n.sh"
    printf '#!/bin/sh\nexec valgrind --tool=callgrind --trace-children=yes --callgrind-out-file=%s %s "$@" 2>%s\n' \
      "$work/$tag-$n.%p.callgrind" "$dir/cpp/port/camlbeam-port" "$work/$tag-$n.valgrind.txt" >"$wrapper"
    chmod +x "$wrapper"
    erl -noshell -pa "$ebin" -pa "$work" -run worker_calls main -extra \
      "$wrapper" "$dir/bench/port/port_bench_exports.cmxs" "$n"
    sleep 1  # the worker writes its callgrind file as it exits
    # The process that ran the requests is the file with the most instructions.
    best=0
    for f in "$work/$tag-$n".*.callgrind; do
      t=$(total "$f"); ((t > best)) && { best=$t; cp "$f" "$work/$tag-$n.callgrind.top"; }
    done
    ir[$n]=$best
  done
  echo "$tag: $(((ir[$n2] - ir[$n1]) / (n2 - n1))) instructions per request (id(42), round trip in the worker)"
  callgrind_annotate "$work/$tag-$n2.callgrind.top" | grep -E '^ *[0-9,]+ \(' | sed -n '2,9p' |
    sed -E 's/ *\[[^]]*\]$//; s|  /[^ ]*/(runtime/)|  \1|' | cut -c1-110
done
