%% The node coupling's benchmark driver (bench/node/README.md). One run measures, side by
%% side, gen_server:call({Name, Node}, {call, id, [Payload]}) answered {ok, Payload} by
%%
%%   erl_node    a second Erlang node (peer), an identity gen_server registered as echo;
%%   c_node      c_node.cpp: a libei C-node decoding Payload into a C tree and re-encoding it;
%%   ocaml_node  camlbeam-node --load port_bench_exports.cmxs (export id), registered as
%%               ocaml: "unavailable (why)" until an executable is given or found;
%%
%% on the payloads of the port benchmark (port_bench:payload_names/0): p50/p99 of one caller
%% and calls/s of one and of two concurrent callers, in rounds that visit every target in a
%% rotating order; then the calls/s each target sustains from 4 Erlang nodes at once. Every
%% echo is checked equal to its payload. PASS/miss only for the OCaml node's targets, only
%% when it ran.
%%
%% Run by bench/node/run.sh, in a distributed VM on loopback:
%%   erl -noshell -sname NAME -setcookie C -connect_all false -kernel inet_dist_use_interface '{127,X,Y,Z}'
%%       -pa EBIN -pa PORT_EBIN -run node_bench main -extra [--smoke] --c-node EXE
%%       --payloads DIR --out FILE [--ocaml-node EXE | --ocaml-node-found EXE] [--plugin CMXS]
%%       --address 127.X.Y.Z [--rt-rounds N] [--rt-cell-ms MS] [--load-ms MS] [--load-callers N]
%% (--address: the loopback address this host's name resolves to, where every node listens.
%% --ocaml-node: given, so a node that does not come up fails the run; --ocaml-node-found:
%% found in the build, so one that does not come up is reported unavailable, with why.)
%% It halts 0 when every check passed (missed targets are reported, not failures), 1 on an
%% error or a failed check.
-module(node_bench).
-behaviour(gen_server).

-export([main/0, load_caller/4]).
-export([init/1, handle_call/3, handle_cast/2]).

-define(CALL_TIMEOUT, 60000).
-define(WAIT, 300000).        % the longest any receive here waits: no step hangs the run
-define(UP_TIMEOUT_MS, 15000).  % an OS node must answer net_adm:ping within this
-define(LOAD_NODES, 4).
%% The OCaml node's targets, per payload: {column head, callers, measure, baseline, op}.
-define(TARGETS, [{"p50 1c /c_node", 1, p50, c_node, '=<'}, {"p50 1c /erl_node", 1, p50, erl_node, '=<'},
                  {"calls/s 2c /c_node", 2, rate, c_node, '>='}, {"calls/s 2c /erl_node", 2, rate, erl_node, '>='}]).

