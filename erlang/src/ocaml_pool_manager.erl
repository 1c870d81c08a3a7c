%% @doc The memory of a pool: its options, the plugins every worker loads
%% (those of the options, then each one {@link ocaml:load/2} added), and the
%% workers.
%%
%% Each OS process a worker starts joins here first and gets its set-up,
%% plugins included; `ocaml:load' is sent to every worker that joined. Both
%% go through this process's mailbox, so an OS process starting while a
%% plugin loads either gets it in its set-up or gets the load, never neither.
%% The plugin list is also saved in the registry, so that a restarted
%% manager resumes with it.
%%
%% Loading is all or none: OCaml cannot unload a plugin, so when one worker
%% fails to load it (or a worker's load times out), the plugin leaves the
%% list and every worker is restarted without it, each once its calls in
%% flight are answered (the coupling's `recycle/1', {@link ocaml_transport}).
%%
%% The atoms the plugins declare (`Erl.declare_atoms') are created here, when a
%% plugin's load is answered (and a worker's hello, for the code linked into it),
%% at most `max_atoms' of them per pool: a load that would go past it fails with
%% `{load_failed, too_many_atoms, Message}'. A worker that starts again declares
%% the same atoms, which are not counted twice. The names of the modules and
%% functions the plugins export are created and counted the same way.
%%
%% The exports each step reports (hello, each plugin's load) are kept here and
%% in the pool's row of the registry, where `ocaml:exports/1' reads them.
%% A plugin that replaces a module of an earlier one (a new version of it)
%% is logged once, when its exports are first reported.
%%
%% A pool has started when every worker's first OS process has loaded the
%% plugins: {@link await_ready/2} says so, or gives the first reason one
%% could not.
%%
%% A rolling upgrade ({@link upgrade/3}) moves the workers to a new plugin
%% list one at a time. A temporary worker, `pool_size + 1', starts first
%% with the new list; once it serves, each worker in turn is recycled
%% (`recycle/1' of {@link ocaml_transport}: it leaves the registry, its calls in
%% flight are answered, then its next OS process joins here and gets the new
%% list) and awaited; once all have moved, the temporary worker is retired
%% (the coupling's `stop/1') and the new list is the pool's. So at
%% least `pool_size' workers serve throughout. When a new OS process fails
%% to start, the roll stops: the caller gets
%% `{error, {upgrade_failed, WorkerId, Reason}}' at once, the failed worker
%% starts again on the old list, and the workers already moved are moved
%% back, one at a time, the temporary one serving meanwhile. A join answers
%% each worker the list it is on, so a worker that restarts during a roll
%% keeps its list.
%%
%% Also watches the owner of a pool made by {@link ocaml:start_link/1}, and
%% stops normally when the owner dies: the pool's supervisor shuts the pool
%% down with it (this is its significant child).
-module(ocaml_pool_manager).
-behaviour(gen_server).

-export([start_link/2, join/2, started/3, await_ready/2, load/2, declare/3, upgrade/3]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).
-export_type([worker_setup/0, load_error/0, upgrade_error/0]).

-include_lib("kernel/include/logger.hrl").

%% What a worker's OS process needs to start: the pool's options, with the
%% plugins loaded so far.
-type worker_setup() :: ocaml_pool:config().

-type load_error() :: {load_failed, atom(), binary()}
                    | {worker_crashed, term()}
                    | {bad_reply, binary()}
                    | {request_failed, binary()}
                    | timeout.

-type upgrade_error() :: {upgrade_failed, WorkerId :: pos_integer(), Reason :: term()}
                       | upgrade_in_progress
                       | load_in_progress
                       | timeout.

