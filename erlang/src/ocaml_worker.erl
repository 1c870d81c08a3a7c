%% @doc One OCaml worker of the `port' transport: the process that owns the
%% port of one `camlbeam-port' OS process (`cpp/port/README.md').
%%
%% Callers write their requests to the port themselves ({@link ocaml:call/4});
%% this process reads what the worker writes back. For a `{reply, Alias}'
%% frame it takes the alias out of its table of pending calls and only then
%% forwards the payload, still encoded, to the alias: only a caller that is
%% still waiting gets an answer, and the worker cannot make up answers to
%% anybody else. `{send, Pid}', `{erl_call, Id}' and `{log, Level}' frames are
%% served here.
%%
%% When the OS process exits, or writes something that is not a frame of the
%% protocol, this process stops with that as its reason, which the callers
%% waiting on it see as `{error, {worker_crashed, Reason}}'; its supervisor
%% starts a new one.
-module(ocaml_worker).
-behaviour(gen_server).

-include_lib("kernel/include/logger.hrl").
-include("camlbeam_registry.hrl").

-export([start_link/2, load/3, write/2]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2, format_status/1]).
-export_type([stop_reason/0]).

%% Why a worker stops (or does not start).
-type stop_reason() :: {exit_status, non_neg_integer()}
                     | {malformed_frame, ocaml_port_protocol:malformed()}
                     | {port_exit, term()}
                     | {spawn_failed, term()}
                     | {start_timeout, hello | {load, file:filename_all()}}
                     | {flavour_mismatch, Expected :: ocaml_options:flavour(), Got :: ocaml_options:flavour()}
                     | {protocol_mismatch, term()}
                     | {bad_hello, term()}
                     | {load_failed, atom(), binary()}
                     | {bad_reply, binary()}
                     | no_pool.

-record(state, {
    pool :: pid(),
    id :: pos_integer(),
    port :: port() | closed,
    pending :: ets:tid(),
    erl_call :: ocaml_options:erl_call_policy(),
    %% Processes running an Erl.call_erlang request, and its id: the OCaml
    %% side waits for the answer, so one must come even if such a process dies.
    erl_calls = #{} :: #{pid() => term()}
}).

%%% API

-spec start_link(Pool :: pid(), Id :: pos_integer()) ->
    {ok, pid()} | ignore | {error, stop_reason()}.
start_link(Pool, Id) ->
    gen_server:start_link(?MODULE, {Pool, Id}, []).

