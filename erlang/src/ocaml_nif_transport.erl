%% @doc The `nif' coupling: OCaml inside this VM (`cpp/nif/README.md').
%%
%% One OCaml runtime per VM, started by the first pool of this transport
%% (its option `ocaml' chooses which OCaml's `camlbeam_nif.so') and shared by
%% every later one. A worker is an {@link ocaml_nif_worker} process holding a
%% handle on the runtime; callers queue their requests on it themselves
%% ({@link send_call/5}: a copy of the request into the library's memory, no
%% encoding, no waiting), and the runtime's thread runs them one at a time and
%% sends each call's answer straight to its caller, which counts it out of the
%% worker's counter. A caller that gives up withdraws its call
%% ({@link cancel/2}): from then on no answer reaches it, as under the port,
%% where the VM drops an answer to a deactivated alias. Casts and loads are
%% answered to the worker's process, which counts them out.
%%
%% What differs from the port, for a plugin:
%% <ul>
%% <li>Plugins are native (`.cmxs') only; every pool of the VM shares one
%% runtime, so its plugins share one namespace of OCaml modules, and a plugin
%% is loaded once per VM (a second load of the same file answers as the first
%% did). A plugin cannot be unloaded, nor replaced by another file with the
%% same module.</li>
%% <li>Requests of every pool run one at a time on one thread (`pool_size'
%% spreads queueing, not work). Under OCaml 5 a call of an export that has
%% always run short (under 50 microseconds), or that its plugin declared short
%% (`Erl.export ~short:true', from the first call), runs on the scheduler that
%% makes it when that thread is idle, with no copy and no message: a run there
%% over a millisecond sends the export's calls off the scheduler, and is
%% logged once. A call of a normal export (its runs under 10 ms) runs likewise
%% on a dirty CPU scheduler; its caller, blocked in the NIF, gets
%% `{error, timeout}' at the export's next poll point past its deadline
%% (`cpp/nif/README.md').</li>
%% <li>A request that ignores its deadline (a loop in C, signals blocked)
%% cannot be ended: the VM cannot be restarted around it. Its callers get
%% `{error, timeout}' at their own timeout, the worker logs it, and every
%% request of the nif transport waits behind it.</li>
%% <li>The option `executable' has no use: a pool that sets it is refused
%% (`{bad_option, executable, Path}'); so is `max_memory' (the memory is the
%% VM's).</li>
%% <li>The runtime holds the modules of every pool's plugins, but a pool calls
%% only its own: the caller looks the function's name up among the pool's
%% exports ({@link qualify/2}, what {@link ocaml:exports/1} lists) and sends
%% the runtime `{Module, Function}', or answers the port's error at once
%% without queueing anything. Plugins of two pools that export the same name
%% do not make it ambiguous in either.</li>
%% <li>`max_queue_bytes' (the bytes unread in a port's pipe) does not apply: a
%% worker's queue is bounded by `max_queue' (calls, each a copy of its
%% request); `max_request_size' neither (a request is the caller's own term).
%% `max_reply_size' bounds what an answer takes in the VM.</li>
%% <li>Stdlib.exit in a plugin raises `Failure' instead of ending the VM; a
%% plugin's C code that crashes takes the VM down (`cpp/nif/README.md').</li>
%% </ul>
-module(ocaml_nif_transport).
-behaviour(ocaml_transport).

-include("ocaml_nif_transport.hrl").

-export([prepare/1, start_link/2, send_call/5, send_cast/3, cancel/2, answered/1, decode_answer/2,
         load/3, recycle/1, stop/1, describe/1]).
-export([qualify/2]).
-export([call_in_lane/4, update_lane/3, drop_lane/1, drop_dead_lanes/0, lanes/0]).

%% Where the pools' lanes are: one persistent_term, #{Pool => Lane}, read at
%% every call of every pool (its key, two atoms, hashes at once; a key holding
%% the pool's pid was 6% of a short call), written by camlbeam_registry alone
%% when a pool of this transport starts and stops.
-define(LANES, {?MODULE, lanes}).

%% @doc Loads the VM's OCaml runtime if no pool did (the pool's option
%% `ocaml'), and checks that it is the one the pool asks for. Plugins must
%% be native, and there is no worker executable to choose: a pool naming one
%% is refused rather than started without it.
-spec prepare(ocaml_options:config()) -> {ok, ocaml_options:config()} | {error, term()}.
prepare(#{flavour := bytecode}) ->
    {error, {bad_option, flavour, bytecode}};
prepare(#{executable := Executable}) when Executable =/= undefined ->
    {error, {bad_option, executable, Executable}};
prepare(#{max_memory := Max}) when Max =/= infinity ->
    {error, {bad_option, max_memory, Max}};
prepare(#{ocaml := Ocaml} = Config) ->
    case ensure_runtime(Ocaml) of
        ok -> {ok, Config#{flavour := native}};
        {error, _} = Error -> Error
    end.

%% @doc Starts worker Id of Pool: an {@link ocaml_nif_worker}.
-spec start_link(pid(), pos_integer()) -> {ok, pid()} | ignore | {error, term()}.
start_link(Pool, Id) ->
    ocaml_nif_worker:start_link(Pool, Id).

%% @doc Runs `{call, Ref, {Module, Function}, Args, Deadline}', the name
%% qualified among the pool's exports ({@link qualify/2}), at once on this
%% scheduler when its export is short, or on a dirty CPU scheduler when it is
%% normal (under OCaml 5: `cpp/nif/README.md'), else queues it on the worker's
%% handle; a name the pool does not export is answered here. `Ref' is a plain
%% reference: the library's withdrawal
%% ({@link cancel/2}) keeps a late answer out of the mailbox. The worker's
%% process is monitored only once the call is queued (the monitor's signals
%% would wake it twice for a call that never needs it): one that ended
%% meanwhile gives `DOWN' at once.
-spec send_call(#ocaml_nif{}, pid(), ocaml:fun_name(), [term()], timeout()) ->
    {sent, reference(), reference()} | {answered, term()} | unsent | {error, ocaml_transport:send_refusal()}.
send_call(#ocaml_nif{pool = Pool} = Handle, Worker, Name, Args, Deadline) ->
    case qualify(Pool, Name) of
        {ok, Fun} ->
            Ref = make_ref(),
            case queue_call(Handle, Ref, Fun, Args, Deadline) of
                ok -> {sent, Ref, erlang:monitor(process, Worker)};
                AnsweredOrUnsent -> AnsweredOrUnsent
            end;
        NotSent ->
            NotSent
    end.

%% @doc Queues a call nobody awaits, under the pool's `cast_timeout': its
%% `Ref' names the function as the caller did, for the worker's log if it
%% fails. A name the pool does not export is not queued, and logged by the
%% worker as a failed cast.
-spec send_cast(#ocaml_nif{}, ocaml:fun_name(), [term()]) -> ok | unsent | {error, ocaml_transport:send_refusal()}.
send_cast(#ocaml_nif{pool = Pool, process = Process, cast_timeout = Timeout} = Worker, Name, Args) ->
    case qualify(Pool, Name) of
        {ok, Fun} -> queue_cast(Worker, Name, Fun, Args, Timeout);
        {error, _} = Unexported ->
            Process ! {camlbeam_cast_unexported, Name, Unexported},
            ok;
        unsent -> unsent
    end.

%% @doc What a function name means in `Pool': the one function of the pool's
%% exports ({@link ocaml:exports/1}) it names, `{Module, Function}', or the
%% error a port worker of the pool answers for it (`Erl''s dispatch, the
%% arity left to the export: `badarity' is its answer):
%% <ul>
%% <li>`Function' that one module of the pool exports: `{ok, {Module, Function}}';
%% none: `{error, {undef, Function}}'; several: `{error, {ambiguous, Function,
%% Modules}}', Modules sorted;</li>
%% <li>`{Module, Function}' the pool exports: itself; otherwise
%% `{error, {undef, {Module, Function}}}'.</li>
%% </ul>
%% `unsent' when the pool is not in the registry (it stopped, or the
%% registry restarted and the pool has not registered again): the caller then
%% finds the pool gone, as it would have before picking the worker.
%% Plain ETS reads ({@link camlbeam_registry:exporters/2}), in the caller.
-spec qualify(pid(), ocaml:fun_name()) ->
    {ok, {module(), atom()}} | {error, ocaml_transport:unexported()} | unsent.
qualify(Pool, {Module, Function} = Qualified) ->
    case camlbeam_registry:exporters(Pool, Function) of
        no_pool ->
            unsent;
        Modules ->
            case lists:member(Module, Modules) of
                true -> {ok, Qualified};
                false -> {error, {undef, Qualified}}
            end
    end;
qualify(Pool, Function) ->
    case camlbeam_registry:exporters(Pool, Function) of
        [Module] -> {ok, {Module, Function}};
        [] -> {error, {undef, Function}};
        no_pool -> unsent;
        Modules -> {error, {ambiguous, Function, Modules}}
    end.

%% @doc Withdraws the call: taken out of the queue, or its answer dropped if
%% it runs (it runs on to its deadline, when the runtime interrupts it).
%% Once this returns, its answer is in the caller's mailbox or never comes.
%% A withdrawn call is counted out here; a load (answered to the worker's
%% process, which counts it out) that has not started is answered
%% `{error, timeout}' there.
-spec cancel(#ocaml_nif{}, reference()) -> ok.
cancel(#ocaml_nif{worker = Worker, in_flight = InFlight}, Ref) ->
    case camlbeam_nif:cancel(Worker, Ref) of
        withdrawn -> ocaml_transport:count_out(InFlight);
        cancelled -> ok;
        none -> ok
    end.

%% @doc Counts the call out: its answer came straight to the caller.
-spec answered(#ocaml_nif{}) -> ok.
answered(#ocaml_nif{in_flight = InFlight}) ->
    ocaml_transport:count_out(InFlight).

%% @doc The answers are terms already, built by the library (no atom created).
-spec decode_answer(ocaml_transport:answer_kind(), term()) -> {ok, term()} | {error, term()}.
decode_answer(_Kind, {worker_crashed, _} = Crashed) ->
    {error, Crashed};
decode_answer(call, {ok, _} = Ok) ->
    Ok;
decode_answer(call, {error, _} = Error) ->
    Error;
decode_answer(call, {camlbeam_reply_etf, Etf}) ->
    %% An answer the library could not make off a scheduler (cpp/nif/README.md):
    %% made here, under the port's guard.
    case ocaml_etf_guard:decode(Etf) of
        {ok, Answer} -> decode_answer(call, Answer);
        {error, Why} -> {error, {bad_reply, Why}}
    end;
decode_answer(call, Other) ->
    {error, {bad_reply, iolist_to_binary(io_lib:format("not an answer: ~tP", [Other, 8]))}};
decode_answer(load, Answer) ->
    ocaml_port_protocol:load_answer(Answer).

%% @doc Asks the worker's process to load a plugin into the runtime (one the
%% runtime has answers as it did then).
-spec load(pid(), reference(), file:filename_all()) -> ok.
load(Worker, Alias, Path) ->
    ocaml_worker_lib:load(Worker, Alias, Path).

%% @doc Loads the pool's current plugins (those the runtime has are not
%% loaded again: the runtime cannot be restarted), once the worker's calls in
%% flight are answered.
-spec recycle(pid()) -> ok.
recycle(Worker) ->
    ocaml_worker_lib:recycle(Worker).

%% @doc Stops the worker once its calls in flight are answered.
-spec stop(pid()) -> ok.
stop(Worker) ->
    ocaml_worker_lib:retire(Worker).

%% @doc The VM's own OS pid: the runtime runs in it.
-spec describe(#ocaml_nif{}) -> ocaml_transport:worker_description().
describe(#ocaml_nif{ocaml_version = Version}) ->
    #{os_pid => list_to_integer(os:getpid()), flavour => native, ocaml_version => Version}.

%% @doc Runs the call at once on the calling scheduler, through the pool's
%% lane (`camlbeam_nif:lane_call/4'), when the pool is of this transport and
%% the call may run there: its answer, with no worker chosen, nothing counted
%% and no message. `queue' when it may not (another transport, a name the
%% pool does not export once, an export that is not short, arguments that are
%% not small, the runtime busy, OCaml 4): the caller sends it to a worker.
%% The lane is what {@link update_lane/3} last made of the pool's registry
%% rows.
-spec call_in_lane(ocaml:pool(), ocaml:fun_name(), [term()], timeout()) ->
    {ok, term()} | {error, term()} | queue.
call_in_lane(Pool, Fun, Args, Timeout) when is_pid(Pool) ->
    case persistent_term:get(?LANES, #{}) of
        #{Pool := Lane} ->
            case camlbeam_nif:lane_call(Lane, Fun, Args, Timeout) of
                queue -> queue;
                Answer -> decode_answer(call, Answer)
            end;
        #{} ->
            queue
    end;
call_in_lane(Pool, Fun, Args, Timeout) ->
    case whereis(Pool) of
        undefined -> queue;
        Pid -> call_in_lane(Pid, Fun, Args, Timeout)
    end.

%% @doc Sets the lane of `Pool' to its workers of this transport (their
%% handles, by id: `camlbeam_registry' calls it after every change of the
%% pool's rows) and the pool's exports. Makes the lane at the pool's first
%% worker of this transport; a pool without one has none, and this is a
%% persistent_term read.
-spec update_lane(pid(), [#ocaml_nif{}], [ocaml:export()]) -> ok.
update_lane(Pool, Handles, Exports) ->
    Lanes = persistent_term:get(?LANES, #{}),
    case {Lanes, Handles} of
        {#{Pool := Lane}, _} ->
            set_lane(Lane, Handles, Exports);
        {#{}, []} ->
            ok;
        {#{}, [_ | _]} ->
            case camlbeam_nif:new_lane() of
                none -> ok;
                Lane ->
                    ok = set_lane(Lane, Handles, Exports),
                    persistent_term:put(?LANES, Lanes#{Pool => Lane})
            end
    end.

%% @doc Forgets the lane of a pool that ended: a caller holding it queues its
%% calls, to workers that are gone.
-spec drop_lane(pid()) -> ok.
drop_lane(Pool) ->
    case persistent_term:get(?LANES, #{}) of
        #{Pool := Lane} = Lanes ->
            ok = camlbeam_nif:set_lane(Lane, [], false, []),
            put_lanes(maps:remove(Pool, Lanes));
        #{} ->
            ok
    end.

%% @doc Forgets the lanes of pools that ended while nobody kept them
%% (`camlbeam_registry' was down): when the registry starts.
-spec drop_dead_lanes() -> ok.
drop_dead_lanes() ->
    Lanes = persistent_term:get(?LANES, #{}),
    {Dead, Live} = maps:fold(fun(Pool, Lane, {D, L}) ->
                                     case is_process_alive(Pool) of
                                         true -> {D, L#{Pool => Lane}};
                                         false -> {[Lane | D], L}
                                     end
                             end, {[], #{}}, Lanes),
    _ = [ok = camlbeam_nif:set_lane(Lane, [], false, []) || Lane <- Dead],
    %% One change of the term for them all: each is a scan of every process.
    case Dead of
        [] -> ok;
        _ -> put_lanes(Live)
    end.

%% @doc The lanes of the pools that have one, by pool (for tests, and a look
%% from the shell).
-spec lanes() -> #{pid() => camlbeam_nif:lane()}.
lanes() ->
    persistent_term:get(?LANES, #{}).

%%% Internals

%% No pool left with a lane: no term left either.
-spec put_lanes(#{pid() => camlbeam_nif:lane()}) -> ok.
put_lanes(Lanes) when map_size(Lanes) =:= 0 ->
    _ = persistent_term:erase(?LANES),
    ok;
put_lanes(Lanes) ->
    persistent_term:put(?LANES, Lanes).

-spec set_lane(camlbeam_nif:lane(), [#ocaml_nif{}], [ocaml:export()]) -> ok.
set_lane(Lane, Handles, Exports) ->
    GivePids = lists:any(fun(#ocaml_nif{give_pids = Give}) -> Give end, Handles),
    camlbeam_nif:set_lane(Lane, [Worker || #ocaml_nif{worker = Worker} <- Handles], GivePids,
                          lists:usort([{Module, Function} || {Module, Function, _, _} <- Exports])).

%% Loads camlbeam_nif with the library of OCaml `Ocaml' (`default': the one the
%% application was built with, in `priv'; a release such as "5.3.0": the one in
%% `priv/ocaml-5.3.0'), unless it is loaded, and checks that the running
%% runtime is the one asked for. The module reads which from persistent_term
%% when it loads: calling any of its functions first would load it with the
%% default.
-spec ensure_runtime(ocaml_options:ocaml_version()) ->
    ok | {error, {nif_unavailable, term()} | {ocaml_mismatch, term(), binary()}}.
ensure_runtime(Ocaml) ->
    _ = erlang:module_loaded(camlbeam_nif) orelse persistent_term:put({camlbeam_nif, ocaml}, Ocaml),
    case code:ensure_loaded(camlbeam_nif) of
        {module, camlbeam_nif} ->
            case camlbeam_nif:runtime_info() of
                {ok, #{ocaml_version := Running}} ->
                    case Ocaml =:= default orelse unicode:characters_to_binary(Ocaml) =:= Running of
                        true -> ok;
                        false -> {error, {ocaml_mismatch, Ocaml, Running}}
                    end;
                {error, Why} ->
                    {error, {nif_unavailable, Why}}
            end;
        {error, Why} ->
            {error, {nif_unavailable, Why}}
    end.

%% A call, run at once when its export is short, else queued, its answer
%% coming to the caller.
-spec queue_call(#ocaml_nif{}, reference(), {module(), atom()}, [term()], timeout()) ->
    ok | {answered, term()} | unsent.
queue_call(#ocaml_nif{worker = Worker, in_flight = InFlight} = Handle, Ref, Fun, Args, Deadline) ->
    Given = given_pids(Handle, Args),
    %% Counted before it is queued: a caller choosing a worker meanwhile sees it.
    ok = ocaml_transport:count_in(InFlight),
    case camlbeam_nif:call(Worker, {call, Ref, Fun, Args, Deadline}, Given) of
        ok -> ok;
        {answered, _} = Answered -> Answered;
        closed -> not_queued(InFlight)
    end.

%% A cast, queued, its outcome going to the worker's process, which logs a
%% failure with the name the caller gave.
-spec queue_cast(#ocaml_nif{}, ocaml:fun_name(), {module(), atom()}, [term()], timeout()) -> ok | unsent.
queue_cast(#ocaml_nif{worker = Worker, in_flight = InFlight} = Handle, Name, Fun, Args, Deadline) ->
    Given = given_pids(Handle, Args),
    ok = ocaml_transport:count_in(InFlight),
    case camlbeam_nif:request(Worker, {call, {camlbeam_cast, Name}, Fun, Args, Deadline}, Given) of
        ok -> ok;
        closed -> not_queued(InFlight)
    end.

%% The pids the arguments give OCaml, for the policy `send => given'.
-spec given_pids(#ocaml_nif{}, [term()]) -> [pid()].
given_pids(#ocaml_nif{give_pids = true}, Args) -> ocaml_policy:given_pids(Args);
given_pids(#ocaml_nif{give_pids = false}, _Args) -> [].

%% The worker is closed: nothing was queued.
-spec not_queued(ocaml_transport:counter()) -> unsent.
not_queued(InFlight) ->
    ok = ocaml_transport:count_out(InFlight),
    unsent.
