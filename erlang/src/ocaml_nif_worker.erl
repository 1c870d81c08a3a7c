%% @doc One worker of a pool of the `nif' coupling ({@link ocaml_nif_transport}):
%% the process that holds the worker's handle on the VM's OCaml runtime and
%% stands for it.
%%
%% Callers queue their requests on the handle themselves, and the runtime
%% answers each call straight to its caller, which counts it out of the
%% worker's counter ({@link ocaml_nif_transport}). Casts and the loads of
%% plugins are answered here as `{camlbeam_reply, Ref, Answer}', exactly one
%% per request queued (a run, or `{error, timeout}' for one taken back before
%% it ran): this process counts it out and forwards a load's answer to `Ref',
%% its caller's alias. A caller killed while it waits cannot count its call
%% out: the recount every 250 ms against the library's count of the worker's
%% requests does (`ocaml_transport:recount/3'). This process also
%% serves what OCaml asks of Erlang: log lines, sends to pids of other nodes
%% (`Erl.send' to a local pid is the library's `enif_send', under the pool's
%% policy), and says when a request will not stop at its deadline.
%%
%% The runtime cannot crash without the VM, so a worker has no OS process to
%% restart: at start it loads the pool's plugins (a plugin the VM's runtime
%% loaded for another worker or pool answers as it did then), then publishes
%% itself. A recycle takes it out of the registry until its calls in flight
%% are answered, then loads the pool's current plugins again; this process
%% ends only with its pool, or when a rolling upgrade retires it.
-module(ocaml_nif_worker).
-behaviour(gen_server).

-include("camlbeam_registry.hrl").
-include("ocaml_nif_transport.hrl").

-export([start_link/2]).
-export([init/1, handle_continue/2, handle_call/3, handle_cast/2, handle_info/2, terminate/2]).

%% How long a retiring or recycled worker waits for its calls in flight (ms).
-define(DRAIN_LIMIT, 30000).

%% How often the worker sets its counter of calls in flight right (ms).
-define(RECOUNT_INTERVAL, 250).

-record(state, {
    pool :: pid(),
    id :: pos_integer(),
    manager :: pid(),
    setup :: ocaml_pool_manager:worker_setup() | undefined,
    handle :: #ocaml_nif{} | undefined,
    published = false :: boolean(),
    first_start = true :: boolean(),
    failures = 0 :: non_neg_integer(),
    retiring = false :: boolean(),
    %% Out of the registry until its calls in flight are answered, then started again.
    recycling = false :: boolean(),
    drain_until :: integer() | undefined,
    registry :: reference() | none,
    %% The processes running an Erl.call_erlang of this worker's requests.
    erl_calls = #{} :: #{pid() => pos_integer()},
    %% The library's count of requests and the counter at the last recount, if they differed.
    count_seen = none :: ocaml_transport:count_seen(),
    log_window = ocaml_log_window:new() :: ocaml_log_window:window()
}).

%%% API

-spec start_link(Pool :: pid(), Id :: pos_integer()) -> {ok, pid()} | ignore | {error, term()}.
start_link(Pool, Id) ->
    gen_server:start_link(?MODULE, {Pool, Id}, []).

%%% gen_server callbacks

-spec init({pid(), pos_integer()}) -> {ok, #state{}, {continue, start}} | {stop, no_pool}.
init({Pool, Id}) ->
    case ocaml_worker_lib:init(Pool, Id) of
        {ok, Manager, Registry} ->
            {ok, #state{pool = Pool, id = Id, manager = Manager, registry = Registry}, {continue, start}};
        error ->
            {stop, no_pool}
    end.

-spec handle_continue(start, #state{}) -> {noreply, #state{}}.
handle_continue(start, State) ->
    {noreply, start(State)}.

-spec handle_call(term(), gen_server:from(), #state{}) -> {reply, term(), #state{}}.
handle_call(Request, _From, State) ->
    {reply, {error, {unknown_call, Request}}, State}.

-spec handle_cast(term(), #state{}) -> {noreply, #state{}} | {stop, normal, #state{}}.
handle_cast({load, Alias, Path}, #state{handle = #ocaml_nif{} = Handle, setup = Setup} = State) ->
    %% Counted in as a call is, and answered through the same forwarding.
    #ocaml_nif{worker = Worker, in_flight = InFlight} = Handle,
    ok = ocaml_transport:count_in(InFlight),
    case camlbeam_nif:request(Worker, {load, Alias, Path, maps:get(start_timeout, Setup)}, []) of
        ok -> ok;
        closed ->
            ok = ocaml_transport:count_out(InFlight),
            Alias ! {Alias, {worker_crashed, closed}},
            ok
    end,
    {noreply, State};
handle_cast({load, Alias, _Path}, State) ->
    %% Not started: the next start loads the pool's plugins, this one included.
    Alias ! {Alias, {worker_crashed, starting}},
    {noreply, State};
handle_cast(recycle, #state{retiring = true} = State) ->
    {noreply, State};
handle_cast(recycle, #state{recycling = true} = State) ->
    %% Already on its way: its start takes the pool's current set-up.
    {noreply, State};
handle_cast(recycle, State) ->
    %% As ocaml_transport's recycle/1 asks: out of the registry (new callers go to
    %% the other workers) until the calls in flight are answered, then a new start.
    drained(unpublish(State#state{recycling = true, drain_until = now_ms() + ?DRAIN_LIMIT}));
handle_cast(retire, State) ->
    drained(State#state{retiring = true, drain_until = now_ms() + ?DRAIN_LIMIT});
handle_cast(_Request, State) ->
    {noreply, State}.

-spec handle_info(term(), #state{}) -> {noreply, #state{}} | {stop, normal, #state{}}.
handle_info({camlbeam_reply, Ref, Answer}, #state{handle = #ocaml_nif{in_flight = InFlight}} = State) ->
    ok = ocaml_transport:count_out(InFlight),
    case Ref of
        {camlbeam_cast, Fun} ->
            case Answer of
                {ok, _} -> {noreply, State};
                _ -> {noreply, cast_failed(Fun, Answer, State)}
            end;
        _ ->
            Ref ! {Ref, Answer},
            case State#state.retiring orelse State#state.recycling of
                true -> drained(State, false);
                false -> {noreply, State}
            end
    end;
handle_info({camlbeam_cast_unexported, Fun, Error}, State) ->
    %% Never queued (ocaml_nif_transport:send_cast/3), so never counted in.
    {noreply, cast_failed(Fun, Error, State)};
handle_info({camlbeam_send_etf, Pid, Etf}, State) ->
    case ocaml_etf_guard:decode(Etf) of
        {ok, Message} ->
            Pid ! Message,
            {noreply, State};
        {error, Why} ->
            {noreply, log(warning, "OCaml worker: Erl.send to ~p dropped: ~ts", [Pid, Why], State)}
    end;
handle_info({camlbeam_erl_call, Id, Request}, #state{setup = #{policy := #{max_erl_calls := Max} = Policy},
                                                   erl_calls = Calls} = State) ->
    case map_size(Calls) < Max of
        true ->
            %% Run in a process of its own: the Erlang function may take long, or call
            %% back into this pool, while this process must go on forwarding answers.
            Runner = proc_lib:spawn_link(
                       fun() ->
                               Checked = ocaml_port_protocol:erl_call_request(Request),
                               camlbeam_nif:erl_reply(Id, ocaml_policy:run_erl_call(Policy, Checked))
                       end),
            {noreply, State#state{erl_calls = Calls#{Runner => Id}}};
        false ->
            ok = camlbeam_nif:erl_reply(Id, {error, {error, too_many_erl_calls}}),
            {noreply, State}
    end;
handle_info({'EXIT', Runner, _Reason}, #state{erl_calls = Calls} = State) when is_map_key(Runner, Calls) ->
    {noreply, State#state{erl_calls = maps:remove(Runner, Calls)}};
handle_info({camlbeam_send_refused, Pid}, #state{setup = #{policy := #{send := Send}}} = State) ->
    {noreply, log(warning, "OCaml worker: Erl.send to ~p refused by the pool's policy (send => ~p)", [Pid, Send], State)};
handle_info({camlbeam_log, Level, Text}, State) ->
    {noreply, log(Level, "~ts", [Text], State)};
handle_info({camlbeam_send, Pid, Message}, State) ->
    Pid ! Message,
    {noreply, State};
handle_info({camlbeam_overdue, RunningMs, TimeoutMs}, State) ->
    {noreply, log(error, "OCaml worker: a request still runs ~b ms into its ~b ms deadline and does not stop "
                  "(a loop in C, or signals blocked): every request of the nif transport waits for it",
                  [RunningMs, TimeoutMs], State)};
handle_info({'DOWN', Registry, process, _, _}, #state{registry = Registry} = State) ->
    {noreply, reregister(State)};
handle_info(reregister, #state{registry = none} = State) ->
    {noreply, reregister(State)};
handle_info(recount, #state{handle = #ocaml_nif{}} = State) ->
    {noreply, recount(State)};
handle_info(drain_check, #state{retiring = true} = State) ->
    drained(State);
handle_info(drain_check, #state{recycling = true} = State) ->
    drained(State);
handle_info(retry_start, State) ->
    {noreply, start(State)};
handle_info(_Info, State) ->
    {noreply, State}.

-spec terminate(term(), #state{}) -> ok.
terminate(Reason, #state{handle = #ocaml_nif{worker = Worker}}) ->
    camlbeam_nif:close(Worker, Reason);
terminate(_Reason, _State) ->
    ok.

%%% Start

%% Joins the pool, makes a handle the first time, loads the pool's plugins one
%% after the other, then publishes the worker and reports its start.
-spec start(#state{}) -> #state{}.
start(#state{manager = Manager, id = Id} = State0) ->
    {ok, Setup} = ocaml_pool_manager:join(Manager, Id),
    State = with_handle(State0#state{setup = Setup}),
    #{plugins := Plugins, start_timeout := Timeout} = Setup,
    Deadline = case Timeout of
                   infinity -> infinity;
                   _ -> now_ms() + Timeout
               end,
    case load_all(Plugins, Deadline, State) of
        ok ->
            publish(State),
            report_start(ok, State#state{published = true, failures = 0});
        {error, Reason} ->
            failed_start(Reason, State)
    end.

-spec with_handle(#state{}) -> #state{}.
with_handle(#state{handle = #ocaml_nif{}} = State) ->
    State;
with_handle(#state{pool = Pool, id = Id, setup = #{policy := #{send := Send}, cast_timeout := CastTimeout,
                                                   max_reply_size := MaxReply}} = State) ->
    Worker = camlbeam_nif:new_worker(Id, self(), Send, atom_to_binary(node()), erlang:system_info(creation),
                                     MaxReply),
    {ok, #{ocaml_version := Version}} = camlbeam_nif:runtime_info(),
    _ = erlang:send_after(?RECOUNT_INTERVAL, self(), recount),
    State#state{handle = #ocaml_nif{worker = Worker, pool = Pool, process = self(),
                                    in_flight = ocaml_transport:new_counter(),
                                    give_pids = Send =:= given, cast_timeout = CastTimeout,
                                    ocaml_version = Version}}.

%% The counter of calls in flight set right against the library's count of the
%% worker's requests queued or running (ocaml_transport:recount/3).
-spec recount(#state{}) -> #state{}.
recount(#state{handle = #ocaml_nif{worker = Worker, in_flight = InFlight}, count_seen = Seen} = State) ->
    _ = erlang:send_after(?RECOUNT_INTERVAL, self(), recount),
    State#state{count_seen = ocaml_transport:recount(InFlight, camlbeam_nif:queued(Worker), Seen)}.

-spec load_all([file:filename_all()], integer() | infinity, #state{}) -> ok | {error, term()}.
load_all([], _Deadline, _State) ->
    ok;
load_all([Path | Paths], Deadline, #state{manager = Manager, handle = Handle} = State) ->
    #ocaml_nif{worker = Worker, in_flight = InFlight} = Handle,
    Ref = make_ref(),
    Left = case Deadline of
               infinity -> infinity;
               _ -> max(0, Deadline - now_ms())
           end,
    %% Counted as any request: one that answers after the start gave up on it is
    %% counted out when its answer comes (handle_info/2).
    ok = ocaml_transport:count_in(InFlight),
    case camlbeam_nif:request(Worker, {load, Ref, Path, Left}, []) of
        ok ->
            receive
                {camlbeam_reply, Ref, Answer} ->
                    ok = ocaml_transport:count_out(InFlight),
                    case ocaml_port_protocol:load_answer(Answer) of
                        {ok, Declared} ->
                            case ocaml_pool_manager:declare(Manager, Path, Declared) of
                                ok -> load_all(Paths, Deadline, State);
                                {error, _} = Error -> Error
                            end;
                        {error, timeout} -> {error, {start_timeout, {load, Path}}};
                        {error, _} = Error -> Error
                    end
            after Left ->
                {error, {start_timeout, {load, Path}}}
            end;
        closed ->
            ok = ocaml_transport:count_out(InFlight),
            {error, closed}
    end.

-spec publish(#state{}) -> ok.
publish(#state{published = true}) ->
    ok;
publish(#state{pool = Pool, id = Id, handle = #ocaml_nif{in_flight = InFlight} = Handle,
               setup = #{max_queue := MaxQueue}, first_start = First}) ->
    ocaml_worker_lib:publish(#camlbeam_worker{key = {Pool, Id}, pid = self(), transport = ocaml_nif_transport,
                                              handle = Handle, in_flight = InFlight, max_queue = MaxQueue},
                             First).

-spec report_start(ok | {error, term()}, #state{}) -> #state{}.
report_start(Result, #state{manager = Manager, id = Id} = State) ->
    ok = ocaml_pool_manager:started(Manager, Id, Result),
    State#state{first_start = false}.

%% A start that failed (a plugin that does not load) is reported, and tried
%% again after the pool's restart_backoff, as a port worker's would be.
-spec failed_start(term(), #state{}) -> #state{}.
failed_start(Reason, #state{failures = Failures, setup = #{restart_backoff := Backoff}} = State) ->
    erlang:send_after(ocaml_worker_lib:restart_delay(Failures, Backoff), self(), retry_start),
    report_start({error, Reason}, State#state{failures = Failures + 1}).

%% The registry restarted with empty tables: a published worker registers
%% again once it is back (looked for every 50 ms).
-spec reregister(#state{}) -> #state{}.
reregister(#state{published = Published} = State) ->
    case ocaml_worker_lib:registry_back() of
        none ->
            State#state{registry = none};
        Monitor ->
            NewState = State#state{registry = Monitor},
            _ = Published andalso publish(NewState#state{published = false, first_start = false}),
            NewState
    end.

%%% Retiring

%% A retiring worker stops, a recycled one starts again, once its calls in
%% flight are answered (or after ?DRAIN_LIMIT). Checked at each answer, and
%% every 100 ms from the start of the drain (`Timer': this check arms the next).
-spec drained(#state{}) -> {noreply, #state{}} | {stop, normal, #state{}}.
drained(State) ->
    drained(State, true).

-spec drained(#state{}, boolean()) -> {noreply, #state{}} | {stop, normal, #state{}}.
drained(#state{handle = Handle, drain_until = Until} = State, Timer) ->
    InFlight = case Handle of
                   #ocaml_nif{in_flight = Counter} -> ocaml_transport:in_flight(Counter);
                   undefined -> 0
               end,
    case InFlight =< 0 orelse now_ms() >= Until of
        true when State#state.retiring ->
            {stop, normal, unpublish(State)};
        true ->
            {noreply, start(State#state{recycling = false})};
        false ->
            _ = Timer andalso erlang:send_after(100, self(), drain_check),
            {noreply, State}
    end.

-spec unpublish(#state{}) -> #state{}.
unpublish(#state{published = true, pool = Pool, id = Id} = State) ->
    ok = camlbeam_registry:unregister_worker({Pool, Id}),
    State#state{published = false};
unpublish(State) ->
    State.

%%% Logs

%% Nobody awaits a cast's answer: an error is only logged, as a port worker logs it.
-spec cast_failed(ocaml:fun_name(), term(), #state{}) -> #state{}.
cast_failed(Fun, Answer, State) ->
    log(warning, "OCaml worker: cast ~tp failed: ~tP", [Fun, Answer, 12], State).

%% Logs within the worker's budget (ocaml_log_window).
-spec log(logger:level(), io:format(), [term()], #state{}) -> #state{}.
log(Level, Format, Args, #state{log_window = Window} = State) ->
    State#state{log_window = ocaml_log_window:log(Level, Format, Args, Window)}.

-spec now_ms() -> integer().
now_ms() ->
    erlang:monotonic_time(millisecond).
