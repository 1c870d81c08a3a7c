#!/usr/bin/env escript
%%! -noshell +S 2
%% The soak of issue 11 (not in CI): a million calls through a pool whose workers are
%% killed with SIGKILL all along, counting what was made, answered, lost and duplicated,
%% and the VM's and the workers' memory at the start and at the end.
%%
%%   scripts/soak.sh [CALLS [CALLERS [KILL_EVERY_MS [POOL_SIZE]]]]
%%
%% scripts/soak.sh builds first and sets the paths; defaults 1000000 calls, 64 callers,
%% a SIGKILL every 100 ms, 4 workers. Every call has a 2 s timeout and must return within
%% 2.5 s; a caller checks its own answer ({ok, {N, Pid}} for the N it sent), and after each
%% call that nothing else is in its mailbox (a duplicate would be). Exit status 0 when
%% nothing was lost, late, duplicated or misdelivered.
-mode(compile).

-define(TIMEOUT, 2000).
-define(MARGIN, 500).

main(Args) ->
    [Calls, Callers, KillEvery, PoolSize] = arguments(Args, [1000000, 64, 100, 4]),
    Plugins = os:getenv("CAMLBEAM_TEST_PLUGINS"),
    {ok, _} = application:ensure_all_started(camlbeam),
    ok = logger:set_handler_config(default, level, error),
    {ok, Pool} = ocaml:start(#{plugins => [filename:join(Plugins, "camlbeam_test.cmxs")],
                               pool_size => PoolSize, restart_backoff => {10, 500}}),
    timer:sleep(500),
    Start = snapshot(Pool),
    Counter = atomics:new(1, []),
    Killer = spawn_link(fun() -> killer(Pool, KillEvery, 0) end),
    Self = self(),
    T0 = erlang:monotonic_time(millisecond),
    _ = [spawn_link(fun() -> Self ! {done, caller(Pool, Counter, Calls, #{})} end)
         || _ <- lists:seq(1, Callers)],
    Results = [receive {done, R} -> R end || _ <- lists:seq(1, Callers)],
    Elapsed = erlang:monotonic_time(millisecond) - T0,
    Killer ! {stop, self()},
    Kills = receive {kills, KillCount} -> KillCount end,
    Totals = lists:foldl(fun(R, Acc) -> maps:fold(fun(Key, N, A) ->
                                                          maps:update_with(Key, fun(M) -> M + N end, N, A)
                                                  end, Acc, R)
                         end, #{}, Results),
    %% The pool serves again, then the end state.
    wait_serving(Pool, 30),
    timer:sleep(1000),
    End = snapshot(Pool),
    Made = atomics:get(Counter, 1),
    Returned = lists:sum([N || {Key, N} <- maps:to_list(Totals), Key =/= late_ms, Key =/= stray]),
    Bad = [K || K <- [late, stray, misdelivered], maps:get(K, Totals, 0) > 0],
    io:format("soak: ~b calls by ~b callers in ~.1f s (~b calls/s), ~b SIGKILLs (one every ~b ms)~n",
              [Made, Callers, Elapsed / 1000, Made * 1000 div max(1, Elapsed), Kills, KillEvery]),
    io:format("  made ~b, returned ~b, lost ~b, duplicated ~b, misdelivered ~b, late ~b~n",
              [Made, Returned, Made - Returned, maps:get(stray, Totals, 0),
               maps:get(misdelivered, Totals, 0), maps:get(late, Totals, 0)]),
    io:format("  answers: ~p~n", [maps:without([late, stray, misdelivered], Totals)]),
    io:format("  VM memory ~.1f MB -> ~.1f MB, processes ~b -> ~b, atoms ~b -> ~b~n",
              [mb(maps:get(memory, Start)), mb(maps:get(memory, End)), maps:get(processes, Start),
               maps:get(processes, End), maps:get(atoms, Start), maps:get(atoms, End)]),
    io:format("  worker RSS ~p MB -> ~p MB~n", [maps:get(rss_mb, Start), maps:get(rss_mb, End)]),
    ok = ocaml:stop(Pool),
    halt(case Bad =:= [] andalso Made =:= Returned of true -> 0; false -> 1 end).

arguments(Args, Defaults) ->
    Given = [list_to_integer(A) || A <- Args],
    Given ++ lists:nthtail(length(Given), Defaults).

caller(Pool, Counter, Calls, Counts) ->
    case atomics:add_get(Counter, 1, 1) of
        N when N > Calls ->
            atomics:sub(Counter, 1, 1),
            Counts;
        N ->
            T0 = erlang:monotonic_time(millisecond),
            Answer = ocaml:call(Pool, identity, [{N, self()}], ?TIMEOUT),
            Ms = erlang:monotonic_time(millisecond) - T0,
            Kind = case Answer of
                       {ok, {N, _}} -> ok;
                       {ok, _} -> misdelivered;
                       {error, {worker_crashed, {Why, _}}} -> {worker_crashed, Why};
                       {error, {worker_crashed, Why}} -> {worker_crashed, Why};
                       {error, Reason} when is_atom(Reason) -> Reason;
                       {error, Other} -> element(1, Other)
                   end,
            Late = case Ms > ?TIMEOUT + ?MARGIN of true -> [late]; false -> [] end,
            Stray = receive Message -> [{stray, Message}] after 0 -> [] end,
            _ = Kind =:= no_worker andalso timer:sleep(5),
            caller(Pool, Counter, Calls,
                   lists:foldl(fun(K, C) -> maps:update_with(K, fun(V) -> V + 1 end, 1, C) end,
                               Counts, [Kind | Late] ++ [stray || _ <- Stray]))
    end.

killer(Pool, Every, Kills) ->
    receive
        {stop, From} -> From ! {kills, Kills}
    after Every ->
        case ocaml:workers(Pool) of
            [] ->
                killer(Pool, Every, Kills);
            Workers ->
                #{os_pid := OsPid} = lists:nth(rand:uniform(length(Workers)), Workers),
                _ = os:cmd("kill -9 " ++ integer_to_list(OsPid)),
                killer(Pool, Every, Kills + 1)
        end
    end.

wait_serving(_Pool, 0) ->
    erlang:error(pool_not_serving);
wait_serving(Pool, Tries) ->
    case ocaml:call(Pool, identity, [x], 1000) of
        {ok, x} -> ok;
        _ -> timer:sleep(200), wait_serving(Pool, Tries - 1)
    end.

snapshot(Pool) ->
    erlang:garbage_collect(),
    #{memory => erlang:memory(total), processes => erlang:system_info(process_count),
      atoms => erlang:system_info(atom_count),
      rss_mb => [rss_kb(P) div 1024 || #{os_pid := P} <- ocaml:workers(Pool)]}.

rss_kb(OsPid) ->
    case file:read_file("/proc/" ++ integer_to_list(OsPid) ++ "/status") of
        {ok, Status} ->
            [_, Rest] = binary:split(Status, <<"VmRSS:">>),
            [Kb | _] = string:lexemes(Rest, " \t\n"),
            binary_to_integer(Kb);
        {error, _} ->
            0
    end.

mb(Bytes) -> Bytes / 1048576.
