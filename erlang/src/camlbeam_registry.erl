%% @doc Where callers find the workers of a pool.
%%
%% Owns three named ETS tables that outlive every pool: `camlbeam_pools' (one row
%% per pool: its manager, the plugins its workers load and what they export),
%% `camlbeam_pool_names' (one row per function name a pool exports: the modules
%% of the pool that export it, {@link exporters/2}) and `camlbeam_workers' (one
%% row per live worker: its process, its coupling's module and handle, its
%% counter of calls in flight). Writes go through this server, which monitors
%% what each row describes and deletes the row when that process dies; reads
%% are plain ETS lookups by the callers themselves, so the request path never
%% waits on this process.
%%
%% If this server restarts, its tables start empty: every pool manager and
%% every ready worker monitors it and registers again once it is back
%% ({@link await/0}, {@link restore_pool/5}), so pools outlive it, whoever
%% supervises them. Meanwhile a lookup finds nothing (`noproc' for a call),
%% never a `badarg'.
-module(camlbeam_registry).
-behaviour(gen_server).

-include("camlbeam_registry.hrl").

-export([start_link/0]).
-export([register_pool/3, restore_pool/5, set_plugins/2, set_exports/2, set_created_atoms/2, register_worker/2,
         unregister_worker/1]).
-export([pool/1, workers/1, reported_exports/1, created_atoms/1, exports/1, exporters/2, await/0,
         monitor/0]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

-define(POOLS, camlbeam_pools).
-define(WORKERS, camlbeam_workers).
-define(NAMES, camlbeam_pool_names).
%% Each pool's rows of ?WORKERS as one list, {Pool, Workers}: what a caller
%% reads at every call, one lookup instead of a select.
-define(POOL_WORKERS, camlbeam_pool_workers).

-type state() :: #{monitors := #{reference() => {pool | worker, pid()}},
                   watched := #{pid() => reference()}}.

%%% API

-spec start_link() -> {ok, pid()} | ignore | {error, term()}.
start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

%% @doc Records `Pool' and its manager; returns the plugins the pool's workers
%% load. When the pool is already known (its manager restarted), its plugins
%% are kept and `InitialPlugins' ignored.
-spec register_pool(Pool :: pid(), Manager :: pid(), InitialPlugins :: [file:filename_all()]) ->
    [file:filename_all()].
register_pool(Pool, Manager, InitialPlugins) ->
    gen_server:call(?MODULE, {register_pool, Pool, Manager, InitialPlugins}).

%% @doc Registers `Pool' again, all it had at once, after this server restarted
%% with empty tables: its manager, plugins, exports and created atoms. At once,
%% so that a caller finding the pool's row finds its names too
%% ({@link exporters/2}).
-spec restore_pool(Pool :: pid(), Manager :: pid(), [file:filename_all()],
                   #{hello | file:filename_all() => [ocaml:export()]}, #{binary() => []}) -> ok.
restore_pool(Pool, Manager, Plugins, Exports, CreatedAtoms) ->
    gen_server:call(?MODULE, {restore_pool, #camlbeam_pool{pool = Pool, manager = Manager, plugins = Plugins,
                                                           exports = Exports, created_atoms = CreatedAtoms}}).

%% @doc Replaces the plugin list of a registered pool.
-spec set_plugins(Pool :: pid(), [file:filename_all()]) -> ok.
set_plugins(Pool, Plugins) ->
    gen_server:call(?MODULE, {set_plugins, Pool, Plugins}).