-type target() :: erl_node | c_node | ocaml_node.
-type dest() :: {atom(), node()}.
-type ocaml() :: {available, dest()} | {unavailable, string()}.
-type cell() :: {[integer()], non_neg_integer(), integer()}.  % latencies (ns), calls, wall time (ns)
-type runs() :: [{1 | 2, [[{target(), cell()}]]}].           % per callers, per round
%% {the median of the per-round ratios and their quartiles (the run's own noise), op, limit}
-type verdict() :: {{number(), number(), number()} | unavailable, '=<' | '>=', float()}.

%% ---- Entry ----

-spec main() -> no_return().
main() ->
    Opts = options(init:get_plain_arguments(), #{mode => full}),
    Main = self(),
    %% The run reports every OS node it starts, so that they are stopped however it ends:
    %% halt/1 alone would leave a camlbeam-node that does not watch its stdin running.
    {_, Monitor} = spawn_monitor(fun() ->
                                         put(main, Main),
                                         try run(Opts)
                                         catch Class:Reason:Stack -> exit({Class, Reason, Stack})
                                         end
                                 end),
    halt(wait_run(Monitor, [])).

-spec wait_run(reference(), [pid()]) -> 0 | 1.
wait_run(Monitor, Keepers) ->
    receive
        {keeper, Keeper} ->
            wait_run(Monitor, [Keeper | Keepers]);
        {'DOWN', Monitor, process, _, Reason} ->
            [stop_os_node(K) || K <- Keepers],
            case Reason of
                normal -> 0;
                _ -> io:format(standard_error, "node_bench: ~p~n", [Reason]), 1
            end
    end.

%% {flag, key in the options, how its value is read}
-define(OPTIONS, [{"--c-node", c_node, string}, {"--ocaml-node", ocaml_node, string},
                  {"--ocaml-node-found", ocaml_node_found, string}, {"--plugin", plugin, string},
                  {"--payloads", payloads, string}, {"--out", out, string}, {"--address", address, string},
                  {"--rt-rounds", rt_rounds, integer}, {"--rt-cell-ms", rt_cell_ms, integer},
                  {"--load-ms", load_ms, integer}, {"--load-callers", load_callers, integer}]).

-spec options([string()], map()) -> map().
options([], Opts) -> Opts;
options(["--smoke" | Rest], Opts) -> options(Rest, Opts#{mode => smoke});
options([Flag, Value | Rest], Opts) ->
    case lists:keyfind(Flag, 1, ?OPTIONS) of
        {_, Key, string} -> options(Rest, Opts#{Key => Value});
        {_, Key, integer} -> options(Rest, Opts#{Key => list_to_integer(Value)});
        false -> error({unknown_option, Flag})
    end;
options(Other, _) -> error({bad_options, Other}).

%% What each mode does. smoke: every code path for a few iterations, checks, no verdicts.
-spec config(full | smoke) -> map().
config(full) ->
    %% Many short rounds, every target in each: a burst of load from another tenant falls
    %% on all targets alike, not on one.
    #{rt_cell_ms => 300, rt_rounds => 8, warm_ms => 20,
      load_ms => 2000, load_rounds => 3, load_callers => 2, load_payloads => ["int42", "mixed_tuple"]};
config(smoke) ->
    #{rt_cell_ms => 5, rt_rounds => 1, warm_ms => 1,
      load_ms => 100, load_rounds => 1, load_callers => 2, load_payloads => ["int42", "mixed_tuple"]}.

-spec run(map()) -> ok.
run(Opts = #{mode := Mode, out := Out, c_node := CNodeExe}) ->
    Cfg0 = maps:merge(config(Mode), Opts),
    node() =/= nonode@nohost orelse error(not_distributed),
    {ok, Fd} = file:open(Out, [write, {encoding, utf8}]),
    put(report_fd, Fd),
    Suffix = os:getpid(),  % unique on this machine: names are EPMD's, shared with other runs
    {ErlPeer, ErlNode} = start_peer("nb_erl_" ++ Suffix, maps:get(address, Cfg0)),
    %% peer:call needs an alternative connection; over the distribution, erpc is the way.
    {ok, _} = erpc:call(ErlNode, gen_server, start, [{local, echo}, ?MODULE, [], []], ?CALL_TIMEOUT),
    CNode = start_os_node(c_node, CNodeExe, "nb_c_" ++ Suffix, ["--address", maps:get(address, Cfg0)]),
    Ocaml = ocaml_node(Cfg0, "nb_ocaml_" ++ Suffix),
    Targets = [{erl_node, {echo, ErlNode}}, {c_node, {c_node, CNode}}]
        ++ case Ocaml of
               {available, Dest} -> [{ocaml_node, Dest}];
               {unavailable, _} -> []
           end,
    Cfg = Cfg0#{ocaml => Ocaml},
    port_bench:header("node", Cfg),
    case Ocaml of
        {available, {_, ONode}} -> p("ocaml_node: ~s~n", [ONode]);
        {unavailable, Why} -> p("ocaml_node: unavailable (~ts); the baselines only, no verdicts~n", [Why])
    end,
    Verdicts = round_trips(Cfg, Targets),
    ok = load(Cfg, Targets),
    verdicts(Mode, Verdicts),
    ok = peer:stop(ErlPeer),
    ok = file:close(Fd).

-spec p(io:format(), [term()]) -> ok.
p(Fmt, Args) -> port_bench:p(Fmt, Args).

%% ---- The nodes ----

-spec start_peer(string(), string()) -> {pid(), node()}.
start_peer(Name, Address) ->
    %% The load callers run this module, which uses port_bench. -connect_all false: the nodes
    %% connect only to the nodes they call, not all to all (global's mesh and its warnings
    %% when peers stop are no part of what is measured).
    Paths = lists:append([["-pa", filename:dirname(code:which(M))] || M <- [?MODULE, port_bench]]),
    {ok, Peer, Node} = peer:start(#{name => list_to_atom(Name), wait_boot => ?UP_TIMEOUT_MS,
                                    args => ["-setcookie", atom_to_list(erlang:get_cookie()), "-connect_all", "false" | Paths] ++ [
                                             "-kernel", "inet_dist_use_interface", interface(Address)]}),
    {Peer, Node}.

%% "127.0.1.1" -> "{127,0,1,1}", as -kernel inet_dist_use_interface wants it.
-spec interface(string()) -> string().
interface(Address) ->
    {ok, Tuple} = inet:parse_ipv4strict_address(Address),
    lists:flatten(io_lib:format("~w", [Tuple])).

%% The OCaml node's column: {available, Dest} once camlbeam-node answers a ping and
%% {call, id, [42]}. Only a missing executable, or one found in the build that does not
%% come up, is "unavailable"; a node given with --ocaml-node must come up.
-spec ocaml_node(map(), string()) -> ocaml().
ocaml_node(Cfg, Name) ->
    Plugin = maps:get(plugin, Cfg, ""),
    Up = fun(Exe) ->
                 Node = start_os_node(ocaml_node, Exe, Name, ["--load", Plugin]),
                 Dest = {ocaml, Node},
                 {ok, 42} = gen_server:call(Dest, {call, id, [42]}, ?CALL_TIMEOUT),
                 {available, Dest}
         end,
    case Cfg of
        #{ocaml_node := Exe} ->
            Up(Exe);
        #{ocaml_node_found := Exe} ->
            try Up(Exe)
            catch Class:Reason ->
                    {unavailable, lists:flatten(io_lib:format("~s did not come up: ~0p", [Exe, {Class, Reason}]))}
            end;
        _ ->
            {unavailable, "no camlbeam-node executable given (--ocaml-node) or found in the build"}
    end.

%% Starts Exe --sname Name --cookie C Args in a keeper process, which owns its port, logs its
%% output and stops it when told (stop_os_node/1), and waits until the node answers
%% net_adm:ping. Returns the node's name.
-spec start_os_node(target(), string(), string(), [string()]) -> node().
start_os_node(Label, Exe, Name, Args) ->
    [_, Host] = string:split(atom_to_list(node()), "@"),
    Node = list_to_atom(Name ++ "@" ++ Host),
    Cookie = atom_to_list(erlang:get_cookie()),
    Starter = self(),
    Keeper = spawn(fun() -> keeper(Starter, Label, Exe, ["--sname", Name, "--cookie", Cookie | Args]) end),
    get(main) ! {keeper, Keeper},
    case wait_pong(Node, Keeper, erlang:monotonic_time(millisecond) + ?UP_TIMEOUT_MS) of
        pong -> Node;
        Other -> error({no_pong, Label, Node, Other})
    end.

%% pong, or why not: the program exited, or the time ran out.
-spec wait_pong(node(), pid(), integer()) -> pong | {exited, integer()} | timeout.
wait_pong(Node, Keeper, Until) ->
    case net_adm:ping(Node) of
        pong -> pong;
        pang ->
            receive {os_node_exited, Keeper, Status} -> {exited, Status}
            after 50 ->
                case erlang:monotonic_time(millisecond) < Until of
                    true -> wait_pong(Node, Keeper, Until);
                    false -> timeout
                end
            end
    end.

-spec keeper(pid(), target(), string(), [string()]) -> ok.
keeper(Starter, Label, Exe, Args) ->
    Port = open_port({spawn_executable, Exe}, [{args, Args}, {line, 1024}, use_stdio, stderr_to_stdout, exit_status]),
    {os_pid, OsPid} = erlang:port_info(Port, os_pid),
    keeper_loop(Starter, Label, Port, OsPid).

-spec keeper_loop(pid(), target(), port() | exited, non_neg_integer()) -> ok.
keeper_loop(Starter, Label, Port, OsPid) ->
    receive
        {Port, {data, {_, Line}}} ->
            io:format(standard_error, "node_bench: ~s: ~ts~n", [Label, Line]),
            keeper_loop(Starter, Label, Port, OsPid);
        {Port, {exit_status, Status}} ->
            io:format(standard_error, "node_bench: ~s exited with status ~b~n", [Label, Status]),
            Starter ! {os_node_exited, self(), Status},
            keeper_loop(Starter, Label, exited, OsPid);
        {stop, From} ->
            %% Closing the port closes its stdin (c_node exits then); whatever still runs
            %% after a second is killed.
            Port =/= exited andalso port_close(Port),
            ok = wait_gone(OsPid, 20, "TERM"),
            From ! {stopped, self()},
            ok
    after ?WAIT * 4 -> ok  % the run's limit is shorter; the main process stops it first
    end.

-spec wait_gone(non_neg_integer(), non_neg_integer(), string()) -> ok.
wait_gone(OsPid, 0, "TERM") ->
    _ = os:cmd("kill -TERM " ++ integer_to_list(OsPid)),
    wait_gone(OsPid, 20, "KILL");
wait_gone(OsPid, 0, "KILL") ->
    _ = os:cmd("kill -KILL " ++ integer_to_list(OsPid)),
    ok;
wait_gone(OsPid, Tries, Signal) ->
    case filelib:is_dir("/proc/" ++ integer_to_list(OsPid)) of
        false -> ok;
        true -> timer:sleep(50), wait_gone(OsPid, Tries - 1, Signal)
    end.

-spec stop_os_node(pid()) -> ok.
stop_os_node(Keeper) ->
    Keeper ! {stop, self()},
    receive {stopped, Keeper} -> ok after 5000 -> ok end.

%% ---- Round trips ----

-spec round_trips(map(), [{target(), dest()}]) -> [{string(), [verdict()]}].
round_trips(Cfg = #{payloads := Dir, ocaml := Ocaml}, Targets) ->
    p("~n== Round trip: gen_server:call(Dest, {call, id, [P]}) -> {ok, P}, times in microseconds ==~n", []),
    p("~-12s ~7s  ~-11s ~9s ~9s ~9s  ~8s ~9s  ~8s ~9s~n",
      ["payload", "callers", "target", "p50", "p99", "calls/s", "p50/c", "p50/erl", "rate/c", "rate/erl"]),
    Verdicts = [round_trip_payload(Cfg, Targets, Name, port_bench:read_payload(Dir, Name))
                || Name <- port_bench:payload_names()],
    p("(erl_node: an identity gen_server on a second Erlang node (peer); c_node: c_node.cpp, libei,~n"
      " the payload decoded into a C tree and re-encoded; ocaml_node: camlbeam-node with the port~n"
      " benchmark's plugin. calls/s: all calls of the cells over their wall time, each echo's~n"
      " comparison with its payload included. p50/X, rate/X: this row's p50 or calls/s over X's,~n"
      " c = c_node, erl = erl_node, same payload and callers.)~n", []),
    case Ocaml of
        {unavailable, Why} -> p("(ocaml_node: unavailable (~ts): its rows are left out)~n", [Why]);
        _ -> ok
    end,
    Verdicts.

-spec round_trip_payload(map(), [{target(), dest()}], string(), term()) -> {string(), [verdict()]}.
round_trip_payload(Cfg = #{rt_rounds := Rounds}, Targets, Name, Payload) ->
    Runs = [{C, [[{T, cell(Cfg, T, Dest, Payload, C)} || {T, Dest} <- rotate(R, Targets)] || R <- lists:seq(1, Rounds)]}
            || C <- [1, 2]],
    %% Runs: per callers, per round, {Target, {Lats, Calls, WallNs}} in the round's order.
    Stats = [{C, [{T, pooled([Cell || Round <- PerRound, {T1, Cell} <- Round, T1 =:= T])} || {T, _} <- Targets]}
             || {C, PerRound} <- Runs],
    [begin
         Of = proplists:get_value(C, Stats),
         Ratio = fun(T, Base, I) ->
                         case T =:= Base orelse Base =:= c_node andalso T =:= erl_node of
                             true -> "-";
                             false -> io_lib:format("~.2f", [element(I, proplists:get_value(T, Of))
                                                            / element(I, proplists:get_value(Base, Of))])
                         end
                 end,
         [p("~-12s ~7b  ~-11s ~9.1f ~9.1f ~9b  ~8s ~9s  ~8s ~9s~n",
            [Name, C, T, P50 / 1000, P99 / 1000, round(Rate),
             Ratio(T, c_node, 1), Ratio(T, erl_node, 1), Ratio(T, c_node, 3), Ratio(T, erl_node, 3)])
          || {T, {P50, P99, Rate}} <- Of]
     end || C <- [1, 2]],
    round_trip_verdicts(Cfg, Name, Runs).

%% The OCaml node's targets for this payload, {Name, [{Ratio, Op, Limit}]} in the order of
%% ?TARGETS: p50 of one caller no worse than either baseline's, calls/s of two callers no
%% lower. Each round's OCaml cell is paired with the baseline's cell of the same round
%% (adjacent in time, so under the same load), and the median of the ratios is judged.
-spec round_trip_verdicts(map(), string(), runs()) -> {string(), [verdict()]}.
round_trip_verdicts(#{ocaml := Ocaml}, Name, Runs) ->
    Measures = #{p50 => fun cell_p50/1, rate => fun cell_rate/1},
    {Name, [{case Ocaml of
                 {available, _} ->
                     Measure = maps:get(What, Measures),
                     Ratios = lists:sort([Measure(proplists:get_value(ocaml_node, Round)) / Measure(proplists:get_value(Base, Round))
                                          || Round <- proplists:get_value(C, Runs)]),
                     {port_bench:median(Ratios), port_bench:percentile(Ratios, 25), port_bench:percentile(Ratios, 75)};
                 {unavailable, _} -> unavailable
             end, Op, 1.0}
            || {_, C, What, Base, Op} <- ?TARGETS]}.

-spec cell_p50(cell()) -> number().
cell_p50({Lats, _, _}) -> port_bench:median(Lats).
-spec cell_rate(cell()) -> float().
cell_rate({_, Calls, Wall}) -> Calls * 1.0e9 / Wall.

%% {p50, p99, calls/s} of the cells of one target.
-spec pooled([cell()]) -> {integer(), integer(), float()}.
pooled(Cells) ->
    Sorted = lists:sort(lists:append([L || {L, _, _} <- Cells])),
    {port_bench:percentile(Sorted, 50), port_bench:percentile(Sorted, 99),
     lists:sum([N || {_, N, _} <- Cells]) * 1.0e9 / lists:sum([W || {_, _, W} <- Cells])}.

-spec rotate(non_neg_integer(), [T]) -> [T].
rotate(R, L) ->
    {A, B} = lists:split(R rem length(L), L),
    B ++ A.

%% One cell: Callers processes calling Dest for rt_cell_ms after their warm-up. Returns
%% every latency (ns), the number of calls, and the wall time from go to the last caller's end.
-spec cell(map(), target(), dest(), term(), pos_integer()) -> {[integer()], non_neg_integer(), integer()}.
cell(#{warm_ms := WarmMs, rt_cell_ms := CellMs}, Target, Dest, Payload, Callers) ->
    Parent = self(),
    Pids = [spawn_link(fun() -> rt_caller(Parent, Target, Dest, Payload, WarmMs) end) || _ <- lists:seq(1, Callers)],
    [receive {ready, P} -> ok after ?WAIT -> error({caller_not_ready, Target}) end || P <- Pids],
    T0 = now_ns(),
    [P ! {go, T0 + CellMs * 1000000} || P <- Pids],
    Done = [receive {done, P, LatsCalls} -> LatsCalls after ?WAIT -> error({caller_timeout, Target}) end || P <- Pids],
    Wall = now_ns() - T0,
    {lists:append([L || {L, _} <- Done]), lists:sum([N || {_, N} <- Done]), Wall}.

-spec rt_caller(pid(), target(), dest(), term(), non_neg_integer()) -> {done, pid(), {[integer()], pos_integer()}}.
rt_caller(Parent, Target, Dest, Payload, WarmMs) ->
    Call = call_fun(Target, Payload, Dest),
    (Call())(),
    port_bench:warm_up(fun(_) -> (Call())() end, Payload, 1, now_ns() + WarmMs * 1000000),
    Parent ! {ready, self()},
    receive {go, Until} -> Parent ! {done, self(), timed_until(Call, Until, [], 0)}
    after ?WAIT -> error(no_go)
    end.

%% Calls until Until (ns), each one timed alone; its check comes after the time is taken.
-spec timed_until(fun(() -> fun(() -> ok)), integer(), [integer()], non_neg_integer()) ->
          {[integer()], pos_integer()}.
timed_until(Call, Until, Lats, Calls) ->
    T0 = now_ns(),
    Check = Call(),
    T1 = now_ns(),
    Check(),
    case T1 >= Until of
        true -> {[T1 - T0 | Lats], Calls + 1};
        false -> timed_until(Call, Until, [T1 - T0 | Lats], Calls + 1)
    end.

%% A call of {call, id, [Payload]} to Dest, which returns the check of its answer (an
%% unequal echo fails the caller, and with it the run).
-spec call_fun(term(), term(), dest()) -> fun(() -> fun(() -> ok)).
call_fun(Target, Payload, Dest) ->
    fun() ->
            Reply = gen_server:call(Dest, {call, id, [Payload]}, ?CALL_TIMEOUT),
            fun() ->
                    case Reply of
                        {ok, Payload} -> ok;
                        {ok, Other} -> error({bad_echo, Target, erts_debug:flat_size(Other)});
                        Other -> error({bad_reply, Target, Other})
                    end
            end
    end.

%% ---- Calls from 4 Erlang nodes at once ----

-spec load(map(), [{target(), dest()}]) -> ok.
load(Cfg = #{load_payloads := Names, load_rounds := Rounds, load_ms := Ms, load_callers := Callers, payloads := Dir,
            address := Address},
     Targets) ->
    p("~n== Call rate from ~b Erlang nodes at once, ~b callers each, calls/s over ~b ms ==~n",
      [?LOAD_NODES, Callers, Ms]),
    Suffix = os:getpid(),
    Parent = self(),
    Starters = [spawn_link(fun() -> Parent ! {peer, self(), start_peer(lists:concat(["nb_load", I, "_", Suffix]), Address)} end)
                || I <- lists:seq(1, ?LOAD_NODES)],
    Peers = [receive {peer, S, Peer} -> Peer after ?WAIT -> error(load_peer_not_started) end || S <- Starters],
    p("~-12s ~-11s ~10s  ~8s ~9s~n", ["payload", "target", "calls/s", "rate/c", "rate/erl"]),
    [begin
         Payload = port_bench:read_payload(Dir, Name),
         Rates = [{T, port_bench:median([load_round(Cfg, [N || {_, N} <- Peers], Dest, Payload) || _ <- lists:seq(1, Rounds)])}
                  || {T, Dest} <- Targets],
         Of = fun(T) -> proplists:get_value(T, Rates) end,
         [p("~-12s ~-11s ~10b  ~8s ~9s~n",
            [Name, T, round(R),
             case T of c_node -> "-"; erl_node -> "-"; _ -> io_lib:format("~.2f", [R / Of(c_node)]) end,
             case T of erl_node -> "-"; _ -> io_lib:format("~.2f", [R / Of(erl_node)]) end])
          || {T, R} <- Rates]
     end || Name <- Names],
    [ok = peer:stop(Peer) || {Peer, _} <- Peers],
    p("(~b rounds, targets one after another in each, median; each caller runs on its load node, checks~n"
      " every echo, and counts its calls in its own window of ~b ms.)~n", [Rounds, Ms]),
    case maps:get(ocaml, Cfg) of
        {unavailable, Why} -> p("(ocaml_node: unavailable (~ts): its rows are left out)~n", [Why]);
        _ -> ok
    end.

%% Calls/s of every caller of every load node together, each in its own window.
-spec load_round(map(), [node()], dest(), term()) -> float().
load_round(#{load_ms := Ms, load_callers := Callers, warm_ms := WarmMs}, Nodes, Dest, Payload) ->
    Callers1 = [spawn_monitor(N, ?MODULE, load_caller, [self(), Dest, Payload, WarmMs])
                || N <- Nodes, _ <- lists:seq(1, Callers)],
    [receive
         {ready, P} -> ok;
         {'DOWN', M, process, _, Reason} -> error({load_caller_failed, Reason})
     after ?WAIT -> error(load_caller_not_ready)
     end || {P, M} <- Callers1],
    [P ! {go, Ms} || {P, _} <- Callers1],
    Counts = [receive
                  {done, P, N} -> erlang:demonitor(M, [flush]), N;
                  {'DOWN', M, process, _, Reason} -> error({load_caller_failed, Reason})
              after ?WAIT -> error(load_caller_timeout)
              end || {P, M} <- Callers1],
    lists:sum(Counts) * 1000 / Ms.

%% On a load node: the first echo checked, a warm-up, then calls for WindowMs (from its go),
%% every echo checked; the count goes back to Parent.
-spec load_caller(pid(), dest(), term(), non_neg_integer()) -> ok.
load_caller(Parent, Dest, Payload, WarmMs) ->
    Call = call_fun(Dest, Payload, Dest),
    (Call())(),
    port_bench:warm_up(fun(_) -> (Call())() end, Payload, 1, now_ns() + WarmMs * 1000000),
    Parent ! {ready, self()},
    receive
        {go, WindowMs} -> Parent ! {done, self(), count_until(Call, now_ns() + WindowMs * 1000000, 0)}, ok
    after ?WAIT -> error(no_go)
    end.

-spec count_until(fun(() -> fun(() -> ok)), integer(), non_neg_integer()) -> pos_integer().
count_until(Call, Until, Calls) ->
    (Call())(),
    case now_ns() >= Until of
        true -> Calls + 1;
        false -> count_until(Call, Until, Calls + 1)
    end.

%% ---- Verdicts ----

%% One row a payload, one column a target: the ratio and PASS or miss (full mode, the OCaml
%% node measured), "-" (smoke mode) or "unavailable".
-spec verdicts(full | smoke, [{string(), [verdict()]}]) -> ok.
verdicts(Mode, Verdicts) ->
    p("~n== Targets: ocaml_node against each baseline (medians over rounds of paired cells) ==~n", []),
    p("~-12s~s~n", ["payload", [io_lib:format(" ~20s", [Head]) || {Head, _, _, _, _} <- ?TARGETS]]),
    p("~-12s~s~n", ["", [io_lib:format(" ~20s", [io_lib:format("(~s 1.00)", [Op])]) || {_, _, _, _, Op} <- ?TARGETS]]),
    Quartiles = fun({{_, Q1, Q3}, _, _}) -> io_lib:format("~.3f-~.3f", [Q1, Q3]) end,
    Measured = fun(Row) -> Mode =:= full andalso not lists:keymember(unavailable, 1, Row) end,
    [begin
         p("~-12s~s~n", [Name, [io_lib:format(" ~20s", [verdict(Mode, V)]) || V <- Row]]),
         Measured(Row) andalso p("~-12s~s~n", ["", [io_lib:format(" ~20s", [Quartiles(V)]) || V <- Row]])
     end || {Name, Row} <- Verdicts],
    p("(each cell: the median over the rounds of the ratio of two cells of one round, then PASS or miss;~n"
      " under it, the quartiles of those ratios: a miss whose quartiles straddle the limit is within~n"
      " this run's noise)~n", []),
    case Mode of
        smoke -> p("(smoke mode: a few iterations, no verdicts)~n", []);
        full -> ok
    end.

-spec verdict(full | smoke, verdict()) -> iodata().
verdict(_, {unavailable, _, _}) -> "unavailable";
verdict(smoke, {{Ratio, _, _}, _, _}) -> io_lib:format("~.3f -", [Ratio]);
verdict(full, {{Ratio, _, _}, Op, Limit}) ->
    Pass = case Op of '=<' -> Ratio =< Limit; '>=' -> Ratio >= Limit end,
    io_lib:format("~.3f ~s", [Ratio, case Pass of true -> "PASS"; false -> "miss" end]).

%% ---- The Erlang node's identity server (registered as echo on the peer) ----

-spec init([]) -> {ok, nostate}.
init([]) -> {ok, nostate}.

-spec handle_call(term(), gen_server:from(), nostate) -> {reply, term(), nostate}.
handle_call({call, id, [X]}, _From, State) -> {reply, {ok, X}, State};
handle_call(_, _From, State) -> {reply, {error, undef}, State}.

-spec handle_cast(term(), nostate) -> {noreply, nostate}.
handle_cast(_, State) -> {noreply, State}.

%% ---- Helpers ----

-spec now_ns() -> integer().
now_ns() -> erlang:monotonic_time(nanosecond).
