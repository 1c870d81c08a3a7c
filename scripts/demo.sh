#!/usr/bin/env bash
# The demo (README: `make demo`): the ETF codec against the real Erlang, both ways, and
# what it does with a hostile byte stream. Runs after `make build`.
set -euo pipefail
cd "$(dirname "$0")/.."
tool=build/cpp/tools/camlbeam-etf
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

say() { printf '\n\033[1m%s\033[0m\n' "$*"; }
erl_eval() { erl -noshell -eval "$1, halt()." -extra "$dir"; }

say "1. Erlang encodes a term with term_to_binary/1; camlbeam-etf prints it:"
erl_eval '[Dir] = init:get_plain_arguments(),
  T = {order, 1234, [{<<"widget">>, 3, 9.99}, {<<"gadget">>, 1, 24.5}], #{paid => true, ref => make_ref()}},
  io:format("   erl> ~p~n", [T]),
  ok = file:write_file(Dir ++ "/from_erl.bin", term_to_binary(T))'
echo "   camlbeam-etf print: $("$tool" print "$dir/from_erl.bin")"

say "2. camlbeam-etf encodes a term; Erlang decodes it and checks the bytes are its own:"
term='{reply, [1, 2.5, -99999999999999999999], <<"ocaml">>, #{ok => [a | b]}}'
echo "   camlbeam-etf encode '$term'"
"$tool" encode "$term" -o "$dir/from_cpp.bin"
erl_eval '[Dir] = init:get_plain_arguments(),
  {ok, B} = file:read_file(Dir ++ "/from_cpp.bin"),
  T = binary_to_term(B),
  io:format("   erl> binary_to_term(Bytes) = ~p~n   erl> term_to_binary(T) =:= Bytes -> ~p~n",
            [T, term_to_binary(T) =:= B])'

say "3. A hostile stream (a list claiming 4 billion elements) is refused, not allocated:"
printf '\x83\x6c\xff\xff\xff\xff\x6a' > "$dir/hostile.bin"
"$tool" print "$dir/hostile.bin" 2>&1 | sed 's/^/   /' || true

say "4. A compression bomb (declares 1 GiB inflated) is refused before inflating:"
printf '\x83\x50\x40\x00\x00\x00\x78\x9c' > "$dir/bomb.bin"
"$tool" print "$dir/bomb.bin" 2>&1 | sed 's/^/   /' || true
echo
