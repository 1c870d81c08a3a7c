%% @doc One worker of a pool of the `node' coupling ({@link ocaml_node_transport}):
%% the process that stands for one OCaml node of the cluster.
%%
%% A worker of a pool without the option `nodes' starts its node: a hidden
%% `camlbeam-node' OS process on this host, named `camlbeam_Pid_N' (Pid the VM's OS pid)
%% on this VM's host, with this VM's cookie (in its environment, not on its
%% command line) and net_ticktime, `--allow-load' and `--stop-on-eof' (it
%% stops when its port closes: when this process ends, or the VM with it). It
%% waits until the node listens, connects to it, and loads the pool's plugins
%% into it. A worker of a pool with `nodes' takes the node of its id in that
%% list and connects to it instead. Either way it then watches the node with
%% `monitor_node': when the node goes (its OS process ended, the network cut),
%% the worker leaves the registry, answers the loads it was waiting for with
%% `{worker_crashed, Reason}', and after the pool's `restart_backoff' starts
%% a new node, or connects again to the given one (its plugins loaded again:
%% a node that kept them answers as it did the first time). The callers of
%% the calls in flight learn of the loss from their own monitors of the node's
%% process.
%%
%% What the node prints on its standard error is logged (`warning', within
%% the worker's budget: `ocaml_log_window'). Every 250 ms the worker asks the
%% node how many requests it holds and sets its counter of calls in flight
%% right (`ocaml_transport:recount/3'). A node that leaves the question
%% unanswered for the pool's `stall_timeout' (stopped, or its threads stuck:
%% a node answers it even while a long call runs) is taken for lost, as
%% `unresponsive': one of its own is killed, a given one disconnected.
-module(ocaml_node_worker).
-behaviour(gen_server).

-include("camlbeam_registry.hrl").
-include("ocaml_node_transport.hrl").

-export([start_link/2]).
-export([init/1, handle_continue/2, handle_call/3, handle_cast/2, handle_info/2, terminate/2]).
-export_type([crash_reason/0]).

%% How long a retiring or recycled worker waits for its calls in flight (ms).
-define(DRAIN_LIMIT, 30000).
%% How often the worker sets its counter of calls in flight right (ms).
-define(RECOUNT_INTERVAL, 250).
%% How long a node must have served for its loss to restart the backoff from its first delay (ms).
-define(STABLE_AFTER, 5000).
%% The longest line of the node's standard error logged whole.
-define(LINE_BYTES, 1024).

-type crash_reason() :: {exit_status, non_neg_integer()}
                      | noconnection
                      | unresponsive
                      | {cannot_connect, node()}
                      | {no_node, pos_integer()}
                      | {start_timeout, listen | info | {load, file:filename_all()}}
                      | {spawn_failed, term()}
                      | {bad_info, term()}.
%% Why a worker's node did not start or went away: its OS process ended
%% (`exit_status'), the connection was lost (`noconnection'), a given node
%% could not be reached (`cannot_connect'), the pool has no node for a worker
%% (`no_node': a rolling upgrade's temporary worker over given nodes), a step
%% of its start did not end within `start_timeout'.

-record(state, {
    pool :: pid(),
    id :: pos_integer(),
    manager :: pid(),
    setup :: ocaml_pool_manager:worker_setup() | undefined,
    node :: node() | undefined,
    %% The OS process of the node this worker started (none for a given node).
    port :: port() | undefined,
    handle :: #ocaml_node{} | undefined,
    started_at :: integer() | undefined,
    published = false :: boolean(),
    first_start = true :: boolean(),
    failures = 0 :: non_neg_integer(),
    retiring = false :: boolean(),
    recycling = false :: boolean(),
    drain_until :: integer() | undefined,
    registry :: reference() | none,
    %% The ocaml:load requests the node has not answered: the tag of each, its caller's alias.
    loads = #{} :: #{reference() => reference()},
    %% The tag of the drain's last question to the node.
    drain_tag :: reference() | undefined,
    %% The timer of the next start after a failure or a loss, if one is set.
    retry_timer :: reference() | undefined,
    %% Each worker process names its nodes after itself, alternating two names: a node
    %% name is an atom, made once, and a node that keeps dying must not make one each time.
    name_base :: {Base :: string(), Host :: string()} | undefined,
    starts = 0 :: non_neg_integer(),
    %% The tag of the in_flight question on its way, if any, and when it was asked.
    asking :: reference() | undefined,
    asked_at :: integer() | undefined,
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
            _ = erlang:send_after(?RECOUNT_INTERVAL, self(), recount),
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
handle_cast({load, Alias, Path}, #state{handle = #ocaml_node{node = Node}, loads = Loads,
                                       setup = #{start_timeout := Timeout}} = State) ->
    %% Answered to this process (the tag is no alias), then forwarded.
    Tag = make_ref(),
    case erlang:send({ocaml, Node}, {'$gen_call', {self(), {camlbeam_load, Tag}}, {load, plugin_path(Path), Timeout}},
                     [noconnect]) of
        ok ->
            {noreply, State#state{loads = Loads#{Tag => Alias}}};
        noconnect ->
            Alias ! {Alias, {worker_crashed, noconnection}},
            {noreply, State}
    end;
handle_cast({load, Alias, _Path}, State) ->
    %% Not started: the next start loads the pool's plugins, this one included.
    Alias ! {Alias, {worker_crashed, starting}},
    {noreply, State};
handle_cast(recycle, #state{retiring = true} = State) ->
    {noreply, State};
handle_cast(recycle, #state{recycling = true} = State) ->
    {noreply, State};
handle_cast(recycle, State) ->
    drain(State#state{recycling = true});
handle_cast(retire, State) ->
    drain(State#state{retiring = true});
handle_cast(_Request, State) ->
    {noreply, State}.

-spec handle_info(term(), #state{}) -> {noreply, #state{}} | {stop, normal, #state{}}.
handle_info({{camlbeam_load, Tag}, Answer}, #state{loads = Loads} = State) ->
    case maps:take(Tag, Loads) of
        {Alias, Rest} ->
            Alias ! {Alias, Answer},
            {noreply, State#state{loads = Rest}};
        error ->
            {noreply, State}
    end;
handle_info({{camlbeam_in_flight, Tag}, Count}, #state{asking = Tag, handle = #ocaml_node{in_flight = InFlight},
                                                         count_seen = Seen} = State) when is_integer(Count) ->
    {noreply, State#state{asking = undefined, asked_at = undefined,
                          count_seen = ocaml_transport:recount(InFlight, Count, Seen)}};
handle_info(recount, State) ->
    _ = erlang:send_after(?RECOUNT_INTERVAL, self(), recount),
    {noreply, ask_in_flight(State)};
handle_info({Port, {data, {Complete, Line}}}, #state{port = Port} = State) ->
    {noreply, log(warning, "OCaml node ~ts: ~ts~ts",
                  [State#state.node, Line, case Complete of eol -> ""; noeol -> "..." end], State)};
handle_info({Port, {exit_status, Status}}, #state{port = Port} = State) ->
    {noreply, node_lost({exit_status, Status}, State#state{port = undefined})};
handle_info({nodedown, Node}, #state{node = Node} = State) ->
    {noreply, node_lost(noconnection, State)};
handle_info({'DOWN', Registry, process, _, _}, #state{registry = Registry} = State) ->
    {noreply, reregister(State)};
handle_info(reregister, #state{registry = none} = State) ->
    {noreply, reregister(State)};
handle_info(drain_check, #state{retiring = true} = State) ->
    drained(State);
handle_info(drain_check, #state{recycling = true} = State) ->
    drained(State);
handle_info({{camlbeam_drain, Tag}, 0}, #state{drain_tag = Tag, retiring = Retiring, recycling = Recycling} = State)
  when Retiring; Recycling ->
    drain_done(State);
handle_info({retry_start, Timer}, #state{handle = undefined, retry_timer = Timer} = State) ->
    {noreply, start(State)};
handle_info(_Info, State) ->
    %% Lines of a node this worker no longer runs, late answers, stale timers.
    {noreply, State}.

-spec terminate(term(), #state{}) -> ok.
terminate(_Reason, State) ->
    _ = close(State),
    ok.

%%% Start

%% Joins the pool, starts or connects to the node, loads the pool's plugins
%% into it, then publishes the worker and reports its start.
-spec start(#state{}) -> #state{}.
start(#state{manager = Manager, id = Id} = State0) ->
    {ok, Setup} = ocaml_pool_manager:join(Manager, Id),
    State1 = State0#state{setup = Setup, retry_timer = undefined},
    Deadline = case maps:get(start_timeout, Setup) of
                   infinity -> infinity;
                   Timeout -> now_ms() + Timeout
               end,
    case reach_node(Setup, Deadline, State1) of
        {ok, State2} ->
            case begin_serving(Setup, Deadline, State2) of
                {ok, State} ->
                    publish(State),
                    report_start(ok, State#state{published = true, started_at = now_ms()});
                {error, Reason, State} ->
                    failed_start(Reason, close(State))
            end;
        {error, Reason, State2} ->
            failed_start(Reason, close(State2))
    end.

%% The worker's node, started and listening, or given, connected and watched.
-spec reach_node(ocaml_pool_manager:worker_setup(), integer() | infinity, #state{}) ->
    {ok, #state{}} | {error, crash_reason(), #state{}}.
reach_node(#{nodes := [_ | _] = Nodes}, _Deadline, #state{id = Id} = State) when Id > length(Nodes) ->
    {error, {no_node, Id}, State};
reach_node(#{nodes := [_ | _] = Nodes}, _Deadline, #state{id = Id} = State0) ->
    Node = lists:nth(Id, Nodes),
    State = State0#state{node = Node},
    case net_kernel:connect_node(Node) of
        true -> watch(State);
        _ -> {error, {cannot_connect, Node}, State}
    end;
reach_node(#{executable := Executable} = Setup, Deadline, #state{id = Id} = State1) ->
    {Node, State0} = own_node_name(State1),
    try open_port({spawn_executable, Executable},
                  [{args, node_arguments(Node, Id, Setup)},
                   {env, [{"CAMLBEAM_COOKIE", atom_to_list(erlang:get_cookie())}]},
                   {line, ?LINE_BYTES}, binary, use_stdio, stderr_to_stdout, exit_status, hide]) of
        Port ->
            State = State0#state{node = Node, port = Port},
            case await_listening(Port, Deadline, State) of
                {ok, Listening} ->
                    case net_kernel:connect_node(Node) of
                        true -> watch(Listening);
                        _ -> {error, {cannot_connect, Node}, Listening}
                    end;
                {error, _, _} = Error ->
                    Error
            end
    catch
        error:Why -> {error, {spawn_failed, Why}, State0}
    end.

-spec watch(#state{}) -> {ok, #state{}} | {error, crash_reason(), #state{}}.
watch(#state{node = Node} = State) ->
    true = erlang:monitor_node(Node, true),
    %% The node may have gone between the connection and the monitor: then nodedown
    %% is in the mailbox already, and the start fails at its first request.
    {ok, State}.

%% Waits for the node's line saying that it listens (registered with EPMD by
%% then); the lines before it are logged.
-spec await_listening(port(), integer() | infinity, #state{}) ->
    {ok, #state{}} | {error, crash_reason(), #state{}}.
await_listening(Port, Deadline, State) ->
    receive
        {Port, {data, {eol, Line}}} ->
            case binary:match(Line, <<" listening on port ">>) of
                nomatch -> await_listening(Port, Deadline, logged_line(Line, State));
                _ -> {ok, State}
            end;
        {Port, {data, {noeol, Part}}} ->
            await_listening(Port, Deadline, logged_line(Part, State));
        {Port, {exit_status, Status}} ->
            {error, {exit_status, Status}, State#state{port = undefined}}
    after time_left(Deadline) ->
        {error, {start_timeout, listen}, State}
    end.

-spec logged_line(binary(), #state{}) -> #state{}.
logged_line(Line, #state{node = Node} = State) ->
    log(warning, "OCaml node ~ts: ~ts", [Node, Line], State).

%% Asks the node what it runs on (the OCaml the pool asked for, if it asked),
%% and loads the pool's plugins into it.
-spec begin_serving(ocaml_pool_manager:worker_setup(), integer() | infinity, #state{}) ->
    {ok, #state{}} | {error, crash_reason() | term(), #state{}}.
begin_serving(#{plugins := Plugins, ocaml := Wanted, cast_timeout := CastTimeout}, Deadline,
              #state{node = Node} = State) ->
    case node_call(Node, info, Deadline) of
        {ok, #{os_pid := OsPid, ocaml_version := Version}} when is_integer(OsPid), OsPid > 0, is_binary(Version) ->
            case Wanted =:= default orelse unicode:characters_to_binary(Wanted) =:= Version of
                true ->
                    Handle = #ocaml_node{node = Node, in_flight = ocaml_transport:new_counter(),
                                         cast_timeout = CastTimeout, os_pid = OsPid, ocaml_version = Version},
                    WithHandle = State#state{handle = Handle, count_seen = none, asking = undefined,
                                             asked_at = undefined},
                    case load_all(Plugins, Deadline, WithHandle) of
                        ok -> {ok, WithHandle};
                        {error, Reason} -> {error, Reason, WithHandle#state{handle = undefined}}
                    end;
                false ->
                    {error, {ocaml_mismatch, Wanted, Version}, State}
            end;
        {ok, Other} ->
            {error, {bad_info, Other}, State};
        {error, timeout} ->
            {error, {start_timeout, info}, State};
        {error, Reason} ->
            {error, Reason, State}
    end.

-spec load_all([file:filename_all()], integer() | infinity, #state{}) -> ok | {error, term()}.
load_all([], _Deadline, _State) ->
    ok;
load_all([Path | Paths], Deadline, #state{manager = Manager, node = Node} = State) ->
    case node_call(Node, {load, plugin_path(Path), time_left(Deadline)}, Deadline) of
        {ok, Answer} ->
            case ocaml_port_protocol:load_answer(Answer) of
                {ok, Declared} ->
                    case ocaml_pool_manager:declare(Manager, Path, Declared) of
                        ok -> load_all(Paths, Deadline, State);
                        {error, _} = Error -> Error
                    end;
                {error, _} = Error ->
                    Error
            end;
        {error, timeout} ->
            {error, {start_timeout, {load, Path}}};
        {error, _} = Error ->
            Error
    end.

%% A call to the node's ocaml process, within the start's deadline.
-spec node_call(node(), term(), integer() | infinity) -> {ok, term()} | {error, timeout | noconnection | term()}.
node_call(Node, Request, Deadline) ->
    try
        {ok, gen_server:call({ocaml, Node}, Request, time_left(Deadline))}
    catch
        exit:{timeout, _} -> {error, timeout};
        exit:{{nodedown, _}, _} -> {error, noconnection};
        exit:{noconnection, _} -> {error, noconnection};
        exit:{Reason, _} -> {error, Reason}
    end.

%% A plugin's path as the node takes it: absolute (the node's working directory is
%% not the pool's) and a binary (the node keeps the answer of a binary path).
-spec plugin_path(file:filename_all()) -> binary().
plugin_path(Path) ->
    %% ocaml_options checked it: a binary, or a list of characters.
    case unicode:characters_to_binary(filename:absname(Path)) of
        Binary when is_binary(Binary) -> Binary
    end.

%% The name of the next node this worker starts: camlbeam_VMPid_N_0 and _1 in turn
%% (N unique in the VM, made when the worker process starts), on this VM's host. Two
%% names, so that a new node never waits for its predecessor's name to be free in EPMD.
-spec own_node_name(#state{}) -> {node(), #state{}}.
own_node_name(#state{name_base = undefined} = State) ->
    [_, Host] = string:split(atom_to_list(node()), "@"),
    Base = "camlbeam_" ++ os:getpid() ++ "_" ++ integer_to_list(erlang:unique_integer([positive])),
    own_node_name(State#state{name_base = {Base, Host}});
own_node_name(#state{name_base = {Base, Host}, starts = Starts} = State) ->
    {list_to_atom(Base ++ "_" ++ integer_to_list(Starts rem 2) ++ "@" ++ Host), State#state{starts = Starts + 1}}.

-spec node_arguments(node(), pos_integer(), ocaml_pool_manager:worker_setup()) -> [string()].
node_arguments(Node, Id, #{policy := Policy, max_reply_size := MaxReply}) ->
    NameFlag = case net_kernel:longnames() of
                   true -> "--name";
                   _ -> "--sname"
               end,
    Ticktime = case net_kernel:get_net_ticktime() of
                   {ongoing_change_to, Seconds} -> Seconds;
                   Seconds when is_integer(Seconds) -> Seconds;
                   ignored -> 60
               end,
    [NameFlag, atom_to_list(Node), "--hidden", "--allow-load", "--stop-on-eof",
     "--net-ticktime", integer_to_list(max(4, Ticktime)), "--worker-id", integer_to_list(Id),
     "--max-reply-size", integer_to_list(MaxReply)
     | tls_arguments() ++ policy_arguments(Policy)].

%% A VM distributed over TLS (erl -proto_dist inet_tls -ssl_dist_optfile F) reaches its
%% nodes over TLS, with the same options (docs/node.md, TLS).
-spec tls_arguments() -> [string()].
tls_arguments() ->
    case {init:get_argument(proto_dist), init:get_argument(ssl_dist_optfile)} of
        {{ok, [["inet_tls"] | _]}, {ok, [[File] | _]}} -> ["--proto-dist", "inet_tls", "--ssl-dist-optfile", File];
        _ -> []
    end.

%% The pool's policy, as the node enforces it (docs/node.md).
-spec policy_arguments(ocaml_policy:policy()) -> [string()].
policy_arguments(#{send := Send, erl_call := ErlCall, max_erl_calls := Max}) ->
    Allowed = case ErlCall of
                  none -> "none";
                  all -> "all";
                  [] -> "none";
                  List -> lists:join(",", [case Entry of
                                               {M, F} -> io_lib:format("~ts:~ts", [M, F]);
                                               {M, F, A} -> io_lib:format("~ts:~ts/~b", [M, F, A])
                                           end || Entry <- List])
              end,
    ["--send", atom_to_list(Send), "--erl-call", lists:flatten(Allowed), "--max-erl-calls", integer_to_list(Max)].

-spec publish(#state{}) -> ok.
publish(#state{published = true}) ->
    ok;
publish(#state{pool = Pool, id = Id, handle = #ocaml_node{in_flight = InFlight} = Handle,
               setup = #{max_queue := MaxQueue}, first_start = First}) ->
    ocaml_worker_lib:publish(#camlbeam_worker{key = {Pool, Id}, pid = self(), transport = ocaml_node_transport,
                                              handle = Handle, in_flight = InFlight, max_queue = MaxQueue},
                             First).

-spec report_start(ok | {error, term()}, #state{}) -> #state{}.
report_start(Result, #state{manager = Manager, id = Id} = State) ->
    ok = ocaml_pool_manager:started(Manager, Id, Result),
    State#state{first_start = false}.

%% A start that failed is reported, and tried again after the pool's
%% restart_backoff, as a port worker's would be.
-spec failed_start(term(), #state{}) -> #state{}.
failed_start(Reason, #state{failures = Failures} = State) ->
    Logged = log(warning, "OCaml node ~ts ended before it served (~tp)~ts",
                 [State#state.node, Reason,
                  case Failures of
                      0 -> "";
                      _ -> io_lib:format(" (~b in a row: restart_backoff)", [Failures + 1])
                  end], State),
    retry_later(report_start({error, Reason}, Logged)).

-spec retry_later(#state{}) -> #state{}.
retry_later(#state{failures = Failures, setup = #{restart_backoff := Backoff}} = State) ->
    %% One start in waiting at a time: a recycle meanwhile starts at once, and the timer's
    %% message, no longer this one, is dropped.
    Timer = make_ref(),
    _ = erlang:send_after(ocaml_worker_lib:restart_delay(Failures, Backoff), self(), {retry_start, Timer}),
    State#state{failures = Failures + 1, retry_timer = Timer}.

%% The node is gone: out of the registry, its loads answered, and a new start
%% after the backoff (from its first delay if the node served for a while).
-spec node_lost(crash_reason(), #state{}) -> #state{}.
node_lost(_Reason, #state{handle = undefined} = State) ->
    %% Starting: the start's own steps see it.
    State;
node_lost(Reason, #state{loads = Loads, started_at = StartedAt} = State0) ->
    _ = [Alias ! {Alias, {worker_crashed, Reason}} || Alias <- maps:values(Loads)],
    State1 = close(unpublish(State0#state{loads = #{}, handle = undefined, asking = undefined,
                                          asked_at = undefined})),
    State2 = case StartedAt =/= undefined andalso now_ms() - StartedAt >= ?STABLE_AFTER of
                 true -> State1#state{failures = 0};
                 false -> State1
             end,
    State = log(warning, "OCaml node ~ts ended (~tp); its calls in flight answer {worker_crashed, noconnection}",
                [State0#state.node, Reason], State2),
    case State#state.retiring of
        true -> State;
        false -> retry_later(State)
    end.

%% Ends this worker's own OS process (its node stops when standard input
%% closes) and the watch on the node.
-spec close(#state{}) -> #state{}.
close(#state{port = Port, node = Node} = State) ->
    %% A node of its own is cut off at once, so that no caller sends it more while it stops.
    _ = is_port(Port) andalso erlang:disconnect_node(Node),
    _ = is_port(Port) andalso (catch exit(Port, kill)),
    _ = Node =/= undefined andalso erlang:monitor_node(Node, false),
    %% A nodedown of this connection must not be taken for the loss of the next one.
    receive {nodedown, Node} -> ok after 0 -> ok end,
    State#state{port = undefined, handle = undefined}.

%% Asks the node for its count of requests, unless a question is on its way:
%% a node that has not answered that one within stall_timeout is lost.
-spec ask_in_flight(#state{}) -> #state{}.
ask_in_flight(#state{handle = #ocaml_node{node = Node}, asking = undefined} = State) ->
    Tag = make_ref(),
    case erlang:send({ocaml, Node}, {'$gen_call', {self(), {camlbeam_in_flight, Tag}}, in_flight},
                     [noconnect, nosuspend]) of
        ok -> State#state{asking = Tag, asked_at = now_ms()};
        _ -> State
    end;
ask_in_flight(#state{handle = #ocaml_node{}, asked_at = AskedAt, port = Port, node = Node,
                     setup = #{stall_timeout := Stall}} = State) when is_integer(AskedAt) ->
    case now_ms() - AskedAt >= Stall of
        true ->
            %% Its own: killed (a stopped process reads no end of file), by the pid the VM
            %% spawned, not one the node says; a given one: cut off, joined again when it answers.
            _ = case is_port(Port) andalso erlang:port_info(Port, os_pid) of
                    {os_pid, OsPid} when is_integer(OsPid), OsPid > 0 ->
                        os:cmd("kill -9 " ++ integer_to_list(OsPid));
                    _ ->
                        erlang:disconnect_node(Node)
                end,
            node_lost(unresponsive, State);
        false ->
            State
    end;
ask_in_flight(State) ->
    State.

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

%% A retiring or recycled worker leaves the registry, then waits until its node
%% holds no request (its own count, asked every 100 ms from 50 ms on: a caller
%% that found the worker before it left has sent its call by then, and the node
%% counts it), for at most ?DRAIN_LIMIT. The callers' counter is not enough: it
%% counts calls still on their way, and is set right against the node's count.
-spec drain(#state{}) -> {noreply, #state{}}.
drain(State) ->
    _ = erlang:send_after(50, self(), drain_check),
    {noreply, unpublish(State#state{drain_until = now_ms() + ?DRAIN_LIMIT})}.

-spec drained(#state{}) -> {noreply, #state{}} | {stop, normal, #state{}}.
drained(#state{handle = undefined} = State) ->
    drain_done(State);
drained(#state{handle = #ocaml_node{node = Node}, drain_until = Until} = State) ->
    case now_ms() >= Until of
        true ->
            drain_done(State);
        false ->
            Tag = make_ref(),
            _ = erlang:send({ocaml, Node}, {'$gen_call', {self(), {camlbeam_drain, Tag}}, in_flight},
                            [noconnect, nosuspend]),
            _ = erlang:send_after(100, self(), drain_check),
            {noreply, State#state{drain_tag = Tag}}
    end.

-spec drain_done(#state{}) -> {noreply, #state{}} | {stop, normal, #state{}}.
drain_done(#state{retiring = true} = State) ->
    {stop, normal, close(unpublish(State))};
drain_done(State) ->
    {noreply, start(close(State#state{recycling = false}))}.

-spec unpublish(#state{}) -> #state{}.
unpublish(#state{published = true, pool = Pool, id = Id} = State) ->
    ok = camlbeam_registry:unregister_worker({Pool, Id}),
    State#state{published = false};
unpublish(State) ->
    State.

%%% Helpers

-spec log(logger:level(), io:format(), [term()], #state{}) -> #state{}.
log(Level, Format, Args, #state{log_window = Window} = State) ->
    State#state{log_window = ocaml_log_window:log(Level, Format, Args, Window)}.

-spec time_left(integer() | infinity) -> timeout().
time_left(infinity) -> infinity;
time_left(Deadline) -> max(0, Deadline - now_ms()).

-spec now_ms() -> integer().
now_ms() ->
    erlang:monotonic_time(millisecond).