%% A rolling upgrade. Forward: the workers of `todo' move to `new' one at a
%% time. Back (after a failure): the workers moved already return to the
%% pool's list (`old') one at a time.
-record(roll, {
    from :: gen_server:from() | none,
    old :: [file:filename_all()],
    new :: [file:filename_all()],
    direction = forward :: forward | back,
    %% The workers whose next OS process starts with the new list.
    on_new :: [pos_integer()],
    todo :: [pos_integer()],
    %% The worker being moved; joined once its OS process on the list it is
    %% moved to has joined (a start reported before is its previous one's).
    current :: {pos_integer(), joining | joined} | none,
    extra_id :: pos_integer(),
    extra = none :: pid() | none,
    timer :: reference() | none,
    started_at :: integer()
}).

%% A load in progress: the workers it waits for, those that refused the
%% plugin before running any of it, the first error it got.
-record(load, {
    from :: gen_server:from(),
    waiting :: #{Alias :: reference() => pid()},
    untouched = [] :: [pid()],
    error = none :: none | load_error(),
    timer :: reference() | none
}).

-record(state, {
    pool :: pid(),
    config :: ocaml_pool:config(),
    %% The coupling's callback module (ocaml_transport): loads, restarts and
    %% stops of workers go through it.
    transport :: module(),
    owner :: reference() | none,
    %% In load order. A plugin being loaded is in the list already (workers
    %% that join meanwhile load it at start), marked with its load's id; it
    %% leaves the list if the load fails.
    plugins :: [{file:filename_all(), loaded | reference()}],
    members = #{} :: #{pid() => reference()},
    loads = #{} :: #{LoadId :: reference() => #load{}},
    %% Each worker's answer to a load comes to its own alias.
    answers = #{} :: #{Alias :: reference() => LoadId :: reference()},
    %% The outcome of each worker's first OS process, until the pool started.
    first_starts = #{} :: #{pos_integer() => ok | {error, term()}},
    ready_waiters = [] :: [gen_server:from()],
    registry :: reference() | none,
    %% The atoms created for this pool's plugins, counted against max_atoms; in the
    %% registry too, which a restarted manager resumes from.
    atoms = #{} :: #{ocaml_port_protocol:atom_text() => []},
    %% The exports each step of a worker's start reported, as in the registry.
    exports = #{} :: #{hello | file:filename_all() => [ocaml:export()]},
    %% The worker process of each id, as last joined.
    worker_pids = #{} :: #{pos_integer() => pid()},
    roll = none :: #roll{} | none
}).

%%% API

-spec start_link(Pool :: pid(), ocaml_pool:config()) -> {ok, pid()} | ignore | {error, term()}.
start_link(Pool, Config) ->
    gen_server:start_link(?MODULE, {Pool, Config}, []).

%% @doc Called by a worker before each OS process it starts: makes it a
%% member of the pool, which from now on gets every load, and returns the
%% set-up.
-spec join(Manager :: pid(), WorkerId :: pos_integer()) -> {ok, worker_setup()}.
join(Manager, WorkerId) ->
    gen_server:call(Manager, {join, WorkerId}, infinity).

%% @doc Called by a worker when its OS process is ready, or could not start.
-spec started(Manager :: pid(), WorkerId :: pos_integer(), ok | {error, term()}) -> ok.
started(Manager, WorkerId, Result) ->
    gen_server:cast(Manager, {started, WorkerId, Result}).

%% @doc Waits until every worker's first OS process is ready (`ok'), or one
%% could not start (`{error, Reason}', the first such reason), for at most
%% Timeout milliseconds (`{error, {start_timeout, pool}}').
-spec await_ready(Manager :: pid(), timeout()) -> ok | {error, term()}.
await_ready(Manager, Timeout) ->
    try
        gen_server:call(Manager, await_ready, Timeout)
    catch
        exit:{timeout, _} -> {error, {start_timeout, pool}}
    end.

%% @doc Loads a plugin into every worker of the pool, and into every worker
%% started later. Answers once every worker has: `ok', or the first error
%% (the plugin is then not loaded by later workers, and the workers are
%% restarted without it).
-spec load(Manager :: pid(), file:filename_all()) -> ok | {error, load_error()}.
load(Manager, Path) ->
    gen_server:call(Manager, {load, Path}, infinity).

%% @doc Called by a worker whose OS process answered its hello (`hello': the
%% code linked into the worker) or loaded a plugin at start (its path): creates
%% the atoms declared and the names exported that the pool has not, if
%% max_atoms allows, and records the exports.
-spec declare(Manager :: pid(), hello | file:filename_all(), ocaml_port_protocol:declared()) ->
    ok | {error, {load_failed, too_many_atoms, binary()}}.
