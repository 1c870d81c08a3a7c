%% Rolling upgrades (ocaml:upgrade/2,3): a pool moves to a new plugin list one worker at
%% a time while 50 callers call it without a pause, and every one of their calls is
%% answered {ok, _}; an upgrade that cannot start stops, and the pool serves on.
-module(camlbeam_upgrade_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

-define(LIB, camlbeam_test_lib).
-define(CALLERS, 50).

suite() ->
    [{timetrap, {seconds, 120}}].

all() ->
    [{group, Group} || {Group, _, _} <- groups()].

groups() ->
    ?LIB:groups(fun cases/1).

cases(Group) ->
    [Case || Case <- [upgrade_under_load, upgrade_fails_at_init, upgrade_fails_mid_roll, upgrade_refusals],
             not lists:member(Case, left_out(Group))].

left_out(nif) ->
    [%% A plugin's initialiser runs once per VM under nif (one runtime, whose later loads
     %% answer as the first did), not once per worker: it cannot fail on worker 2 only.
     upgrade_fails_mid_roll];
left_out(_) ->
    [].

init_per_suite(Config) -> ?LIB:init_per_suite(Config).
end_per_suite(Config) -> ?LIB:end_per_suite(Config).
init_per_group(Group, Config) -> ?LIB:init_per_group(Group, Config).
end_per_group(_Group, _Config) -> ok.

