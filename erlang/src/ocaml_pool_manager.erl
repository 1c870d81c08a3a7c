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
%% flight are answered ({@link ocaml_worker:recycle/1}).
%%
%% The atoms the plugins declare (`Erl.declare_atoms') are created here, when a
%% plugin's load is answered (and a worker's hello, for the code linked into it),
%% at most `max_atoms' of them per pool: a load that would go past it fails with
%% `{load_failed, too_many_atoms, Message}'. A worker that starts again declares
%% the same atoms, which are not counted twice.
%%
%% A pool has started when every worker's first OS process has loaded the
%% plugins: {@link await_ready/2} says so, or gives the first reason one
%% could not.
%%
%% Also watches the owner of a pool made by {@link ocaml:start_link/1}, and
%% stops normally when the owner dies: the pool's supervisor shuts the pool
%% down with it (this is its significant child).
-module(ocaml_pool_manager).
-behaviour(gen_server).

-export([start_link/2, join/2, started/3, await_ready/2, load/2, declare_atoms/3]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).
-export_type([worker_setup/0, load_error/0]).

%% What a worker's OS process needs to start: the pool's options, with the
%% plugins loaded so far.
-type worker_setup() :: ocaml_pool:config().

-type load_error() :: {load_failed, atom(), binary()}
                    | {worker_crashed, term()}
                    | {bad_reply, binary()}
                    | {request_failed, binary()}
                    | timeout.

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
    %% The atoms created for this pool's plugins, counted against max_atoms.
    atoms = #{} :: #{ocaml_port_protocol:atom_text() => []}
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
%% code linked into the worker) or loaded a plugin at start (its path) with
%% atoms declared: creates those the pool has not, if max_atoms allows.
-spec declare_atoms(Manager :: pid(), hello | file:filename_all(), [ocaml_port_protocol:atom_text()]) ->
    ok | {error, {load_failed, too_many_atoms, binary()}}.
declare_atoms(_Manager, _Declarer, []) ->
    ok;
declare_atoms(Manager, Declarer, Texts) ->
    gen_server:call(Manager, {declare_atoms, Declarer, Texts}, infinity).

%%% gen_server callbacks

-spec init({pid(), ocaml_pool:config()}) -> {ok, #state{}}.
init({Pool, #{plugins := Plugins0, owner := Owner} = Config}) ->
    Plugins = camlbeam_registry:register_pool(Pool, self(), [filename:absname(P) || P <- Plugins0]),
    OwnerMonitor = case Owner of
                       none -> none;
                       Pid -> erlang:monitor(process, Pid)
                   end,
    {ok, #state{pool = Pool, config = Config, owner = OwnerMonitor,
                plugins = [{P, loaded} || P <- Plugins],
                registry = camlbeam_registry:monitor()}}.

-spec handle_call(term(), gen_server:from(), #state{}) ->
    {reply, term(), #state{}} | {noreply, #state{}}.
handle_call({join, _WorkerId}, {Worker, _}, #state{members = Members} = State) ->
    NewMembers = case Members of
                     #{Worker := _} -> Members;
                     #{} -> Members#{Worker => erlang:monitor(process, Worker)}
                 end,
    {reply, {ok, setup(State)}, State#state{members = NewMembers}};
handle_call({declare_atoms, Declarer, Texts}, _From, State) ->
    case create_atoms(Declarer, Texts, State) of
        {ok, NewState} -> {reply, ok, NewState};
        {error, _} = Error -> {reply, Error, State}
    end;
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
    Waiting = maps:from_list([{send_load(Worker, Path), Worker} || Worker <- maps:keys(Members)]),
    Load = #load{from = From, waiting = Waiting, timer = start_timer(State, LoadId)},
    Answers = maps:merge(State#state.answers, maps:map(fun(_, _) -> LoadId end, Waiting)),
    NewState = State#state{plugins = State#state.plugins ++ [{Path, LoadId}],
                           loads = (State#state.loads)#{LoadId => Load},
                           answers = Answers},
    {noreply, maybe_finish(LoadId, NewState)}.

-spec handle_cast(term(), #state{}) -> {noreply, #state{}}.
handle_cast({started, Id, Result}, #state{first_starts = Starts} = State) ->
    case Starts of
        #{Id := _} -> {noreply, State};
        #{} -> {noreply, answer_ready(State#state{first_starts = Starts#{Id => Result}})}
    end;
handle_cast(_Request, State) ->
    {noreply, State}.

-spec handle_info(term(), #state{}) -> {noreply, #state{}} | {stop, normal, #state{}}.
handle_info({Alias, Answer}, #state{answers = Answers} = State)
  when is_reference(Alias), is_map_key(Alias, Answers) ->
    erlang:demonitor(Alias, [flush]),
    {Result, NewState} =
        case Answer of
            {worker_crashed, _} = Crashed ->
                {{error, Crashed}, State};
            Payload when is_binary(Payload) ->
                loaded(ocaml_port_protocol:decode_load(Payload), maps:get(Alias, Answers), State)
        end,
    {noreply, answered(Alias, Result, NewState)};
handle_info({'DOWN', Owner, process, _, _}, #state{owner = Owner} = State) ->
    {stop, normal, State};
handle_info({'DOWN', Registry, process, _, _}, #state{registry = Registry} = State) ->
    %% The registry restarted with empty tables: this pool registers again.
    {noreply, reregister(State)};
handle_info({'DOWN', Alias, process, _, Reason}, #state{answers = Answers} = State)
  when is_map_key(Alias, Answers) ->
    {noreply, answered(Alias, {error, {worker_crashed, Reason}}, State)};
handle_info({'DOWN', Monitor, process, Worker, _}, #state{members = Members} = State) ->
    case Members of
        #{Worker := Monitor} -> {noreply, State#state{members = maps:remove(Worker, Members)}};
        #{} -> {noreply, State}
    end;
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

-spec setup(#state{}) -> worker_setup().
setup(#state{config = Config, plugins = Plugins}) ->
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

%% A worker's answer to a load: the plugin's atoms are created before the
%% load counts as done in that worker.
-spec loaded({ok, [ocaml_port_protocol:atom_text()]} | {error, load_error()}, reference(), #state{}) ->
    {ok | {error, load_error()}, #state{}}.
loaded({ok, Texts}, LoadId, #state{plugins = Plugins} = State) ->
    Path = case lists:keyfind(LoadId, 2, Plugins) of
               {P, LoadId} -> P;
               false -> <<"the plugin">>
           end,
    case create_atoms(Path, Texts, State) of
        {ok, NewState} -> {ok, NewState};
        {error, _} = Error -> {Error, State}
    end;
loaded({error, _} = Error, _LoadId, State) ->
    {Error, State}.

%% Creates the atoms of Texts the pool has not created yet, all of them or,
%% past max_atoms, none. Texts were checked (ocaml_port_protocol:atom_texts/1).
-spec create_atoms(hello | file:filename_all(), [ocaml_port_protocol:atom_text()], #state{}) ->
    {ok, #state{}} | {error, {load_failed, too_many_atoms, binary()}}.
create_atoms(Declarer, Texts, #state{atoms = Created, config = #{max_atoms := Max}} = State) ->
    New = lists:usort([Text || Text <- Texts, not is_map_key(Text, Created)]),
    case map_size(Created) + length(New) of
        Total when Total =< Max ->
            _ = [binary_to_atom(Text, utf8) || Text <- New],
            {ok, State#state{atoms = maps:merge(Created, maps:from_list([{Text, []} || Text <- New]))}};
        _ ->
            Who = case Declarer of
                      hello -> "the worker executable's own code";
                      Path -> Path
                  end,
            Message = unicode:characters_to_binary(
                        io_lib:format("~ts declares ~b atom~s the pool has not created; it has created ~b, "
                                      "and its max_atoms is ~b",
                                      [Who, length(New), plural(length(New)), map_size(Created), Max])),
            {error, {load_failed, too_many_atoms, Message}}
    end.

-spec plural(non_neg_integer()) -> string().
plural(1) -> "";
plural(_) -> "s".

%% The worker writes the request itself (it owns the port); the answer comes
%% back to the alias like the answer to any call.
-spec send_load(pid(), file:filename_all()) -> reference().
send_load(Worker, Path) ->
    Alias = erlang:monitor(process, Worker, [{alias, demonitor}]),
    ok = ocaml_worker:load(Worker, Alias, Path),
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
maybe_finish(LoadId, #state{loads = Loads, plugins = Plugins, pool = Pool, members = Members} = State) ->
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
                                 _ = [ocaml_worker:recycle(Worker)
                                      || Worker <- maps:keys(Members), not lists:member(Worker, Untouched)],
                                 [P || {_, Id} = P <- Plugins, Id =/= LoadId]
                         end,
            ok = save_plugins(Pool, NewPlugins),
            gen_server:reply(From, case Error of none -> ok; _ -> {error, Error} end),
            State#state{plugins = NewPlugins, loads = maps:remove(LoadId, Loads)}
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

-spec reregister(#state{}) -> #state{}.
reregister(#state{pool = Pool, plugins = Plugins} = State) ->
    case camlbeam_registry:await() of
        undefined ->
            State#state{registry = none};
        _ ->
            try camlbeam_registry:register_pool(Pool, self(), [Path || {Path, loaded} <- Plugins]) of
                _ -> State#state{registry = camlbeam_registry:monitor()}
            catch
                exit:_ -> reregister(State)
            end
    end.
