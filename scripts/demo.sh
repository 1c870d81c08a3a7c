#!/usr/bin/env bash
# The demo (README: `make demo`, which has already run scripts/setup.sh and the CMake
# build): the OCaml plugin examples/mathlib, built by CMake as a user builds theirs,
# driven from Erlang by a pool of port workers. Last, a glimpse of the ETF codec underneath.
# Any step that does not do what it says stops the demo with a non-zero status.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

say() { printf '\n\033[1m%s\033[0m\n' "$*"; }
run() { printf '   $ %s\n' "$*"; "$@"; }
fail() { printf 'demo: %s\n' "$*" >&2; exit 1; }

plugins=build/examples/mathlib
for f in erlang/priv/camlbeam-port erlang/priv/camlbeam-port-bytecode "$plugins/mathlib.cmxs" "$plugins/mathlib.cma"; do
  [[ -f $f ]] || fail "$f is missing: run 'make demo' (it builds first), not scripts/demo.sh alone"
done

say "1. The build made the plugin examples/mathlib/mathlib.ml, as a user makes theirs:"
echo "   ocamlfind ocamlopt -shared -package camlbeam mathlib.ml -o mathlib.cmxs   (native workers)"
echo "   ocamlfind ocamlc -a -package camlbeam mathlib.ml -o mathlib.cma           (bytecode workers)"
(cd "$plugins" && ls -l mathlib.cmxs mathlib.cma | sed 's/^/   /')
echo "   and the workers that load them: erlang/priv/camlbeam-port, erlang/priv/camlbeam-port-bytecode"

say "2. Compile the Erlang application camlbeam (offline: it depends on OTP alone):"
(cd erlang && REBAR_COLOR=none run rebar3 compile)

say "3. Run examples/mathlib/mathlib_demo.escript: a pool of OCaml workers, called from Erlang"
echo "   \$ ERL_LIBS=erlang/_build/default/lib escript examples/mathlib/mathlib_demo.escript $plugins"
# Bounded: a hung VM must not hang `make demo`.
ERL_LIBS=$root/erlang/_build/default/lib timeout 300 escript examples/mathlib/mathlib_demo.escript "$plugins" ||
  fail "the mathlib demo failed (exit status $?)"

say "4. Underneath, the ETF codec (cpp/etf): byte for byte Erlang's encoding, and hard to fool:"
tool=build/cpp/tools/camlbeam-etf
term='{reply, [1, 2.5, -99999999999999999999], <<"ocaml">>, #{ok => [a | b]}}'
echo "   \$ camlbeam-etf encode '$term'"
"$tool" encode "$term" -o "$dir/from_cpp.bin"
erl -noshell -eval '[Dir] = init:get_plain_arguments(),
  {ok, B} = file:read_file(Dir ++ "/from_cpp.bin"),
  T = binary_to_term(B),
  io:format("   erl> binary_to_term(Bytes) = ~p~n   erl> term_to_binary(T) =:= Bytes -> ~p~n",
            [T, term_to_binary(T) =:= B]),
  halt(case term_to_binary(T) =:= B of true -> 0; false -> 1 end).' -extra "$dir" ||
  fail "Erlang does not encode the term as camlbeam-etf did"
printf '\x83\x6c\xff\xff\xff\xff\x6a' > "$dir/hostile.bin"
echo "   \$ camlbeam-etf print hostile.bin   # a list claiming 4 billion elements: refused, not allocated"
if "$tool" print "$dir/hostile.bin" > "$dir/hostile.out" 2>&1; then
  fail "camlbeam-etf accepted the hostile stream"
fi
sed 's/^/   /' "$dir/hostile.out"

say "The demo ran to the end. Next: docs/getting-started.md"
