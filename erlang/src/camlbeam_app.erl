%% @doc The camlbeam application: starts {@link camlbeam_sup}, under which every
%% pool of OCaml workers lives. The public API is the module {@link ocaml}.
-module(camlbeam_app).
-behaviour(application).

-export([start/2, stop/1]).

-spec start(application:start_type(), term()) -> {ok, pid()} | {error, term()}.
start(_StartType, _StartArgs) ->
    case camlbeam_sup:start_link() of
        {ok, Pid} -> {ok, Pid};
        {error, _} = Error -> Error;
        %% camlbeam_sup:init/1 never ignores.
        ignore -> {error, ignore}
    end.

-spec stop(term()) -> ok.
stop(_State) ->
    ok.
