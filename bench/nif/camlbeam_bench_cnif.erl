%% The Erlang side of c_nif.cpp (README.md): echo/1 walks its argument and returns an equal
%% copy built by the NIF. load/1 takes the library's path without its extension.
-module(camlbeam_bench_cnif).

-export([load/1, echo/1]).
-nifs([echo/1]).

load(Path) ->
    erlang:load_nif(Path, 0).

echo(_Term) ->
    erlang:nif_error(not_loaded).
