#!/usr/bin/env bash
# docs/static-workers.md, run: camlbeam-port-link by hand and from a dune project. Each
# worker made must be a camlbeam port worker (exit 64 when started without its pipes,
# what only camlbeam's main does) carrying the module given.
set -euo pipefail
link=$1
plugin=$2   # an OCaml source exporting functions
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

is_worker() {
  local status=0
  "$1" 2>/dev/null || status=$?
  [[ $status -eq 64 ]] || { echo "FAILED: $1 exited $status, not 64" >&2; return 1; }
  nm "$1" > symbols
  grep -q ' D camlPorttest$' symbols || { echo "FAILED: $1 does not carry the module" >&2; return 1; }
}

cp "$plugin" porttest.ml
"$link" -o by-hand porttest.ml
is_worker ./by-hand
echo "ok: camlbeam-port-link -o WORKER FILE.ml"

mkdir project
cp "$plugin" project/porttest.ml
echo '(lang dune 2.9)' > project/dune-project
cat > project/dune <<'DUNE'
(rule
 (targets porttest-worker)
 (deps porttest.ml)
 (action
  (run camlbeam-port-link -o %{targets} %{deps})))
DUNE
(cd project && PATH="$(dirname "$link"):$PATH" dune build --root . ./porttest-worker 2>&1)
is_worker project/_build/default/porttest-worker
echo "ok: from a dune project"