%% @doc Asks the worker to load a plugin; the answer goes to `Alias' as the
%% answer to a call would.
-spec load(Worker :: pid(), Alias :: reference(), file:filename_all()) -> ok.
load(Worker, Alias, Path) ->
    gen_server:cast(Worker, {load, Alias, Path}).

%%% gen_server callbacks

-spec init({pid(), pos_integer()}) -> {ok, #state{}} | {stop, stop_reason()}.
init({Pool, Id}) ->
    %% Trapping exits: the supervisor's shutdown must reach terminate/2, which
    %% closes the port, and a dying port or erl_call process must be a message.
    process_flag(trap_exit, true),
    logger:update_process_metadata(#{camlbeam_pool => Pool, camlbeam_worker => Id}),
    case camlbeam_registry:pool(Pool) of
        {ok, #camlbeam_pool{manager = Manager}} ->
            {ok, Setup} = ocaml_pool_manager:join(Manager, Id),
            start_port(Pool, Id, Setup);
        error ->
            {stop, no_pool}
    end.

-spec handle_call(term(), gen_server:from(), #state{}) -> {reply, term(), #state{}}.
handle_call(Request, _From, State) ->
    {reply, {error, {unknown_request, Request}}, State}.

-spec handle_cast(term(), #state{}) -> {noreply, #state{}}.
handle_cast({load, Alias, Path}, #state{port = Port, pending = Pending} = State) ->
    true = ets:insert(Pending, {Alias}),
    write(Port, ocaml_port_protocol:load(Alias, Path)),
    {noreply, State};
handle_cast(_Request, State) ->
    {noreply, State}.

-spec handle_info(term(), #state{}) -> {noreply, #state{}} | {stop, stop_reason(), #state{}}.
handle_info({Port, {data, Frame}}, #state{port = Port} = State) ->
    case ocaml_port_protocol:parse_frame(Frame) of
        {ok, Envelope, Payload} -> {noreply, serve(Envelope, Payload, State)};
        {error, Malformed} -> {stop, {malformed_frame, Malformed}, State}
    end;
handle_info({Port, {exit_status, Status}}, #state{port = Port} = State) ->
    {stop, {exit_status, Status}, State#state{port = closed}};
handle_info({'EXIT', Port, Reason}, #state{port = Port} = State) ->
    {stop, {port_exit, Reason}, State#state{port = closed}};
handle_info({'EXIT', Pid, Reason}, #state{erl_calls = Calls} = State) when is_map_key(Pid, Calls) ->
    {Id, Rest} = maps:take(Pid, Calls),
    case Reason of
        normal -> ok;
        _ -> write(State#state.port, ocaml_port_protocol:erl_reply(Id, {error, {exit, Reason}}))
    end,
    {noreply, State#state{erl_calls = Rest}};
handle_info(_Info, State) ->
    %% Messages sent to the worker's pid (Erl.self ()) have no way into a port
    %% worker: the protocol has no frame for them.
    {noreply, State}.

-spec terminate(term(), #state{}) -> ok.
terminate(_Reason, #state{port = Port}) ->
    close(Port).

%% A crash report shows the last message: not the megabytes of a frame.
-spec format_status(gen_server:format_status()) -> gen_server:format_status().
format_status(#{message := {Port, {data, Frame}}} = Status) when byte_size(Frame) > 64 ->
    Status#{message := {Port, {data, {frame, byte_size(Frame), binary:part(Frame, 0, 64)}}}};
format_status(Status) ->
    Status.

%%% Start-up: hello, then the plugins, each answer awaited in turn

-spec start_port(pid(), pos_integer(), ocaml_pool_manager:worker_setup()) ->
    {ok, #state{}} | {stop, stop_reason()}.
start_port(Pool, Id, #{executable := Executable} = Setup) ->
    #{flavour := Expected, plugins := Plugins, start_timeout := Timeout,
      max_queue := MaxQueue, erl_call := Policy} = Setup,
    Deadline = deadline(Timeout),
    try open_port({spawn_executable, Executable},
                  %% parallelism: callers write concurrently; let the VM schedule
                  %% those writes instead of making them contend for the port.
                  [{packet, 4}, binary, nouse_stdio, exit_status, {parallelism, true}]) of
        Port ->
            State0 = #state{pool = Pool, id = Id, port = Port, erl_call = Policy,
                            pending = ets:new(ocaml_worker_pending,
                                              [set, public, {write_concurrency, true}])},
            case handshake(Expected, Plugins, Deadline, State0) of
                {ok, Flavour, State} ->
                    {os_pid, OsPid} = erlang:port_info(Port, os_pid),
                    ok = camlbeam_registry:register_worker(
                           #camlbeam_worker{key = {Pool, Id}, pid = self(), port = Port,
                                            pending = State#state.pending, max_queue = MaxQueue,
                                            os_pid = OsPid, flavour = Flavour}),
                    {ok, State};
                {error, Reason} ->
                    close(Port),
                    {stop, Reason}
            end
    catch
        error:Reason -> {stop, {spawn_failed, {Reason, Executable}}}
    end.

-spec handshake(ocaml_options:flavour() | any, [file:filename_all()], integer() | infinity,
                #state{}) -> {ok, ocaml_options:flavour(), #state{}} | {error, stop_reason()}.
handshake(Expected, Plugins, Deadline, #state{id = Id} = State0) ->
    Ref = make_ref(),
    case request(ocaml_port_protocol:hello(Ref, Id, self()), Ref, hello, Deadline, State0) of
        {ok, Payload, State} ->
            case ocaml_port_protocol:decode_hello(Payload) of
                {ok, #{flavour := Flavour}} when Expected =:= any; Expected =:= Flavour ->
                    load_all(Plugins, Flavour, Deadline, State);
                {ok, #{flavour := Flavour}} ->
                    {error, {flavour_mismatch, Expected, Flavour}};
                {error, _} = Error ->
                    Error
            end;
        {error, _} = Error ->
            Error
    end.

-spec load_all([file:filename_all()], ocaml_options:flavour(), integer() | infinity, #state{}) ->
    {ok, ocaml_options:flavour(), #state{}} | {error, stop_reason()}.
load_all([], Flavour, _Deadline, State) ->
    {ok, Flavour, State};
load_all([Path | Paths], Flavour, Deadline, State0) ->
    Ref = make_ref(),
    case request(ocaml_port_protocol:load(Ref, Path), Ref, {load, Path}, Deadline, State0) of
        {ok, Payload, State} ->
            case ocaml_port_protocol:decode_load(Payload) of
                ok -> load_all(Paths, Flavour, Deadline, State);
                {error, _} = Error -> Error
            end;
        {error, _} = Error ->
            Error
    end.

%% Writes a request and waits for the answer to Ref. What else the worker writes
%% meanwhile (a plugin's initialisation may log, send or call Erlang) is served as usual.
-spec request(binary(), reference(), hello | {load, file:filename_all()}, integer() | infinity,
              #state{}) -> {ok, binary(), #state{}} | {error, stop_reason()}.
request(Frame, Ref, Step, Deadline, #state{port = Port} = State) ->
    write(Port, Frame),
    await(Ref, Step, Deadline, State).

-spec await(reference(), hello | {load, file:filename_all()}, integer() | infinity, #state{}) ->
    {ok, binary(), #state{}} | {error, stop_reason()}.
await(Ref, Step, Deadline, #state{port = Port} = State) ->
    receive
        {Port, {data, Frame}} ->
            case ocaml_port_protocol:parse_frame(Frame) of
                {ok, {reply, Ref}, Payload} ->
                    {ok, Payload, State};
                {ok, Envelope, Payload} ->
                    await(Ref, Step, Deadline, serve(Envelope, Payload, State));
                {error, Malformed} ->
                    {error, {malformed_frame, Malformed}}
            end;
        {Port, {exit_status, Status}} ->
            {error, {exit_status, Status}};
        {'EXIT', Port, Reason} ->
            {error, {port_exit, Reason}}
    after time_left(Deadline) ->
        {error, {start_timeout, Step}}
    end.

%%% Frames from the worker

-spec serve(ocaml_port_protocol:envelope(), binary(), #state{}) -> #state{}.
serve({reply, Alias}, Payload, #state{pending = Pending} = State) ->
    %% The row counts the call in flight until its answer is taken here. A
    %% caller that timed out left its row (the call still counts) and
    %% deactivated its alias, so the VM drops this answer.
    _ = case ets:take(Pending, Alias) of
            [_] -> Alias ! {Alias, Payload};
            [] -> ok
        end,
    State;
serve({send, Pid}, Payload, State) ->
    case ocaml_port_protocol:decode_payload(Payload) of
        {ok, Message} ->
            Pid ! Message;
        error ->
            ?LOG_WARNING("OCaml worker: Erl.send to ~p of ~b bytes that binary_to_term(_, [safe]) "
                         "refuses (an atom unknown to this VM?): dropped",
                         [Pid, byte_size(Payload)], #{domain => [camlbeam, worker]})
    end,
    State;
serve({erl_call, Id}, Payload, #state{port = Port, erl_call = Policy, erl_calls = Calls} = State) ->
    %% Run in a process of its own: the Erlang function may take long, or call
    %% back into this pool, while this process must go on forwarding answers.
    Runner = proc_lib:spawn_link(fun() -> run_erl_call(Port, Id, Payload, Policy) end),
    State#state{erl_calls = Calls#{Runner => Id}};
serve({log, Level}, Payload, State) ->
    Text = case ocaml_port_protocol:decode_payload(Payload) of
               {ok, Binary} when is_binary(Binary) -> Binary;
               {ok, Term} -> io_lib:format("~tp", [Term]);
               error -> <<"(undecodable log payload)">>
           end,
    ?LOG(Level, "OCaml worker: ~ts", [Text], #{domain => [camlbeam, worker]}),
    State.

-spec run_erl_call(port(), term(), binary(), ocaml_options:erl_call_policy()) -> ok.
run_erl_call(Port, Id, Payload, Policy) ->
    Result = case ocaml_port_protocol:decode_erl_call(Payload) of
                 {ok, {M, F, A}} ->
                     case allowed(Policy, M, F) of
                         true ->
                             try {ok, apply(M, F, A)}
                             catch Class:Reason -> {error, {Class, Reason}}
                             end;
                         false ->
                             {error, {error, {not_allowed, {M, F, length(A)}}}}
                     end;
                 {error, Why} ->
                     {error, {error, {bad_erl_call, Why}}}
             end,
    write(Port, ocaml_port_protocol:erl_reply(Id, Result)).

-spec allowed(ocaml_options:erl_call_policy(), module(), atom()) -> boolean().
allowed(all, _M, _F) -> true;
allowed(none, _M, _F) -> false;
allowed(Allowed, M, F) -> lists:member({M, F}, Allowed).

%%% Helpers

%% @doc Writes a frame to a worker's port. A port that is gone is no error
%% here: its exit_status message is on its way to the worker's process, which
%% stops when it arrives (a caller's cast to it is dropped).
-spec write(port() | closed, iodata()) -> ok.
write(closed, _Frame) ->
    ok;
write(Port, Frame) ->
    try erlang:port_command(Port, Frame) of
        true -> ok
    catch
        error:badarg -> ok
    end.

%% Closing the port closes the worker's request pipe: it finishes the request
%% it is running and exits (its watchdog ends it if that takes too long).
-spec close(port() | closed) -> ok.
close(closed) ->
    ok;
close(Port) ->
    try erlang:port_close(Port) of
        true -> ok
    catch
        error:badarg -> ok
    end.

-spec deadline(timeout()) -> integer() | infinity.
deadline(infinity) -> infinity;
deadline(Timeout) -> erlang:monotonic_time(millisecond) + Timeout.

-spec time_left(integer() | infinity) -> timeout().
time_left(infinity) -> infinity;
time_left(Deadline) -> max(0, Deadline - erlang:monotonic_time(millisecond)).
