#!/usr/bin/env bash
# The user-space instructions camlbeam-node executes per gen_server:call, counted by
# callgrind: a number this shared machine's noise does not move, for comparing two builds
# of the node's request path (bench/node/README.md, "Control messages without trees").
#
# camlbeam-node runs under valgrind --tool=callgrind with port_bench_exports.cmxs; an
# Erlang node makes WARM calls of id, zeroes the counters (callgrind_control -z), makes
# CALLS more, dumps them (callgrind_control -d), and the script prints the dump's total
# divided by CALLS. What the kernel does for the node (sendmsg, epoll_wait, recv: two
# thirds of its CPU per small call, perf) is not counted.
#
#   bench/node/callgrind.sh [--build-dir DIR] [--payload int42|mixed_tuple|ints_100k|binary_1m]
#                           [--calls N] [--warm N]
#
# Needs valgrind (scripts/setup.sh installs it) and a Release build in DIR (default ./build).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=$root/build
payload=int42
calls=2000
warm=300
while [[ $# -gt 0 ]]; do
  case $1 in
    --build-dir) build=$(realpath -m "$2"); shift ;;
    --payload) payload=$2; shift ;;
    --calls) calls=$2; shift ;;
    --warm) warm=$2; shift ;;
    *) echo "usage: $0 [--build-dir DIR] [--payload int42|mixed_tuple|ints_100k|binary_1m] [--calls N] [--warm N]" >&2
       exit 2 ;;
  esac
  shift
done
case $payload in
  int42) term='42' ;;
  mixed_tuple) term='{foo, 1, 2.5, <<"bin">>, [a, b], "str", -7}' ;;
  ints_100k) term='lists:seq(1, 100000)' ;;
  binary_1m) term='binary:copy(<<7>>, 1 bsl 20)' ;;
  *) echo "$0: unknown payload $payload" >&2; exit 2 ;;
esac
[[ $calls =~ ^[1-9][0-9]*$ && $warm =~ ^[0-9]+$ ]] || { echo "$0: --calls and --warm take numbers" >&2; exit 2; }
for tool in valgrind callgrind_control callgrind_annotate erl epmd; do
  command -v "$tool" >/dev/null || { echo "$0: $tool not found (scripts/setup.sh installs it)" >&2; exit 1; }
done
exe=$(find "$build" -name camlbeam-node -type f -executable -print -quit 2>/dev/null || true)
plugin=$build/bench/port/port_bench_exports.cmxs
# 77: ctest's skip (node_callgrind_smoke), for a build that has no camlbeam-node.
[[ -n $exe && -f $plugin ]] || { echo "$0: no camlbeam-node or $plugin in $build: build them first" >&2; exit 77; }

epmd -names >/dev/null 2>&1 || epmd -daemon -address 127.0.0.1
work=$(mktemp -d)
node_name=camlbeam_cg_$$
cookie=camlbeam_cg_$$
valgrind_pid=""
cleanup() {
  [[ -n $valgrind_pid ]] && kill "$valgrind_pid" 2>/dev/null && wait "$valgrind_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out" \
  "$exe" --sname "$node_name" --cookie "$cookie" --load "$plugin" >"$work/node.log" 2>&1 &
valgrind_pid=$!

# The driver: waits (at most 120 s: valgrind starts slowly) for the node, warms it up,
# and brackets the counted calls with callgrind_control.
driver="
  [_, Host] = string:split(atom_to_list(node()), \"@\"),
  Node = list_to_atom(\"$node_name@\" ++ Host),
  Up = fun Up(0) -> halt(3);
           Up(Left) -> case net_adm:ping(Node) of pong -> ok; pang -> timer:sleep(500), Up(Left - 1) end
       end,
  Up(240),
  Payload = $term,
  Call = fun() -> {ok, Payload} = gen_server:call({ocaml, Node}, {call, id, [Payload]}, 120000) end,
  [Call() || _ <- lists:seq(1, $warm)],
  os:cmd(\"callgrind_control -z $valgrind_pid\"),
  [Call() || _ <- lists:seq(1, $calls)],
  os:cmd(\"callgrind_control -d $valgrind_pid\"),
  halt(0)."
if ! erl -noshell -sname "camlbeam_cg_driver_$$" -setcookie "$cookie" -eval "$driver"; then
  echo "$0: the driver failed; camlbeam-node said:" >&2
  cat "$work/node.log" >&2
  exit 1
fi
dump=$(ls "$work"/callgrind.out.* 2>/dev/null | sort | tail -1)
[[ -n $dump ]] || { echo "$0: callgrind wrote no dump" >&2; exit 1; }
total=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }')
[[ -n $total ]] || { echo "$0: no total in $dump" >&2; exit 1; }
echo "camlbeam-node, $payload: $((total / calls)) instructions per call ($total over $calls calls, after $warm)"
