%% @doc The `port' coupling ({@link ocaml_transport}): each worker is an OS
%% process (`camlbeam-port', `cpp/port/README.md') run by an
%% {@link ocaml_worker} process, which owns its port.
%%
%% A call goes through no process on its way in: the caller records the
%% request in the worker's table of pending requests (with the pids its
%% arguments give OCaml, for the policy's `send => given') and writes it to
%% the port itself, with `nosuspend' (a port holding `max_queue_bytes' nobody
%% read answers `overloaded' at once). The worker's process reads the answer
%% frame's envelope, takes the request's row out of the table, and only then
%% sends the still-encoded payload to the caller's alias: only a caller that
%% is still waiting gets an answer, and the worker cannot make answers up for
%% anybody else. The caller checks and decodes it ({@link decode_answer/2},
%% {@link ocaml_etf_guard}). A caller that gives up writes `{cancel, Alias}':
%% the worker skips the call if it has not started it.
%%
%% In flight: the caller counts its request in before it writes it; whoever
%% takes the request's row out of the table counts it out: the worker's
%% process at the answer (a call that timed out counts until then: its OS
%% process is still busy with it) or when the OS process ends, the caller
%% when its request could not be written. A caller killed while it waits
%% leaves its row, which the answer takes. The worker's process also sets the
%% counter right when it has disagreed with the table for a whole check
%% (a caller killed between two of its steps here).
-module(ocaml_port_transport).
-behaviour(ocaml_transport).

-include_lib("kernel/include/file.hrl").
-include("ocaml_port_transport.hrl").

-export([prepare/1, start_link/2, send_call/5, send_cast/3, cancel/2, answered/1, decode_answer/2,
         load/3, recycle/1, stop/1, describe/1]).