declare(_Manager, _Declarer, #{atoms := [], exports := []}) ->
    ok;
declare(Manager, Declarer, Declared) ->
    gen_server:call(Manager, {declare, Declarer, Declared}, infinity).

%% @doc Moves every worker of the pool to a new plugin list, one at a time,
%% keeping at least `pool_size' workers serving (see the module's doc). `ok'
%% once every worker runs the new list, which is then the pool's; else the
%% roll stops with the first error, and the pool goes back to its list.
%% `Timeout' bounds the roll: past it, the roll stops as a failure of the
%% worker being moved (`timeout').
-spec upgrade(Manager :: pid(), [file:filename_all()], timeout()) -> ok | {error, upgrade_error()}.
upgrade(Manager, Plugins, Timeout) ->
    CallTimeout = case Timeout of
                      infinity -> infinity;
                      _ -> Timeout + 1000
                  end,
    try
        gen_server:call(Manager, {upgrade, Plugins, Timeout}, CallTimeout)
    catch
        exit:{timeout, _} -> {error, timeout}
    end.

%%% gen_server callbacks

-spec init({pid(), ocaml_pool:config()}) -> {ok, #state{}}.
init({Pool, #{plugins := Plugins0, owner := Owner, transport := Name} = Config}) ->
    {ok, Transport} = ocaml_transport:callback_module(Name),
    Plugins = camlbeam_registry:register_pool(Pool, self(), [filename:absname(P) || P <- Plugins0]),
    OwnerMonitor = case Owner of
                       none -> none;
                       Pid -> erlang:monitor(process, Pid)
                   end,
    {ok, #state{pool = Pool, config = Config, transport = Transport, owner = OwnerMonitor,
                plugins = [{P, loaded} || P <- Plugins],
                exports = camlbeam_registry:reported_exports(Pool),
                atoms = camlbeam_registry:created_atoms(Pool),
                registry = camlbeam_registry:monitor()}}.

-spec handle_call(term(), gen_server:from(), #state{}) ->
    {reply, term(), #state{}} | {noreply, #state{}}.
handle_call({join, WorkerId}, {Worker, _}, #state{members = Members, worker_pids = Pids,
                                                  config = #{pool_size := Size}} = State0) ->
    NewMembers = case Members of
                     #{Worker := _} -> Members;
                     %% The temporary worker of a roll that ended: it is being retired,
                     %% and takes no load.
                     #{} when WorkerId > Size, State0#state.roll =:= none -> Members;
                     #{} -> Members#{Worker => erlang:monitor(process, Worker)}
                 end,
    State = case State0#state.roll of
                #roll{current = {WorkerId, joining}} = Roll ->
                    State0#state{roll = Roll#roll{current = {WorkerId, joined}}};
                _ ->
                    State0
            end,
    {reply, {ok, setup(WorkerId, State)},
     State#state{members = NewMembers, worker_pids = Pids#{WorkerId => Worker}}};
handle_call({declare, Declarer, Declared}, _From, State) ->
    case declared(Declarer, Declared, State) of
        {ok, NewState} -> {reply, ok, NewState};
        {error, _} = Error -> {reply, Error, State}
    end;
handle_call({upgrade, _, _}, _From, #state{roll = #roll{}} = State) ->
    {reply, {error, upgrade_in_progress}, State};
handle_call({upgrade, _, _}, _From, #state{loads = Loads} = State) when map_size(Loads) > 0 ->
    {reply, {error, load_in_progress}, State};
handle_call({upgrade, Plugins, Timeout}, From, State) ->
    {noreply, start_roll([filename:absname(P) || P <- Plugins], Timeout, From, State)};
handle_call({load, _}, _From, #state{roll = #roll{}} = State) ->
    {reply, {error, upgrade_in_progress}, State};
handle_call(await_ready, From, #state{ready_waiters = Waiters} = State) ->
    {noreply, answer_ready(State#state{ready_waiters = [From | Waiters]})};
handle_call({load, Path0}, From, #state{members = Members, plugins = Plugins} = State) ->
    Path = filename:absname(Path0),
    case lists:keymember(Path, 1, Plugins) of
        true ->
            %% Loaded, or being loaded: twice in the set-up, the workers started
            %% later would refuse their own set-up.
            Message = unicode:characters_to_binary([Path, ": already loaded in this pool"]),
            {reply, {error, {load_failed, already_loaded, Message}}, State};
        false ->
            start_load(Path, From, Members, State)
    end;
handle_call(Request, _From, State) ->
    {reply, {error, {unknown_request, Request}}, State}.

-spec start_load(file:filename_all(), gen_server:from(), #{pid() => reference()}, #state{}) ->
    {noreply, #state{}}.
start_load(Path, From, Members, State) ->
    LoadId = make_ref(),
    Waiting = maps:from_list([{send_load(State#state.transport, Worker, Path), Worker}
                              || Worker <- maps:keys(Members)]),
    Load = #load{from = From, waiting = Waiting, timer = start_timer(State, LoadId)},
    Answers = maps:merge(State#state.answers, maps:map(fun(_, _) -> LoadId end, Waiting)),
    NewState = State#state{plugins = State#state.plugins ++ [{Path, LoadId}],
                           loads = (State#state.loads)#{LoadId => Load},
                           answers = Answers},
    {noreply, maybe_finish(LoadId, NewState)}.

-spec handle_cast(term(), #state{}) -> {noreply, #state{}}.
handle_cast({started, Id, Result}, #state{first_starts = Starts, config = #{pool_size := Size}} = State0) ->
    State = roll_started(Id, Result, State0),
    case Starts of
        #{Id := _} -> {noreply, State};
        #{} when Id > Size -> {noreply, State};  % the temporary worker of an upgrade
        #{} -> {noreply, answer_ready(State#state{first_starts = Starts#{Id => Result}})}
    end;
handle_cast(_Request, State) ->
    {noreply, State}.

-spec handle_info(term(), #state{}) -> {noreply, #state{}} | {stop, normal, #state{}}.
handle_info({Alias, Answer}, #state{answers = Answers, transport = Transport} = State)
  when is_reference(Alias), is_map_key(Alias, Answers) ->
    erlang:demonitor(Alias, [flush]),
    {Result, NewState} = loaded(Transport:decode_answer(load, Answer), maps:get(Alias, Answers), State),
    {noreply, answered(Alias, Result, NewState)};
handle_info({'DOWN', Owner, process, _, _}, #state{owner = Owner} = State) ->
    {stop, normal, State};
handle_info({'DOWN', Registry, process, _, _}, #state{registry = Registry} = State) ->
    %% The registry restarted with empty tables: this pool registers again.
    {noreply, reregister(State)};
handle_info({'DOWN', Alias, process, _, Reason}, #state{answers = Answers} = State)
  when is_map_key(Alias, Answers) ->
    {noreply, answered(Alias, {error, {worker_crashed, Reason}}, State)};
handle_info({'DOWN', Monitor, process, Worker, Reason}, #state{members = Members} = State) ->
    case Members of
        #{Worker := Monitor} ->
            {noreply, extra_down(Worker, Reason, State#state{members = maps:remove(Worker, Members)})};
        #{} ->
            {noreply, State}
    end;
handle_info({timeout, Timer, roll}, #state{roll = #roll{timer = Timer, direction = forward,
                                                         current = Current}} = State) ->
    Id = case Current of
             {CurrentId, _} -> CurrentId;
             none -> 0
         end,
    {noreply, roll_failed(Id, timeout, State)};
handle_info({timeout, _Timer, {load, LoadId}}, #state{loads = Loads} = State) ->
    case Loads of
        #{LoadId := #load{waiting = Waiting}} ->
            TimedOut = lists:foldl(
                fun(Alias, S) ->
                    erlang:demonitor(Alias, [flush]),
                    answered(Alias, {error, timeout}, S)
                end,
                State, maps:keys(Waiting)),
            {noreply, TimedOut};
        #{} ->
            {noreply, State}
    end;
handle_info(_Info, State) ->
    {noreply, State}.

%%% Internals

%% The set-up of worker Id: the pool's plugins, or the new ones of a
%% rolling upgrade for a worker moved to them.
-spec setup(pos_integer(), #state{}) -> worker_setup().
setup(Id, #state{config = Config, roll = #roll{on_new = OnNew, new = New}} = State) ->
    case lists:member(Id, OnNew) of
        true -> Config#{plugins := New};
        false -> setup(Id, State#state{roll = none})
    end;
setup(_Id, #state{config = Config, plugins = Plugins}) ->
    Config#{plugins := [Path || {Path, _} <- Plugins]}.

%% Replies to the waiters of await_ready/2 once the outcome is known.
-spec answer_ready(#state{}) -> #state{}.
answer_ready(#state{ready_waiters = []} = State) ->
    State;
answer_ready(#state{first_starts = Starts, ready_waiters = Waiters,
                    config = #{pool_size := PoolSize}} = State) ->
    Failed = [Reason || {error, Reason} <- [maps:get(Id, Starts) || Id <- lists:sort(maps:keys(Starts))]],
    Outcome = case Failed of
                  [First | _] -> {error, First};
                  [] when map_size(Starts) >= PoolSize -> ok;
                  [] -> pending
              end,
    case Outcome of
        pending ->
            State;
        _ ->
            _ = [gen_server:reply(Waiter, Outcome) || Waiter <- Waiters],
            State#state{ready_waiters = []}
    end.

%% A worker's answer to a load: the plugin's atoms are created, and its
%% exports recorded, before the load counts as done in that worker.
-spec loaded({ok, ocaml_port_protocol:declared()} | {error, load_error()}, reference(), #state{}) ->
    {ok | {error, load_error()}, #state{}}.
loaded({ok, Declared}, LoadId, #state{plugins = Plugins} = State) ->
    Path = case lists:keyfind(LoadId, 2, Plugins) of
               {P, LoadId} -> P;
               false -> <<"the plugin">>
           end,
    case declared(Path, Declared, State) of
        {ok, NewState} -> {ok, NewState};
        {error, _} = Error -> {Error, State}
    end;
loaded({error, _} = Error, _LoadId, State) ->
    {Error, State}.

%% What a step reported: its atoms and the names of its exports are created
%% (within max_atoms), then its exports recorded. Exports make atoms of the
%% VM: ocaml:exports/1 lists them as atoms, and an `ambiguous' answer names
%% modules.
-spec declared(hello | file:filename_all(), ocaml_port_protocol:declared(), #state{}) ->
    {ok, #state{}} | {error, {load_failed, too_many_atoms, binary()}}.
declared(Declarer, #{atoms := Atoms, exports := Exports}, State) ->
    Names = lists:append([[Module, Function] || {Module, Function, _, _} <- Exports]),
    case create_atoms(Declarer, Atoms ++ Names, State) of
        {ok, NewState} -> {ok, record_exports(Declarer, Exports, NewState)};
        {error, _} = Error -> Error
    end.

%% Keeps what a step exports, here and in the registry, once per change: every
%% worker reports the same, at every start.
-spec record_exports(hello | file:filename_all(), [ocaml_port_protocol:export_text()], #state{}) -> #state{}.
record_exports(Declarer, Texts, #state{exports = Known} = State) ->
    Exports = lists:sort([{binary_to_existing_atom(Module, utf8), binary_to_existing_atom(Function, utf8),
                           Arity, Signature}
                          || {Module, Function, Arity, Signature} <- Texts]),
    case Known of
        #{Declarer := Exports} ->
            State;
        #{} when Exports =:= [], not is_map_key(Declarer, Known) ->
            State;
        #{} ->
            log_replaced(Declarer, Exports, State),
            save_declared(State#state{exports = Known#{Declarer => Exports}})
    end.

%% A plugin whose module another step of the pool's list filled before it (a
%% new version, loaded under another file name): logged once, as the exports
%% of that step are first recorded.
-spec log_replaced(hello | file:filename_all(), [ocaml:export()], #state{}) -> ok.
log_replaced(Declarer, Exports, #state{pool = Pool, exports = Known} = State) ->
    Steps = [hello | [Path || {Path, _} <- State#state.plugins]],
    Earlier = lists:takewhile(fun(Step) -> Step =/= Declarer end, Steps),
    case is_map_key(Declarer, Known) orelse not lists:member(Declarer, Steps) of
        true ->
            ok;
        false ->
            Modules = lists:usort([element(1, Export) || Export <- Exports]),
            _ = [?LOG_NOTICE("OCaml pool ~p: module ~p of ~ts replaced by that of ~ts",
                             [Pool, Module, describe_step(Step), describe_step(Declarer)])
                 || Step <- Earlier, Module <- Modules,
                    lists:keymember(Module, 1, maps:get(Step, Known, []))],
            ok
    end.

-spec describe_step(hello | file:filename_all()) -> unicode:chardata().
describe_step(hello) -> "the worker executable's own code";
describe_step(Path) -> Path.

%% The exports of steps no longer in the pool's lists (a failed load, the old
%% list of an upgrade) are dropped.
-spec prune_exports(#state{}) -> #state{}.
prune_exports(#state{exports = Known, plugins = Plugins, roll = Roll} = State) ->
    Steps = [hello | [Path || {Path, _} <- Plugins]] ++ case Roll of
                                                           #roll{new = New} -> New;
                                                           none -> []
                                                       end,
    case maps:with(Steps, Known) of
        Known -> State;
        Kept -> save_declared(State#state{exports = Kept})
    end.

%% What a restarted manager resumes from, in the registry: the exports and the atoms
%% created so far.
-spec save_declared(#state{}) -> #state{}.
save_declared(#state{pool = Pool, exports = Exports, atoms = Atoms} = State) ->
    try
        ok = camlbeam_registry:set_exports(Pool, Exports),
        ok = camlbeam_registry:set_created_atoms(Pool, Atoms)
    catch
        %% Restarting: this pool registers again with both once it is back.
        exit:_ -> ok
    end,
    State.

%% Creates the atoms of Texts the pool has not created yet, all of them or,
%% past max_atoms, none. Texts were checked (ocaml_port_protocol:atom_texts/1).
-spec create_atoms(hello | file:filename_all(), [ocaml_port_protocol:atom_text()], #state{}) ->
    {ok, #state{}} | {error, {load_failed, too_many_atoms, binary()}}.
create_atoms(Declarer, Texts, #state{atoms = Created, config = #{max_atoms := Max}} = State) ->
    New = lists:usort([Text || Text <- Texts, not is_map_key(Text, Created)]),
    case map_size(Created) + length(New) of
        Total when Total =< Max ->
            _ = [binary_to_atom(Text, utf8) || Text <- New],
            case New of
                [] -> {ok, State};
                _ -> {ok, save_declared(State#state{atoms = maps:merge(Created, maps:from_keys(New, []))})}
            end;
        _ ->
            Who = case Declarer of
                      hello -> "the worker executable's own code";
                      Path -> Path
                  end,
            Message = unicode:characters_to_binary(
                        io_lib:format("~ts declares (or exports names that make) ~b atom~s the pool has not "
                                      "created; it has created ~b, and its max_atoms is ~b",
                                      [Who, length(New), plural(length(New)), map_size(Created), Max])),
            {error, {load_failed, too_many_atoms, Message}}
    end.

-spec plural(non_neg_integer()) -> string().
plural(1) -> "";
plural(_) -> "s".

%% The worker sends the request itself (a port worker owns its port); the
%% answer comes back to the alias like the answer to any call.
-spec send_load(module(), pid(), file:filename_all()) -> reference().
send_load(Transport, Worker, Path) ->
    Alias = erlang:monitor(process, Worker, [{alias, demonitor}]),
    ok = Transport:load(Worker, Alias, Path),
    Alias.

%% The workers bound their loads by start_timeout themselves; this timer,
%% a second later, catches a worker that never answers at all.
-spec start_timer(#state{}, reference()) -> reference() | none.
start_timer(#state{config = #{start_timeout := infinity}}, _LoadId) ->
    none;
start_timer(#state{config = #{start_timeout := Timeout}}, LoadId) ->
    erlang:start_timer(Timeout + 1000, self(), {load, LoadId}).

-spec answered(reference(), ok | {error, load_error()}, #state{}) -> #state{}.
answered(Alias, Result, #state{answers = Answers, loads = Loads} = State) ->
    {LoadId, OtherAnswers} = maps:take(Alias, Answers),
    #load{waiting = Waiting, untouched = Untouched, error = FirstError} = Load = maps:get(LoadId, Loads),
    Error = case {FirstError, Result} of
                {none, {error, Reason}} -> Reason;
                _ -> FirstError
            end,
    {Worker, StillWaiting} = maps:take(Alias, Waiting),
    NewUntouched = case untouched(Result) of
                       true -> [Worker | Untouched];
                       false -> Untouched
                   end,
    NewLoad = Load#load{waiting = StillWaiting, untouched = NewUntouched, error = Error},
    maybe_finish(LoadId, State#state{answers = OtherAnswers, loads = Loads#{LoadId := NewLoad}}).

%% Dynlink refused the plugin before running any of it: the worker is as it
%% was. After anything else (loaded, an initialiser that raised half way, no
%% answer) it is not known to be.
-spec untouched(ok | {error, load_error()}) -> boolean().
untouched({error, {load_failed, Kind, _}}) ->
    lists:member(Kind, [enoent, not_a_plugin, incompatible, already_loaded]);
untouched(_) ->
    false.

-spec maybe_finish(reference(), #state{}) -> #state{}.
maybe_finish(LoadId, #state{loads = Loads, plugins = Plugins, pool = Pool, members = Members,
                            transport = Transport} = State) ->
    case maps:get(LoadId, Loads) of
        #load{waiting = Waiting} when map_size(Waiting) > 0 ->
            State;
        #load{from = From, error = Error, untouched = Untouched, timer = Timer} ->
            _ = Timer =:= none orelse erlang:cancel_timer(Timer, [{async, true}, {info, false}]),
            NewPlugins = case Error of
                             none ->
                                 [mark_loaded(LoadId, P) || P <- Plugins];
                             _ ->
                                 %% Every worker that may have run some of it (also one
                                 %% that started meanwhile with it in its set-up)
                                 %% starts again without it.
                                 _ = [Transport:recycle(Worker)
                                      || Worker <- maps:keys(Members), not lists:member(Worker, Untouched)],
                                 [P || {_, Id} = P <- Plugins, Id =/= LoadId]
                         end,
            ok = save_plugins(Pool, NewPlugins),
            gen_server:reply(From, case Error of none -> ok; _ -> {error, Error} end),
            prune_exports(State#state{plugins = NewPlugins, loads = maps:remove(LoadId, Loads)})
    end.

-spec save_plugins(pid(), [{file:filename_all(), loaded | reference()}]) -> ok.
save_plugins(Pool, Plugins) ->
    try
        camlbeam_registry:set_plugins(Pool, [Path || {Path, loaded} <- Plugins])
    catch
        %% Restarting: this pool registers again with its plugins once it is back.
        exit:_ -> ok
    end.

-spec mark_loaded(reference(), {file:filename_all(), loaded | reference()}) ->
    {file:filename_all(), loaded | reference()}.
mark_loaded(LoadId, {Path, LoadId}) -> {Path, loaded};
mark_loaded(_LoadId, Plugin) -> Plugin.

%%% Rolling upgrades

-spec start_roll([file:filename_all()], timeout(), gen_server:from(), #state{}) -> #state{}.
start_roll(New, Timeout, From, #state{pool = Pool, plugins = Plugins, transport = Transport,
                                      config = #{pool_size := Size}} = State) ->
    ExtraId = Size + 1,
    Roll = #roll{from = From, old = [Path || {Path, _} <- Plugins], new = New,
                 on_new = [ExtraId], todo = lists:seq(1, Size), current = {ExtraId, joining},
                 extra_id = ExtraId, started_at = erlang:monotonic_time(millisecond),
                 timer = case Timeout of
                             infinity -> none;
                             _ -> erlang:start_timer(Timeout, self(), roll)
                         end},
    Started = try
                  [Sup] = [Pid || {workers, Pid, _, _} <- supervisor:which_children(Pool), is_pid(Pid)],
                  ocaml_worker_sup:start_extra(Sup, Pool, ExtraId, Transport)
              catch
                  Class:Reason -> {error, {Class, Reason}}
              end,
    case Started of
        {ok, Extra} when is_pid(Extra) ->
            State#state{roll = Roll#roll{extra = Extra}};
        Error ->
            roll_failed(ExtraId, {worker_crashed, Error}, State#state{roll = Roll})
    end.

%% A worker's OS process started, or could not: the next step of the roll
%% if it is the one being moved, on the list it is moved to.
-spec roll_started(pos_integer(), ok | {error, term()}, #state{}) -> #state{}.
roll_started(_Id, {error, recycled}, State) ->
    %% Replaced before it was ready: its next OS process is the one awaited.
    State;
roll_started(Id, Result, #state{roll = #roll{current = {Id, joined}, direction = Direction}} = State) ->
    case {Direction, Result} of
        {forward, {error, Reason}} -> roll_failed(Id, Reason, State);
        _ -> roll_next(State)
    end;
roll_started(_Id, _Result, State) ->
    State.

%% Moves the next worker, or ends the roll.
-spec roll_next(#state{}) -> #state{}.
roll_next(#state{roll = #roll{todo = [Id | Todo], on_new = OnNew, direction = Direction} = Roll,
                 worker_pids = Pids, transport = Transport} = State) ->
    NewOnNew = case Direction of
                   forward -> [Id | OnNew];
                   back -> lists:delete(Id, OnNew)
               end,
    NewState = State#state{roll = Roll#roll{todo = Todo, on_new = NewOnNew, current = {Id, joining}}},
    case Pids of
        #{Id := Worker} ->
            ok = Transport:recycle(Worker),
            NewState;
        #{} ->
            %% Never joined yet: it will join with the list it is on.
            roll_next(NewState)
    end;
roll_next(#state{roll = #roll{direction = forward, new = New, from = From, extra = Extra,
                              timer = Timer, started_at = StartedAt, old = Old},
                 pool = Pool} = State) ->
    cancel_roll_timer(Timer),
    Plugins = [{Path, loaded} || Path <- New],
    ok = save_plugins(Pool, Plugins),
    ?LOG_NOTICE("OCaml pool ~p: upgraded from plugins ~tp to ~tp in ~b ms, one worker at a time",
                [Pool, Old, New, erlang:monotonic_time(millisecond) - StartedAt]),
    gen_server:reply(From, ok),
    retire(Extra, prune_exports(State#state{plugins = Plugins, roll = none}));
roll_next(#state{roll = #roll{direction = back, extra = Extra}} = State) ->
    retire(Extra, State#state{roll = none}).

%% The OS process of worker Id could not start on the new list: the caller
%% hears it now; the failed worker starts again on the old list, and the
%% workers moved already go back to it one at a time.
-spec roll_failed(non_neg_integer(), term(), #state{}) -> #state{}.
roll_failed(Id, Reason, #state{pool = Pool, roll = #roll{from = From, on_new = OnNew, extra_id = ExtraId,
                                                          timer = Timer, new = New} = Roll} = State) ->
    cancel_roll_timer(Timer),
    ?LOG_WARNING("OCaml pool ~p: upgrade to plugins ~tp stopped: worker ~b could not start on them (~ts); "
                 "the pool goes back to its plugins",
                 [Pool, New, Id, ocaml:format_error(Reason)]),
    gen_server:reply(From, {error, {upgrade_failed, Id, Reason}}),
    Moved = lists:reverse(OnNew -- [Id, ExtraId]),
    %% Back, in order; the temporary worker serves meanwhile.
    roll_next(State#state{roll = Roll#roll{from = none, direction = back, timer = none, current = none,
                                           on_new = OnNew -- [Id], todo = Moved}}).

%% The temporary worker's process ended before it was retired.
-spec extra_down(pid(), term(), #state{}) -> #state{}.
extra_down(Worker, Reason, #state{roll = #roll{extra = Worker, extra_id = Id, current = Current} = Roll} = State) ->
    NewState = State#state{roll = Roll#roll{extra = none}},
    case {Roll#roll.direction, Current} of
        {forward, {Id, _}} -> roll_failed(Id, {worker_crashed, Reason}, NewState);
        _ -> NewState
    end;
extra_down(_Worker, _Reason, State) ->
    State.

%% The temporary worker goes once it has answered its calls; it is no member
%% any more: a load from now on is not sent to it.
-spec retire(pid() | none, #state{}) -> #state{}.
retire(none, State) ->
    State;
retire(Worker, #state{members = Members, transport = Transport} = State) ->
    ok = Transport:stop(Worker),
    case maps:take(Worker, Members) of
        {Monitor, Rest} ->
            erlang:demonitor(Monitor, [flush]),
            State#state{members = Rest};
        error ->
            State
    end.

-spec cancel_roll_timer(reference() | none) -> ok.
cancel_roll_timer(none) ->
    ok;
cancel_roll_timer(Timer) ->
    _ = erlang:cancel_timer(Timer, [{async, true}, {info, false}]),
    ok.

-spec reregister(#state{}) -> #state{}.
reregister(#state{pool = Pool, plugins = Plugins} = State) ->
    case camlbeam_registry:await() of
        undefined ->
            State#state{registry = none};
        _ ->
            try camlbeam_registry:restore_pool(Pool, self(), [Path || {Path, loaded} <- Plugins],
                                               State#state.exports, State#state.atoms) of
                ok -> State#state{registry = camlbeam_registry:monitor()}
            catch
                exit:_ -> reregister(State)
            end
    end.
