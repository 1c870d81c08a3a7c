%% camlbeam-node against real Erlang nodes on loopback: the Common Test node itself (made
%% distributed here) and peers started with `peer', calling with the tools of OTP
%% (net_adm:ping, gen_server, rpc, erpc) and erl_interface's erl_call. Every OCaml node is an
%% OS process of this suite, killed at the end of its case.
-module(camlbeam_node_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").
-compile([export_all, nowarn_export_all]).

-define(LIB, camlbeam_test_lib).
-define(COOKIE, camlbeam_node_suite_cookie).

all() ->
    [ping_and_visibility, hidden_node, answers_without_ocaml_during_a_long_call, calls_round_trip_terms, casts_run_in_order,
     rpc_and_erpc, erpc_multicall_across_two_nodes, link_and_monitor_see_sigkill,
     unknown_processes_answer_noproc, bad_requests_are_answered, call_timeout_interrupts,
     wrong_cookie_refused, erl_call_client, elixir_client, peer_restarts_and_reconnects, many_callers,
     send_to_a_given_pid, send_refused_by_policy_is_logged, send_any, call_erlang_allowed_and_refused,
     call_erlang_answers_promptly_when_the_caller_goes, ping_while_call_erlang_waits,
     call_erlang_interrupted_by_the_deadline, send_connects_to_a_node_not_connected_yet,
     answers_and_messages_within_max_reply_size].

init_per_suite(Config0) ->
    Config = ?LIB:init_per_suite(Config0),
    _ = os:cmd("epmd -daemon -address 127.0.0.1"),
    Started = case node() of
                  nonode@nohost ->
                      Name = list_to_atom("camlbeam_node_ct_" ++ os:getpid()),
                      {ok, _} = net_kernel:start([Name, shortnames]),
                      true;
                  _ ->
                      false
              end,
    true = erlang:set_cookie(node(), ?COOKIE),
    %% CAMLBEAM_TEST_NODE: another camlbeam-node (scripts/test-node-sanitized.sh: the
    %% sanitizer build's).
    Exe = case os:getenv("CAMLBEAM_TEST_NODE") of
              false -> filename:join(?LIB:workers_dir(), "camlbeam-node");
              Given -> Given
          end,
    filelib:is_regular(Exe) orelse ct:fail("~ts missing: build first (erlang/README.md)", [Exe]),
    [{node_executable, Exe}, {started_distribution, Started},
     {flavour, native} | Config].

end_per_suite(Config) ->
    case ?config(started_distribution, Config) of
        true -> _ = net_kernel:stop();
        false -> ok
    end,
    ?LIB:end_per_suite(Config).

init_per_testcase(_Case, Config) ->
    [{ocaml_nodes, ets:new(ocaml_nodes, [public, bag])} | Config].

end_per_testcase(_Case, Config) ->
    [kill_node(Port) || {_, Port} <- ets:tab2list(?config(ocaml_nodes, Config))],
    ok.

host() ->
    [_, Host] = string:split(atom_to_list(node()), "@"),
    Host.

%% Starts camlbeam-node named after Stem with the test plugin, waits for it to listen.
start_node(Config, Stem) ->
    start_node(Config, Stem, []).

%% The OS pid in the name: two runs of the suite on one machine (two OCamls, two clones)
%% never meet in EPMD.
start_node(Config, Stem, Extra) ->
    Alive = Stem ++ "_" ++ os:getpid(),
    Args = ["--sname", Alive, "--cookie", atom_to_list(?COOKIE),
            "--load", ?LIB:plugin(Config, "camlbeam_test") | Extra],
    Port = open_port({spawn_executable, ?config(node_executable, Config)},
                     [{args, Args}, exit_status, stderr_to_stdout, binary, {line, 4096}]),
    true = ets:insert(?config(ocaml_nodes, Config), {Stem, Port}),
    Node = list_to_atom(Alive ++ "@" ++ host()),
    receive
        {Port, {data, {eol, <<"camlbeam-node: ", Said/binary>> = Line}}} ->
            ct:log("~ts", [Line]),
            {match, _} = re:run(Said, " listening on port [0-9]+$"),
            Node;
        {Port, {exit_status, Status}} ->
            ct:fail({node_exited, Alive, Status})
    after 10000 ->
        ct:fail({node_not_listening, Alive})
    end.

kill_node(Port) ->
    case erlang:port_info(Port, os_pid) of
        {os_pid, OsPid} -> _ = os:cmd("kill -9 " ++ integer_to_list(OsPid)), ok;
        undefined -> ok
    end.

call(Node, Fun, Args) ->
    gen_server:call({ocaml, Node}, {call, Fun, Args}, 10000).

%%% Cases

ping_and_visibility(Config) ->
    Node = start_node(Config, "ocaml_ping"),
    ?assertEqual(pong, net_adm:ping(Node)),
    ?assert(lists:member(Node, nodes())),
    ?assertNot(lists:member(Node, nodes(hidden))).

hidden_node(Config) ->
    Node = start_node(Config, "ocaml_hidden", ["--hidden"]),
    ?assertEqual(pong, net_adm:ping(Node)),
    ?assertNot(lists:member(Node, nodes())),
    ?assert(lists:member(Node, nodes(hidden))),
    ?assertEqual({ok, 3}, call(Node, add, [1, 2])).

%% OCaml runs on a thread of its own: while it runs a 3 s call, the node still answers
%% ping, monitors and spawn requests, and the call's own answer comes when it ends.
answers_without_ocaml_during_a_long_call(Config) ->
    Node = start_node(Config, "ocaml_long"),
    Self = self(),
    spawn_link(fun() -> Self ! {long, call(Node, sleep, [3000])} end),
    timer:sleep(200),
    Started = erlang:monotonic_time(millisecond),
    ?assertEqual(pong, net_adm:ping(Node)),
    Ref = erlang:monitor(process, {nobody, Node}),
    receive {'DOWN', Ref, process, _, noproc} -> ok after 2000 -> ct:fail(no_down) end,
    ReqId = erlang:spawn_request(Node, os, cmd, ["true"], []),
    receive {spawn_reply, ReqId, error, notsup} -> ok after 2000 -> ct:fail(no_spawn_reply) end,
    ?assert(erlang:monotonic_time(millisecond) - Started < 1000),
    receive {long, Answer} -> ?assertEqual({ok, 3000}, Answer) after 10000 -> ct:fail(no_answer) end.

calls_round_trip_terms(Config) ->
    Node = start_node(Config, "ocaml_terms"),
    Terms = [42, -1, 1 bsl 70, -(1 bsl 64), 3.25, atom, 'ünïcödé', <<"bin">>, <<1:3>>,
             [], "string", [1, [2, [3]] | tail], {}, {a, {b, c}}, #{k => v, 1 => [2]},
             maps:from_list([{I, I * I} || I <- lists:seq(1, 40)]),
             self(), make_ref(), hd(erlang:ports()), fun lists:map/2,
             lists:seq(1, 10000), binary:copy(<<7>>, 1 bsl 20)],
    [?assertEqual({ok, T}, call(Node, identity, [T])) || T <- Terms],
    ?assertEqual({ok, 3}, call(Node, {camlbeam_test, add}, [1, 2])).

casts_run_in_order(Config) ->
    Node = start_node(Config, "ocaml_casts"),
    Started = erlang:monotonic_time(millisecond),
    ok = gen_server:cast({ocaml, Node}, {cast, sleep, [300]}),
    %% One runtime thread, requests in order: the call waits for the cast.
    ?assertEqual({ok, x}, call(Node, identity, [x])),
    ?assert(erlang:monotonic_time(millisecond) - Started >= 300).

rpc_and_erpc(Config) ->
    Node = start_node(Config, "ocaml_rpc"),
    ?assertEqual(3, rpc:call(Node, camlbeam_test, add, [1, 2])),
    ?assertEqual(3, erpc:call(Node, camlbeam_test, add, [1, 2])),
    ?assertMatch({badrpc, {'EXIT', {undef, [{camlbeam_test, nosuch, [], []}]}}},
                 rpc:call(Node, camlbeam_test, nosuch, [])),
    ?assertError({exception, undef, _}, erpc:call(Node, camlbeam_test, nosuch, [])),
    ?assertError({exception, {ocaml_exception, <<"Failure">>, <<"Failure(\"boom\")">>, _}, _},
                 erpc:call(Node, camlbeam_test, fail, [<<"boom">>])),
    %% Only plugin exports run, nothing of Erlang's own, and only erpc's call is spawned.
    ?assertMatch({badrpc, {'EXIT', {undef, [{os, cmd, ["true"], []}]}}}, rpc:call(Node, os, cmd, ["true"])),
    ReqId = erlang:spawn_request(Node, os, cmd, ["true"], []),
    receive {spawn_reply, ReqId, error, notsup} -> ok after 5000 -> ct:fail(no_spawn_reply) end,
    ?assertEqual(ok, erpc:cast(Node, camlbeam_test, add, [1, 2])).

erpc_multicall_across_two_nodes(Config) ->
    Nodes = [start_node(Config, "ocaml_multi1"), start_node(Config, "ocaml_multi2")],
    Results = erpc:multicall(Nodes, camlbeam_test, os_pid, [], 10000),
    OsPids = [OsPid || {ok, OsPid} <- Results],
    ?assertEqual(2, length(lists:usort(OsPids))),
    Ports = [P || {_, P} <- ets:tab2list(?config(ocaml_nodes, Config))],
    ?assertEqual(lists:sort([OsPid || P <- Ports, {os_pid, OsPid} <- [erlang:port_info(P, os_pid)]]),
                 lists:sort(OsPids)).

link_and_monitor_see_sigkill(Config) ->
    Node = start_node(Config, "ocaml_kill"),
    OcamlPid = gen_server:call({ocaml, Node}, pid),
    ?assertEqual(Node, node(OcamlPid)),
    Self = self(),
    Linked = spawn(fun() ->
                           process_flag(trap_exit, true),
                           link(OcamlPid),
                           Self ! linked,
                           receive Exit -> Self ! {linked_got, Exit} end
                   end),
    receive linked -> ok after 5000 -> ct:fail(not_linked) end,
    ByName = erlang:monitor(process, {ocaml, Node}),
    ByPid = erlang:monitor(process, OcamlPid),
    true = erlang:monitor_node(Node, true),
    %% The monitors and the link are in place once a call has gone through after them.
    ?assertEqual({ok, 1}, call(Node, identity, [1])),
    [{_, Port}] = ets:lookup(?config(ocaml_nodes, Config), "ocaml_kill"),
    ok = kill_node(Port),
    receive {nodedown, Node} -> ok after 10000 -> ct:fail(no_nodedown) end,
    receive {'DOWN', ByName, process, {ocaml, Node}, noconnection} -> ok
    after 5000 -> ct:fail(no_down_by_name) end,
    receive {'DOWN', ByPid, process, OcamlPid, noconnection} -> ok
    after 5000 -> ct:fail(no_down_by_pid) end,
    receive {linked_got, {'EXIT', OcamlPid, noconnection}} -> ok
    after 5000 -> ct:fail({no_exit, process_info(Linked, messages)}) end.

unknown_processes_answer_noproc(Config) ->
    Node = start_node(Config, "ocaml_noproc"),
    ?assertExit({noproc, _}, gen_server:call({nobody, Node}, x, 5000)),
    Ref = erlang:monitor(process, {code_server, Node}),
    receive {'DOWN', Ref, process, _, noproc} -> ok after 5000 -> ct:fail(no_down) end,
    OcamlPid = gen_server:call({ocaml, Node}, pid),
    Ghost = list_to_pid(re:replace(pid_to_list(OcamlPid), "\\.1\\.", ".999.", [{return, list}])),
    process_flag(trap_exit, true),
    true = link(Ghost),
    receive {'EXIT', Ghost, noproc} -> ok after 5000 -> ct:fail(no_exit) end,
    process_flag(trap_exit, false).

bad_requests_are_answered(Config) ->
    Node = start_node(Config, "ocaml_bad"),
    ?assertMatch({error, {bad_request, _}}, gen_server:call({ocaml, Node}, junk, 5000)),
    ?assertMatch({error, {bad_request, _}}, gen_server:call({ocaml, Node}, {call, "add", [1, 2]}, 5000)),
    ?assertMatch({error, {bad_request, _}}, gen_server:call({ocaml, Node}, {call, add, not_a_list}, 5000)),
    ?assertEqual({error, {undef, nosuch}}, call(Node, nosuch, [])),
    ?assertMatch({error, {badarity, 2, 1}}, call(Node, add, [1])),
    ?assertMatch({error, {ocaml_exception, <<"Not_found">>, _, _}}, call(Node, raise_not_found, [])),
    ?assertMatch({error, {ocaml_exception, <<"Stack_overflow">>, _, _}}, call(Node, overflow, [100000000])),
    ?assertEqual({ok, 3}, call(Node, add, [1, 2])).

call_timeout_interrupts(Config) ->
    Node = start_node(Config, "ocaml_deadline", ["--call-timeout", "200"]),
    Started = erlang:monotonic_time(millisecond),
    ?assertEqual({error, timeout}, call(Node, sleep, [5000])),
    ?assert(erlang:monotonic_time(millisecond) - Started < 2000),
    ?assertEqual({ok, 3}, call(Node, add, [1, 2])).

wrong_cookie_refused(Config) ->
    Node = start_node(Config, "ocaml_cookie"),
    {ok, Peer, PeerNode} = peer:start_link(#{name => peer:random_name(?FUNCTION_NAME),
                                             args => ["-setcookie", "not_the_cookie"],
                                             connection => standard_io}),
    ?assertEqual(pang, peer:call(Peer, net_adm, ping, [Node])),
    peer:stop(Peer),
    %% Refused and logged, by the name it gave.
    [{_, Port}] = ets:lookup(?config(ocaml_nodes, Config), "ocaml_cookie"),
    PeerName = atom_to_binary(PeerNode),
    receive {Port, {data, {eol, <<"camlbeam-node: refused a connection from ", Rest/binary>>}}} ->
            ?assertMatch({0, _}, binary:match(Rest, PeerName))
    after 5000 -> ct:fail(no_refusal_logged)
    end,
    ?assertEqual({ok, 3}, call(Node, add, [1, 2])).

erl_call_client(Config) ->
    Node = start_node(Config, "ocaml_erl_call"),
    [Alive, _] = string:split(atom_to_list(Node), "@"),
    ErlCall = erl_call(),
    Run = fun(Args) ->
                  os:cmd(lists:flatten(io_lib:format("~ts -sname ~ts -c ~ts -a '~ts' 2>&1",
                                                     [ErlCall, Alive, ?COOKIE, Args])))
          end,
    ?assertEqual("3", Run("camlbeam_test add [1, 2]")),
    ?assertMatch("{badrpc, {'EXIT', {undef" ++ _, Run("camlbeam_test nosuch []")).

%% An Elixir node (Debian's elixir) calling through :rpc, :erpc and GenServer.call.
elixir_client(Config) ->
    Node = start_node(Config, "ocaml_elixir"),
    Elixir = os:find_executable("elixir"),
    Elixir =/= false orelse ct:fail("no elixir: run scripts/setup.sh (Debian's elixir)"),
    Script = io_lib:format("n = :\"~ts\"; IO.inspect({:rpc.call(n, :camlbeam_test, :add, [1, 2]), "
                           ":erpc.call(n, :camlbeam_test, :add, [2, 3]), "
                           "GenServer.call({:ocaml, n}, {:call, :add, [3, 4]}), "
                           "GenServer.call({:ocaml, n}, {:call, :identity, [%{elixir: [1.5, \"s\"]}]})})",
                           [Node]),
    Out = os:cmd(lists:flatten(io_lib:format("~ts --sname ~ts --cookie ~ts -e '~ts' 2>&1",
                                             [Elixir, peer:random_name(elixir_client), ?COOKIE, Script]))),
    ?assertEqual("{3, 5, {:ok, 7}, {:ok, %{elixir: [1.5, \"s\"]}}}\n", Out).

erl_call() ->
    case os:find_executable("erl_call") of
        false ->
            [Found | _] = filelib:wildcard(filename:join([code:lib_dir(erl_interface), "bin", "erl_call"])),
            Found;
        Path ->
            Path
    end.

peer_restarts_and_reconnects(Config) ->
    Node = start_node(Config, "ocaml_restart"),
    Name = peer:random_name(?FUNCTION_NAME),
    PeerCall = fun() ->
                       {ok, Peer, _} = peer:start_link(#{name => Name,
                                                         args => ["-setcookie", atom_to_list(?COOKIE)],
                                                         connection => standard_io}),
                       Answer = peer:call(Peer, gen_server, call, [{ocaml, Node}, {call, add, [1, 2]}, 5000]),
                       peer:stop(Peer),
                       Answer
               end,
    ?assertEqual({ok, 3}, PeerCall()),
    ?assertEqual({ok, 3}, PeerCall()).

many_callers(Config) ->
    Node = start_node(Config, "ocaml_many"),
    Self = self(),
    Callers = [spawn_link(fun() ->
                                  Answers = [call(Node, identity, [{C, I}]) || I <- lists:seq(1, 20)],
                                  Self ! {self(), Answers}
                          end) || C <- lists:seq(1, 50)],
    [receive {Pid, Answers} -> ?assertEqual([{ok, {C, I}} || I <- lists:seq(1, 20)], Answers)
     after 30000 -> ct:fail(caller_stuck)
     end || {C, Pid} <- lists:zip(lists:seq(1, 50), Callers)].

%%% Erl.send and Erl.call_erlang from OCaml, under the node's policy (--send, --erl-call)

%% A line the node writes on stderr that matches Pattern, within Ms.
await_log(Config, Stem, Pattern, Ms) ->
    [{_, Port}] = ets:lookup(?config(ocaml_nodes, Config), Stem),
    receive
        {Port, {data, {eol, Line}}} ->
            ct:log("~ts", [Line]),
            case re:run(Line, Pattern) of
                {match, _} -> Line;
                nomatch -> await_log(Config, Stem, Pattern, Ms)
            end
    after Ms ->
        ct:fail({not_logged, Pattern})
    end.

%% --max-reply-size (a pool passes its max_reply_size): a larger answer is replaced by
%% reply_too_large, and Erl.send of a larger message raises, as under the port.
answers_and_messages_within_max_reply_size(Config) ->
    Node = start_node(Config, "ocaml_max_reply", ["--max-reply-size", "2000"]),
    Small = binary:copy(<<"x">>, 1000),
    Large = binary:copy(<<"x">>, 3000),
    ?assertEqual({ok, Small}, call(Node, identity, [Small])),
    ?assertMatch({error, {reply_too_large, Size, 2000}} when Size > 3000, call(Node, identity, [Large])),
    ?assertEqual({ok, ok}, call(Node, send, [self(), Small])),
    receive Small -> ok after 5000 -> ct:fail(not_delivered) end,
    {error, {ocaml_exception, <<"Failure">>, Message, _}} = call(Node, send, [self(), Large]),
    ?assertMatch({match, _}, re:run(Message, "larger than max_reply_size \\(2000 bytes\\)")),
    receive Unexpected -> ct:fail({delivered, Unexpected}) after 200 -> ok end,
    ?assertEqual(pong, net_adm:ping(Node)).

send_to_a_given_pid(Config) ->
    Node = start_node(Config, "ocaml_send"),
    ?assertEqual({ok, ok}, call(Node, send, [self(), {hello, [1, 2]}])),
    receive {hello, [1, 2]} -> ok after 5000 -> ct:fail(not_delivered) end,
    %% The streaming example: a pid and a tag given, the messages in order.
    Tag = make_ref(),
    ?assertEqual({ok, ok}, call(Node, countdown, [self(), Tag, 3])),
    [receive {Tag, I} -> ok after 5000 -> ct:fail({missing, I}) end || I <- [3, 2, 1]],
    %% A cast's pids are given too.
    ok = gen_server:cast({ocaml, Node}, {cast, send, [self(), from_a_cast]}),
    receive from_a_cast -> ok after 5000 -> ct:fail(cast_not_delivered) end.

send_refused_by_policy_is_logged(Config) ->
    Node = start_node(Config, "ocaml_send_given"),
    %% The pid is inside a list, not an argument: not given.
    ?assertEqual({ok, ok}, call(Node, send_to_first, [[self()], not_for_you])),
    _ = await_log(Config, "ocaml_send_given", "Erl.send to .* dropped: refused by the node's policy", 5000),
    receive not_for_you -> ct:fail(delivered) after 200 -> ok end,
    Node2 = start_node(Config, "ocaml_send_none", ["--send", "none"]),
    ?assertEqual({ok, ok}, call(Node2, send, [self(), not_either])),
    _ = await_log(Config, "ocaml_send_none", "--send none", 5000),
    receive not_either -> ct:fail(delivered) after 200 -> ok end.

send_any(Config) ->
    Node = start_node(Config, "ocaml_send_any", ["--send", "any"]),
    ?assertEqual({ok, ok}, call(Node, send_to_first, [[self()], anywhere])),
    receive anywhere -> ok after 5000 -> ct:fail(not_delivered) end.

call_erlang_allowed_and_refused(Config) ->
    Node = start_node(Config, "ocaml_erl_calls",
                      ["--erl-call", "erlang:node/0,lists:reverse", "--erl-call", "erlang:error/1,erlang:throw/1"]),
    Here = node(),
    ?assertEqual({ok, {ok, Here}}, call(Node, call_erlang, [erlang, node, []])),
    ?assertEqual({ok, {ok, [3, 2, 1]}}, call(Node, call_erlang, [lists, reverse, [[1, 2, 3]]])),
    ?assertEqual({ok, {error, {error, oops}}}, call(Node, call_erlang, [erlang, error, [oops]])),
    ?assertEqual({ok, {error, {throw, thrown}}}, call(Node, call_erlang, [erlang, throw, [thrown]])),
    ?assertEqual({ok, {error, {error, {not_allowed, {erlang, halt, 0}}}}},
                 call(Node, call_erlang, [erlang, halt, []])),
    ?assertEqual({ok, {error, {error, {not_allowed, {erlang, node, 1}}}}},
                 call(Node, call_erlang, [erlang, node, [self()]])),
    ?assertMatch({ok, {error, {error, {bad_erl_call, _}}}},
                 call(Node, call_erlang, [lists, reverse, [[fun erlang:halt/0]]])),
    %% Nothing allowed by default.
    Node2 = start_node(Config, "ocaml_erl_calls_none"),
    ?assertEqual({ok, {error, {error, {not_allowed, {erlang, node, 0}}}}},
                 call(Node2, call_erlang, [erlang, node, []])).

%% The call runs on the caller's node: when that node goes, OCaml's wait ends at once and
%% the node goes on with its next request.
call_erlang_answers_promptly_when_the_caller_goes(Config) ->
    Node = start_node(Config, "ocaml_erl_call_gone", ["--erl-call", "timer:sleep/1"]),
    {ok, Peer, PeerNode} = peer:start_link(#{name => peer:random_name(?FUNCTION_NAME),
                                             args => ["-setcookie", atom_to_list(?COOKIE)],
                                             connection => standard_io}),
    Request = {call, call_erlang, [timer, sleep, [60000]]},
    _ = peer:call(Peer, erlang, spawn, [gen_server, call, [{ocaml, Node}, Request, infinity]]),
    timer:sleep(500),
    ?assert(lists:member(Node, peer:call(Peer, erlang, nodes, [hidden]) ++ peer:call(Peer, erlang, nodes, []))),
    %% The node is busy with that call: a call of ours waits behind it.
    Self = self(),
    spawn_link(fun() -> Self ! {queued, call(Node, add, [1, 2])} end),
    receive {queued, Early} -> ct:fail({not_waiting, Early}) after 500 -> ok end,
    peer:stop(Peer),
    ct:log("~p stopped", [PeerNode]),
    receive {queued, Answer} -> ?assertEqual({ok, 3}, Answer) after 3000 -> ct:fail(still_waiting) end.

ping_while_call_erlang_waits(Config) ->
    Node = start_node(Config, "ocaml_erl_call_ping", ["--erl-call", "timer:sleep/1"]),
    Self = self(),
    spawn_link(fun() -> Self ! {slept, call(Node, call_erlang, [timer, sleep, [1500]])} end),
    timer:sleep(100),
    Started = erlang:monotonic_time(millisecond),
    ?assertEqual(pong, net_adm:ping(Node)),
    ?assertExit({noproc, _}, gen_server:call({nobody, Node}, x, 5000)),
    ?assert(erlang:monotonic_time(millisecond) - Started < 500),
    receive {slept, Answer} -> ?assertEqual({ok, {ok, ok}}, Answer) after 10000 -> ct:fail(no_answer) end.

%% --call-timeout interrupts a call waiting in Erl.call_erlang, as it interrupts any wait;
%% the Erlang side's late answer is dropped.
call_erlang_interrupted_by_the_deadline(Config) ->
    Node = start_node(Config, "ocaml_erl_call_deadline", ["--call-timeout", "300", "--erl-call", "timer:sleep/1"]),
    Started = erlang:monotonic_time(millisecond),
    ?assertEqual({error, timeout}, call(Node, call_erlang, [timer, sleep, [1500]])),
    ?assert(erlang:monotonic_time(millisecond) - Started < 1200),
    ?assertEqual({ok, 3}, call(Node, add, [1, 2])),
    timer:sleep(1500),
    ?assertEqual({ok, 3}, call(Node, add, [1, 2])).

%% A given pid of a third node, which the OCaml node has no connection to: it connects, as
%% Erlang does on a send, and the message arrives.
send_connects_to_a_node_not_connected_yet(Config) ->
    Node = start_node(Config, "ocaml_send_third"),
    {ok, Peer, PeerNode} = peer:start_link(#{name => peer:random_name(?FUNCTION_NAME),
                                             args => ["-setcookie", atom_to_list(?COOKIE)],
                                             connection => standard_io}),
    Mailbox = peer:call(Peer, erlang, spawn, [timer, sleep, [infinity]]),
    ?assertEqual(PeerNode, node(Mailbox)),
    ?assertNot(lists:member(Node, peer:call(Peer, erlang, nodes, [connected]))),
    %% No atom the third VM may not have: it never sent the node any (docs/node.md, Atoms).
    ?assertEqual({ok, ok}, call(Node, send, [Mailbox, {<<"hello">>, 3}])),
    ?LIB:wait_until(fun() -> peer:call(Peer, erlang, process_info, [Mailbox, messages]) =:=
                                 {messages, [{<<"hello">>, 3}]} end, 5000),
    %% One that holds such an atom is dropped (and logged), not delivered.
    ?assertEqual({ok, ok}, call(Node, send, [Mailbox, {camlbeam_never_sent_there, 4}])),
    ?assertEqual({ok, ok}, call(Node, send, [Mailbox, {<<"after">>, 5}])),
    ?LIB:wait_until(fun() -> peer:call(Peer, erlang, process_info, [Mailbox, messages]) =:=
                                 {messages, [{<<"hello">>, 3}, {<<"after">>, 5}]} end, 5000),
    peer:stop(Peer).
