%% @doc What the worker processes of the couplings whose answers bypass them
%% (`ocaml_nif_worker', `ocaml_node_worker') do alike: how the pool reaches
%% them, how they join their pool and its registry, and their restart backoff.
%% @private
-module(ocaml_worker_lib).

-include("camlbeam_registry.hrl").

-export([load/3, recycle/1, retire/1, init/2, publish/2, registry_back/0, restart_delay/2]).

%% @doc Asks a worker to load a plugin; the answer goes to `Alias' as the
%% answer to a call would.
-spec load(Worker :: pid(), Alias :: reference(), file:filename_all()) -> ok.
load(Worker, Alias, Path) ->
    gen_server:cast(Worker, {load, Alias, Path}).

%% @doc Asks a worker to start its OCaml side again with the pool's current
%% plugins once its calls in flight are answered (`ocaml_transport''s recycle/1).
-spec recycle(Worker :: pid()) -> ok.
recycle(Worker) ->
    gen_server:cast(Worker, recycle).

%% @doc Asks a worker to stop once its calls in flight are answered (for at
%% most 30 s): the temporary worker of a rolling upgrade.
-spec retire(Worker :: pid()) -> ok.
retire(Worker) ->
    gen_server:cast(Worker, retire).

%% @doc A worker's first steps in its init/1: it traps exits (its supervisor's
%% shutdown must reach terminate/2), says its pool and id in its log metadata,
%% and finds its pool's manager; `error' when the pool is gone. `Registry': a
%% monitor of the registry, whose restart makes the worker publish itself again.
-spec init(Pool :: pid(), Id :: pos_integer()) -> {ok, Manager :: pid(), Registry :: reference() | none} | error.
init(Pool, Id) ->
    process_flag(trap_exit, true),
    logger:update_process_metadata(#{camlbeam_pool => Pool, camlbeam_worker => Id}),
    case camlbeam_registry:pool(Pool) of
        {ok, #camlbeam_pool{manager = Manager}} -> {ok, Manager, camlbeam_registry:monitor()};
        error -> error
    end.

%% @doc Publishes a worker's row: at its first start the pool's start waits for
%% the row (`sync').
-spec publish(#camlbeam_worker{}, First :: boolean()) -> ok.
publish(Row, First) ->
    camlbeam_registry:register_worker(Row, case First of true -> sync; false -> async end).

%% @doc After the registry went down: a monitor of it once it is back, or
%% `none', and the worker gets `reregister' in 50 ms to look again.
-spec registry_back() -> reference() | none.
registry_back() ->
    case camlbeam_registry:monitor() of
        none ->
            _ = erlang:send_after(50, self(), reregister),
            none;
        Monitor ->
            Monitor
    end.

%% @doc The delay before a start that follows `Failures' failed ones: the
%% pool's restart_backoff, doubled at each failure up to its maximum.
-spec restart_delay(non_neg_integer(), ocaml_options:backoff()) -> pos_integer().
restart_delay(Failures, {First, Max}) ->
    max(1, min(Max, First bsl min(Failures, 20))).