%% Every worker moves to a list that adds a plugin: new OS processes, the new export
%% answers on each (also after their OS processes are killed: restarts keep the new
%% list), the pool's list is the new one, one log line says so. Under nif the workers
%% load the new list in the VM's runtime, in the same OS process (the VM's).
upgrade_under_load(Config) ->
    Pool = ?LIB:start_pool(Config, #{pool_size => 3}),
    Old = os_pids(Pool),
    Extra = ?LIB:plugin(Config, "camlbeam_extra"),
    %% Also under nif, where another pool may have loaded camlbeam_extra into the VM's
    %% runtime already: a pool calls its own plugins only (ocaml_nif_transport).
    ?assertMatch({error, {undef, _}}, ocaml:call(Pool, extra_hello, [<<"x">>])),
    Collector = ?LIB:add_log_collector(),
    try
        Callers = start_callers(Pool),
        Sampler = start_sampler(Pool),
        timer:sleep(200),
        ?assertEqual(ok, ocaml:upgrade(Pool, [?LIB:plugin(Config, "camlbeam_test"), Extra], 60000)),
        timer:sleep(200),
        %% At every moment, at least pool_size workers served.
        ?assert(stop_sampler(Sampler) >= 3),
        stop_callers(Callers),
        ?LIB:logged(fun(Event) -> ?LIB:mentions(Event, ["upgraded", "camlbeam_extra"]) end, 5000)
    after
        ?LIB:remove_log_collector(Collector)
    end,
    case ?LIB:transport(Config) of
        nif ->
            ?LIB:wait_until(fun() -> [1, 2, 3] =:= [Id || #{id := Id} <- ocaml:workers(Pool)] end, 5000),
            ?assertEqual(Old, os_pids(Pool));
        _ ->
            _ = ?LIB:new_os_pids(Pool, Old),
            ?assertEqual([1, 2, 3], [Id || #{id := Id} <- ocaml:workers(Pool)]),
            ?LIB:wait_until(fun() -> not lists:any(fun ?LIB:os_pid_alive/1, Old) end, 5000)
    end,
    new_export_everywhere(Pool),
    %% The pool's list is the new one.
    ?assertMatch({error, {load_failed, already_loaded, _}}, ocaml:load(Pool, Extra)),
    %% Restarts keep it.
    ?LIB:kill_workers(Config, Pool),
    new_export_everywhere(Pool).

%% A plugin whose initialiser fails: the temporary worker cannot start, nothing moved,
%% the callers never notice; a missing file and a timeout the same. The pool keeps its OS processes
%% and its list (a load works).
upgrade_fails_at_init(Config) ->
    Pool = ?LIB:start_pool(Config, #{pool_size => 3}),
    Old = os_pids(Pool),
    Test = ?LIB:plugin(Config, "camlbeam_test"),
    Callers = start_callers(Pool),
    timer:sleep(100),
    ?assertMatch({error, {upgrade_failed, 4, {load_failed, init_failed, _}}},
                 ocaml:upgrade(Pool, [Test, ?LIB:plugin(Config, "camlbeam_init_fails")])),
    Missing = filename:join(?config(priv_dir, Config), "missing.cmxs"),
    ?assertMatch({error, {upgrade_failed, 4, {load_failed, enoent, _}}},
                 ocaml:upgrade(Pool, [Test, Missing])),
    %% The upgrade's own timeout stops it like a failure.
    ?assertEqual({error, {upgrade_failed, 4, timeout}},
                 ocaml:upgrade(Pool, [Test, ?LIB:plugin(Config, "camlbeam_extra")], 0)),
    timer:sleep(100),
    stop_callers(Callers),
    %% The temporary worker 4 of the last upgrade may still finish its start, and show,
    %% before it takes the retire the failed roll sent it.
    ?LIB:wait_until(fun() -> [1, 2, 3] =:= [Id || #{id := Id} <- ocaml:workers(Pool)]
                                 andalso Old =:= os_pids(Pool) end, 5000),
    Message = ocaml:format_error({upgrade_failed, 4, {load_failed, init_failed, <<"boom">>}}),
    ?assertNotEqual(nomatch, string:find(Message, "worker 4")),
    ?assertEqual(ok, ocaml:load(Pool, ?LIB:plugin(Config, "camlbeam_extra"))),
    ?assertEqual({ok, <<"hello, x">>}, ocaml:call(Pool, extra_hello, [<<"x">>])).

%% The temporary worker and worker 1 start on the new list, worker 2 cannot: the roll
%% stops there, worker 1 goes back to the old list, the callers never notice.
upgrade_fails_mid_roll(Config) ->
    Pool = ?LIB:start_pool(Config, #{pool_size => 3}),
    Test = ?LIB:plugin(Config, "camlbeam_test"),
    Callers = start_callers(Pool),
    timer:sleep(100),
    ?assertMatch({error, {upgrade_failed, 2, {load_failed, init_failed, _}}},
                 ocaml:upgrade(Pool, [Test, ?LIB:plugin(Config, "camlbeam_fails_only_on_worker_2")])),
    %% Moving back goes on after the answer; meanwhile the pool refuses loads.
    ?LIB:wait_until(fun() ->
                        ocaml:load(Pool, ?LIB:plugin(Config, "camlbeam_extra")) =/= {error, upgrade_in_progress}
                    end, 30000, 50),
    timer:sleep(100),
    stop_callers(Callers),
    ?LIB:wait_until(fun() -> [1, 2, 3] =:= [Id || #{id := Id} <- ocaml:workers(Pool)] end, 5000),
    Answers = parallel_calls(Pool, upgraded_worker, []),
    ?assertEqual([], [A || A <- Answers, not is_undef(A)]),
    ?assertEqual({ok, <<"hello, x">>}, ocaml:call(Pool, extra_hello, [<<"x">>])).

%% One upgrade at a time, no load during one; the same list again (a rolling restart);
%% bad arguments; a pool that is gone.
upgrade_refusals(Config) ->
    Pool = ?LIB:start_pool(Config, #{pool_size => 1}),
    Plugins = [?LIB:plugin(Config, "camlbeam_test"), ?LIB:plugin(Config, "camlbeam_extra")],
    %% A call in flight for a second holds the roll in worker 1's drain.
    Self = self(),
    Slow = spawn_link(fun() -> Self ! {slow, ocaml:call(Pool, sleep, [1500], 10000)} end),
    ?LIB:wait_until(fun() -> [1] =:= [N || #{in_flight := N} <- ocaml:workers(Pool)] end, 5000),
    Upgrader = spawn_link(fun() -> Self ! {upgraded, ocaml:upgrade(Pool, Plugins, 30000)} end),
    case ?LIB:transport(Config) of
        nif ->
            %% Under nif (OCaml 4.13) the temporary worker's loads wait behind the slow call
            %% on the VM's one OCaml thread: it serves only once worker 1 has nothing in
            %% flight, whose drain is then too short to see. The upgrade is in progress
            %% once the upgrader waits for the manager's answer.
            ?LIB:wait_until(fun() -> process_info(Upgrader, current_function) =:=
                                         {current_function, {gen, do_call, 4}} end, 5000);
        _ ->
            %% The temporary worker serves; worker 1 drains, out of the registry.
            ?LIB:wait_until(fun() -> [2] =:= [Id || #{id := Id} <- ocaml:workers(Pool)] end, 10000)
    end,
    ?assertEqual({error, upgrade_in_progress}, ocaml:upgrade(Pool, Plugins)),
    ?assertEqual({error, upgrade_in_progress}, ocaml:load(Pool, ?LIB:plugin(Config, "camlbeam_extra"))),
    receive {slow, Slow1} -> ?assertEqual({ok, 1500}, Slow1) after 10000 -> ct:fail(no_slow_answer) end,
    receive {upgraded, Result} -> ?assertEqual(ok, Result) after 30000 -> ct:fail(no_upgrade_answer) end,
    _ = {Slow, Upgrader},
    ?assertEqual({ok, <<"hello, y">>}, ocaml:call(Pool, extra_hello, [<<"y">>])),
    %% To the same list: a rolling restart (under nif, in the same OS process: the VM's).
    %% The upgrade answered before its temporary worker had gone (it goes once it has
    %% answered its calls): the pool's own worker only.
    ?LIB:wait_until(fun() -> 1 =:= length(ocaml:workers(Pool)) end, 10000),
    Before = os_pids(Pool),
    ?assertEqual(ok, ocaml:upgrade(Pool, Plugins)),
    _ = ?LIB:transport(Config) =:= nif orelse ?LIB:new_os_pids(Pool, Before),
    ?assertEqual({ok, <<"hello, z">>}, ocaml:call(Pool, extra_hello, [<<"z">>])),
    ?assertError(badarg, ocaml:upgrade(Pool, "camlbeam_extra.cmxs")),
    ?assertError(badarg, ocaml:upgrade(Pool, Plugins, -1)),
    ok = ocaml:stop(Pool),
    ?assertEqual({error, noproc}, ocaml:upgrade(Pool, Plugins)).

%%% Helpers

os_pids(Pool) ->
    [P || #{os_pid := P} <- ocaml:workers(Pool)].

%% 50 processes calling the pool without a pause, each call taking up to 20 ms.
start_callers(Pool) ->
    Self = self(),
    [spawn_link(fun() -> caller(Pool, Self, 0, []) end) || _ <- lists:seq(1, ?CALLERS)].

caller(Pool, Parent, Oks, Errors) ->
    receive
        stop -> Parent ! {caller_done, self(), Oks, Errors}
    after 0 ->
        case ocaml:call(Pool, sleep_echo, [rand:uniform(20) - 1, here], 10000) of
            {ok, here} -> caller(Pool, Parent, Oks + 1, Errors);
            Other -> caller(Pool, Parent, Oks, [Other | Errors])
        end
    end.

%% The fewest workers ocaml:workers/1 listed, sampled without a pause.
start_sampler(Pool) ->
    Self = self(),
    spawn_link(fun() -> sample(Pool, Self, infinity) end).

sample(Pool, Parent, Fewest) ->
    receive
        stop -> Parent ! {fewest, self(), Fewest}
    after 0 ->
        sample(Pool, Parent, min(Fewest, length(ocaml:workers(Pool))))
    end.

stop_sampler(Sampler) ->
    Sampler ! stop,
    receive {fewest, Sampler, Fewest} -> ct:pal("at least ~p workers served", [Fewest]), Fewest
    after 5000 -> ct:fail(sampler_stuck)
    end.

%% Every call of every caller was answered {ok, _}.
stop_callers(Callers) ->
    _ = [C ! stop || C <- Callers],
    Results = [receive {caller_done, C, Oks, Errors} -> {Oks, Errors} after 20000 -> ct:fail(caller_stuck) end
               || C <- Callers],
    ?assertEqual([], lists:append([Errors || {_, Errors} <- Results])),
    Total = lists:sum([Oks || {Oks, _} <- Results]),
    ct:pal("~b calls, all answered {ok, _}", [Total]),
    ?assert(Total > ?CALLERS).

%% The answers of 60 calls made at once, which spread over the workers.
parallel_calls(Pool, Fun, Args) ->
    Self = self(),
    Pids = [spawn_link(fun() -> Self ! {self(), ocaml:call(Pool, Fun, Args)} end) || _ <- lists:seq(1, 60)],
    [receive {P, Answer} -> Answer after 10000 -> ct:fail(no_answer) end || P <- Pids].

new_export_everywhere(Pool) ->
    %% Held busy by slow calls, each worker takes some of the quick ones.
    %% Each slow caller is counted in before the next one picks a worker, so that
    %% least-loaded routing gives each its own worker.
    Self = self(),
    Before = in_flight(Pool),
    Slow = [begin
                Pid = spawn_link(fun() -> Self ! {self(), ocaml:call(Pool, sleep_worker_id, [300])} end),
                wait_in_flight(Pool, Before + N, 200),
                Pid
            end || N <- lists:seq(1, 3)],
    Answers = parallel_calls(Pool, extra_hello, [<<"x">>]),
    ?assertEqual([], [A || A <- Answers, A =/= {ok, <<"hello, x">>}]),
    Ids = [receive {P, {ok, Id}} -> Id after 10000 -> ct:fail(no_answer) end || P <- Slow],
    ?assertEqual([1, 2, 3], lists:sort(Ids)).

%% Polls until the pool counts at least N calls in flight, 5 ms apart, at most Tries times.
wait_in_flight(Pool, N, Tries) ->
    case in_flight(Pool) of
        Count when Count >= N -> ok;
        _ when Tries =:= 0 -> ct:fail({calls_never_counted_in, N});
        _ -> timer:sleep(5), wait_in_flight(Pool, N, Tries - 1)
    end.

in_flight(Pool) ->
    lists:sum([InFlight || #{in_flight := InFlight} <- ocaml:workers(Pool)]).

is_undef({error, {undef, _}}) -> true;
is_undef(_) -> false.
