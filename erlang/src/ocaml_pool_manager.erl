%% @doc The memory of a pool: its options, the plugins every worker loads
%% (those of the options, then each one {@link ocaml:load/2} added), and the
%% workers that are up.
%%
%% A starting worker joins here and gets its set-up, plugins included;
%% `ocaml:load' is sent to every worker that joined. Both go through this
%% process's mailbox, so a worker starting while a plugin loads either gets
%% it in its set-up or gets the load, never neither. The plugin list is also
%% saved in the registry, so that a restarted manager resumes with it.
%%
%% Also watches the owner of a pool made by {@link ocaml:start_link/1}, and
%% stops normally when the owner dies: the pool's supervisor shuts the pool
%% down with it (this is its significant child).
-module(ocaml_pool_manager).
-behaviour(gen_server).

-export([start_link/2, join/2, load/2]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).
-export_type([worker_setup/0]).

%% What a worker needs to start.
-type worker_setup() :: #{
    executable := file:filename_all(),
    flavour := ocaml_options:flavour() | any,
    plugins := [file:filename_all()],
    start_timeout := timeout(),
    max_queue := pos_integer(),
    erl_call := ocaml_options:erl_call_policy()
}.

-type load_error() :: {load_failed, atom(), binary()}
                    | {worker_crashed, term()}
                    | {bad_reply, binary()}
                    | timeout.

%% A load in progress: the workers it waits for, the first error it got.
-record(load, {
    from :: gen_server:from(),
    waiting :: #{Alias :: reference() => pid()},
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
    answers = #{} :: #{Alias :: reference() => LoadId :: reference()}
}).

%%% API

-spec start_link(Pool :: pid(), ocaml_pool:config()) -> {ok, pid()} | ignore | {error, term()}.
start_link(Pool, Config) ->
    gen_server:start_link(?MODULE, {Pool, Config}, []).

%% @doc Called by a starting worker: makes it a member of the pool, which
%% from now on gets every load, and returns its set-up.
-spec join(Manager :: pid(), WorkerId :: pos_integer()) -> {ok, worker_setup()}.
join(Manager, WorkerId) ->
    gen_server:call(Manager, {join, WorkerId}).

%% @doc Loads a plugin into every worker of the pool, and into every worker
%% started later. Answers once every worker has: `ok', or the first error
%% (the plugin is then not loaded by later workers).
-spec load(Manager :: pid(), file:filename_all()) -> ok | {error, load_error()}.
load(Manager, Path) ->
    gen_server:call(Manager, {load, Path}, infinity).

%%% gen_server callbacks

