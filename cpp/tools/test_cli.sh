#!/usr/bin/env bash
# The camlbeam-etf tool end to end, with the real erl as the other side.
set -euo pipefail
tool=$1
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
fails=0
check() {  # name expected actual
  if [[ "$2" == "$3" ]]; then echo "ok   $1"; else echo "FAIL $1: expected [$2] got [$3]"; fails=$((fails + 1)); fi
}

# encode → erl reads it back
"$tool" encode '{ok, [1,2|x], #{a => <<"b">>, 1.5 => -12345678901234567890}, "str", <<1,2:3>>}' -o "$dir/t.bin"
got=$(erl -noshell -eval '{ok, B} = file:read_file(hd(init:get_plain_arguments())), io:format("~w", [binary_to_term(B)]), halt().' -extra "$dir/t.bin")
check "erl decodes our encoding" '{ok,[1,2|x],#{1.5 => -12345678901234567890,a => <<98>>},[115,116,114],<<1,2:3>>}' "$got"

# erl writes → we print
erl -noshell -eval '{ok, _} = {ok, file:write_file(hd(init:get_plain_arguments()), term_to_binary({self(), [a, "b", <<"c">>], 3.0e100}))}, halt().' -extra "$dir/e.bin"
out=$("$tool" print "$dir/e.bin")
check "print erl's bytes" "{#Pid<nonode@nohost.0.0.0>,[a,\"b\",<<\"c\">>],3.0e100}" "$(echo "$out" | sed -E 's/#Pid<nonode@nohost\.[0-9]+\./#Pid<nonode@nohost.0./')"

# identical bytes to term_to_binary, both minor versions and compressed
term="[{caf, 'ünï'}, fun lists:seq/2, 1.5, <<\"bin\">>, \"text\", 70000]"
for args in "" "--minor-version 2" "--compress 6"; do
  # shellcheck disable=SC2086
  "$tool" encode $args "$term" -o "$dir/m.bin"
  case "$args" in
    "--minor-version 2") opts="[{minor_version,2}]" ;;
    "--compress 6") opts="[compressed]" ;;
    *) opts="[]" ;;
  esac
  same=$(erl -noshell -eval "{ok, B} = file:read_file(\"$dir/m.bin\"), io:format(\"~w\", [B =:= term_to_binary(binary_to_term(B), $opts)]), halt().")
  check "byte-identical with term_to_binary $opts" "true" "$same"
done

# bad input: clear message, exit 1, no crash
printf '\x83\x6c\xff\xff\xff\xff\x6a' > "$dir/bad.bin"
set +e
msg=$("$tool" print "$dir/bad.bin" 2>&1); rc=$?
set -e
check "hostile length exits 1" "1" "$rc"
check "hostile length message" "camlbeam-etf: cannot decode: length_exceeds_input at byte 2 (tag 108): a declared count or length needs at least 4294967296 bytes, more than are left" "$msg"
set +e
msg=$(printf '' | "$tool" print - 2>&1); rc=$?
check "empty input exits 1" "1" "$rc"
msg=$("$tool" encode '{unclosed' 2>&1); rc=$?
set -e
check "parse error exits 1" "1" "$rc"
[[ "$msg" == *"cannot parse"* ]] && echo "ok   parse error says so" || { echo "FAIL parse message: $msg"; fails=$((fails + 1)); }

# round trip through the tool itself
"$tool" encode '#{k => [1.0, -0.0, 16#FFFFFFFFFFFFFFFFFF]}' | "$tool" print - > "$dir/rt.txt"
check "encode | print" '#{k => [1.0,-0.0,4722366482869645213695]}' "$(cat "$dir/rt.txt")"

[[ $fails -eq 0 ]] || { echo "$fails check(s) failed"; exit 1; }