%% @doc Finds the worker executable ({@link ocaml_options:executable/2}: the
%% option `executable', else the application environment, else the priv
%% directory's), made absolute, since every restart of a worker spawns it
%% again. The node transport finds `camlbeam-node' with it too.
-spec prepare(ocaml_options:config()) ->
    {ok, ocaml_options:config()} | {error, {no_executable, file:filename_all() | no_priv_dir}}.
prepare(Config) ->
    case ocaml_options:executable(Config, ocaml_options:app_env()) of
        {ok, Given} ->
            Path = filename:absname(Given),
            case file:read_file_info(Path) of
                {ok, #file_info{type = regular, mode = Mode}} when Mode band 8#111 =/= 0 ->
                    {ok, Config#{executable := Path}};
                _ ->
                    {error, {no_executable, Path}}
            end;
        {error, no_priv_dir} ->
            {error, {no_executable, no_priv_dir}}
    end.

%% @doc Starts worker Id of Pool: an {@link ocaml_worker}.
-spec start_link(pid(), pos_integer()) -> {ok, pid()} | ignore | {error, term()}.
start_link(Pool, Id) ->
    ocaml_worker:start_link(Pool, Id).

%% @doc Writes `{call, Alias, Fun, Args, Deadline}' to the worker's port,
%% `Alias' an alias monitor of the worker's process: it is deactivated with
%% the monitor, so an answer sent after the caller gave up is dropped by the
%% VM instead of landing in its mailbox.
-spec send_call(#ocaml_port{}, pid(), ocaml:fun_name(), [term()], timeout()) ->
    {sent, reference(), reference()} | unsent | {error, ocaml_transport:send_refusal()}.
send_call(Handle, Worker, Fun, Args, Deadline) ->
    Alias = erlang:monitor(process, Worker, [{alias, demonitor}]),
    case enqueue(Handle, Alias, call, Fun, Args, Deadline) of
        ok ->
            {sent, Alias, Alias};
        NotSent ->
            erlang:demonitor(Alias, [flush]),
            NotSent
    end.

%% @doc Writes a call nobody awaits, under the pool's `cast_timeout'; its worker
%% logs it if it fails.
-spec send_cast(#ocaml_port{}, ocaml:fun_name(), [term()]) -> ok | unsent | {error, ocaml_transport:send_refusal()}.
send_cast(#ocaml_port{cast_timeout = Timeout} = Worker, Fun, Args) ->
    enqueue(Worker, make_ref(), {cast, Fun}, Fun, Args, Timeout).

%% @doc Writes `{cancel, Alias}'. Best effort: a busy or closed port gets no
%% cancel, and the worker runs the call until its own deadline. The row stays
%% until the worker answers, so the call still counts in its load.
-spec cancel(#ocaml_port{}, reference()) -> ok.
cancel(#ocaml_port{port = Port}, Alias) ->
    try erlang:port_command(Port, ocaml_port_protocol:cancel(Alias), [nosuspend]) of
        _ -> ok
    catch
        error:badarg -> ok
    end.

%% @doc Nothing to do: the worker's process counted the call out when it
%% forwarded the answer.
-spec answered(#ocaml_port{}) -> ok.
answered(#ocaml_port{}) ->
    ok.

%% @doc The worker's process forwards a payload still encoded (checked and
%% decoded here, by the process that waited for it), or says its OS process
%% ended.
-spec decode_answer(ocaml_transport:answer_kind(), binary() | {worker_crashed, term()}) ->
    {ok, term()} | {error, term()}.
decode_answer(_Kind, {worker_crashed, _} = Crashed) ->
    {error, Crashed};
decode_answer(call, Payload) when is_binary(Payload) ->
    ocaml_port_protocol:decode_answer(Payload);
decode_answer(load, Payload) when is_binary(Payload) ->
    ocaml_port_protocol:decode_load(Payload).

%% @doc See {@link ocaml_worker:load/3}.
-spec load(pid(), reference(), file:filename_all()) -> ok.
load(Worker, Alias, Path) ->
    ocaml_worker:load(Worker, Alias, Path).

%% @doc See {@link ocaml_worker:recycle/1}.
-spec recycle(pid()) -> ok.
recycle(Worker) ->
    ocaml_worker:recycle(Worker).

%% @doc See {@link ocaml_worker:retire/1}.
-spec stop(pid()) -> ok.
stop(Worker) ->
    ocaml_worker:retire(Worker).

%% @doc The OS pid of the worker's current OS process, its flavour and its OCaml.
-spec describe(#ocaml_port{}) -> ocaml_transport:worker_description().
describe(#ocaml_port{os_pid = OsPid, flavour = Flavour, ocaml_version = Version}) ->
    #{os_pid => OsPid, flavour => Flavour, ocaml_version => Version}.

%%% Internals

%% Records the request in the worker's table of requests in flight and writes
%% it to the port. The port is never waited for: a port whose queue is full
%% (busy: the worker is not reading) answers overloaded at once.
-spec enqueue(#ocaml_port{}, reference(), call | {cast, ocaml:fun_name()}, ocaml:fun_name(), [term()], timeout()) ->
    ok | unsent | {error, ocaml_transport:send_refusal()}.
enqueue(#ocaml_port{port = Port, pending = Pending, given = Given, in_flight = InFlight,
                    max_request_size = Max}, Ref, Kind, Fun, Args, Deadline) ->
    Request = ocaml_port_protocol:call(Ref, Fun, Args, Deadline),
    case iolist_size(Request) - 4 of
        Size when Size > Max ->
            {error, {request_too_large, Size, Max}};
        _ ->
            Pids = ocaml_policy:given_pids(Args),
            Row = {Ref, Kind, erlang:monotonic_time(millisecond), Deadline, Pids, self()},
            %% Counted before the row exists: a caller choosing a worker meanwhile
            %% sees it.
            ok = ocaml_transport:count_in(InFlight),
            try
                true = ets:insert(Pending, Row),
                _ = [ets:insert(Given, {Pid, Ref}) || Pid <- Pids],
                erlang:port_command(Port, Request, [nosuspend])
            of
                true -> ok;
                false -> withdraw(Pending, Given, InFlight, Ref, Pids, overloaded)
            catch
                %% The table or the port is gone: the OS process ended.
                error:badarg -> withdraw(Pending, Given, InFlight, Ref, Pids, crashed)
            end
    end.

%% Takes back a request that was not written, and the pids it gave. If the
%% worker took its row first (its OS process ended meanwhile), it is sending
%% the answer, and has counted the request out: wait for it.
%% Nothing was written: `unsent' when the OS process is gone, so that the
%% caller may try another worker.
-spec withdraw(ets:tid(), ets:tid(), ocaml_transport:counter(), reference(), [pid()],
               overloaded | crashed) ->
    ok | unsent | {error, overloaded}.
withdraw(Pending, Given, InFlight, Ref, Pids, Why) ->
    try ets:take(Pending, Ref) of
        [_] ->
            ok = ocaml_transport:count_out(InFlight),
            _ = [ets:delete_object(Given, {Pid, Ref}) || Pid <- Pids],
            case Why of
                overloaded -> {error, overloaded};
                crashed -> unsent
            end;
        [] ->
            ok
    catch
        error:badarg ->
            %% The table went with its OS process, and this row with it: nobody
            %% else counts it out.
            ok = ocaml_transport:count_out(InFlight),
            unsent
    end.