-spec init({pid(), ocaml_pool:config()}) -> {ok, #state{}}.
init({Pool, #{plugins := Plugins0, owner := Owner} = Config}) ->
    Plugins = camlbeam_registry:register_pool(Pool, self(), [filename:absname(P) || P <- Plugins0]),
    OwnerMonitor = case Owner of
                       none -> none;
                       Pid -> erlang:monitor(process, Pid)
                   end,
    {ok, #state{pool = Pool, config = Config, owner = OwnerMonitor,
                plugins = [{P, loaded} || P <- Plugins]}}.

-spec handle_call(term(), gen_server:from(), #state{}) ->
    {reply, term(), #state{}} | {noreply, #state{}}.
handle_call({join, _WorkerId}, {Worker, _}, #state{members = Members} = State) ->
    NewMembers = case Members of
                     #{Worker := _} -> Members;
                     #{} -> Members#{Worker => erlang:monitor(process, Worker)}
                 end,
    {reply, {ok, setup(State)}, State#state{members = NewMembers}};
handle_call({load, Path0}, From, #state{members = Members} = State) ->
    Path = filename:absname(Path0),
    LoadId = make_ref(),
    Waiting = maps:from_list([{send_load(Worker, Path), Worker} || Worker <- maps:keys(Members)]),
    Load = #load{from = From, waiting = Waiting, timer = start_timer(State, LoadId)},
    Answers = maps:merge(State#state.answers, maps:map(fun(_, _) -> LoadId end, Waiting)),
    NewState = State#state{plugins = State#state.plugins ++ [{Path, LoadId}],
                           loads = (State#state.loads)#{LoadId => Load},
                           answers = Answers},
    {noreply, maybe_finish(LoadId, NewState)};
handle_call(Request, _From, State) ->
    {reply, {error, {unknown_request, Request}}, State}.

-spec handle_cast(term(), #state{}) -> {noreply, #state{}}.
handle_cast(_Request, State) ->
    {noreply, State}.

-spec handle_info(term(), #state{}) -> {noreply, #state{}} | {stop, normal, #state{}}.
handle_info({Alias, Payload}, #state{answers = Answers} = State)
  when is_reference(Alias), is_map_key(Alias, Answers) ->
    erlang:demonitor(Alias, [flush]),
    {noreply, answered(Alias, ocaml_port_protocol:decode_load(Payload), State)};
handle_info({'DOWN', Owner, process, _, _}, #state{owner = Owner} = State) ->
    {stop, normal, State};
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
    Setup = maps:with([executable, flavour, start_timeout, max_queue, erl_call], Config),
    Setup#{plugins => [Path || {Path, _} <- Plugins]}.

%% The worker writes the request itself (it owns the port); the answer comes
%% back to the alias like the answer to any call.
-spec send_load(pid(), file:filename_all()) -> reference().
send_load(Worker, Path) ->
    Alias = erlang:monitor(process, Worker, [{alias, demonitor}]),
    ok = ocaml_worker:load(Worker, Alias, Path),
    Alias.

-spec start_timer(#state{}, reference()) -> reference() | none.
start_timer(#state{config = #{start_timeout := infinity}}, _LoadId) ->
    none;
start_timer(#state{config = #{start_timeout := Timeout}}, LoadId) ->
    erlang:start_timer(Timeout, self(), {load, LoadId}).

-spec answered(reference(), ok | {error, load_error()}, #state{}) -> #state{}.
answered(Alias, Result, #state{answers = Answers, loads = Loads} = State) ->
    {LoadId, OtherAnswers} = maps:take(Alias, Answers),
    #load{waiting = Waiting, error = FirstError} = Load = maps:get(LoadId, Loads),
    Error = case {FirstError, Result} of
                {none, {error, Reason}} -> Reason;
                _ -> FirstError
            end,
    NewLoad = Load#load{waiting = maps:remove(Alias, Waiting), error = Error},
    maybe_finish(LoadId, State#state{answers = OtherAnswers, loads = Loads#{LoadId := NewLoad}}).

-spec maybe_finish(reference(), #state{}) -> #state{}.
maybe_finish(LoadId, #state{loads = Loads, plugins = Plugins, pool = Pool} = State) ->
    case maps:get(LoadId, Loads) of
        #load{waiting = Waiting} when map_size(Waiting) > 0 ->
            State;
        #load{from = From, error = Error, timer = Timer} ->
            _ = Timer =:= none orelse erlang:cancel_timer(Timer, [{async, true}, {info, false}]),
            NewPlugins = case Error of
                             none -> [mark_loaded(LoadId, P) || P <- Plugins];
                             _ -> [P || {_, Id} = P <- Plugins, Id =/= LoadId]
                         end,
            ok = camlbeam_registry:set_plugins(Pool, [Path || {Path, loaded} <- NewPlugins]),
            gen_server:reply(From, case Error of none -> ok; _ -> {error, Error} end),
            State#state{plugins = NewPlugins, loads = maps:remove(LoadId, Loads)}
    end.

-spec mark_loaded(reference(), {file:filename_all(), loaded | reference()}) ->
    {file:filename_all(), loaded | reference()}.
mark_loaded(LoadId, {Path, LoadId}) -> {Path, loaded};
mark_loaded(_LoadId, Plugin) -> Plugin.
