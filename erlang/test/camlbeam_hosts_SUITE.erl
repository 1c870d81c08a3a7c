%% A pool of the node coupling over OCaml nodes on two hosts. The hosts are network
%% namespaces the suite makes (`ip netns'): each has its own loopback, its own epmd, an
%% address on a veth pair to this host, and a hosts file (/etc/netns/NS/hosts) that names
%% the others. On each runs a camlbeam-node listening on its host's address. The pool runs
%% in a peer VM on this host, whose resolver knows the two hosts (an inetrc file) and whose
%% net_ticktime is short, so that a cut link is seen in seconds.
%%
%% Needs root (namespaces, veth pairs); run by `make test' as the rest, never skipped: a
%% machine where it cannot run fails it, saying why.
-module(camlbeam_hosts_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, init_per_suite/1, end_per_suite/1]).
-export([a_pool_over_two_hosts_serves_through_a_cut_link/1]).
%% Run in the peer VM.
-export([start_pool/2, calls_at_once/2, caller/4, await_callers/2]).

-define(LIB, camlbeam_test_lib).
-define(COOKIE, "camlbeam_hosts_suite_cookie").
%% The peer's net_ticktime (seconds): a cut link is seen within 1.25 times it.
-define(TICKTIME, 4).
%% Each caller's call timeout (ms): longer than a cut takes to be seen, so that the calls
%% stranded on the lost host are answered by its loss, not by their timeout.
-define(CALL_TIMEOUT, 10000).
-define(CALLERS, 8).

%% The node coupling's cases run with the default OCaml only (camlbeam_test_lib:groups/1
%% says why); CAMLBEAM_TEST_NODE_ON_5=1 runs them on 5.3 too.
all() ->
    case ?LIB:node_cases_run() of
        true -> [a_pool_over_two_hosts_serves_through_a_cut_link];
        false -> []
    end.

init_per_suite(Config0) ->
    Config = ?LIB:init_per_suite(Config0),
    string:trim(os:cmd("id -u")) =:= "0"
        orelse ct:fail("camlbeam_hosts_SUITE makes network namespaces and veth pairs: it needs root"),
    Exe = filename:join(?LIB:workers_dir(), "camlbeam-node"),
    filelib:is_regular(Exe) orelse ct:fail("~ts missing: build first (erlang/README.md)", [Exe]),
    %% Unique per run: two runs at once (a CI and a developer) must not meet.
    Run = list_to_integer(os:getpid()) rem 120,
    Hosts = [#{name => "cbhosta", id => 1, ns => "camlbeam_a" ++ os:getpid(), veth => "cba" ++ integer_to_list(Run),
               subnet => {10, 213, 2 * Run, 0}},
             #{name => "cbhostb", id => 2, ns => "camlbeam_b" ++ os:getpid(), veth => "cbb" ++ integer_to_list(Run),
               subnet => {10, 213, 2 * Run + 1, 0}}],
    %% A host half made is undone here: end_per_suite does not run after a failed init.
    Made = try [make_host(Host, Hosts) || Host <- Hosts]
           catch Class:Reason:Stack ->
               [remove_host(Host) || Host <- Hosts],
               erlang:raise(Class, Reason, Stack)
           end,
    [{hosts, Made}, {node_executable, Exe}, {flavour, native} | Config].

end_per_suite(Config) ->
    [remove_host(Host) || Host <- proplists:get_value(hosts, Config, [])],
    ?LIB:end_per_suite(Config).

%% Two hosts serve a pool under load; one host's link goes down: every call is answered
%% (those stranded on the lost host with noconnection once its loss is seen), the other
%% host serves on alone; the link comes back and the lost host's node rejoins the pool.
a_pool_over_two_hosts_serves_through_a_cut_link(Config) ->
    [A, B] = Hosts = ?config(hosts, Config),
    Ports = [start_ocaml_node(Config, Host) || Host <- Hosts],
    try
        {Peer, Pool} = start_peer_pool(Config, Hosts),
        try
            %% Both hosts serve.
            ?LIB:wait_until(fun() -> served_by(Peer, Pool, 8) =:= [1, 2] end, 10000),
            Callers = peer:call(Peer, ?MODULE, caller, [Pool, self(), ?CALLERS, ?CALL_TIMEOUT]),
            timer:sleep(1000),
            CutAt = erlang:monotonic_time(millisecond),
            ip(["link", "set", maps:get(veth, A), "down"]),
            %% The loss is seen within 1.25 net_ticktime; then B alone serves.
            ?LIB:wait_until(fun() -> [2] =:= worker_ids(Peer, Pool) end, 1250 * ?TICKTIME + 3000),
            SeenAfter = erlang:monotonic_time(millisecond) - CutAt,
            ct:pal("the cut was seen after ~b ms", [SeenAfter]),
            ?assertEqual([2], served_by(Peer, Pool, 8)),
            timer:sleep(1000),
            ip(["link", "set", maps:get(veth, A), "up"]),
            %% A's node rejoins (the worker connects again, within its restart_backoff).
            ?LIB:wait_until(fun() -> [1, 2] =:= worker_ids(Peer, Pool) end, 20000),
            ?LIB:wait_until(fun() -> served_by(Peer, Pool, 8) =:= [1, 2] end, 10000),
            Results = peer:call(Peer, ?MODULE, await_callers, [Callers, ?CALL_TIMEOUT + 5000], ?CALL_TIMEOUT + 10000),
            check_results(Results, B)
        after
            peer:stop(Peer)
        end
    after
        [catch port_close(Port) || Port <- Ports]
    end.

