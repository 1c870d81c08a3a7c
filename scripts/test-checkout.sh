#!/usr/bin/env bash
# docs/getting-started.md, section 4, for real: an application that depends on camlbeam
# through a rebar3 checkout of this clone builds offline, and camlbeam's documentation is
# in the beams it gets (rebar3 builds a checkout under _build/default/checkouts, not lib).
# Called by scripts/test-erlang.sh; exit status non-zero if anything differs.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
mkdir -p myapp/src myapp/_checkouts && cd myapp
ln -s "$root/erlang" _checkouts/camlbeam
printf '{deps, [camlbeam]}.\n' > rebar.config
cat > src/myapp.app.src <<'APP'
{application, myapp, [{description, "uses camlbeam"}, {vsn, "0.1.0"}, {registered, []},
                      {applications, [kernel, stdlib, camlbeam]}, {modules, []}]}.
APP
printf -- '-module(myapp).\n' > src/myapp.erl
REBAR_OFFLINE=1 REBAR_COLOR=none rebar3 compile
ERL_LIBS=_build/default/checkouts erl -noshell -eval '
    {ok, Docs} = code:get_doc(ocaml),
    {docs_v1, _, _, _, #{<<"en">> := _}, _, Entries} = Docs,
    [_] = [Doc || {{function, call, 4}, _, _, #{<<"en">> := Doc}, _} <- Entries],
    io:format("ok: camlbeam as a checkout carries its documentation~n"),
    halt().'
