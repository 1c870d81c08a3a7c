#!/usr/bin/env bash
# docs/elixir.md, for real: the Mix project of the page, made from its code blocks, depends
# on this clone's erlang/ by path and is built offline with Debian's rebar3 (MIX_REBAR3),
# then runs the page's command against real workers and must print the page's output. In
# that project, `h :ocaml.call` shows the documentation, and options as a keyword list or
# a function name as a string raise an ArgumentError that says what is expected.
# Runs after the Release build (the workers in erlang/priv, build/examples/mathlib); called
# by scripts/test-erlang.sh. Exit status non-zero if anything differs.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
page=$root/docs/elixir.md
plugin=$root/build/examples/mathlib/mathlib.cmxs
for f in "$root/erlang/priv/camlbeam-port" "$plugin"; do
  [[ -e $f ]] || { echo "test-elixir: missing $f: build first (make build)"; exit 1; }
done
command -v mix >/dev/null || { echo "test-elixir: no mix: run scripts/setup.sh (Debian's elixir)"; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
export MIX_REBAR3=$(command -v rebar3) MIX_HOME=$work/.mix HEX_OFFLINE=1 REBAR_OFFLINE=1

failures=0
check() {  # name expected got
  if [[ $3 == "$2" ]]; then
    echo "ok: $1"
  else
    printf 'FAILED: %s\n  expected: %s\n  got:      %s\n' "$1" "$2" "$3"
    failures=$((failures + 1))
  fi
}
contains() {  # name needle haystack
  if [[ $3 == *"$2"* ]]; then
    echo "ok: $1"
  else
    printf 'FAILED: %s\n  expected to contain: %s\n  got: %s\n' "$1" "$2" "$3"
    failures=$((failures + 1))
  fi
}

# The project's files: each elixir block of the page whose first line names a file.
mkdir -p my_app && cd my_app
awk '/^```elixir$/ {inside = 1; file = ""; next}
     /^```$/ && inside {inside = 0; if (file != "") close(file); next}
     inside && file == "" && /^# [a-z_\/]+\.exs?$/ {file = $2; system("mkdir -p \"$(dirname " file ")\"")}
     inside && file != "" {print > file}' "$page"
for f in mix.exs lib/my_app/application.ex lib/my_app.ex; do
  [[ -f $f ]] || { echo "test-elixir: docs/elixir.md has no block for $f"; exit 1; }
done
sed -i "s|/path/to/camlbeam/erlang|$root/erlang|" mix.exs
mkdir -p priv && cp "$plugin" priv/

echo "--- mix compile (camlbeam through rebar3, offline)"
mix compile

# The page's command, and the output it shows after it.
command=$(grep '^mix run -e' "$page")
expected=$(awk 'found && /^```$/ {fences++; if (fences == 3) exit; next}
                found && fences == 2 {print}
                /^mix run -e/ {found = 1; fences = 0}' "$page")
check "the page's mix run" "$expected" "$(eval "$command" 2>&1)"

run() { mix run -e "$1" 2>&1; }
contains "h :ocaml.call shows call/3" "least loaded worker of the pool, and waits up to 5000 ms" \
  "$(run 'require IEx.Helpers; IEx.Helpers.h(:ocaml.call)')"
contains "h :ocaml.call shows call/4" "its answer, whatever the worker does. A call that times out" \
  "$(run 'require IEx.Helpers; IEx.Helpers.h(:ocaml.call)')"
contains "keyword options" "* 1st argument: the options are a map, not a keyword list: %{plugins: [\"priv/mathlib.cmxs\"], pool_size: 2}" \
  "$(run 'try do :ocaml.start_link(plugins: ["mathlib.cmxs"]) rescue e in ArgumentError -> IO.puts(Exception.message(e)) end')"
contains "a string for the function" "* 2nd argument: the name of an OCaml function is an atom, such as :fib, not a string" \
  "$(run 'try do :ocaml.call(:mathlib, "fib", [30]) rescue e in ArgumentError -> IO.puts(Exception.message(e)) end')"

if [[ $failures -gt 0 ]]; then
  echo "docs/elixir.md: $failures checks failed"
  exit 1
fi
echo "docs/elixir.md: the Mix project builds, runs and explains its errors as the page says"
