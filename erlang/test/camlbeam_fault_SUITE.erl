%% Workers dying and misbehaving, and many callers at once, against real workers: every
%% call gets exactly one answer, its own; a broken worker is reported and replaced; other
%% pools do not notice.
-module(camlbeam_fault_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

-define(LIB, camlbeam_test_lib).

suite() ->
    [{timetrap, {seconds, 120}}].

all() ->
    [{group, Group} || {Group, _, _} <- groups()].

groups() ->
    ?LIB:groups(fun cases/1).

%% Every case here kills or breaks a worker, or loads a worker hard. Under nif a worker's
%% OS process is the VM: the cases kill its Erlang process instead (kill_workers/2 of
%% camlbeam_test_lib), and leave out what only an OS process of its own can do.
cases(Group) ->
    [Case || Case <- [kill_9_with_calls_in_flight, malformed_frame_restarts, exit_mid_frame_restarts,
                      plugin_survives_restart, concurrent_callers, timeouts_under_load,
                      stop_with_calls_in_flight, registry_restart, calls_skip_a_worker_found_dead,
                      callers_killed_while_sending],
            not lists:member(Case, left_out(Group))].

left_out(nif) ->
    [%% Frames are the port's protocol: under nif these exports would write junk to a file
     %% descriptor of the VM, and exit(3) the VM itself.
     malformed_frame_restarts, exit_mid_frame_restarts,
     %% Port only: a worker whose port closed (its OS process killed) while its Erlang
     %% process is suspended; under nif a worker's handle cannot close under it.
     calls_skip_a_worker_found_dead];
left_out(node) ->
    [%% Frames are the port's protocol; a node's hostile peers are camlbeam_node_SUITE's.
     malformed_frame_restarts, exit_mid_frame_restarts];
left_out(_) ->
    [].

init_per_suite(Config) -> ?LIB:init_per_suite(Config).
end_per_suite(Config) -> ?LIB:end_per_suite(Config).
init_per_group(Group, Config) -> ?LIB:init_per_group(Group, Config).
end_per_group(_Group, _Config) -> ok.

-define(IN_FLIGHT, 1000).

%% SIGKILL while 1,000 calls wait: each gets an answer, the worker comes back in a new
%% process, and the next calls are served. Under nif, whose OS process is the VM, the
%% worker's Erlang process is killed.
kill_9_with_calls_in_flight(Config) ->
    Pool = ?LIB:start_pool(Config, #{}),
    [#{os_pid := OsPid, pid := WorkerPid}] = ocaml:workers(Pool),
    Self = self(),
    %% The first call holds the worker; the others queue behind it.
    Blocker = spawn_link(fun() -> Self ! {answer, 0, ocaml:call(Pool, sleep_echo, [5000, 0], 20000)} end),
    ?LIB:wait_until(fun() -> in_flight(Pool) =:= 1 end, 2000),
    _ = [spawn_link(fun() -> Self ! {answer, I, ocaml:call(Pool, identity, [{I}], 20000)} end)
         || I <- lists:seq(1, ?IN_FLIGHT - 1)],
    try
        ?LIB:wait_until(fun() -> in_flight(Pool) =:= ?IN_FLIGHT end, 10000)
    catch
        exit:{test_case_failed, _} = Failed ->
            %% What answered early says why.
            ct:log("in flight ~p; answered early: ~p", [in_flight(Pool), ?LIB:flush()]),
            exit(Failed)
    end,
    case ?LIB:transport(Config) of
        nif -> exit(WorkerPid, kill);
        _ -> os:cmd("kill -9 " ++ integer_to_list(OsPid))
    end,
    Answers = collect_answers(?IN_FLIGHT, 10000),
    ?assertEqual(lists:seq(0, ?IN_FLIGHT - 1), lists:sort(maps:keys(Answers))),
    %% The blocker's worker was killed under it: SIGKILL's status, or, when requests were
    %% still queued for the dead process's pipe, the broken pipe that closed the port
    %% first (the VM then never reports the status). Under nif: its process was killed.
    case ?LIB:transport(Config) of
        nif ->
            ?assertEqual({error, {worker_crashed, killed}}, maps:get(0, Answers));
        node ->
            ?assertEqual({error, {worker_crashed, noconnection}}, maps:get(0, Answers));
        _ ->
            ?assertMatch({error, {worker_crashed, R}} when R =:= {exit_status, 137};
                                                           R =:= {port_exit, epipe},
                         maps:get(0, Answers))
    end,
    maps:foreach(fun(I, Answer) -> assert_own_or_crashed(I, Answer) end, maps:remove(0, Answers)),
    ?assertNot(is_process_alive(Blocker)),
    case ?LIB:transport(Config) of
        nif ->
            ?LIB:wait_until(fun() -> [W || #{pid := W} <- ocaml:workers(Pool), W =/= WorkerPid] =/= [] end,
                            10000);
        _ ->
            [NewOsPid] = ?LIB:new_os_pids(Pool, [OsPid]),
            ?assertNotEqual(OsPid, NewOsPid)
    end,
    ?assertEqual({ok, after_kill}, ocaml:call(Pool, identity, [after_kill])),
    ?assertEqual([], ?LIB:flush()).

%% A worker writing junk: the pool reports it and restarts it; another pool's calls all
%% succeed meanwhile.
malformed_frame_restarts(Config) ->
    broken_worker_restarts(Config, malformed_frame, {malformed_frame, {bad_envelope, <<"junk!">>}}).

%% A worker exiting in the middle of a frame.
exit_mid_frame_restarts(Config) ->
    broken_worker_restarts(Config, exit_mid_frame, {exit_status, 3}).

broken_worker_restarts(Config, Export, Reason) ->
    Broken = ?LIB:start_pool(Config, #{}),
    Healthy = ?LIB:start_pool(Config, #{}),
    [#{os_pid := OsPid, pid := WorkerPid}] = ocaml:workers(Broken),
    Logs = ?LIB:add_log_collector(),
    try
        Runner = start_runner(Healthy),
        ?assertEqual({error, {worker_crashed, Reason}}, ocaml:call(Broken, Export, [])),
        %% Reported in one line by the worker's process, which restarts its OS process
        %% itself (no crash report, no supervisor report).
        ReasonText = ocaml:format_error(Reason),
        Event = ?LIB:logged(fun(#{level := warning, meta := #{pid := Pid}} = E) when Pid =:= WorkerPid ->
                                    ?LIB:mentions(E, [ReasonText]);
                               (_) ->
                                    false
                            end, 5000),
        ?assertMatch(#{meta := #{camlbeam_pool := Broken, camlbeam_worker := 1}}, Event),
        ?assert(is_process_alive(WorkerPid)),
        [_] = ?LIB:new_os_pids(Broken, [OsPid]),
        ?assertEqual({ok, restarted}, ocaml:call(Broken, identity, [restarted])),
        {Calls, Failures} = stop_runner(Runner),
        ?assert(Calls > 0),
        ?assertEqual([], Failures)
    after
        ?LIB:remove_log_collector(Logs)
    end.

plugin_survives_restart(Config) ->
    Pool = ?LIB:start_pool(Config, #{pool_size => 2}),
    ok = ocaml:load(Pool, ?LIB:plugin(Config, "camlbeam_extra")),
    ?LIB:kill_workers(Config, Pool),
    %% Both restarted workers loaded it: with one busy, the call goes to the other.
    Self = self(),
    spawn_link(fun() -> Self ! {busy, ocaml:call(Pool, extra_hello, [<<"a">>])} end),
    ?assertEqual({ok, <<"hello, b">>}, ocaml:call(Pool, extra_hello, [<<"b">>])),
    receive {busy, Busy} -> ?assertEqual({ok, <<"hello, a">>}, Busy) after 5000 -> ct:fail(busy) end,
    ?assertEqual({ok, 3}, ocaml:call(Pool, add, [1, 2])).

-define(CALLERS, 100).
-define(CALLS, 1000).

%% 100 callers, 1,000 calls each, every argument unique: no answer lost or misdelivered.
concurrent_callers(Config) ->
    Pool = ?LIB:start_pool(Config, #{pool_size => 2}),
    Self = self(),
    Callers = [spawn_link(fun() -> Self ! {done, self(), call_many(Pool, C)} end)
               || C <- lists:seq(1, ?CALLERS)],
    Results = [receive {done, Caller, Result} -> Result after 60000 -> ct:fail(caller_stuck) end
               || Caller <- Callers],
    ?assertEqual(lists:duplicate(?CALLERS, ok), Results),
    ?assertEqual([0, 0], [N || #{in_flight := N} <- ocaml:workers(Pool)]),
    ?assertEqual([], ?LIB:flush()).

call_many(Pool, Caller) ->
    Bad = [{I, R} || I <- lists:seq(1, ?CALLS),
                     R <- [ocaml:call(Pool, identity, [{Caller, I, self()}], 30000)],
                     R =/= {ok, {Caller, I, self()}}],
    case {Bad, flush_all()} of
        {[], []} -> ok;
        Other -> {failed, Caller, Other}
    end.

%% Calls that give up at random while answers stream back: each caller gets its own
%% answer or timeout, and nothing else lands in any mailbox.
timeouts_under_load(Config) ->
    Pool = ?LIB:start_pool(Config, #{pool_size => 2}),
    Self = self(),
    Callers = [spawn_link(fun() -> Self ! {done, self(), timeout_many(Pool, C)} end)
               || C <- lists:seq(1, 20)],
    Results = [receive {done, Caller, Result} -> Result after 60000 -> ct:fail(caller_stuck) end
               || Caller <- Callers],
    Answered = lists:sum([A || {A, _} <- Results]),
    TimedOut = lists:sum([T || {_, T} <- Results]),
    ct:log("~b answered, ~b timed out", [Answered, TimedOut]),
    ?assert(TimedOut > 0),
    ?assert(Answered > 0),
    %% The late answers have all arrived by now: none found a caller. Under node the
    %% callers count their own calls, and the worker sets that count to the node's when
    %% the two differ at two reads in a row (ocaml_node_transport): set so while the
    %% node still held requests whose callers had given up, it is one too high until
    %% the next two reads, 500 ms later. A request the node never counted out stays.
    ?LIB:wait_until(fun() -> [0, 0] =:= [N || #{in_flight := N} <- ocaml:workers(Pool)] end, 2000).

timeout_many(Pool, Caller) ->
    check_mailbox(lists:foldl(
      fun(I, {Answered, TimedOut}) ->
              Arg = {Caller, I},
              Timeout = lists:nth(rand:uniform(5), [0, 1, 5, 50, 5000]),
              case ocaml:call(Pool, sleep_echo, [rand:uniform(3) - 1, Arg], Timeout) of
                  {ok, Arg} -> {Answered + 1, TimedOut};
                  {error, timeout} -> {Answered, TimedOut + 1};
                  Other -> exit({wrong_answer, Arg, Other})
              end
      end, {0, 0}, lists:seq(1, 100))).

check_mailbox(Counts) ->
    timer:sleep(100),
    case flush_all() of
        [] -> Counts;
        Stray -> exit({stray_messages, Stray})
    end.

stop_with_calls_in_flight(Config) ->
    {ok, Pool} = ocaml:start(?LIB:pool_options(Config, #{})),
    Self = self(),
    _ = [spawn_link(fun() -> Self ! {answer, I, ocaml:call(Pool, sleep_echo, [100, I])} end)
         || I <- lists:seq(1, 10)],
    ?LIB:wait_until(fun() -> in_flight(Pool) =:= 10 end, 2000),
    ok = ocaml:stop(Pool),
    Answers = collect_answers(10, 5000),
    maps:foreach(fun(_, A) -> ?assertEqual({error, ?LIB:crashed(Config, shutdown)}, A) end, Answers).

%% The registry killed while callers call: they get noproc (or their answer), never an
%% exception; once it is back, every pool is reachable again, a pool under another
%% supervisor (child_spec) included.
registry_restart(Config) ->
    Pool = ?LIB:start_pool(Config, #{}),
    process_flag(trap_exit, true),
    Spec = ocaml:child_spec(?LIB:pool_options(Config, #{name => camlbeam_fault_supervised})),
    {ok, Sup} = supervisor:start_link(camlbeam_api_SUITE, {pool_supervisor, Spec}),
    Self = self(),
    Until = erlang:monotonic_time(millisecond) + 1500,
    Callers = [spawn_link(fun() -> Self ! {calls, self(), call_through(P, Until, #{})} end)
               || P <- [Pool, camlbeam_fault_supervised]],
    timer:sleep(200),
    Registry = whereis(camlbeam_registry),
    exit(Registry, kill),
    %% A caller that met an answer it should not have exits with it (trapped here).
    Counts = [receive
                  {calls, C, R} -> R;
                  {'EXIT', C, Why} -> ct:fail({caller_failed, Why})
              after 10000 -> ct:fail(caller_stuck)
              end || C <- Callers],
    ct:log("answers while the registry restarted: ~p", [Counts]),
    ?assertNotEqual(Registry, whereis(camlbeam_registry)),
    ?LIB:wait_until(fun() -> ocaml:call(Pool, identity, [1]) =:= {ok, 1} end, 5000),
    ?LIB:wait_until(fun() -> ocaml:call(camlbeam_fault_supervised, identity, [2]) =:= {ok, 2} end, 5000),
    %% The registry's new table has the pools' exports again, which their managers kept.
    ?LIB:wait_until(fun() -> lists:keymember(identity, 2, ocaml:exports(Pool)) end, 5000),
    ?LIB:wait_until(fun() -> lists:keymember(identity, 2, ocaml:exports(camlbeam_fault_supervised)) end, 5000),
    ?assertEqual(ok, ocaml:load(Pool, ?LIB:plugin(Config, "camlbeam_extra"))),
    ?assertMatch({ok, _}, ocaml:call(Pool, extra_hello, [<<"x">>])),
    exit(Sup, shutdown),
    receive {'EXIT', Sup, shutdown} -> ok after 10000 -> ct:fail(supervisor_alive) end.

call_through(Pool, Until, Counts) ->
    case erlang:monotonic_time(millisecond) < Until of
        false ->
            Counts;
        true ->
            Kind = case ocaml:call(Pool, identity, [x], 1000) of
                       {ok, x} -> ok;
                       {error, noproc} -> noproc;
                       {error, no_worker} -> no_worker;
                       Other -> exit({unexpected, Other})
                   end,
            call_through(Pool, Until, maps:update_with(Kind, fun(N) -> N + 1 end, 1, Counts))
    end.

%% 200 callers a round on two workers, each call taking a while (30 ms: shorter than the
%% worker's tick, so no heartbeat), half of the callers killed at random moments, 0 to
%% 2 ms after they start (before, while or after they write their request): every caller
%% spared gets its own answer, the counters go back to 0, and no OS process is replaced.
%% Each worker has about 3 s of requests in hand, twice stall_timeout: a worker that kept
%% its replies until it had served all it had read wrote nothing meanwhile, and was
%% replaced as unresponsive, its calls answered {worker_crashed, unresponsive}.
-define(KILL_ROUNDS, 2).
-define(KILL_CALLERS, 200).

callers_killed_while_sending(Config) ->
    Pool = ?LIB:start_pool(Config, #{pool_size => 2, stall_timeout => 1500}),
    OsPids = os_pids(Pool),
    lists:foreach(fun(Round) -> kill_round(Pool, Round) end, lists:seq(1, ?KILL_ROUNDS)),
    try
        ?LIB:wait_until(fun() -> in_flight_each(Pool) =:= [0, 0] end, 3000)
    catch
        exit:{test_case_failed, _} = Failed ->
            ct:log("in flight ~p, workers ~p", [in_flight_each(Pool), ocaml:workers(Pool)]),
            exit(Failed)
    end,
    ?assertEqual({ok, after_kills}, ocaml:call(Pool, identity, [after_kills])),
    ?assertEqual(OsPids, os_pids(Pool)),
    %% No replacement is on its way either: a stall would be seen within stall_timeout.
    timer:sleep(2000),
    ?assertEqual(OsPids, os_pids(Pool)),
    ?assertEqual([0, 0], in_flight_each(Pool)),
    ?assertEqual({ok, still_there}, ocaml:call(Pool, identity, [still_there])),
    ?assertEqual([], ?LIB:flush()).

kill_round(Pool, Round) ->
    Self = self(),
    Spared = lists:filtermap(
               fun(I) ->
                       Arg = {Round, I},
                       Call = fun() -> ocaml:call(Pool, sleep_echo, [30, Arg], 20000) end,
                       case I rem 2 of
                           0 ->
                               Victim = spawn(Call),
                               spawn(fun() -> spin_us(rand:uniform(2001) - 1), exit(Victim, kill) end),
                               false;
                           1 ->
                               spawn(fun() -> Self ! {answer, Arg, Call()} end),
                               {true, Arg}
                       end
               end, lists:seq(1, ?KILL_CALLERS)),
    Deadline = erlang:monotonic_time(millisecond) + 15000,
    Answers = [receive
                   {answer, Arg, Answer} -> {Arg, Answer}
               after max(0, Deadline - erlang:monotonic_time(millisecond)) -> {Arg, no_answer}
               end || Arg <- Spared],
    ?assertEqual([], [Wrong || {Arg, Answer} = Wrong <- Answers, Answer =/= {ok, Arg}]).

%% Waits Us microseconds, letting the other processes of the scheduler run meanwhile.
spin_us(Us) ->
    Until = erlang:monotonic_time(microsecond) + Us,
    spin_until(Until).

spin_until(Until) ->
    case erlang:monotonic_time(microsecond) >= Until of
        true -> ok;
        false -> erlang:yield(), spin_until(Until)
    end.

%%% Helpers

%% A worker whose OS process died while its Erlang process could not yet notice (held
%% here with sys:suspend/1) stays listed, and idle: the least loaded. Calls that pick it
%% find its port closed before writing anything, and go to the other worker: all answer
%% {ok, _}. Then the worker notices, and is replaced.
calls_skip_a_worker_found_dead(Config) ->
    Pool = ?LIB:start_pool(Config, #{pool_size => 2}),
    [#{pid := Held, os_pid := OsPid}, #{os_pid := Other}] = ocaml:workers(Pool),
    Port = held_port(Held),
    ok = sys:suspend(Held),
    try
        Connected = nodes(hidden),
        os:cmd("kill -9 " ++ integer_to_list(OsPid)),
        ?LIB:wait_until(fun() -> erlang:port_info(Port) =:= undefined end, 5000),
        %% Under node, the held worker's node is gone once this VM has seen its connection go.
        _ = ?LIB:transport(Config) =:= node andalso
            ?LIB:wait_until(fun() -> length(nodes(hidden)) < length(Connected) end, 5000),
        ?assertMatch([_, _], ocaml:workers(Pool)),
        [?assertEqual({ok, I}, ocaml:call(Pool, identity, [I], 5000)) || I <- lists:seq(1, 100)],
        ok = ocaml:cast(Pool, identity, [cast])
    after
        sys:resume(Held)
    end,
    ?LIB:wait_until(fun() ->
                            OsPids = [P || #{os_pid := P} <- ocaml:workers(Pool)],
                            length(OsPids) =:= 2 andalso lists:member(Other, OsPids)
                                andalso not lists:member(OsPid, OsPids)
                    end, 10000).

%% The port of a worker's Erlang process: the one it is linked to.
held_port(Worker) ->
    {links, Links} = erlang:process_info(Worker, links),
    [Port] = [L || L <- Links, is_port(L)],
    Port.

in_flight(Pool) ->
    lists:sum([N || #{in_flight := N} <- ocaml:workers(Pool)]).

in_flight_each(Pool) ->
    [N || #{in_flight := N} <- ocaml:workers(Pool)].

os_pids(Pool) ->
    [P || #{os_pid := P} <- ocaml:workers(Pool)].

collect_answers(N, TimeoutMs) ->
    Deadline = erlang:monotonic_time(millisecond) + TimeoutMs,
    collect_answers(N, Deadline, #{}).

collect_answers(0, _Deadline, Acc) ->
    Acc;
collect_answers(N, Deadline, Acc) ->
    Left = max(0, Deadline - erlang:monotonic_time(millisecond)),
    receive
        {answer, I, Answer} -> collect_answers(N - 1, Deadline, Acc#{I => Answer})
    after Left ->
        ct:fail("~b calls unanswered", [N])
    end.

assert_own_or_crashed(I, {ok, {I}}) -> ok;
assert_own_or_crashed(_, {error, {worker_crashed, _}}) -> ok;
assert_own_or_crashed(I, Other) -> ct:fail("call ~b answered ~p", [I, Other]).

%% A process calling Pool until stopped (bounded by a count and a time).
start_runner(Pool) ->
    spawn_link(fun() -> run(Pool, 0, [], erlang:monotonic_time(millisecond) + 30000) end).

run(Pool, N, Failures, Deadline) ->
    receive
        {stop, From} -> From ! {ran, N, Failures}
    after 0 ->
        case N < 100000 andalso erlang:monotonic_time(millisecond) < Deadline of
            true ->
                Result = ocaml:call(Pool, identity, [N]),
                NewFailures = case Result of
                                  {ok, N} -> Failures;
                                  _ -> [{N, Result} | Failures]
                              end,
                run(Pool, N + 1, NewFailures, Deadline);
            false ->
                receive {stop, From} -> From ! {ran, N, Failures} end
        end
    end.

stop_runner(Runner) ->
    Runner ! {stop, self()},
    receive {ran, N, Failures} -> {N, Failures} after 10000 -> ct:fail(runner_stuck) end.

flush_all() ->
    receive Any -> [Any | flush_all()] after 0 -> [] end.
