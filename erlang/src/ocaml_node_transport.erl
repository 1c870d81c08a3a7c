%% @doc The `node' coupling: each worker is an OCaml node of the cluster
%% (`camlbeam-node', `docs/node.md'), reached over Erlang distribution.
%%
%% A pool either starts its nodes itself, on this host (`pool_size' of them,
%% hidden, each an OS process under an {@link ocaml_node_worker}), or uses
%% nodes started elsewhere (the option `nodes', one worker per node, which
%% watches it with `monitor_node' and rejoins it when it comes back). Either
%% way this VM must be distributed (`erl -sname ...'), and the nodes share its
%% cookie. The worker loads the pool's plugins into its node with
%% `{load, Path}' requests, so a node given in `nodes' is started with
%% `camlbeam-node --allow-load' (and without `--load' of the same plugins:
%% they would then be loaded twice).
%%
%% A call goes through no process of this VM: the caller sends the node's
%% `ocaml' process `{call, Fun, Args, Timeout}' from an alias, as
%% `gen_server:call/3' would, and monitors it (`Timeout', what the caller has left, is the
%% request's deadline on the node). The answer comes to the alias, so the VM
%% drops one that comes after the caller gave up; a node lost with the call in
%% flight answers `{worker_crashed, noconnection}' through the monitor. Sends
%% are `noconnect' and `nosuspend': a node not connected is a worker gone
%% (the caller tries another), and a distribution channel too busy to take
%% the request answers `overloaded' at once instead of suspending the caller.
%%
%% In flight: the caller counts a call in before sending it and out at its
%% answer or when it gives up; casts are not counted by their callers (nobody
%% sees them end). The worker's process reads the node's own count of
%% requests queued or running (`in_flight') every 250 ms, and sets the
%% counter right when they differ at two reads in a row
%% (`ocaml_transport:recount/3'): a caller killed while it waits, the casts,
%% and another pool's requests to a shared node are counted so.
%%
%% What differs from the port, for a plugin:
%% <ul>
%% <li>Native plugins only (`.cmxs').</li>
%% <li>`max_memory', `max_queue_bytes' and `max_request_size' do not apply:
%% a pool that sets `max_memory' is refused; the queue is the node's own
%% (100,000 requests, past which a call answers `overloaded'), and a request
%% is a distribution message.</li>
%% <li>The answers and the messages of `Erl.send' are decoded by this VM's
%% distribution, not by `ocaml_etf_guard'; the node refuses those that hold an
%% atom this VM may not have (`docs/node.md', "Atoms").</li>
%% </ul>
-module(ocaml_node_transport).
-behaviour(ocaml_transport).

-include("ocaml_node_transport.hrl").

%% gen's tag for a reply to an alias is the improper list [alias | Alias].
-dialyzer({no_improper_lists, send_call_to/5}).

-export([prepare/1, start_link/2, send_call/5, send_cast/3, cancel/2, answered/1, decode_answer/2,
         load/3, recycle/1, stop/1, describe/1]).

%% @doc Checks that this VM can reach nodes (it is distributed), that the
%% plugins are native, and finds `camlbeam-node' for a pool that starts its
%% own nodes: the option `executable', else the application environment's
%% `node_executable', else `camlbeam-node' in camlbeam's priv directory (or
%% its `ocaml-Version' for the option `ocaml').
-spec prepare(ocaml_options:config()) -> {ok, ocaml_options:config()} | {error, term()}.
prepare(#{flavour := bytecode}) ->
    {error, {bad_option, flavour, bytecode}};
prepare(#{max_memory := Max}) when Max =/= infinity ->
    {error, {bad_option, max_memory, Max}};
prepare(Config) ->
    case erlang:is_alive() of
        false -> {error, not_distributed};
        true -> with_executable(Config#{flavour := native})
    end.

%% @doc Starts worker Id of Pool: an {@link ocaml_node_worker}.
-spec start_link(pid(), pos_integer()) -> {ok, pid()} | ignore | {error, term()}.
start_link(Pool, Id) ->
    ocaml_node_worker:start_link(Pool, Id).

%% @doc Sends `{call, Fun, Args, Deadline}' to the node's `ocaml' process as
%% `gen_server:call/3' does, to a one-reply alias (`alias([reply])'): its
%% answer comes as `{[alias | Alias], Answer}' (gen's reply to an alias), a
%% late one is dropped by the VM once {@link cancel/2} took the alias back, and
%% the node's loss is the `DOWN' of a monitor of its process.
-spec send_call(#ocaml_node{}, pid(), ocaml:fun_name(), [term()], timeout()) ->
    {sent, nonempty_improper_list(alias, reference()), reference()} | unsent
    | {error, ocaml_transport:send_refusal()}.
send_call(#ocaml_node{node = Node, in_flight = InFlight}, Worker, Fun, Args, Deadline) ->
    case erlang:is_process_alive(Worker) of
        true -> send_call_to(Node, InFlight, Fun, Args, Deadline);
        %% Its pool stopped (its node with it), or it is restarting: another worker may serve.
        false -> unsent
    end.

-spec send_call_to(node(), ocaml_transport:counter(), ocaml:fun_name(), [term()], timeout()) ->
    {sent, nonempty_improper_list(alias, reference()), reference()} | unsent
    | {error, ocaml_transport:send_refusal()}.
send_call_to(Node, InFlight, Fun, Args, Deadline) ->
    %% A node not connected is gone: a monitor of it would connect again, and the send
    %% would then wait for that connection instead of answering noconnect. A connected
    %% one is monitored before the request goes, so both travel on one connection: a
    %% request lost with it is the monitor's DOWN.
    case lists:member(Node, nodes(connected)) of
        false ->
            unsent;
        true ->
            Alias = erlang:alias([reply]),
            Tag = [alias | Alias],
            Monitor = erlang:monitor(process, {ocaml, Node}),
            ok = ocaml_transport:count_in(InFlight),
            case erlang:send({ocaml, Node}, {'$gen_call', {self(), Tag}, {call, Fun, Args, Deadline}},
                             [noconnect, nosuspend]) of
                ok ->
                    {sent, Tag, Monitor};
                NotSent ->
                    erlang:demonitor(Monitor, [flush]),
                    _ = erlang:unalias(Alias),
                    ok = ocaml_transport:count_out(InFlight),
                    not_sent(NotSent)
            end
    end.

%% @doc Sends `{cast, Fun, Args, CastTimeout}' as `gen_server:cast/2' does,
%% without connecting and without suspending the caller: the node runs it for at
%% most the pool's cast_timeout, and logs it if it fails.
-spec send_cast(#ocaml_node{}, ocaml:fun_name(), [term()]) -> ok | unsent | {error, ocaml_transport:send_refusal()}.
send_cast(#ocaml_node{node = Node, cast_timeout = Timeout}, Fun, Args) ->
    case erlang:send({ocaml, Node}, {'$gen_cast', {cast, Fun, Args, Timeout}}, [noconnect, nosuspend]) of
        ok -> ok;
        NotSent -> not_sent(NotSent)
    end.

%% @doc The caller gave up: its alias goes, so the answer is in its mailbox
%% already or never comes. The node stops the call at its deadline, which was
%% the caller's.
-spec cancel(#ocaml_node{}, ocaml_transport:tag()) -> ok.
cancel(#ocaml_node{in_flight = InFlight}, [alias | Alias]) ->
    case erlang:unalias(Alias) of
        true -> ocaml_transport:count_out(InFlight);
        %% The answer took the one-reply alias: it is in the mailbox, and answered/1 counts
        %% the call out when the caller takes it.
        false -> ok
    end.

%% @doc Counts the call out: its answer came straight to the caller.
-spec answered(#ocaml_node{}) -> ok.
answered(#ocaml_node{in_flight = InFlight}) ->
    ocaml_transport:count_out(InFlight).

%% @doc The answers are terms already (the node answers what `ocaml:call'
%% answers).
-spec decode_answer(ocaml_transport:answer_kind(), term()) -> {ok, term()} | {error, term()}.
decode_answer(_Kind, {worker_crashed, _} = Crashed) ->
    {error, Crashed};
decode_answer(call, {ok, _} = Ok) ->
    Ok;
decode_answer(call, {error, _} = Error) ->
    Error;
decode_answer(call, Other) ->
    {error, {bad_reply, iolist_to_binary(io_lib:format("not an answer: ~tP", [Other, 8]))}};
decode_answer(load, Answer) ->
    ocaml_port_protocol:load_answer(Answer).

%% @doc Asks the worker's process to load a plugin into its node, within the
%% pool's start_timeout.
-spec load(pid(), reference(), file:filename_all()) -> ok.
load(Worker, Alias, Path) ->
    ocaml_worker_lib:load(Worker, Alias, Path).

%% @doc Once the calls in flight are answered, a new node with the pool's
%% current plugins (a given node: connected again, the plugins loaded).
-spec recycle(pid()) -> ok.
recycle(Worker) ->
    ocaml_worker_lib:recycle(Worker).

%% @doc Stops the worker once its calls in flight are answered.
-spec stop(pid()) -> ok.
stop(Worker) ->
    ocaml_worker_lib:retire(Worker).

%% @doc The node's OS process and OCaml, as it said at its start.
-spec describe(#ocaml_node{}) -> ocaml_transport:worker_description().
describe(#ocaml_node{os_pid = OsPid, ocaml_version = Version}) ->
    #{os_pid => OsPid, flavour => native, ocaml_version => Version}.

%%% Internals

-spec not_sent(noconnect | nosuspend) -> unsent | {error, overloaded}.
not_sent(noconnect) -> unsent;
not_sent(nosuspend) -> {error, overloaded}.

%% A pool of given nodes starts no executable; one that starts its own finds
%% `camlbeam-node' as the port finds its workers (ocaml_options:executable/2).
-spec with_executable(ocaml_options:config()) -> {ok, ocaml_options:config()} | {error, term()}.
with_executable(#{nodes := [_ | _]} = Config) ->
    {ok, Config};
with_executable(Config) ->
    ocaml_port_transport:prepare(Config).
