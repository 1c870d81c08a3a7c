#!/usr/bin/env bash
# The commands of docs/plugins.md, and the OCaml of docs/term-mapping.md, run for real
# against the build tree's packages.
# Usage: plugin_docs_test.sh OCAMLPATH_DIR CAMLBEAM_CALL_DIR
set -euo pipefail
export OCAMLPATH=$1${OCAMLPATH:+:$OCAMLPATH}
bin=$2
docs=$(cd "$(dirname "$0")/../../../docs" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

failures=0
check() {  # name expected command...
  local name=$1 expected=$2
  shift 2
  local got
  got=$("$@" 2>&1) || true
  if [[ $got == "$expected" ]]; then
    echo "ok: $name"
  else
    echo "FAILED: $name"
    echo "  expected: $expected"
    echo "  got:      $got"
    failures=$((failures + 1))
  fi
}

# 1. The packages are visible.
check "ocamlfind sees camlbeam" "camlbeam camlbeam.host camlbeam.nif camlbeam.port" \
  bash -c "ocamlfind list 2>/dev/null | awk '/^camlbeam/ {print \$1}' | xargs"

# 2. The plugin of the documentation, compiled as documented.
cat > mathlib.ml <<'ML'
let rec fib n = if n < 2 then n else fib (n - 1) + fib (n - 2)

let () =
  Erl.export "fib" Erl.Conv.(int @-> returning int) fib;
  Erl.export "mean" Erl.Conv.(list float @-> returning float) (fun xs ->
      List.fold_left ( +. ) 0. xs /. float_of_int (List.length xs))
ML
ocamlfind ocamlopt -shared -package camlbeam mathlib.ml -o mathlib.cmxs
ocamlfind ocamlc -a -package camlbeam mathlib.ml -o mathlib.cma

# 3. Tried without Erlang.
check "native fib" "{ok,832040}" "$bin/camlbeam-call" -l ./mathlib.cmxs fib '[30]'
check "mathlib:fib" "{ok,832040}" "$bin/camlbeam-call" -l ./mathlib.cmxs mathlib:fib '[30]'
check "no such module" "{error,{undef,{stats,fib}}}" "$bin/camlbeam-call" -l ./mathlib.cmxs stats:fib '[30]'
check "bytecode mean" "{ok,1.5}" "$bin/camlbeam-call-bytecode" -l ./mathlib.cma mean '[[1.0, 2.0]]'
check "badarg" '{error,{badarg,#{argument => 1,expected => <<"ocaml:int63()">>,got => a}}}' \
  "$bin/camlbeam-call" -l ./mathlib.cmxs fib '[a]'

# A plugin that links camlbeam in (-linkpkg) does not load.
mkdir linked && cp mathlib.ml linked/ && (cd linked && ocamlfind ocamlopt -shared -linkpkg -package camlbeam mathlib.ml -o mathlib.cmxs)
check "-linkpkg is refused" "already_loaded" \
  bash -c "'$bin/camlbeam-call' -l linked/mathlib.cmxs fib '[1]' 2>&1 | sed -n 's/.*camlbeam-call: \([a-z_]*\):.*/\1/p'"

# Another library: loaded first, or refused.
cat > words.ml <<'ML'
let () = Erl.export "words" Erl.Conv.(string @-> returning (list string)) (Str.split (Str.regexp "[ \t]+"))
ML
ocamlfind ocamlopt -shared -package camlbeam,str words.ml -o words.cmxs
ocamlfind ocamlc -a -package camlbeam,str words.ml -o words.cma
str=$(ocamlfind query str)
check "str first (native)" '{ok,[<<"a">>,<<"b">>]}' "$bin/camlbeam-call" -l "$str/str.cmxs" -l words.cmxs words '[<<"a b">>]'
check "str first (bytecode)" '{ok,[<<"a">>,<<"b">>]}' "$bin/camlbeam-call-bytecode" -l "$str/str.cma" -l words.cma words '[<<"a b">>]'
check "without str" "incompatible" \
  bash -c "'$bin/camlbeam-call' -l words.cmxs words '[<<\"a\">>]' 2>&1 | sed -n 's/.*camlbeam-call: \([a-z_]*\):.*/\1/p'"

# A library left out compiles (OCaml 4.13 keeps str's interface in the standard library's
# directory) and is refused at load, by a message that names the module.
ocamlfind ocamlopt -shared -package camlbeam words.ml -o words_unnamed.cmxs
ocamlfind ocamlc -a -package camlbeam words.ml -o words_unnamed.cma
names_module='s/.*: incompatible: .*The plugin uses the module \([A-Za-z_]*\), which this worker does not carry.*/\1/p'
check "str left out (native)" "Str" \
  bash -c "'$bin/camlbeam-call' -l words_unnamed.cmxs words '[]' 2>&1 | sed -n '$names_module'"
check "str left out (bytecode)" "Str" \
  bash -c "'$bin/camlbeam-call-bytecode' -l words_unnamed.cma words '[]' 2>&1 | sed -n '$names_module'"

# unix: every worker carries it, and camlbeam-call as well.
cat > clock.ml <<'ML'
let () = Erl.export "has_pid" Erl.Conv.(nullary bool) (fun () -> Unix.getpid () > 0)
ML
ocamlfind ocamlopt -shared -package camlbeam,unix clock.ml -o clock.cmxs
ocamlfind ocamlc -a -package camlbeam,unix clock.ml -o clock.cma
check "unix (native)" "{ok,true}" "$bin/camlbeam-call" -l ./clock.cmxs has_pid
check "unix (bytecode)" "{ok,true}" "$bin/camlbeam-call-bytecode" -l ./clock.cma has_pid

# From a dune project.
mkdir project && cp mathlib.ml project/ && cd project
printf '(lang dune 2.9)\n' > dune-project
printf '(library\n (name mathlib)\n (libraries camlbeam))\n' > dune
dune build ./mathlib.cmxs ./mathlib.cma 2>&1
check "dune-built .cmxs" "{ok,55}" "$bin/camlbeam-call" -l _build/default/mathlib.cmxs fib '[10]'
check "dune-built .cma" "{ok,55}" "$bin/camlbeam-call-bytecode" -l _build/default/mathlib.cma fib '[10]'

# docs/term-mapping.md's converter of its own, compiled as the page shows it (the ocaml
# block that calls Conv.make), then used by an export.
cd "$work"
awk '/^```ocaml$/ {block = ""; inside = 1; next}
     /^```$/ && inside {if (block ~ /Conv\.make ~expected/) printf "%s", block; inside = 0; next}
     inside {block = block $0 "\n"}' "$docs/term-mapping.md" > converter.ml
echo 'let () = Erl.export "echo_error" Conv.(parse_error @-> returning parse_error) Fun.id' >> converter.ml
check "term-mapping.md's Conv.make compiles" "" ocamlfind ocamlopt -shared -package camlbeam converter.ml -o converter.cmxs
check "term-mapping.md's converter decodes" '{ok,{bad_header,<<"Host x">>}}' \
  "$bin/camlbeam-call" -l ./converter.cmxs echo_error '[{bad_header, <<"Host x">>}]'
check "term-mapping.md's converter refuses" \
  '{error,{badarg,#{argument => 1,expected => <<"{bad_request_line | bad_header, binary()} | incomplete">>,got => nope}}}' \
  "$bin/camlbeam-call" -l ./converter.cmxs echo_error '[nope]'

if [[ $failures -gt 0 ]]; then
  echo "docs/plugins.md, docs/term-mapping.md: $failures commands did not do what the documentation says"
  exit 1
fi
echo "docs/plugins.md, docs/term-mapping.md: every documented command works"