%% Every call of every caller was answered, within its timeout: served by host 1 or 2,
%% or failed for the loss of host 1's connection, never anything else.
check_results(Results, #{id := Survivor}) ->
    All = lists:append([Answers || {_Caller, Answers} <- Results]),
    ct:pal("~b calls: ~p", [length(All), count(All)]),
    ?assertEqual(?CALLERS, length(Results)),
    [?assertMatch({ok, Id} when Id =:= 1; Id =:= 2, Answer) ||
        {Answer, _Took} <- All, element(1, Answer) =:= ok],
    Failed = [Answer || {Answer, _} <- All, element(1, Answer) =/= ok],
    [?assertEqual({error, {worker_crashed, noconnection}}, Answer) || Answer <- Failed],
    ?assert(length(Failed) =< ?CALLERS),  % at most the calls in flight on host 1 at the cut
    ?assert(lists:all(fun({_, Took}) -> Took =< ?CALL_TIMEOUT + 500 end, All)),
    ?assert(lists:member({ok, Survivor}, [Answer || {Answer, _} <- All])).

count(All) ->
    lists:foldl(fun({Answer, _}, Counts) -> maps:update_with(Answer, fun(N) -> N + 1 end, 1, Counts) end, #{}, All).

%%% The hosts

make_host(#{ns := Ns, veth := Veth, subnet := Subnet} = Host, Hosts) ->
    ip(["netns", "add", Ns]),
    ip(["-n", Ns, "link", "set", "lo", "up"]),
    ip(["link", "add", Veth, "type", "veth", "peer", "name", "eth0", "netns", Ns]),
    ip(["addr", "add", address(Subnet, 1) ++ "/24", "dev", Veth]),
    ip(["link", "set", Veth, "up"]),
    ip(["-n", Ns, "addr", "add", address(Subnet, 2) ++ "/24", "dev", "eth0"]),
    ip(["-n", Ns, "link", "set", "eth0", "up"]),
    %% ip netns exec mounts /etc/netns/NS/hosts on /etc/hosts: this host, as the peer VM's
    %% node name spells it, is the near end of the veth.
    Dir = filename:join("/etc/netns", Ns),
    ok = filelib:ensure_path(Dir),
    Lines = ["127.0.0.1 localhost\n", address(Subnet, 1), " ", this_host(), "\n",
             [[address(S, 2), " ", Name, "\n"] || #{subnet := S, name := Name} <- Hosts]],
    ok = file:write_file(filename:join(Dir, "hosts"), Lines),
    %% Its own epmd, on its loopback and its address, as a host's would be.
    ip(["netns", "exec", Ns, "epmd", "-daemon", "-address", "127.0.0.1," ++ address(Subnet, 2)]),
    Host#{address => address(Subnet, 2)}.

remove_host(#{ns := Ns, veth := Veth}) ->
    %% Whatever runs there (its epmd, a node left behind) goes with it.
    Pids = string:lexemes(os:cmd("ip netns pids " ++ Ns ++ " 2>/dev/null"), "\n"),
    _ = [os:cmd("kill -9 " ++ Pid) || Pid <- Pids],
    _ = os:cmd("ip link del " ++ Veth ++ " 2>/dev/null"),
    _ = os:cmd("ip netns del " ++ Ns ++ " 2>/dev/null"),
    _ = file:del_dir_r(filename:join("/etc/netns", Ns)),
    ok.

start_ocaml_node(Config, #{ns := Ns, name := Name, id := Id, address := Address}) ->
    Port = open_port({spawn_executable, os:find_executable("ip")},
                     [{args, ["netns", "exec", Ns, ?config(node_executable, Config),
                              "--sname", "ocaml@" ++ Name, "--cookie", ?COOKIE, "--listen-address", Address,
                              "--net-ticktime", integer_to_list(?TICKTIME), "--allow-load", "--stop-on-eof",
                              "--worker-id", integer_to_list(Id)]},
                      exit_status, stderr_to_stdout, {line, 1024}]),
    receive
        {Port, {data, {eol, "camlbeam-node: " ++ _ = Line}}} ->
            ?assertNotEqual(nomatch, string:find(Line, "listening on port")),
            Port;
        {Port, {exit_status, Status}} ->
            ct:fail("camlbeam-node on ~ts exited with ~b", [Name, Status])
    after 10000 ->
        ct:fail("camlbeam-node on ~ts did not start", [Name])
    end.

%% A peer VM on this host: its resolver knows the two hosts, its ticks are quick.
start_peer_pool(Config, Hosts) ->
    Inetrc = filename:join(?config(priv_dir, Config), "inetrc"),
    ok = file:write_file(Inetrc, [[io_lib:format("{host, ~p, [~p]}.~n", [inet_address(A), Name])
                                   || #{address := A, name := Name} <- Hosts],
                                  "{lookup, [file, native]}.\n"]),
    Paths = [Dir || Dir <- code:get_path(), not lists:prefix(code:lib_dir(), Dir)],
    Args = ["-sname", "camlbeam_hosts_" ++ os:getpid(), "-setcookie", ?COOKIE,
            "-kernel", "net_ticktime", integer_to_list(?TICKTIME),
            "-kernel", "inetrc", "\"" ++ Inetrc ++ "\""] ++ lists:append([["-pa", Dir] || Dir <- Paths]),
    {ok, Peer, _} = peer:start_link(#{connection => standard_io, args => Args}),
    Nodes = [list_to_atom("ocaml@" ++ Name) || #{name := Name} <- Hosts],
    Plugin = ?LIB:plugin(Config, "camlbeam_test"),
    {ok, Pool} = peer:call(Peer, ?MODULE, start_pool, [Nodes, Plugin], 30000),
    {Peer, Pool}.

%% In the peer: the pool, under camlbeam's supervisor (it outlives this call).
start_pool(Nodes, Plugin) ->
    _ = ?LIB:init_per_suite([]),
    ocaml:start(#{transport => node, nodes => Nodes, plugins => [Plugin], restart_backoff => {200, 1000}}).

%% The workers serving, by the id of their node's host.
worker_ids(Peer, Pool) ->
    lists:sort([Id || #{id := Id} <- peer:call(Peer, ocaml, workers, [Pool])]).

%% Which hosts answered N calls made at once (a pool gives a call to its least busy
%% worker: calls one after the other would all go to the first).
served_by(Peer, Pool, N) ->
    lists:usort([Id || {ok, Id} <- peer:call(Peer, ?MODULE, calls_at_once, [Pool, N], 10000)]).

%% In the peer: N calls of 50 ms at once, their answers.
calls_at_once(Pool, N) ->
    Self = self(),
    Callers = [spawn_link(fun() -> Self ! {self(), ocaml:call(Pool, sleep_worker_id, [50], 2000)} end)
               || _ <- lists:seq(1, N)],
    [receive {Caller, Answer} -> Answer end || Caller <- Callers].

%% In the peer: Count processes calling the pool without a pause, each call timed.
caller(Pool, _Test, Count, Timeout) ->
    [spawn(fun() -> call_loop(Pool, Timeout, []) end) || _ <- lists:seq(1, Count)].

call_loop(Pool, Timeout, Answers) ->
    receive
        {stop, From} -> From ! {answers, self(), lists:reverse(Answers)}
    after 0 ->
        Started = erlang:monotonic_time(millisecond),
        Answer = ocaml:call(Pool, sleep_worker_id, [5], Timeout),
        call_loop(Pool, Timeout, [{Answer, erlang:monotonic_time(millisecond) - Started} | Answers])
    end.

%% In the peer: each caller stops after the call it is in, and tells every answer it got.
await_callers(Callers, Timeout) ->
    [Caller ! {stop, self()} || Caller <- Callers],
    [receive {answers, Caller, Answers} -> {Caller, Answers} after Timeout -> {Caller, no_answer} end
     || Caller <- Callers].

%%% Helpers

ip(Args) ->
    Port = open_port({spawn_executable, os:find_executable("ip")},
                     [{args, Args}, exit_status, stderr_to_stdout, binary]),
    ip_result(Port, Args, <<>>).

ip_result(Port, Args, Output) ->
    receive
        {Port, {data, Data}} -> ip_result(Port, Args, <<Output/binary, Data/binary>>);
        {Port, {exit_status, 0}} -> ok;
        {Port, {exit_status, Status}} -> ct:fail("ip ~ts: exit status ~b: ~ts", [lists:join(" ", Args), Status, Output])
    after 10000 ->
        ct:fail("ip ~ts: no end", [lists:join(" ", Args)])
    end.

address({A, B, C, _}, D) ->
    inet:ntoa({A, B, C, D}).

inet_address(Text) ->
    {ok, Address} = inet:parse_address(Text),
    Address.

this_host() ->
    {ok, Host} = inet:gethostname(),
    Host.
