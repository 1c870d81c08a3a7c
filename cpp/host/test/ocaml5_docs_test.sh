#!/usr/bin/env bash
# The commands of docs/ocaml5.md, run for real by the 5.3 build (cpp/host/test/CMakeLists.txt):
# a plugin compiled as the page says loads in the 5.3 host; one compiled by Debian's 4.13 is
# refused with the page's words.
# Usage: ocaml5_docs_test.sh REPOSITORY OCAMLPATH_DIR CAMLBEAM_CALL
set -euo pipefail
repository=$1 ocamlpath=$2 call=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
cat > mathlib.ml <<'ML'
let rec fib n = if n < 2 then n else fib (n - 1) + fib (n - 2)
let () = Erl.export "fib" Erl.Conv.(int @-> returning int) fib
ML

failures=0
expect() {  # name expected-substring got
  if [[ $3 == *"$2"* ]]; then echo "ok: $1"; else
    echo "FAILED: $1"; echo "  expected to contain: $2"; echo "  got: $3"; failures=$((failures + 1)); fi
}

# A plugin of Debian's 4.13 (any will do: it is refused before it runs).
mkdir old
echo 'let () = ()' > old/plain.ml
(cd old && env -u OCAMLFIND_CONF -u OCAMLPATH PATH=/usr/bin:/bin ocamlfind ocamlopt -shared plain.ml -o plain.cmxs)

# The page's commands.
(
  eval "$("$repository/scripts/setup-ocaml5.sh" --print-env)"
  export OCAMLPATH=$ocamlpath
  ocamlfind ocamlopt -shared -package camlbeam mathlib.ml -o mathlib.cmxs
)
expect "a plugin compiled as documented runs" "{ok,6765}" "$("$call" -l mathlib.cmxs fib '[20]' 2>&1 || true)"
expect "the 5.3 compiler made it" "Caml1999D035" "$(grep -a -o 'Caml1999D0[0-9][0-9]' mathlib.cmxs | head -1)"
expect "a 4.13 plugin is refused, both named" \
  "plain.cmxs was compiled by OCaml 4.13 (Caml1999D030), and this worker runs OCaml 5.3.0 (Caml1999D035)" \
  "$("$call" -l old/plain.cmxs fib '[20]' 2>&1 || true)"
[[ $failures -eq 0 ]]
