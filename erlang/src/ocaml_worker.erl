%% @doc One worker of a pool: the process that runs one `camlbeam-port' OS
%% process after another (`cpp/port/README.md').
%%
%% The worker of the `port' coupling ({@link ocaml_port_transport}). Callers
%% write their requests to the current OS process's port themselves
%% ({@link ocaml_port_transport:send_call/5}) and record them in its table of
%% pending requests, counted in its counter of requests in flight
%% ({@link ocaml_transport}); this process reads what the OS process writes
%% back. For a `{reply, Ref}' frame it takes `Ref' out of the table, counts it
%% out, and only then forwards the payload, still encoded, to `Ref' (the
%% caller's alias): only a caller that is still waiting gets an answer, and the
%% worker cannot make answers up for anybody else. A caller killed while it
%% waits leaves its row, which the answer takes: its call stops counting then,
%% as any other's. Every check, this process also compares the counter with its
%% table, and sets it right when they have disagreed the same way at two checks
%% in a row: a caller killed between counting its request and writing its row
%% (or taking its row back and counting it out) left it off. A caller killed
%% between writing its row and writing its request leaves a row no answer will
%% take: before the OS process is judged stalled or overdue, rows whose writer
%% is dead are dropped.
%%
%% `{send, Pid}', `{erl_call, Id}', `{log, Level}' and `{heartbeat, Ms}' frames
%% are served here, under the pool's policy ({@link ocaml_policy}).
%%
%% This process does not die with its OS process. When the OS process exits,
%% breaks the protocol, stops answering (`unresponsive': no frame for
%% `stall_timeout' while requests wait) or overruns its requests' deadlines
%% (`overdue'), this process ends it, answers every request it had in flight
%% `{worker_crashed, Reason}', logs one line, and starts another, at once
%% after a crash that follows a healthy run, after a growing delay when OS
%% processes keep dying young (`restart_backoff'). So a plugin that crashes
%% at every start costs a log line per restart, never the supervisor's
%% restart intensity, and the pool's healthy workers go on serving.
-module(ocaml_worker).
-behaviour(gen_server).

-include_lib("kernel/include/logger.hrl").
-include("camlbeam_registry.hrl").
-include("ocaml_port_transport.hrl").

-export([start_link/2, load/3, recycle/1, retire/1]).
-export([init/1, handle_continue/2, handle_call/3, handle_cast/2, handle_info/2, terminate/2,
         format_status/1]).
-export_type([crash_reason/0]).

%% Why an OS process ended, or did not start: what the calls it had in flight
%% answer as `{worker_crashed, Reason}'.
-type crash_reason() :: {exit_status, non_neg_integer()}
                      | {port_exit, term()}
                      | {malformed_frame, ocaml_port_protocol:malformed()}
                      | {spawn_failed, term()}
                      | {start_timeout, hello | {load, file:filename_all()}}
                      | {flavour_mismatch, Expected :: ocaml_options:flavour(), Got :: ocaml_options:flavour()}
                      | {ocaml_mismatch, Expected :: string() | binary(), Got :: binary()}
                      | {protocol_mismatch, term()}
                      | {bad_hello, term()}
                      | {load_failed, atom(), binary()}
                      | {bad_reply, binary()}
                      | {request_failed, binary()}
                      | unresponsive
                      | flooding
                      | overdue
                      | recycled.

%% A crash of an OS process that ran at least this long (ms) after it was
%% ready is not part of a crash loop: the next one starts at once.
-define(HEALTHY_UPTIME, 10000).
%% How long a worker being recycled waits for its calls in flight (ms).
-define(DRAIN_LIMIT, 30000).
%% The worker interrupts a request at its deadline and exits cancel_grace
%% later; this side ends it this much later still, if it did not.
-define(OVERDUE_SLACK, 1000).
%% Reads of the port's output this process may have waiting: past it, the OS
%% process writes faster than this process can read, and would fill the VM's
%% memory (a port has no flow control): it is ended.
-define(MAX_BACKLOG, 1024).
%% Heartbeats a worker may write a second (it writes two).
-define(HEARTBEAT_BUDGET, 20).
%% Retry of a frame this process could not write because the port was busy.
-define(OUTBOX_RETRY, 10).
%% Refusals of Erl.call_erlang waiting for a busy port past this many are dropped: only
%% a worker writing erl_call frames of its own and not reading gets there.
-define(OUTBOX_LIMIT, 1000).

%% A request in flight, as callers insert it into the pending table.
-type row() :: {reference(), call | load | {cast, ocaml:fun_name()}, WrittenAt :: integer(),
                Deadline :: ocaml_port_protocol:deadline_ms(), Given :: [pid()], Owner :: pid()}.

%% The start-up of an OS process: the request awaited, then the plugins to
%% load, each with the aliases waiting for its answer (ocaml:load/2 during
%% the start).
-type step() :: {hello | {load, file:filename_all()}, [reference()]}.

-record(proc, {
    gen :: pos_integer(),
    port :: port(),
    pending :: ets:tid(),
    given :: ets:tid(),
    %% The rows of pending, as callers route by them: a new counter for each OS
    %% process, so that nothing counted against one outlives it.
    in_flight :: ocaml_transport:counter(),
    %% The table's size and the counter at the last check, if they differed.
    count_seen = none :: ocaml_transport:count_seen(),
    os_pid :: pos_integer() | undefined,
    flavour :: ocaml_options:flavour() | undefined,
    ocaml_version :: binary() | undefined,
    started_at :: integer(),
    ready_at :: integer() | undefined,
    framer :: ocaml_port_protocol:framer(),
    last_frame_at :: integer(),
    last_reply_at :: integer(),
    %% The request of the start-up being awaited, and the steps after it.
    awaiting :: {reference(), step()} | none,
    steps = [] :: [step()],
    erl_calls = #{} :: #{pid() => integer()},
    %% Frames this process writes (loads, refusals) wait here while the port
    %% is busy, in order; one retry timer for them all.
    outbox = [] :: [ocaml_port_protocol:request()],
    flush_timer = false :: boolean(),
    heartbeats = {0, 0} :: {Second :: integer(), Count :: non_neg_integer()}
}).

-record(state, {
    pool :: pid(),
    id :: pos_integer(),
    manager :: pid(),
    setup :: ocaml_pool_manager:worker_setup() | undefined,
    phase :: starting | ready | draining | backoff,
    proc :: #proc{} | none,
    gen = 0 :: non_neg_integer(),
    %% The tables of the last OS process that ended: a caller that chose it
    %% just before may still insert into them and find why it ended there.
    retired = [] :: [ets:tid()],
    %% OS processes in a row that died young.
    failures = 0 :: non_neg_integer(),
    first_start = true :: boolean(),
    drain_until :: integer() | undefined,
    %% Retired ({@link retire/1}): once drained, this process stops instead of
    %% starting another OS process.
    retiring = false :: boolean(),
    %% Loads asked for while no OS process could take them: the next one
    %% loads the plugin at start, and these aliases get that step's answer.
    deferred_loads = [] :: [{file:filename_all(), reference()}],
    registry :: reference() | none,
    log_window = ocaml_log_window:new() :: ocaml_log_window:window()
}).

%%% API

-spec start_link(Pool :: pid(), Id :: pos_integer()) -> {ok, pid()} | ignore | {error, term()}.
start_link(Pool, Id) ->
    gen_server:start_link(?MODULE, {Pool, Id}, []).

%% @doc Asks the worker to load a plugin; the answer goes to `Alias' as the
%% answer to a call would. A worker with no OS process that could load it now
%% answers once its next one has loaded it at start (or could not).
-spec load(Worker :: pid(), Alias :: reference(), file:filename_all()) -> ok.
load(Worker, Alias, Path) ->
    gen_server:cast(Worker, {load, Alias, Path}).

%% @doc Replaces the worker's OS process by a new one with the pool's current
%% plugins, once the calls in flight are answered (for at most 30 s).
-spec recycle(Worker :: pid()) -> ok.
recycle(Worker) ->
    gen_server:cast(Worker, recycle).

%% @doc Stops the worker once the calls in flight on its OS process are
%% answered (for at most 30 s, as {@link recycle/1}), at once if it has none
%% or no OS process ready: the temporary worker of a rolling upgrade
%% ({@link ocaml_pool_manager}). It stops `normal', and is not restarted.
-spec retire(Worker :: pid()) -> ok.
retire(Worker) ->
    gen_server:cast(Worker, retire).

%%% gen_server callbacks

-spec init({pid(), pos_integer()}) -> {ok, #state{}, {continue, spawn}} | {stop, no_pool}.
init({Pool, Id}) ->
    %% Trapping exits: the supervisor's shutdown must reach terminate/2, which
    %% closes the port, and a dying port or erl_call runner must be a message.
    process_flag(trap_exit, true),
    logger:update_process_metadata(#{camlbeam_pool => Pool, camlbeam_worker => Id}),
    case camlbeam_registry:pool(Pool) of
        {ok, #camlbeam_pool{manager = Manager}} ->
            {ok, #state{pool = Pool, id = Id, manager = Manager, phase = backoff, proc = none,
                        registry = camlbeam_registry:monitor()},
             {continue, spawn}};
        error ->
            {stop, no_pool}
    end.

-spec handle_continue(spawn, #state{}) -> {noreply, #state{}}.
handle_continue(spawn, State) ->
    {noreply, spawn_proc(State)}.

-spec handle_call(term(), gen_server:from(), #state{}) -> {reply, term(), #state{}}.
handle_call(Request, _From, State) ->
    {reply, {error, {unknown_request, Request}}, State}.

-spec handle_cast(term(), #state{}) -> {noreply, #state{}} | {stop, normal, #state{}}.
handle_cast({load, Alias, Path}, State) ->
    {noreply, request_load(Alias, Path, State)};
handle_cast(recycle, State) ->
    {noreply, start_recycling(State)};
handle_cast(retire, #state{phase = Phase} = State) when Phase =:= ready; Phase =:= draining ->
    {noreply, start_recycling(State#state{retiring = true})};
handle_cast(retire, State) ->
    %% Starting (no call is sent to an OS process before it is ready) or
    %% between two OS processes: nothing in flight.
    {stop, normal, State};
handle_cast(retired, #state{retiring = true} = State) ->
    {stop, normal, State};
handle_cast(_Request, State) ->
    {noreply, State}.

-spec handle_info(term(), #state{}) -> {noreply, #state{}}.
handle_info({Port, {data, Data}}, #state{proc = #proc{port = Port} = Proc} = State) ->
    Now = now_ms(),
    case {ocaml_port_protocol:frames(Data, Proc#proc.framer, max_reply_size(State)), backlog()} of
        {_, Backlog} when Backlog > ?MAX_BACKLOG ->
            {noreply, end_proc(flooding, State)};
        {{ok, Frames, Framer}, _} ->
            {noreply, serve_frames(Frames, State#state{proc = Proc#proc{framer = Framer,
                                                                      last_frame_at = Now}})};
        {{error, Malformed}, _} ->
            {noreply, end_proc({malformed_frame, Malformed}, State)}
    end;
handle_info({Port, {exit_status, Status}}, #state{proc = #proc{port = Port}} = State) ->
    {noreply, proc_ended({exit_status, Status}, State)};
handle_info({'EXIT', Port, Reason}, #state{proc = #proc{port = Port}} = State) ->
    {noreply, proc_ended({port_exit, Reason}, State)};
handle_info({'EXIT', Runner, Reason}, #state{proc = #proc{erl_calls = Calls} = Proc} = State)
  when is_map_key(Runner, Calls) ->
    {Id, Rest} = maps:take(Runner, Calls),
    NewState = State#state{proc = Proc#proc{erl_calls = Rest}},
    case Reason of
        normal -> {noreply, NewState};
        _ -> {noreply, write_own(ocaml_port_protocol:erl_reply(Id, {error, {exit, Reason}}), NewState)}
    end;
handle_info({timeout, _, {Event, Gen}}, #state{proc = #proc{gen = Gen}} = State) ->
    {noreply, proc_timer(Event, State)};
handle_info({timeout, _, {respawn, Gen}}, #state{gen = Gen, phase = backoff, proc = none} = State) ->
    {noreply, spawn_proc(State)};
handle_info({'DOWN', Registry, process, _, _}, #state{registry = Registry} = State) ->
    {noreply, reregister(State)};
handle_info(reregister, #state{registry = none} = State) ->
    {noreply, reregister(State)};
handle_info(_Info, State) ->
    %% Messages sent to a worker's pid (Erl.self ()) have no way into a port
    %% worker: the protocol has no frame for them. Stale ports and timers too.
    {noreply, State}.

-spec terminate(term(), #state{}) -> ok.
terminate(_Reason, #state{proc = #proc{port = Port}}) ->
    %% The callers monitor this process: they see it go. The keeper ends the
    %% OS process and anything it forked once it sees the port close.
    close(Port);
terminate(_Reason, _State) ->
    ok.

%% A crash report shows the last message and the state: not the megabytes of
%% a read, of a frame being read, or of the frames waiting to be written.
-spec format_status(gen_server:format_status()) -> gen_server:format_status().
format_status(Status) ->
    maps:map(fun(message, {Port, {data, Data}}) when byte_size(Data) > 64 ->
                     {Port, {data, {bytes, byte_size(Data), binary:part(Data, 0, 64)}}};
                (state, #state{proc = #proc{} = Proc} = State) ->
                     State#state{proc = Proc#proc{framer = ocaml_port_protocol:new_framer(), outbox = []}};
                (_, Value) ->
                     Value
             end, Status).

%%% Starting an OS process

-spec spawn_proc(#state{}) -> #state{}.
spawn_proc(#state{manager = Manager, id = Id, gen = Gen0, deferred_loads = Deferred} = State0) ->
    {ok, Setup} = ocaml_pool_manager:join(Manager, Id),
    Gen = Gen0 + 1,
    State = State0#state{setup = Setup, gen = Gen, deferred_loads = []},
    #{executable := Executable, plugins := Plugins, start_timeout := Timeout,
      max_queue_bytes := QueueBytes} = Setup,
    try open_port({spawn_executable, Executable},
                  %% stream: this side cuts the frames, against its own limit.
                  %% parallelism: callers write concurrently; let the VM schedule
                  %% those writes instead of making them contend for the port.
                  %% busy_limits_*: callers write with nosuspend, and a port holding
                  %% that many bytes nobody read answers them overloaded. Both queues:
                  %% the port's own (its default limits, a few kB, make callers that
                  %% write at the same moment see it busy) and the driver's.
                  [stream, binary, nouse_stdio, exit_status, {parallelism, true},
                   {busy_limits_msgq, {QueueBytes div 2, QueueBytes}},
                   {busy_limits_port, {QueueBytes div 2, QueueBytes}},
                   {args, worker_arguments(Setup)}]) of
        Port ->
            Now = now_ms(),
            Hello = make_ref(),
            Proc = #proc{gen = Gen, port = Port, started_at = Now, last_frame_at = Now,
                         last_reply_at = Now, framer = ocaml_port_protocol:new_framer(),
                         pending = ets:new(ocaml_worker_pending, [set, public, {write_concurrency, true}]),
                         given = ets:new(ocaml_worker_given, [bag, public, {write_concurrency, true}]),
                         in_flight = ocaml_transport:new_counter(),
                         awaiting = {Hello, {hello, []}},
                         %% A deferred load whose plugin is not in the set-up failed
                         %% elsewhere meanwhile: its load is over, nobody waits.
                         steps = [{{load, Path}, [Alias || {P, Alias} <- Deferred, P =:= Path]}
                                  || Path <- Plugins]},
            ok = start_request(Port, ocaml_port_protocol:hello(Hello, Id, self())),
            _ = timer(Timeout, start, Gen),
            State#state{phase = starting, proc = Proc}
    catch
        error:Reason ->
            Failure = {spawn_failed, {Reason, Executable}},
            _ = [Alias ! {Alias, {worker_crashed, Failure}} || {_, Alias} <- Deferred],
            start_failed(Failure, State#state{phase = starting})
    end.

-spec worker_arguments(ocaml_pool_manager:worker_setup()) -> [string()].
worker_arguments(#{max_request_size := Request, max_reply_size := Reply, cancel_grace := Grace,
                   max_memory := Memory}) ->
    ["--max-request-size", integer_to_list(Request), "--max-reply-size", integer_to_list(Reply),
     "--cancel-grace", integer_to_list(Grace)]
        ++ case Memory of
               infinity -> [];
               _ -> ["--max-memory", integer_to_list(Memory)]
           end.

%% Whether a worker of OCaml Version serves a pool that asked for Ocaml: the plugins
%% are compiled for it. An executable of the user's own may be of any OCaml.
-spec is_ocaml(ocaml_options:ocaml_version(), binary()) -> boolean().
is_ocaml(default, _Version) -> true;
is_ocaml(Wanted, Version) -> unicode:characters_to_binary(Wanted) =:= Version.

%% The answer to the start-up request awaited: the next step, or ready.
-spec start_step(binary(), #state{}) -> #state{}.
start_step(Payload, #state{proc = #proc{awaiting = {_, {hello, _}}} = Proc,
                           setup = #{flavour := Expected, ocaml := Ocaml}} = State) ->
    case ocaml_port_protocol:decode_hello(Payload) of
        {ok, #{flavour := Flavour}} when Expected =/= any, Expected =/= Flavour ->
            end_proc({flavour_mismatch, Expected, Flavour}, State);
        {ok, #{flavour := Flavour, ocaml_version := Version, os_pid := OsPid, atoms := Atoms,
               exports := Exports}} ->
            case is_ocaml(Ocaml, Version) of
                true ->
                    declared(hello, #{atoms => Atoms, exports => Exports},
                             State#state{proc = Proc#proc{flavour = Flavour, ocaml_version = Version,
                                                          os_pid = OsPid}});
                false ->
                    end_proc({ocaml_mismatch, Ocaml, Version}, State)
            end;
        {error, Reason} ->
            end_proc(Reason, State)
    end;
start_step(Payload, #state{proc = #proc{awaiting = {_, {{load, _} = Step, Waiters}}} = Proc} = State0) ->
    %% Those waiting for this step have their answer: not a second one if the
    %% OS process ends on it.
    _ = [Waiter ! {Waiter, Payload} || Waiter <- Waiters],
    State = State0#state{proc = Proc#proc{awaiting = none}},
    {load, Path} = Step,
    case ocaml_port_protocol:decode_load(Payload) of
        {ok, Declared} -> declared(Path, Declared, State);
        %% The worker interrupted the plugin's initialiser at the deadline.
        {error, timeout} -> end_proc({start_timeout, Step}, State);
        {error, Reason} -> end_proc(Reason, State)
    end.

%% A start-up step is done once the atoms it declared (and the names of its
%% exports) exist: the pool creates them, or refuses them past its max_atoms
%% (the worker then cannot start), and records the exports.
-spec declared(hello | file:filename_all(), ocaml_port_protocol:declared(), #state{}) -> #state{}.
declared(Declarer, Declared, #state{manager = Manager} = State) ->
    case ocaml_pool_manager:declare(Manager, Declarer, Declared) of
        ok -> next_step(State);
        {error, Reason} -> end_proc(Reason, State)
    end.

-spec next_step(#state{}) -> #state{}.
next_step(#state{proc = #proc{steps = []} = Proc} = State) ->
    ready(State#state{proc = Proc#proc{awaiting = none}});
next_step(#state{proc = #proc{steps = [{{load, Path}, _} = Step | Steps], port = Port} = Proc,
                 setup = #{start_timeout := Timeout}} = State) ->
    Ref = make_ref(),
    ok = start_request(Port, ocaml_port_protocol:load(Ref, Path, remaining(Proc, Timeout))),
    State#state{proc = Proc#proc{awaiting = {Ref, Step}, steps = Steps}}.

%% A request of the start-up: nobody else writes to the port yet, so it is never busy.
%% A port already closed is no error here: its exit is on its way to this process.
-spec start_request(port(), ocaml_port_protocol:request()) -> ok.
start_request(Port, Frame) ->
    try erlang:port_command(Port, Frame) of
        true -> ok
    catch
        error:badarg -> ok
    end.

%% What is left of start_timeout for the next plugin.
-spec remaining(#proc{}, timeout()) -> ocaml_port_protocol:deadline_ms().
remaining(_Proc, infinity) -> infinity;
remaining(#proc{started_at = Started}, Timeout) -> max(0, Started + Timeout - now_ms()).

-spec ready(#state{}) -> #state{}.
ready(#state{proc = Proc, setup = Setup, gen = Gen, first_start = First} = State) ->
    NewState = State#state{phase = ready, proc = Proc#proc{ready_at = now_ms()}},
    publish(NewState, case First of true -> sync; false -> async end),
    _ = timer(check_interval(Setup), check, Gen),
    report_start(ok, NewState).

%% The registry's writes are casts once the pool has started: this process,
%% the port's only reader, never waits for it then. If it restarts meanwhile,
%% reregister/1 publishes again. The pool's first start waits for the row.
-spec publish(#state{}, sync | async) -> ok.
publish(#state{pool = Pool, id = Id, setup = Setup,
               proc = #proc{port = Port, pending = Pending, given = Given, in_flight = InFlight,
                            os_pid = OsPid, flavour = Flavour, ocaml_version = Version}}, How) ->
    #{max_queue := MaxQueue, max_request_size := MaxRequest, cast_timeout := CastTimeout} = Setup,
    Handle = #ocaml_port{port = Port, pending = Pending, given = Given, in_flight = InFlight,
                         max_request_size = MaxRequest, cast_timeout = CastTimeout,
                         os_pid = OsPid, flavour = Flavour, ocaml_version = Version},
    camlbeam_registry:register_worker(
      #camlbeam_worker{key = {Pool, Id}, pid = self(), transport = ocaml_port_transport,
                       handle = Handle, in_flight = InFlight, max_queue = MaxQueue}, How).

-spec unpublish(#state{}) -> ok.
unpublish(#state{pool = Pool, id = Id}) ->
    camlbeam_registry:unregister_worker({Pool, Id}).

%% Every start is reported: the first ones make the pool's start, the
%% later ones a rolling upgrade's steps.
-spec report_start(ok | {error, term()}, #state{}) -> #state{}.
report_start(Result, #state{manager = Manager, id = Id} = State) ->
    ok = ocaml_pool_manager:started(Manager, Id, Result),
    State#state{first_start = false}.

%%% Frames from the OS process

-spec serve_frames([binary()], #state{}) -> #state{}.
serve_frames([], State) ->
    State;
serve_frames([Frame | Frames], #state{proc = #proc{gen = Gen}} = State0) ->
    State = case ocaml_port_protocol:parse_frame(Frame) of
                {ok, Envelope, Payload} -> serve(Envelope, Payload, State0);
                {error, Malformed} -> end_proc({malformed_frame, Malformed}, State0)
            end,
    case State of
        #state{proc = #proc{gen = Gen}} -> serve_frames(Frames, State);
        _ -> State  % the OS process ended on that frame: the rest is not its any more
    end.

-spec serve(ocaml_port_protocol:envelope(), binary(), #state{}) -> #state{}.
serve({reply, Ref}, Payload, #state{phase = starting, proc = #proc{awaiting = {Ref, _}}} = State) ->
    start_step(Payload, State);
serve({reply, Ref}, Payload, #state{proc = #proc{pending = Pending, given = Given, in_flight = InFlight,
                                                   last_frame_at = Now} = Proc} = State) ->
    %% The time its bytes were read, for the overdue rule: close enough.
    NewState = State#state{proc = Proc#proc{last_reply_at = Now}},
    %% The row counts the request in flight until its answer is taken here. A
    %% caller that timed out left its row and deactivated its alias, so the
    %% VM drops this answer.
    case ets:take(Pending, Ref) of
        [{Ref, Kind, _, _, Pids, _}] ->
            ok = ocaml_transport:count_out(InFlight),
            case Kind of
                {cast, Fun} ->
                    ungive(Given, Pids, Ref),
                    drained(cast_answered(Fun, Payload, NewState));
                _ ->
                    Ref ! {Ref, Payload},
                    ungive(Given, Pids, Ref),
                    drained(NewState)
            end;
        [] ->
            NewState
    end;
serve({send, Pid}, Payload, State) ->
    case may_send(Pid, State) of
        true ->
            case ocaml_port_protocol:decode_payload(Payload) of
                {ok, Message} ->
                    Pid ! Message,
                    State;
                {error, Why} ->
                    log(warning, "OCaml worker: Erl.send to ~p dropped: ~ts", [Pid, Why], State)
            end;
        false ->
            #{policy := #{send := Send}} = State#state.setup,
            log(warning, "OCaml worker: Erl.send to ~p refused by the pool's policy (send => ~p)",
                [Pid, Send], State)
    end;
serve({erl_call, Id}, Payload, State) ->
    erl_call(Id, Payload, State);
serve({log, Level}, Payload, State) ->
    log(Level, "OCaml worker: ~ts", fun() -> [log_text(Payload)] end, State);
serve({heartbeat, _Elapsed}, _Payload, #state{proc = #proc{heartbeats = {Second, Count}} = Proc} = State) ->
    %% Its arrival is the news (last_frame_at). A worker writes one every
    %% 500 ms of a long request: many more is a worker writing frames of its
    %% own, faster than a heartbeat needs.
    Now = erlang:monotonic_time(second),
    case {Now =:= Second, Count < ?HEARTBEAT_BUDGET} of
        {true, true} -> State#state{proc = Proc#proc{heartbeats = {Second, Count + 1}}};
        {true, false} -> end_proc(flooding, State);
        {false, _} -> State#state{proc = Proc#proc{heartbeats = {Now, 1}}}
    end.

-spec log_text(binary()) -> iodata().
log_text(Payload) ->
    case ocaml_port_protocol:decode_payload(Payload) of
        {ok, Binary} when is_binary(Binary) -> Binary;
        {ok, Term} -> io_lib:format("~tP", [Term, 20]);
        {error, Why} -> ["(an undecodable log line: ", Why, ")"]
    end.

-spec ungive(ets:tid(), [pid()], reference()) -> ok.
ungive(_Given, [], _Ref) -> ok;
ungive(Given, Pids, Ref) -> lists:foreach(fun(Pid) -> ets:delete_object(Given, {Pid, Ref}) end, Pids).

-spec may_send(pid(), #state{}) -> boolean().
may_send(Pid, #state{setup = #{policy := #{send := Send}}, proc = #proc{given = Given}}) ->
    case Send of
        any -> true;
        none -> false;
        given -> ets:member(Given, Pid)
    end.

%% A cast's answer is only looked at when it is not {ok, _}.
-spec cast_answered(ocaml:fun_name(), binary(), #state{}) -> #state{}.
cast_answered(Fun, Payload, State) ->
    case ocaml_port_protocol:is_ok_answer(Payload) of
        true ->
            State;
        false ->
            log(warning, "OCaml worker: cast ~tp failed: ~tP",
                fun() -> [Fun, ocaml_port_protocol:decode_answer(Payload), 12] end, State)
    end.

%%% Erl.call_erlang

-spec erl_call(integer(), binary(), #state{}) -> #state{}.
erl_call(Id, Payload, #state{setup = #{policy := #{max_erl_calls := Max} = Policy},
                             proc = #proc{port = Port, erl_calls = Calls} = Proc} = State) ->
    case map_size(Calls) < Max of
        true ->
            %% Run in a process of its own: the Erlang function may take long, or
            %% call back into this pool, while this process must go on reading.
            Runner = proc_lib:spawn_link(fun() -> run_erl_call(Port, Id, Payload, Policy) end),
            State#state{proc = Proc#proc{erl_calls = Calls#{Runner => Id}}};
        false when length(Proc#proc.outbox) >= ?OUTBOX_LIMIT ->
            State;
        false ->
            write_own(ocaml_port_protocol:erl_reply(Id, {error, {error, too_many_erl_calls}}), State)
    end.

-spec run_erl_call(port(), integer(), binary(), ocaml_policy:policy()) -> ok.
run_erl_call(Port, Id, Payload, Policy) ->
    Result = ocaml_policy:run_erl_call(Policy, ocaml_port_protocol:decode_erl_call(Payload)),
    %% This process may wait for a busy port: only the worker is held up, and
    %% it is waiting for this answer.
    try erlang:port_command(Port, ocaml_port_protocol:erl_reply(Id, Result)) of
        true -> ok
    catch
        error:badarg -> ok  % the OS process is gone
    end.

%%% Loads and recycling

-spec request_load(reference(), file:filename_all(), #state{}) -> #state{}.
request_load(Alias, Path, #state{phase = ready, setup = #{start_timeout := Timeout},
                                 proc = #proc{pending = Pending, in_flight = InFlight}} = State) ->
    ok = ocaml_transport:count_in(InFlight),
    true = ets:insert(Pending, {Alias, load, now_ms(), Timeout, [], self()}),
    write_own(ocaml_port_protocol:load(Alias, Path, Timeout), State);
request_load(Alias, Path, #state{phase = starting, proc = #proc{awaiting = Awaiting, steps = Steps} = Proc} = State) ->
    %% Loaded during this start-up: answered with that step; else it is one
    %% more step.
    Step = {load, Path},
    case Awaiting of
        {Ref, {Step, Waiters}} ->
            State#state{proc = Proc#proc{awaiting = {Ref, {Step, [Alias | Waiters]}}}};
        _ ->
            NewSteps = case lists:keyfind(Step, 1, Steps) of
                           {Step, Waiters} -> lists:keyreplace(Step, 1, Steps, {Step, [Alias | Waiters]});
                           false -> Steps ++ [{Step, [Alias]}]
                       end,
            State#state{proc = Proc#proc{steps = NewSteps}}
    end;
request_load(Alias, Path, #state{deferred_loads = Deferred} = State) ->
    %% No OS process, or one on its way out: the next loads it at start.
    State#state{deferred_loads = Deferred ++ [{Path, Alias}]}.

-spec start_recycling(#state{}) -> #state{}.
start_recycling(#state{phase = ready} = State) ->
    unpublish(State),
    drained(State#state{phase = draining, drain_until = now_ms() + ?DRAIN_LIMIT});
start_recycling(#state{phase = starting} = State) ->
    end_proc(recycled, State);
start_recycling(State) ->
    %% In backoff, or draining already: the next OS process gets the new set-up.
    State.

%% A draining worker restarts once nothing is in flight.
-spec drained(#state{}) -> #state{}.
drained(#state{phase = draining, proc = #proc{pending = Pending}} = State) ->
    case ets:info(Pending, size) of
        0 -> end_proc(recycled, State);
        _ -> State
    end;
drained(State) ->
    State.

%%% Watching the OS process

-spec proc_timer(start | check | flush, #state{}) -> #state{}.
proc_timer(start, #state{phase = starting, proc = #proc{awaiting = {_, {Step, _}}}} = State) ->
    end_proc({start_timeout, Step}, State);
proc_timer(check, #state{phase = Phase, setup = Setup, proc = #proc{gen = Gen} = Proc} = State)
  when Phase =:= ready; Phase =:= draining ->
    NewState = check(State#state{proc = recount(Proc)}),
    case NewState of
        #state{proc = #proc{gen = Gen}} -> _ = timer(check_interval(Setup), check, Gen), NewState;
        _ -> NewState
    end;
proc_timer(flush, #state{proc = Proc} = State) ->
    flush_outbox(State#state{proc = Proc#proc{flush_timer = false}});
proc_timer(_, State) ->
    State.

%% The counter callers route by is theirs to count a request in and this
%% process's (or theirs, for a request they could not write) to count it out;
%% each is one step next to the row's insertion or removal, so a caller killed
%% between the two leaves it off by one for good. Set right when it has
%% disagreed with the table at two checks in a row, with neither moving in
%% between: a caller between its two steps at both checks (descheduled for a
%% whole check) is then taken for a killed one, which the next checks undo.
%% An addition, so that what callers count meanwhile is kept.
-spec recount(#proc{}) -> #proc{}.
recount(#proc{pending = Pending, in_flight = InFlight, count_seen = Seen} = Proc) ->
    Proc#proc{count_seen = ocaml_transport:recount(InFlight, ets:info(Pending, size), Seen)}.

%% Ends an OS process that stopped answering or overran its deadlines.
-spec check(#state{}) -> #state{}.
check(#state{phase = draining, drain_until = Until} = State0) ->
    State = check_progress(State0),
    case State of
        #state{phase = draining} ->
            case now_ms() > Until of
                true -> end_proc(recycled, State);
                false -> drained(State)
            end;
        _ ->
            State
    end;
check(State) ->
    check_progress(State).

-spec check_progress(#state{}) -> #state{}.
check_progress(#state{setup = #{stall_timeout := Stall, cancel_grace := Grace},
                      proc = #proc{pending = Pending, last_frame_at = LastFrame,
                                   last_reply_at = LastReply}} = State) ->
    case {ets:info(Pending, size), backlog()} of
        {0, _} ->
            State;
        {_, Waiting} when Waiting > 0 ->
            %% What the OS process wrote may be waiting behind this timer: read
            %% it first, judge at the next check.
            State;
        {_, 0} ->
            case verdict(Pending, LastFrame, LastReply, Stall, Grace) of
                healthy ->
                    State;
                Verdict ->
                    %% A caller killed between writing its row and its request left a
                    %% row that no answer will ever take: it is not the OS process's
                    %% fault. Rows whose writer is dead go first (nobody waits for
                    %% them); the rest are judged again.
                    case drop_orphans(State) of
                        0 -> end_proc(Verdict, State);
                        _ ->
                            case verdict(Pending, LastFrame, LastReply, Stall, Grace) of
                                healthy -> State;
                                Again -> end_proc(Again, State)
                            end
                    end
            end
    end.

-spec verdict(ets:tid(), integer(), integer(), pos_integer(), non_neg_integer()) ->
    healthy | unresponsive | overdue.
verdict(Pending, LastFrame, LastReply, Stall, Grace) ->
    Now = now_ms(),
    {Oldest, Longest} = ets:foldl(fun oldest_and_longest/2, {Now, 0}, Pending),
    Silent = Now - max(LastFrame, Oldest),
    Unanswered = Now - max(LastReply, Oldest),
    if
        %% Nothing at all, not even a heartbeat, since the oldest request was
        %% written: stopped (SIGSTOP), wedged, or not reading.
        Silent > Stall ->
            unresponsive;
        %% No answer for longer than any request in flight may run: the OS
        %% process failed to interrupt one at its deadline.
        Longest =/= infinity, Unanswered > Longest + Grace + ?OVERDUE_SLACK ->
            overdue;
        true ->
            healthy
    end.

%% Takes the rows whose writer is dead, counted out as at an answer; how many.
%% Called only when the OS process has said nothing (or answered nothing) for
%% longer than it may: a healthy one answers what it was sent, so such a row is
%% most likely one whose request was never written (its caller killed between
%% its two steps), and if not, nobody waits for its answer, which finds no row.
-spec drop_orphans(#state{}) -> non_neg_integer().
drop_orphans(#state{proc = #proc{pending = Pending, given = Given, in_flight = InFlight}}) ->
    Rows = ets:select(Pending, [{{'$1', '_', '_', '_', '$2', '$3'}, [], [{{'$1', '$2', '$3'}}]}]),
    lists:foldl(
      fun({Ref, Pids, Owner}, Count) ->
              case is_process_alive(Owner) of
                  true ->
                      Count;
                  false ->
                      case ets:take(Pending, Ref) of
                          [_] ->
                              ok = ocaml_transport:count_out(InFlight),
                              ungive(Given, Pids, Ref),
                              Count + 1;
                          [] ->
                              Count
                      end
              end
      end, 0, Rows).

-spec oldest_and_longest(row(), {integer(), ocaml_port_protocol:deadline_ms()}) ->
    {integer(), ocaml_port_protocol:deadline_ms()}.
oldest_and_longest({_, _, Written, Timeout, _, _}, {Oldest, Longest}) ->
    {min(Written, Oldest), max_timeout(Timeout, Longest)}.

-spec max_timeout(ocaml_port_protocol:deadline_ms(), ocaml_port_protocol:deadline_ms()) ->
    ocaml_port_protocol:deadline_ms().
max_timeout(infinity, _) -> infinity;
max_timeout(_, infinity) -> infinity;
max_timeout(A, B) -> max(A, B).

-spec check_interval(ocaml_pool_manager:worker_setup()) -> pos_integer().
check_interval(#{stall_timeout := Stall, cancel_grace := Grace}) ->
    max(50, min(Stall, max(Grace, 200)) div 4).

%%% Ending an OS process

%% This side ends the OS process: the port closes, the keeper kills it.
-spec end_proc(crash_reason(), #state{}) -> #state{}.
end_proc(Reason, #state{proc = #proc{port = Port}} = State) ->
    close(Port),
    proc_ended(Reason, State).

-spec start_failed(crash_reason(), #state{}) -> #state{}.
start_failed(Reason, State) ->
    next_proc(Reason, undefined, 0, report_start({error, Reason}, State)).

%% The OS process is gone: every request it had is answered, the worker
%% withdrawn from the registry, and the next OS process scheduled.
-spec proc_ended(crash_reason(), #state{}) -> #state{}.
proc_ended(Reason, #state{phase = Phase, proc = Proc, retired = Retired} = State0) ->
    #proc{pending = Pending, given = Given, in_flight = Counter, erl_calls = Runners,
          awaiting = Awaiting, steps = Steps, ready_at = ReadyAt} = Proc,
    %% No caller finds this worker any more; one that found it already finds
    %% its port closed, and sends its request to another worker (ocaml:call/4).
    _ = Phase =:= ready andalso unpublish(State0),
    InFlight = answer_all(Pending, Counter, Reason),
    _ = [exit(Runner, kill) || Runner <- maps:keys(Runners)],
    _ = [Waiter ! {Waiter, {worker_crashed, Reason}} || Waiter <- start_waiters(Awaiting, Steps)],
    _ = [ets:delete(Table) || Table <- Retired],
    State = State0#state{proc = none, retired = [Pending, Given]},
    case Phase of
        starting -> next_proc(Reason, ReadyAt, InFlight, report_start({error, Reason}, State));
        _ -> next_proc(Reason, ReadyAt, InFlight, State)
    end.

%% The aliases waiting for a start-up step.
-spec start_waiters({reference(), step()} | none, [step()]) -> [reference()].
start_waiters(Awaiting, Steps) ->
    Current = case Awaiting of
                  {_, {_, Waiters}} -> Waiters;
                  none -> []
              end,
    Current ++ lists:append([Waiters || {_, Waiters} <- Steps]).

%% Takes every row (a caller that takes its own first answers itself) and
%% answers it; how many were in flight. Each is counted out, as at its answer:
%% a caller that chose this OS process just before still counts its own.
-spec answer_all(ets:tid(), ocaml_transport:counter(), crash_reason()) -> non_neg_integer().
answer_all(Pending, InFlight, Reason) ->
    Refs = ets:select(Pending, [{{'$1', '_', '_', '_', '_', '_'}, [], ['$1']}]),
    lists:foldl(
      fun(Ref, Count) ->
              case ets:take(Pending, Ref) of
                  [{Ref, Kind, _, _, _, _}] ->
                      ok = ocaml_transport:count_out(InFlight),
                      _ = (Kind =:= call orelse Kind =:= load) andalso
                          (Ref ! {Ref, {worker_crashed, Reason}}),
                      Count + 1;
                  [] ->
                      Count
              end
      end, 0, Refs).

%% The next OS process: at once after a deliberate restart or one that
%% follows a healthy run, else after the backoff.
-spec next_proc(crash_reason(), integer() | undefined, non_neg_integer(), #state{}) -> #state{}.
next_proc(_Reason, _ReadyAt, _InFlight, #state{retiring = true} = State) ->
    %% Drained (or its OS process ended meanwhile, its calls answered): no next.
    gen_server:cast(self(), retired),
    State#state{phase = backoff, proc = none};
next_proc(recycled, _ReadyAt, _InFlight, #state{gen = Gen} = State) ->
    respawn_after(0, Gen),
    State#state{phase = backoff, proc = none};
next_proc(Reason, ReadyAt, InFlight, #state{failures = Failures0, gen = Gen,
                                            setup = #{restart_backoff := {First, Max}}} = State0) ->
    Healthy = ReadyAt =/= undefined andalso now_ms() - ReadyAt >= ?HEALTHY_UPTIME,
    Failures = case Healthy of
                   true -> 1;
                   false -> Failures0 + 1
               end,
    Delay = backoff_delay(Failures, First, Max),
    State = log(warning, "OCaml worker: its OS process ended (~ts) with ~b request~s in flight; "
                          "the next starts in ~b ms~ts",
                 fun() ->
                         [ocaml:format_error(Reason), InFlight, plural(InFlight), Delay,
                          case Failures of
                              1 -> "";
                              _ -> io_lib:format(" (~b in a row have ended young: restart_backoff)", [Failures])
                          end]
                 end, State0),
    respawn_after(Delay, Gen),
    State#state{phase = backoff, proc = none, failures = Failures}.

%% Through a timer, even at once: this process goes back to its mailbox between
%% two OS processes (a worker whose every spawn fails must still hear its
%% supervisor).
-spec respawn_after(non_neg_integer(), non_neg_integer()) -> ok.
respawn_after(Delay, Gen) ->
    _ = erlang:start_timer(Delay, self(), {respawn, Gen}),
    ok.

%% 0 for the first death in a row; then First, doubling, at most Max, with
%% up to a fifth taken off at random so that workers dying together do not
%% restart together.
-spec backoff_delay(pos_integer(), non_neg_integer(), non_neg_integer()) -> non_neg_integer().
backoff_delay(1, _First, _Max) ->
    0;
backoff_delay(Failures, First, Max) ->
    %% At least a millisecond: with restart_backoff {0, 0} a crash loop still
    %% leaves the scheduler a moment.
    Delay = max(1, min(Max, First bsl min(Failures - 2, 32))),
    Delay - rand:uniform(max(1, Delay div 5)) + 1.

%%% Writing

%% A frame of this process's own (a load, a refused erl_call): never waits for
%% a busy port (this process is the one that reads the port, so waiting could
%% wait for ever), queues it instead.
-spec write_own(ocaml_port_protocol:request(), #state{}) -> #state{}.
write_own(Frame, #state{proc = #proc{outbox = Outbox} = Proc} = State) ->
    flush_outbox(State#state{proc = Proc#proc{outbox = Outbox ++ [Frame]}}).

-spec flush_outbox(#state{}) -> #state{}.
flush_outbox(#state{proc = #proc{outbox = []}} = State) ->
    State;
flush_outbox(#state{proc = #proc{outbox = [Frame | Rest], port = Port, gen = Gen,
                                 flush_timer = Timer} = Proc} = State) ->
    try erlang:port_command(Port, Frame, [nosuspend]) of
        true ->
            flush_outbox(State#state{proc = Proc#proc{outbox = Rest}});
        false when Timer ->
            State;
        false ->
            _ = timer(?OUTBOX_RETRY, flush, Gen),
            State#state{proc = Proc#proc{flush_timer = true}}
    catch
        error:badarg -> State  % closed: its exit_status is on its way
    end.

%% Kills the port: a port_close would wait, for ever, to write what its queue
%% holds to an OS process that does not read (and the VM would not halt); the
%% requests queued there are the OS process's, whose callers get their answer
%% from proc_ended/2. The keeper sees the pipe close and ends the OS process.
-spec close(port()) -> ok.
close(Port) ->
    true = exit(Port, kill),
    ok.

%%% Helpers

%% Messages waiting in this process's mailbox (most of them reads of the port).
-spec backlog() -> non_neg_integer().
backlog() ->
    {message_queue_len, Length} = process_info(self(), message_queue_len),
    Length.

-spec max_reply_size(#state{}) -> pos_integer().
max_reply_size(#state{setup = #{max_reply_size := Max}}) ->
    Max.

-spec timer(timeout(), start | check | flush, pos_integer()) -> reference() | none.
timer(infinity, _Event, _Gen) -> none;
timer(Ms, Event, Gen) -> erlang:start_timer(Ms, self(), {Event, Gen}).

-spec now_ms() -> integer().
now_ms() ->
    erlang:monotonic_time(millisecond).

-spec plural(non_neg_integer()) -> string().
plural(1) -> "";
plural(_) -> "s".

%% Logs within the worker's budget (ocaml_log_window).
-spec log(logger:level(), io:format(), [term()] | fun(() -> [term()]), #state{}) -> #state{}.
log(Level, Format, Args, #state{log_window = Window} = State) ->
    State#state{log_window = ocaml_log_window:log(Level, Format, Args, Window)}.

%% The registry restarted with empty tables: a ready worker registers again
%% once it is back (looked for every 50 ms, without waiting in between).
-spec reregister(#state{}) -> #state{}.
reregister(#state{phase = Phase} = State) ->
    case camlbeam_registry:monitor() of
        none ->
            _ = erlang:send_after(50, self(), reregister),
            State#state{registry = none};
        Monitor ->
            _ = Phase =:= ready andalso publish(State, async),
            State#state{registry = Monitor}
    end.