%% @doc Replaces the exports a registered pool's workers reported, by the step
%% of their start that reported them (`hello', or a plugin's path).
-spec set_exports(Pool :: pid(), #{hello | file:filename_all() => [ocaml:export()]}) -> ok.
set_exports(Pool, Exports) ->
    gen_server:call(?MODULE, {set_exports, Pool, Exports}).

%% @doc Publishes the calling worker (again: its row is replaced); the row
%% goes when the worker dies or unregisters. `async': a cast, for a worker
%% that serves callers and so must never wait for the registry (it monitors
%% it and publishes again if it restarts). `sync': the row is in when this
%% returns, for a pool's first start, which its starter awaits and after
%% which `ocaml:workers/1' must list every worker.
-spec register_worker(#camlbeam_worker{}, sync | async) -> ok.
register_worker(#camlbeam_worker{pid = Pid} = Worker, async) when Pid =:= self() ->
    gen_server:cast(?MODULE, {register_worker, Worker});
register_worker(#camlbeam_worker{pid = Pid} = Worker, sync) when Pid =:= self() ->
    gen_server:call(?MODULE, {register_worker, Worker}).

%% @doc Withdraws the calling worker's row: callers stop choosing it.
-spec unregister_worker(Key :: {pid(), pos_integer()}) -> ok.
unregister_worker(Key) ->
    gen_server:cast(?MODULE, {unregister_worker, Key, self()}).

%% @doc A monitor of the registry, for a process that must register again if
%% it restarts; `none' if it is not running.
-spec monitor() -> reference() | none.
monitor() ->
    case whereis(?MODULE) of
        undefined -> none;
        Registry -> erlang:monitor(process, Registry)
    end.

%% @doc The registry's pid once it runs, waiting (in steps of 50 ms, up to
%% 5 s) while its supervisor restarts it; `undefined' if it does not come
%% back (camlbeam is stopping).
-spec await() -> pid() | undefined.
await() ->
    await(100).

-spec await(non_neg_integer()) -> pid() | undefined.
await(0) ->
    undefined;
await(Tries) ->
    case whereis(?MODULE) of
        Pid when is_pid(Pid) ->
            Pid;
        undefined ->
            timer:sleep(50),
            await(Tries - 1)
    end.

%% @doc The row of a pool, if it is alive. A row goes when this server handles
%% the pool's 'DOWN', which may come after a caller has seen the pool stop
%% ({@link ocaml:stop/1} returned): a dead pool has no row here either.
-spec pool(pid()) -> {ok, #camlbeam_pool{}} | error.
pool(Pool) ->
    try ets:lookup(?POOLS, Pool) of
        [Row] ->
            case is_process_alive(Pool) of
                true -> {ok, Row};
                false -> error
            end;
        [] ->
            error
    catch
        %% No table: the registry is restarting (or camlbeam is not started).
        error:badarg -> error
    end.

%% @doc Replaces the texts of the atoms a registered pool created, counted
%% against its max_atoms.
-spec set_created_atoms(Pool :: pid(), #{binary() => []}) -> ok.
set_created_atoms(Pool, Texts) ->
    gen_server:call(?MODULE, {set_created_atoms, Pool, Texts}).

%% @doc The texts of the atoms a pool created (`#{}' for a pool not registered).
-spec created_atoms(pid()) -> #{binary() => []}.
created_atoms(Pool) ->
    case ets:lookup(?POOLS, Pool) of
        [#camlbeam_pool{created_atoms = Texts}] -> Texts;
        [] -> #{}
    end.

%% @doc The exports a pool's workers reported, by the step that reported them,
%% as saved (`#{}' for a pool not registered): for its manager, restarted.
-spec reported_exports(pid()) -> #{hello | file:filename_all() => [ocaml:export()]}.
reported_exports(Pool) ->
    try ets:lookup(?POOLS, Pool) of
        [#camlbeam_pool{exports = Exports}] -> Exports;
        [] -> #{}
    catch
        error:badarg -> #{}
    end.

%% @doc What a pool row's workers export, sorted: the exports of the code
%% linked into them, then those of each plugin in load order, a module of a
%% later plugin replacing that module's exports of any earlier one, as it
%% does in the workers (a new version of a plugin). Plugins not in the row's
%% list (a failed load, an upgrade's old list) do not count.
-spec exports(#camlbeam_pool{}) -> [ocaml:export()].
exports(#camlbeam_pool{plugins = Plugins, exports = Reported}) ->
    Modules = lists:foldl(
                fun(Step, Acc) ->
                        maps:merge(Acc, by_module(maps:get(Step, Reported, [])))
                end,
                #{}, [hello | Plugins]),
    lists:sort(lists:append(maps:values(Modules))).

-spec by_module([ocaml:export()]) -> #{module() => [ocaml:export()]}.
by_module(Exports) ->
    maps:groups_from_list(fun(Export) -> element(1, Export) end, Exports).

%% @doc The modules of a registered pool that export a function named
%% `Function' ({@link exports/1} of its row), sorted; `no_pool' when the pool
%% has no row (it stopped, or this server restarted and it has not registered
%% again yet), or is dead and its row not deleted yet (as {@link pool/1}).
%% One ETS lookup on the request path (more only when no module exports the
%% name), no message to this server.
-spec exporters(pid(), atom()) -> [module()] | no_pool.
exporters(Pool, Function) ->
    try ets:lookup(?NAMES, {Pool, Function}) of
        [{_, Modules}] ->
            Modules;
        [] ->
            case ets:member(?POOLS, Pool) andalso is_process_alive(Pool) of
                true ->
                    %% Read again: a pool registering again after a restart of this
                    %% server ({@link restore_pool/5}) has its names indexed before
                    %% its row goes in, so they may have come between the two reads.
                    case ets:lookup(?NAMES, {Pool, Function}) of
                        [{_, Modules}] -> Modules;
                        [] -> []
                    end;
                false ->
                    no_pool
            end
    catch
        error:badarg -> no_pool
    end.

%% @doc The live workers of a pool, by increasing id.
-spec workers(pid()) -> [#camlbeam_worker{}].
workers(Pool) ->
    try ets:lookup(?POOL_WORKERS, Pool) of
        [{_, Workers}] -> Workers;
        [] -> []
    catch
        error:badarg -> []
    end.

%%% gen_server callbacks

-spec init([]) -> {ok, state()}.
init([]) ->
    _ = ets:new(?POOLS, [named_table, set, protected, {keypos, #camlbeam_pool.pool},
                         {read_concurrency, true}]),
    _ = ets:new(?WORKERS, [named_table, ordered_set, protected, {keypos, #camlbeam_worker.key},
                           {read_concurrency, true}]),
    _ = ets:new(?POOL_WORKERS, [named_table, set, protected, {read_concurrency, true}]),
    %% Keyed {Pool, Function}: ordered, so that one pool's names are a range.
    _ = ets:new(?NAMES, [named_table, ordered_set, protected, {read_concurrency, true}]),
    %% Lanes outlive a restart of this server (they are persistent terms): a pool
    %% that ended meanwhile has nobody to forget its lane but this.
    ok = ocaml_nif_transport:drop_dead_lanes(),
    {ok, #{monitors => #{}, watched => #{}}}.

-spec handle_call(term(), gen_server:from(), state()) -> {reply, term(), state()}.
handle_call({register_pool, Pool, Manager, InitialPlugins}, _From, State) ->
    case ets:lookup(?POOLS, Pool) of
        [#camlbeam_pool{plugins = Plugins} = Row] ->
            true = ets:insert(?POOLS, Row#camlbeam_pool{manager = Manager}),
            {reply, Plugins, State};
        [] ->
            true = ets:insert(?POOLS, #camlbeam_pool{pool = Pool, manager = Manager,
                                                     plugins = InitialPlugins}),
            {reply, InitialPlugins, monitor_process(pool, Pool, State)}
    end;
handle_call({restore_pool, #camlbeam_pool{pool = Pool} = Row}, _From, State) ->
    ok = index_names(Row),
    true = ets:insert(?POOLS, Row),
    ok = update_lane(Pool),
    {reply, ok, monitor_process(pool, Pool, State)};
handle_call({set_plugins, Pool, Plugins}, _From, State) ->
    ok = update_exported(Pool, fun(Row) -> Row#camlbeam_pool{plugins = Plugins} end),
    {reply, ok, State};
handle_call({set_exports, Pool, Exports}, _From, State) ->
    ok = update_exported(Pool, fun(Row) -> Row#camlbeam_pool{exports = Exports} end),
    {reply, ok, State};
handle_call({set_created_atoms, Pool, Texts}, _From, State) ->
    _ = ets:update_element(?POOLS, Pool, {#camlbeam_pool.created_atoms, Texts}),
    {reply, ok, State};
handle_call({register_worker, Worker}, _From, State0) ->
    {noreply, State} = handle_cast({register_worker, Worker}, State0),
    {reply, ok, State};
handle_call(Request, _From, State) ->
    {reply, {error, {unknown_request, Request}}, State}.

-spec handle_cast(term(), state()) -> {noreply, state()}.
handle_cast({register_worker, #camlbeam_worker{key = {Pool, _}, pid = Pid} = Worker}, State) ->
    true = ets:insert(?WORKERS, Worker),
    ok = list_workers(Pool),
    ok = update_lane(Pool),
    {noreply, monitor_process(worker, Pid, State)};
handle_cast({unregister_worker, {Pool, _} = Key, Pid}, State) ->
    _ = ets:select_delete(?WORKERS, [{worker_pattern([{#camlbeam_worker.key, Key},
                                                      {#camlbeam_worker.pid, Pid}]), [], [true]}]),
    ok = list_workers(Pool),
    ok = update_lane(Pool),
    {noreply, State};
handle_cast(_Request, State) ->
    {noreply, State}.

-spec handle_info(term(), state()) -> {noreply, state()}.
handle_info({'DOWN', Mref, process, _, _}, #{monitors := Monitors, watched := Watched} = State) ->
    case maps:take(Mref, Monitors) of
        {{pool, Pool}, Rest} ->
            true = ets:delete(?POOLS, Pool),
            _ = ets:select_delete(?NAMES, [{{{Pool, '_'}, '_'}, [], [true]}]),
            _ = ets:select_delete(?WORKERS,
                                  [{worker_pattern([{#camlbeam_worker.key, {Pool, '_'}}]), [], [true]}]),
            true = ets:delete(?POOL_WORKERS, Pool),
            ok = ocaml_nif_transport:drop_lane(Pool),
            {noreply, State#{monitors := Rest, watched := maps:remove(Pool, Watched)}};
        {{worker, Pid}, Rest} ->
            %% Only this process's row: its successor may already have replaced it.
            Pattern = worker_pattern([{#camlbeam_worker.pid, Pid}]),
            Pools = lists:usort([Pool || #camlbeam_worker{key = {Pool, _}} <- ets:match_object(?WORKERS, Pattern)]),
            _ = ets:select_delete(?WORKERS, [{Pattern, [], [true]}]),
            _ = [ok = list_workers(Pool) || Pool <- Pools],
            _ = [ok = update_lane(Pool) || Pool <- Pools],
            {noreply, State#{monitors := Rest, watched := maps:remove(Pid, Watched)}};
        error ->
            {noreply, State}
    end;
handle_info(_Info, State) ->
    {noreply, State}.

%%% Internals

%% A change to what a pool's row exports (its plugins, or the exports reported
%% for them), and its names with it.
-spec update_exported(pid(), fun((#camlbeam_pool{}) -> #camlbeam_pool{})) -> ok.
update_exported(Pool, Change) ->
    case ets:lookup(?POOLS, Pool) of
        [Row] ->
            Changed = Change(Row),
            ok = index_names(Changed),
            true = ets:insert(?POOLS, Changed),
            update_lane(Pool);
        [] ->
            ok
    end.

%% Sets the rows of camlbeam_pool_names to what the pool's row exports. The new
%% rows go in with one insert, before the names that went are deleted: a
%% caller never finds a name missing that the pool exports before and after.
-spec index_names(#camlbeam_pool{}) -> ok.
index_names(#camlbeam_pool{pool = Pool} = Row) ->
    Exporters = maps:groups_from_list(fun({_, Function, _, _}) -> Function end,
                                      fun({Module, _, _, _}) -> Module end, exports(Row)),
    Names = [{{Pool, Function}, lists:usort(Modules)} || {Function, Modules} <- maps:to_list(Exporters)],
    Indexed = ets:select(?NAMES, [{{{Pool, '$1'}, '_'}, [], ['$1']}]),
    true = ets:insert(?NAMES, Names),
    _ = [ets:delete(?NAMES, {Pool, Function}) || Function <- Indexed, not is_map_key(Function, Exporters)],
    ok.

%% Sets the lane of Pool (the nif transport's short way in for its calls,
%% ocaml_nif_transport:call_in_lane/4) to what its rows say now: its workers of
%% that transport and its exports. A pool of another transport has none; nor
%% does one without a row (a worker's registration handled after its pool's
%% DOWN would otherwise make a lane that nothing drops).
-spec update_lane(pid()) -> ok.
update_lane(Pool) ->
    Handles = [Handle || #camlbeam_worker{transport = ocaml_nif_transport, handle = Handle} <- workers(Pool)],
    case ets:lookup(?POOLS, Pool) of
        [Row] when Handles =/= [] -> ocaml_nif_transport:update_lane(Pool, Handles, exports(Row));
        _ -> ocaml_nif_transport:update_lane(Pool, [], [])
    end.

%% One monitor per process, however often it registers.
-spec monitor_process(pool | worker, pid(), state()) -> state().
monitor_process(_Kind, Pid, #{watched := Watched} = State) when is_map_key(Pid, Watched) ->
    State;
monitor_process(Kind, Pid, #{monitors := Monitors, watched := Watched} = State) ->
    Mref = erlang:monitor(process, Pid),
    State#{monitors := Monitors#{Mref => {Kind, Pid}}, watched := Watched#{Pid => Mref}}.

%% A match pattern for worker rows: the given fields, '_' elsewhere. Built as a tuple
%% because '_' is not of the record's field types.
%% Sets ?POOL_WORKERS's list of Pool's workers from ?WORKERS, after a change.
-spec list_workers(pid()) -> ok.
list_workers(Pool) ->
    %% A bound key prefix on an ordered_set: ETS walks only this pool's range.
    case ets:select(?WORKERS, [{worker_pattern([{#camlbeam_worker.key, {Pool, '_'}}]), [], ['$_']}]) of
        [] -> true = ets:delete(?POOL_WORKERS, Pool);
        Workers -> true = ets:insert(?POOL_WORKERS, {Pool, Workers})
    end,
    ok.

-spec worker_pattern([{pos_integer(), term()}]) -> tuple().
worker_pattern(Fields) ->
    erlang:make_tuple(record_info(size, camlbeam_worker), '_', [{1, camlbeam_worker} | Fields]).
