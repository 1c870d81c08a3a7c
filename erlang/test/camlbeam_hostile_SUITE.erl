%% No worker can hurt the VM: plugins that attack it on purpose (erlang/test/plugins/
%% camlbeam_hostile.ml), against the real application.
%%
%% Every case runs in a VM of its own (peer, over standard_io: no distribution), so that a
%% case that kills its VM fails instead of taking the run with it. Around each case the
%% VM's memory, process count and atom count are measured; after it, the VM must still
%% answer, those must be back within bounds, and the pool must serve again. Calls are made
%% by many callers at once: each must get exactly one answer, within its timeout plus
%% ?MARGIN (nothing else may reach its mailbox).
%%
%% The couplings: cases(Group) lists the cases that apply to a group's transport. Every
%% case here is about a worker that is an OS process, so all apply to port and
%% port_bytecode; a node coupling would take the ones that do not touch pipes (policy,
%% crash loops, stalls, floods, deep and large answers), the nif coupling fewer still
%% (left_out/1 says why for each).
-module(camlbeam_hostile_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").
-include("../src/camlbeam_registry.hrl").
-include("../src/ocaml_port_transport.hrl").

-compile([export_all, nowarn_export_all]).

-define(LIB, camlbeam_test_lib).

%% How much later than its timeout a call may return: scheduling on a loaded 2-core
%% machine with hundreds of callers, and the decoding of an answer that came in time.
%% docs/api.md states the same bound.
-define(MARGIN, 500).

suite() ->
    [{timetrap, {minutes, 3}}].

all() ->
    [{group, Group} || {Group, _, _} <- groups()].

groups() ->
    ?LIB:groups(fun cases/1).

cases(Group) ->
    [Case || Case <- [crash_map_never_reaches_the_decoder, policy_keeps_the_vm, busy_worker_never_blocks_callers,
                      huge_length_header, random_bytes_on_fd4, well_framed_junk, erl_call_flood,
                      spin_is_replaced, interruptible_loop, looping_initialiser, crash_loop_backs_off, max_memory,
                      memory_given_back, exit_segfault_abort, garbage_on_stdout_and_stderr, closed_fds,
                      big_answer, deep_answer, fork_both, forked_children_die_with_the_worker,
                      caller_killed_mid_call, stop_with_400_in_flight, sigstop_storm, sigkill_storm, log_flood,
                      frame_flood, one_line_per_death, loading_is_all_or_none]
                     ++ [spin_is_overdue || Group =:= nif],
            not lists:member(Case, left_out(Group))].

left_out(nif) ->
    [%% Frames written by hand to fd 4, the port's protocol (under nif, a file descriptor
     %% of the VM), and the rows of the port worker's table.
     crash_map_never_reaches_the_decoder, huge_length_header, random_bytes_on_fd4, well_framed_junk,
     erl_call_flood, log_flood, frame_flood,
     %% The port's pipes closed, and junk on fds 1 and 2: under nif those are the VM's own
     %% (and the peer's standard output is its connection to this node).
     closed_fds, garbage_on_stdout_and_stderr,
     %% max_queue_bytes bounds the bytes unread in a port worker's pipe; the nif has no
     %% pipe, and bounds a worker's queue by max_queue alone (calls, each a copy of its
     %% request): 2,000 calls of 10 KB behind a call that never ends all queue, and all
     %% answer {error, timeout} (ocaml_nif_transport's module doc).
     busy_worker_never_blocks_callers,
     %% A request that ignores its deadline cannot be ended under nif (the OCaml runtime
     %% is the VM's: ocaml_nif_transport), so it is not replaced: every later request
     %% waits behind it (spin_is_overdue instead).
     spin_is_replaced,
     %% They kill, stop, fork or exit the worker's OS process, or read its memory, limit
     %% it (max_memory) or read the environment set with os:putenv/2: under nif that OS
     %% process is the VM, whose C environment os:putenv/2 does not change.
     crash_loop_backs_off, max_memory, fork_both,
     forked_children_die_with_the_worker, sigstop_storm, sigkill_storm, one_line_per_death,
     %% A plugin's initialiser runs once per VM under nif (one runtime, whose later loads
     %% answer as the first did), not once per worker: it cannot load on one worker and
     %% fail on the other.
     loading_is_all_or_none];
left_out(node) ->
    [%% Frames written by hand to fd 4, the port's protocol: a node speaks distribution
     %% (its parsers have their own fuzzers and hostile peers: cpp/dist, camlbeam_node_SUITE).
     crash_map_never_reaches_the_decoder, huge_length_header, random_bytes_on_fd4, well_framed_junk,
     erl_call_flood, log_flood, frame_flood, closed_fds,
     %% max_queue_bytes and max_memory are the port's (a node pool refuses max_memory);
     %% a node bounds its queue itself (100,000 requests, docs/node.md).
     busy_worker_never_blocks_callers, max_memory,
     %% The port's keeper kills what a worker forked; a node has no keeper.
     fork_both, forked_children_die_with_the_worker,
     %% Its sends by hand are frames on fd 4 (the node's policy: camlbeam_node_SUITE, and
     %% the api suite's erl_send_policy and call_erlang cases under node).
     policy_keeps_the_vm];
left_out(_) ->
    [].

init_per_suite(Config) -> ?LIB:init_per_suite(Config).
end_per_suite(Config) -> ?LIB:end_per_suite(Config).
init_per_group(Group, Config) -> ?LIB:init_per_group(Group, Config).
end_per_group(_Group, _Config) -> ok.

%% Each case Name runs Name(peer, Config) in a fresh VM.
init_per_testcase(_Case, Config) -> Config.
end_per_testcase(_Case, _Config) -> ok.

-define(IN_PEER(Name), Name(Config) -> in_peer(Config, Name)).

?IN_PEER(crash_map_never_reaches_the_decoder).
?IN_PEER(policy_keeps_the_vm).
?IN_PEER(busy_worker_never_blocks_callers).
?IN_PEER(huge_length_header).
?IN_PEER(random_bytes_on_fd4).
?IN_PEER(well_framed_junk).
?IN_PEER(erl_call_flood).
?IN_PEER(spin_is_replaced).
?IN_PEER(spin_is_overdue).
?IN_PEER(interruptible_loop).
?IN_PEER(looping_initialiser).
?IN_PEER(crash_loop_backs_off).
?IN_PEER(max_memory).
?IN_PEER(memory_given_back).
?IN_PEER(exit_segfault_abort).
?IN_PEER(garbage_on_stdout_and_stderr).
?IN_PEER(closed_fds).
?IN_PEER(big_answer).
?IN_PEER(deep_answer).
?IN_PEER(fork_both).
?IN_PEER(forked_children_die_with_the_worker).
?IN_PEER(caller_killed_mid_call).
?IN_PEER(stop_with_400_in_flight).
?IN_PEER(sigstop_storm).
?IN_PEER(sigkill_storm).
?IN_PEER(log_flood).
?IN_PEER(frame_flood).
?IN_PEER(one_line_per_death).
?IN_PEER(loading_is_all_or_none).

%%% The cases (they run in the peer: Config is the peer's)

%% The 214 bytes that segfault OTP 25's binary_to_term (a 33-key map, two references
%% differing after their third word), written to fd 4 as every frame whose payload
%% somebody decodes: a message to a given pid, a log line, an Erl.call_erlang request,
%% and the answer to a call in flight.
crash_map_never_reaches_the_decoder(peer, Config) ->
    Pool = start_pool(Config, #{policy => #{send => given, erl_call => all}}),
    Self = self(),
    Crash = crash_map(),
    Frames = [frame({send, Self}, Crash), frame({log, warning}, Crash),
              frame({erl_call, 1}, erl_call_of(Crash))],
    [?assertEqual({ok, ok}, ocaml:call(Pool, write_fd, [4, Frame])) || Frame <- Frames],
    %% As the answer to a call: a first call waits for a file, then writes its bytes to
    %% fd 4; a second, queued behind it, is the one whose reference is in the frame.
    File = filename:join(?config(priv_dir, Config), "crash-frame"),
    _ = file:delete(File),
    spawn_link(fun() -> Self ! {relay, ocaml:call(Pool, relay_file, [list_to_binary(File), 10000], 15000)} end),
    %% Told apart by which came later, not by their timestamps: two calls written in the
    %% same millisecond have the same. (The rows, not the counters: a call is counted
    %% in before its row is written.)
    ?LIB:wait_until(fun() -> length(pending_refs(Pool)) =:= 1 end, 5000),
    Relaying = pending_refs(Pool),
    spawn_link(fun() -> Self ! {victim, ocaml:call(Pool, identity, [victim], 15000)} end),
    ?LIB:wait_until(fun() -> length(pending_refs(Pool)) =:= 2 end, 5000),
    [Victim] = pending_refs(Pool) -- Relaying,
    ok = file:write_file(File, frame({reply, Victim}, Crash)),
    receive {victim, Answer} ->
            ?assertMatch({error, {bad_reply, <<"a reference of more than three words", _/binary>>}},
                         Answer)
    after 15000 -> ct:fail(victim_unanswered) end,
    receive {relay, {ok, ok}} -> ok after 15000 -> ct:fail(relay_unanswered) end,
    %% Nothing reached this process, and the same OS process serves on.
    ?assertEqual([], ?LIB:flush()),
    serves(Pool).

%% Erl.send to the process that stops the VM on {stop, stop}, Erl.call_erlang of halt
%% and of binary_to_atom: all refused under the default policy, through the API and
%% (but under nif, which has no frames) through frames written by hand.
policy_keeps_the_vm(peer, Config) ->
    Pool = start_pool(Config, #{}),
    Init = whereis(init),
    ?assertEqual({ok, ok}, ocaml:call(Pool, send_to_first, [[Init], {stop, stop}])),
    _ = ?LIB:transport(Config) =:= nif orelse
        ?assertEqual({ok, ok}, ocaml:call(Pool, write_fd, [4, frame({send, Init}, {stop, stop})])),
    ?assertMatch({ok, {error, {error, {not_allowed, {erlang, halt, 1}}}}},
                 ocaml:call(Pool, call_erlang, [erlang, halt, [7]])),
    Atoms = erlang:system_info(atom_count),
    [?assertMatch({ok, {error, {error, {not_allowed, _}}}},
                  ocaml:call(Pool, call_erlang, [erlang, binary_to_atom, [integer_to_binary(I)]]))
     || I <- lists:seq(1, 1000)],
    ?assertEqual(Atoms, erlang:system_info(atom_count)),
    %% A stop would take a moment: still here a second later.
    timer:sleep(1000),
    ?assertEqual(Init, whereis(init)),
    serves(Pool).

%% One worker stuck in a loop that holds its only OS process (a call with no deadline),
%% its pipe full: 2,000 callers with a 200 ms timeout each get their answer in time, a
%% cast returns at once, and stopping the VM ends the OS process (checked by the caller
%% of the case, once the VM is gone).
busy_worker_never_blocks_callers(peer, Config) ->
    Pool = start_pool(Config, #{max_queue_bytes => 1 bsl 16}),
    [#{os_pid := OsPid}] = ocaml:workers(Pool),
    spawn(fun() -> ocaml:call(Pool, spin_alloc, [], infinity) end),
    ?LIB:wait_until(fun() -> in_flight(Pool) =:= 1 end, 5000),
    Big = binary:copy(<<"x">>, 10000),
    Answers = calls(Pool, 2000, identity, fun(_) -> [Big] end, 200),
    ?assertEqual([], [A || {_, A, _} <- Answers, A =/= {error, timeout}, A =/= {error, overloaded}]),
    ?assert(lists:any(fun({_, A, _}) -> A =:= {error, overloaded} end, Answers)),
    {CastTime, _} = timer:tc(fun() -> [ocaml:cast(Pool, identity, [Big]) || _ <- lists:seq(1, 1000)] end),
    ?assert(CastTime < 1000000),
    {stop_vm, [OsPid]}.

%% Four bytes announce a 2 GB frame: refused at the header, the worker replaced, no
%% memory taken.
huge_length_header(peer, Config) ->
    Pool = start_pool(Config, #{}),
    [#{os_pid := OsPid}] = ocaml:workers(Pool),
    Memory = erlang:memory(total),
    ?assertEqual({error, {worker_crashed, {malformed_frame, {frame_too_large, 16#7fffffff, 64 bsl 20}}}},
                 ocaml:call(Pool, write_fd, [4, <<16#7f, 16#ff, 16#ff, 16#ff>>])),
    ?assert(erlang:memory(total) - Memory < 16 bsl 20),
    _ = ?LIB:new_os_pids(Pool, [OsPid]),
    serves(Pool).

%% 100 KB of random bytes on fd 4, ten times over (ten deaths in a row: a short backoff).
%% When the first four bytes announce a frame longer than what follows but within
%% max_reply_size (one time in 64), the answer is swallowed by that frame: the call times
%% out, and the OS process, answering nothing past its deadline, is replaced all the same.
random_bytes_on_fd4(peer, Config) ->
    Pool = start_pool(Config, #{restart_backoff => {10, 100}, cancel_grace => 200}),
    Memory = erlang:memory(total),
    lists:foreach(
      fun(_) ->
              [#{os_pid := OsPid}] = wait_workers(Pool, 1),
              Answer = ocaml:call(Pool, write_fd, [4, crypto:strong_rand_bytes(100000)], 1000),
              ?assert(element(1, Answer) =:= error andalso
                      (element(2, Answer) =:= timeout orelse element(1, element(2, Answer)) =:= worker_crashed)),
              _ = ?LIB:new_os_pids(Pool, [OsPid])
      end, lists:seq(1, 10)),
    ?assert(erlang:memory(total) - Memory < 32 bsl 20),
    serves(Pool).

%% Frames whose framing is right and whose contents are not: junk envelopes end the OS
%% process; junk payloads of well-formed envelopes are dropped (a message, a log line).
well_framed_junk(peer, Config) ->
    Pool = start_pool(Config, #{}),
    Self = self(),
    [?assertEqual({ok, ok}, ocaml:call(Pool, write_fd, [4, packet(Body)]))
     || Body <- [<<(term_to_binary({send, Self}))/binary, 131, 255, 0, 1>>,
                 <<(term_to_binary({log, error}))/binary, 131, 108, 255, 255, 255, 255>>,
                 <<(term_to_binary({heartbeat, 5}))/binary, 131, 106>>]],
    [#{os_pid := OsPid}] = ocaml:workers(Pool),
    ?assertMatch({error, {worker_crashed, {malformed_frame, {bad_envelope, _}}}},
                 ocaml:call(Pool, write_fd, [4, packet(crypto:strong_rand_bytes(1000))])),
    _ = ?LIB:new_os_pids(Pool, [OsPid]),
    ?assertEqual([], ?LIB:flush()),
    serves(Pool).

%% 300,000 Erl.call_erlang frames written at once, each asking for a call that takes a
%% second: at most max_erl_calls run at a time, the rest are refused; the VM's process
%% count stays where it was, and spawn works.
erl_call_flood(peer, Config) ->
    Pool = start_pool(Config, #{policy => #{erl_call => [{timer, sleep}], max_erl_calls => 4}}),
    Processes = erlang:system_info(process_count),
    Frames = iolist_to_binary([frame({erl_call, I}, {timer, sleep, [1000]}) || I <- lists:seq(1, 300000)]),
    ?assertEqual({ok, ok}, ocaml:call(Pool, write_fd, [4, Frames], 60000)),
    ?assert(erlang:system_info(process_count) - Processes =< 4 + 5),
    Pid = spawn(fun() -> ok end),
    ?assert(is_pid(Pid)),
    %% The worker reads 300,000 answers it did not ask for: it may take a while, or be
    %% replaced; either way the pool serves again.
    serves(Pool, 60000),
    ?assert(erlang:system_info(process_count) - Processes =< 4 + 5).

%% A loop that cannot be interrupted (it blocked every signal first): the OS process exits
%% cancel_grace after the deadline (status 124) and is replaced.
spin_is_replaced(peer, Config) ->
    Pool = start_pool(Config, #{cancel_grace => 300}),
    [#{os_pid := OsPid}] = ocaml:workers(Pool),
    ?assertEqual({error, timeout}, ocaml:call(Pool, spin, [], 300)),
    [NewOsPid] = ?LIB:new_os_pids(Pool, [OsPid]),
    ?assertNotEqual(OsPid, NewOsPid),
    serves(Pool).

%% Under nif the same loop cannot be ended (ocaml_nif_transport): its caller gets
%% {error, timeout} at its own timeout, the worker says once that the request does not
%% stop, and the requests after it wait (the VM is stopped after the case).
spin_is_overdue(peer, Config) ->
    Pool = start_pool(Config, #{}),
    Logs = ?LIB:add_log_collector(),
    try
        ?assertEqual({error, timeout}, ocaml:call(Pool, spin, [], 300)),
        ?LIB:logged(fun(#{level := error} = E) -> ?LIB:mentions(E, ["does not stop"]);
                       (_) -> false
                    end, 10000),
        ?assertEqual({error, timeout}, ocaml:call(Pool, identity, [after_spin], 500)),
        ?assertEqual([], [E || {logged, E} <- ?LIB:flush(), ?LIB:mentions(E, ["does not stop"])])
    after
        ?LIB:remove_log_collector(Logs)
    end,
    {stop_vm, []}.

%% Ten callers in a row call a loop that allocates, on a pool of one, 200 ms each: each is
%% interrupted at its deadline (Erl.Cancelled), the same OS process serves them all, and
%% the pool is free at the end.
interruptible_loop(peer, Config) ->
    Pool = start_pool(Config, #{}),
    [#{os_pid := OsPid}] = ocaml:workers(Pool),
    Answers = calls(Pool, 10, spin_alloc, fun(_) -> [] end, 200),
    ?assertEqual(lists:duplicate(10, {error, timeout}), [A || {_, A, _} <- Answers]),
    ?LIB:wait_until(fun() -> in_flight(Pool) =:= 0 end, 10 * 300 + 2000),
    ?assertMatch([#{os_pid := OsPid}], ocaml:workers(Pool)),
    serves(Pool).

%% A plugin whose initialiser loops: the load times out, and the pool serves again
%% without the plugin.
looping_initialiser(peer, Config) ->
    Pool = start_pool(Config, #{start_timeout => 1000}),
    ?assertEqual({error, timeout}, ocaml:load(Pool, plugin(Config, "camlbeam_init_loops"))),
    serves(Pool, 10000),
    ?assertMatch({error, {undef, _}}, ocaml:call(Pool, init_loops_never_exported, [])).

%% A worker whose every new OS process dies at start (a plugin's initialiser exits while
%% CAMLBEAM_TEST_EXIT_AT_INIT is set): restarts slow down (restart_backoff), the pool and
%% its supervisor stay up, another worker of the pool and another pool serve on, and once
%% the cause is gone the worker is back within the backoff's maximum.
crash_loop_backs_off(peer, Config) ->
    Options = #{pool_size => 2, restart_backoff => {100, 1000},
                plugins => [plugin(Config, "camlbeam_test"), plugin(Config, "camlbeam_init_exits")]},
    Pool = start_pool(Config, Options),
    Other = start_pool(Config, #{}),
    Logs = ?LIB:add_log_collector(),
    try
        os:putenv("CAMLBEAM_TEST_EXIT_AT_INIT", "1"),
        [#{os_pid := OsPid} | _] = ocaml:workers(Pool),
        os:cmd("kill -9 " ++ integer_to_list(OsPid)),
        Started = erlang:monotonic_time(millisecond),
        Deaths = count_logged(fun(E) -> ?LIB:mentions(E, ["ended"]) end, 5000),
        %% A start takes tens of ms: without a backoff it would have restarted ~100 times.
        note("~b deaths in 5 s", [Deaths]),
        ?assert(Deaths >= 3 andalso Deaths =< 12),
        ?assert(is_process_alive(Pool)),
        ?assertMatch([_], ocaml:workers(Pool)),
        [?assertEqual({ok, I}, ocaml:call(Pool, identity, [I])) || I <- lists:seq(1, 20)],
        [?assertEqual({ok, I}, ocaml:call(Other, identity, [I])) || I <- lists:seq(1, 20)],
        os:unsetenv("CAMLBEAM_TEST_EXIT_AT_INIT"),
        ?LIB:wait_until(fun() -> length(ocaml:workers(Pool)) =:= 2 end, 1000 + 3000),
        note("back after ~b ms", [erlang:monotonic_time(millisecond) - Started])
    after
        os:unsetenv("CAMLBEAM_TEST_EXIT_AT_INIT"),
        ?LIB:remove_log_collector(Logs)
    end,
    serves(Pool).

%% A runaway allocation under max_memory: refused to the worker (Out_of_memory), or the
%% worker dies; never more memory for the VM. The worker's next calls work.
max_memory(peer, Config) ->
    Limit = 512 bsl 20,
    Pool = start_pool(Config, #{max_memory => Limit}),
    Memory = erlang:memory(total),
    Answer = ocaml:call(Pool, hog, [64], 60000),
    note("hog under max_memory: ~tP", [Answer, 8]),
    ?assert(case Answer of
                {error, {ocaml_exception, <<"Out_of_memory">>, _, _}} -> true;
                {error, {worker_crashed, _}} -> true;
                _ -> false
            end),
    ?assert(erlang:memory(total) - Memory < 32 bsl 20),
    serves(Pool),
    [#{os_pid := OsPid}] = ocaml:workers(Pool),
    ?assert(rss(OsPid) < Limit).

%% After a 1 GB transient request the worker gives the memory back.
memory_given_back(peer, Config) ->
    Pool = start_pool(Config, #{}),
    [#{os_pid := OsPid}] = ocaml:workers(Pool),
    ?assertEqual({ok, ok}, ocaml:call(Pool, transient, [1000], 60000)),
    ?assertEqual({ok, 1}, ocaml:call(Pool, identity, [1])),
    ?LIB:wait_until(fun() -> rss(OsPid) < 256 bsl 20 end, 5000),
    note("idle RSS after a 1 GB request: ~b MB", [rss(OsPid) bsr 20]).

%% Under nif a segfault or an abort ends the VM, which nothing can prevent; Stdlib.exit
%% raises instead (cpp/nif/README.md): the call fails, and the same worker serves on.
exit_segfault_abort(peer, Config) ->
    Pool = start_pool(Config, #{}),
    case ?LIB:transport(Config) of
        nif ->
            [#{pid := Worker}] = ocaml:workers(Pool),
            [?assertMatch({error, {ocaml_exception, <<"Failure">>, <<"Failure(\"Stdlib.exit", _/binary>>, _}},
                          ocaml:call(Pool, exit, [Status]))
             || Status <- [3, 0]],
            ?assertMatch([#{pid := Worker}], ocaml:workers(Pool));
        _ ->
            lists:foreach(
              fun({Export, Args, Status}) ->
                      [#{os_pid := OsPid}] = wait_workers(Pool, 1),
                      ?assertEqual({error, ?LIB:crashed(Config, {exit_status, Status})},
                                   ocaml:call(Pool, Export, Args)),
                      _ = ?LIB:new_os_pids(Pool, [OsPid])
              end, [{exit, [3], 3}, {segfault, [], 128 + 11}, {abort, [], 128 + 6}, {exit, [0], 0}])
    end,
    serves(Pool).

%% What a plugin prints goes to the VM's standard error, never into the protocol.
garbage_on_stdout_and_stderr(peer, Config) ->
    Pool = start_pool(Config, #{}),
    [#{os_pid := OsPid}] = ocaml:workers(Pool),
    %% Bytes that would break the protocol on fd 4, in a line a person can read in the log.
    Junk = <<"camlbeam hostile suite, a plugin printing a frame: ", 0, 0, 0, 5, "junk!", 131, "\n">>,
    ?assertEqual({ok, ok}, ocaml:call(Pool, write_fd, [1, Junk])),
    ?assertEqual({ok, ok}, ocaml:call(Pool, write_fd, [2, Junk])),
    ?assertMatch([#{os_pid := OsPid}], ocaml:workers(Pool)),
    serves(Pool).

%% A plugin closing the protocol's pipes: the answer may still get out (fd 3 is only read
%% after it), then the OS process ends and is replaced.
closed_fds(peer, Config) ->
    Pool = start_pool(Config, #{}),
    lists:foreach(
      fun(Fd) ->
              [#{os_pid := OsPid}] = wait_workers(Pool, 1),
              Answer = ocaml:call(Pool, close_fd, [Fd], 5000),
              note("closing fd ~b: ~tp", [Fd, Answer]),
              ?assert(Answer =:= {ok, ok} orelse element(1, element(2, Answer)) =:= worker_crashed),
              _ = ?LIB:new_os_pids(Pool, [OsPid])
      end, [3, 4]),
    serves(Pool).

%% A 100 MB answer: over the default max_reply_size it is replaced by reply_too_large;
%% under a pool's larger limit it arrives whole.
%% (A pool's node gets the pool's max_reply_size: --max-reply-size.)
big_answer(peer, Config) ->
    Small = start_pool(Config, #{}),
    ?assertMatch({error, {reply_too_large, _, 64 bsl 20}}, ocaml:call(Small, big, [100 bsl 20], 30000)),
    serves(Small),
    Large = start_pool(Config, #{max_reply_size => 128 bsl 20}),
    {ok, Bin} = ocaml:call(Large, big, [100 bsl 20], 30000),
    ?assertEqual(100 bsl 20, byte_size(Bin)),
    serves(Large).

%% A list nested ten million deep comes back whole (the guard walks it without a stack).
deep_answer(peer, Config) ->
    Pool = start_pool(Config, #{max_reply_size => 256 bsl 20}),
    {ok, Deep} = ocaml:call(Pool, deep, [10000000], 120000),
    ?assertEqual(10000000, depth(Deep, 0)),
    serves(Pool).

depth([], D) -> D;
depth([X], D) -> depth(X, D + 1).

%% Unix.fork in an export, both processes returning to serve: answers stay exactly once
%% (a second answer for a call finds its row gone), and the pool keeps serving.
fork_both(peer, Config) ->
    Pool = start_pool(Config, #{}),
    [#{os_pid := OsPid}] = ocaml:workers(Pool),
    _ = ocaml:call(Pool, fork_both, []),
    Forked = descendants(OsPid),
    note("forked: ~p", [Forked]),
    Answers = calls(Pool, 200, identity, fun(I) -> [I] end, 5000),
    %% An answer is the caller's own, or an error: never another caller's value.
    [?assert(A =:= {ok, I} orelse (element(1, A) =:= error andalso expected_in_storm(A)))
     || {I, A, _} <- Answers],
    serves(Pool, 10000),
    {stop_vm, [OsPid | Forked]}.

%% Children a plugin forked that hold the pipes, one in the worker's process group and
%% one that left it (setsid), and a program it started: all gone once the worker's OS
%% process is, and it ending is seen at once.
forked_children_die_with_the_worker(peer, Config) ->
    Pool = start_pool(Config, #{}),
    [#{os_pid := OsPid}] = ocaml:workers(Pool),
    {ok, Kept} = ocaml:call(Pool, fork_hold, [60000, false]),
    {ok, Detached} = ocaml:call(Pool, fork_hold, [60000, true]),
    {ok, Program} = ocaml:call(Pool, fork_exec_hold, [60000]),
    Children = [Kept, Detached, Program],
    ?assert(lists:all(fun ?LIB:os_pid_alive/1, Children)),
    os:cmd("kill -9 " ++ integer_to_list(OsPid)),
    _ = ?LIB:new_os_pids(Pool, [OsPid]),
    ?LIB:wait_until(fun() -> not lists:any(fun ?LIB:os_pid_alive/1, Children) end, 5000),
    serves(Pool).

%% A caller killed while its call runs: the answer reaches nobody, the call stops
%% counting once answered, nothing strays.
caller_killed_mid_call(peer, Config) ->
    Pool = start_pool(Config, #{}),
    Caller = spawn(fun() -> ocaml:call(Pool, sleep, [500]) end),
    ?LIB:wait_until(fun() -> in_flight(Pool) =:= 1 end, 5000),
    exit(Caller, kill),
    ?LIB:wait_until(fun() -> in_flight(Pool) =:= 0 end, 5000),
    ?assertEqual([], ?LIB:flush()),
    serves(Pool).

%% ocaml:stop/1 with 400 calls in flight: each answers {worker_crashed, shutdown} at once,
%% and the OS processes are gone.
stop_with_400_in_flight(peer, Config) ->
    {ok, Pool} = ocaml:start(pool_options(Config, #{pool_size => 2})),
    Workers = ?LIB:worker_processes(Config, Pool),
    Self = self(),
    [spawn_link(fun() -> Self ! {answer, I, ocaml:call(Pool, sleep, [10000], 20000)} end)
     || I <- lists:seq(1, 400)],
    ?LIB:wait_until(fun() -> in_flight(Pool) =:= 400 end, 10000),
    ok = ocaml:stop(Pool),
    Answers = [receive {answer, I, A} -> A after 5000 -> ct:fail({unanswered, I}) end
               || I <- lists:seq(1, 400)],
    ?assertEqual([{error, ?LIB:crashed(Config, shutdown)}], lists:usort(Answers)),
    ?LIB:wait_gone(Config, Workers),
    ok.

%% 200 callers for 8 s while a worker's OS process is stopped (SIGSTOP) every second:
%% every call answers in time, stopped processes are replaced (stall_timeout), and the
%% pool serves at the end.
sigstop_storm(peer, Config) ->
    storm(Config, "-STOP", 1000, #{stall_timeout => 1000}).

%% The same with SIGKILL every 200 ms.
sigkill_storm(peer, Config) ->
    storm(Config, "-KILL", 200, #{restart_backoff => {10, 200}}).

storm(Config, Signal, Every, Options) ->
    Pool = start_pool(Config, Options#{pool_size => 4}),
    Until = erlang:monotonic_time(millisecond) + 8000,
    Killer = spawn_link(fun() -> signal_loop(Pool, Signal, Every, Until) end),
    Results = callers_until(Pool, 200, Until, 500),
    unlink(Killer),
    exit(Killer, kill),
    note("~ts storm: ~tp", [Signal, summary(Results)]),
    ?assertEqual([], [R || {_, R, _} <- Results, not expected_in_storm(R)]),
    serves(Pool, 15000),
    ok.

expected_in_storm({ok, _}) -> true;
expected_in_storm({error, timeout}) -> true;
expected_in_storm({error, no_worker}) -> true;
expected_in_storm({error, overloaded}) -> true;
expected_in_storm({error, {worker_crashed, _}}) -> true;
expected_in_storm(_) -> false.

signal_loop(Pool, Signal, Every, Until) ->
    case erlang:monotonic_time(millisecond) < Until of
        false ->
            ok;
        true ->
            case ocaml:workers(Pool) of
                [] -> ok;
                Workers ->
                    #{os_pid := OsPid} = lists:nth(rand:uniform(length(Workers)), Workers),
                    os:cmd("kill " ++ Signal ++ " " ++ integer_to_list(OsPid))
            end,
            timer:sleep(Every),
            signal_loop(Pool, Signal, Every, Until)
    end.

%% 10,000 log lines written at once: the VM's logger gets a bounded number a second, and a
%% line saying how many were dropped.
log_flood(peer, Config) ->
    Pool = start_pool(Config, #{}),
    Logs = ?LIB:add_log_collector(),
    try
        Lines = iolist_to_binary([frame({log, warning}, <<"flood">>) || _ <- lists:seq(1, 10000)]),
        ?assertEqual({ok, ok}, ocaml:call(Pool, write_fd, [4, Lines])),
        Flood = count_logged(fun(E) -> ?LIB:mentions(E, ["flood"]) end, 1500),
        note("~b of 10000 flood lines logged", [Flood]),
        ?assert(Flood =< 2 * 20),
        ?assertEqual({ok, ok}, ocaml:call(Pool, write_fd, [4, frame({log, warning}, <<"later">>)])),
        ?LIB:logged(fun(E) -> ?LIB:mentions(E, ["dropped"]) end, 3000)
    after
        ?LIB:remove_log_collector(Logs)
    end,
    serves(Pool).

%% Frames written without pause for 3 s each (heartbeats, refused sends, log lines): the
%% VM's memory stays bounded all along (sampled every 10 ms), nothing reaches this process,
%% and a worker that writes faster than its Erlang process reads is replaced (flooding).
%% Heartbeats by the thousand are flooding whatever the reading keeps up with.
frame_flood(peer, Config) ->
    Pool = start_pool(Config, #{}),
    Self = self(),
    Memory = erlang:memory(total),
    Sampler = spawn_link(fun() -> sample_memory(Memory) end),
    %% Each write at most PIPE_BUF bytes, so that the worker's own heartbeats, written
    %% meanwhile, cannot land inside a frame.
    Flood = fun(Frame) ->
                    Copies = lists:duplicate(4096 div byte_size(Frame), Frame),
                    Answer = ocaml:call(Pool, flood_fd, [4, iolist_to_binary(Copies), 3000], 10000),
                    serves(Pool),
                    Answer
            end,
    ?assertEqual({error, {worker_crashed, flooding}}, Flood(frame({heartbeat, 5}, []))),
    Sends = Flood(frame({send, Self}, {flood, binary:copy(<<"x">>, 1000)})),
    Logs = Flood(frame({log, debug}, <<"flood">>)),
    Sampler ! {peak, self()},
    Peak = receive {peak, P} -> P after 5000 -> ct:fail(no_peak) end,
    note("frame flood: sends ~tp, logs ~tp, peak memory +~b KB", [Sends, Logs, Peak div 1024]),
    [?assert(lists:member(A, [{ok, ok}, {error, {worker_crashed, flooding}}])) || A <- [Sends, Logs]],
    ?assert(Peak < 128 bsl 20),
    ?assertEqual([], ?LIB:flush()),
    serves(Pool).

%% The largest erlang:memory(total) above Base until asked.
sample_memory(Base) ->
    sample_memory(Base, 0).

sample_memory(Base, Peak) ->
    receive {peak, From} -> From ! {peak, Peak}
    after 10 -> sample_memory(Base, max(Peak, erlang:memory(total) - Base))
    end.

%% With OTP's default logger configuration (the default handler's own filters), the death
%% of a worker's OS process is one line, a failing cast's warning shows, and a pool that
%% cannot start because a plugin is missing says nothing at all before its error.
one_line_per_death(peer, Config) ->
    Pool = start_pool(Config, #{}),
    [#{os_pid := OsPid}] = ocaml:workers(Pool),
    Logs = add_default_filtered_collector(),
    try
        os:cmd("kill -9 " ++ integer_to_list(OsPid)),
        _ = ?LIB:new_os_pids(Pool, [OsPid]),
        timer:sleep(500),
        Events = flush_logged(),
        ?assertMatch([_], Events),
        ok = ocaml:cast(Pool, raise_not_found, []),
        ?LIB:logged(fun(E) -> ?LIB:mentions(E, ["Not_found"]) end, 5000),
        Missing = filename:join(?config(plugins_dir, Config), "no_such_plugin.cmxs"),
        ?assertMatch({error, {load_failed, enoent, _}},
                     ocaml:start_link(pool_options(Config, #{plugins => [Missing]}))),
        timer:sleep(300),
        ?assertEqual([], flush_logged())
    after
        ?LIB:remove_log_collector(Logs)
    end,
    serves(Pool).

%% A plugin that loads on one worker and not on the other: the load fails, and no worker
%% keeps it (both start again without it).
loading_is_all_or_none(peer, Config) ->
    Pool = start_pool(Config, #{pool_size => 2}),
    OsPids = [P || #{os_pid := P} <- ocaml:workers(Pool)],
    ?assertMatch({error, {load_failed, init_failed, _}},
                 ocaml:load(Pool, plugin(Config, "camlbeam_fails_on_worker_2"))),
    _ = ?LIB:new_os_pids(Pool, OsPids),
    [?assertEqual({error, {undef, loaded_on_worker_1}}, ocaml:call(Pool, loaded_on_worker_1, []))
     || _ <- lists:seq(1, 10)],
    serves(Pool).

%%% Running a case in a VM of its own

in_peer(Config, Case) ->
    {ok, Peer, _} = peer:start_link(#{connection => standard_io, args => peer_args(Config)}),
    PeerOsPid = peer:call(Peer, os, getpid, [], 30000),
    try
        run_in_peer(Config, Case, Peer)
    after
        %% A VM that did not stop as asked must not outlive its case.
        os:cmd("kill -9 " ++ PeerOsPid)
    end.

run_in_peer(Config, Case, Peer) ->
    Before = peer:call(Peer, ?MODULE, prepare_peer, [Config], 30000),
    Result = try peer:call(Peer, ?MODULE, run_case, [?MODULE, Case, Config], 170000)
             catch Class:Reason -> {vm_died, Class, Reason}
             end,
    case Result of
        {ok, Value, Notes} ->
            [ct:pal("~ts", [Note]) || Note <- Notes],
            After = peer:call(Peer, ?MODULE, measure_when_settled, [], 30000),
            check_bounds(Case, Before, After),
            finish(Peer, Value);
        {failed, Class2, Reason2, Stack, Notes} ->
            [ct:pal("~ts", [Note]) || Note <- Notes],
            peer:stop(Peer),
            erlang:raise(Class2, Reason2, Stack);
        {vm_died, _, _} = Died ->
            ct:fail({Case, Died})
    end.

%% A case may ask that its VM be stopped with init:stop/0, and name OS processes that
%% must be gone after.
finish(Peer, {stop_vm, OsPids}) ->
    Monitor = erlang:monitor(process, Peer),
    ok = peer:call(Peer, init, stop, [], 10000),
    receive {'DOWN', Monitor, process, Peer, _} -> ok
    after 15000 -> ct:fail(init_stop_did_not_return)
    end,
    ?LIB:wait_until(fun() -> not lists:any(fun ?LIB:os_pid_alive/1, OsPids) end, 5000);
finish(Peer, _) ->
    peer:stop(Peer).

peer_args() ->
    peer_args([]).

peer_args(Config) ->
    Paths = [Dir || Dir <- code:get_path(), not lists:prefix(code:lib_dir(), Dir)],
    %% A node pool needs its VM distributed (the suite's own connection stays standard_io).
    Distributed = case ?LIB:transport(Config) of
                      node -> ["-sname", "camlbeam_hostile_" ++ os:getpid() ++ "_"
                                         ++ integer_to_list(erlang:unique_integer([positive]))];
                      _ -> []
                  end,
    Distributed ++ lists:append([["-pa", Dir] || Dir <- Paths]).

%% In the peer: camlbeam started as the suites start it, quiet on the console, and its
%% code loaded by one round of a pool (loading a module makes atoms: the count a case must
%% keep is the one after).
prepare_peer(Config) ->
    _ = ?LIB:init_per_suite(Config),
    {ok, Pool} = ocaml:start(pool_options(Config, #{})),
    {ok, _} = ocaml:call(Pool, identity, [{warm, [1.5, <<"up">>, #{k => v}], self()}]),
    {error, _} = ocaml:call(Pool, raise_not_found, []),
    {error, timeout} = ocaml:call(Pool, sleep, [50], 10),
    {ok, ok} = ocaml:call(Pool, send, [self(), warm]),
    receive warm -> ok after 5000 -> error(warm_up) end,
    ok = ocaml:stop(Pool),
    _ = [code:ensure_loaded(M) || M <- [ocaml_etf_guard, ocaml_policy, io_lib_pretty, io_lib_format,
                                         logger_formatter, peer, crypto, zlib]],
    measure().

%% In the peer: Module:Case(peer, Config), its outcome as a value.
run_case(Module, Case, Config) ->
    try Module:Case(peer, Config) of
        Value -> {ok, Value, notes()}
    catch
        Class:Reason:Stack -> {failed, Class, Reason, Stack, notes()}
    end.

%% What a case has to say, printed by the suite's VM (the peer has no test log).
note(Format, Args) ->
    put(camlbeam_notes, [lists:flatten(io_lib:format(Format, Args)) | notes()]).

notes() ->
    lists:reverse(case get(camlbeam_notes) of undefined -> []; Notes -> Notes end).

%% Once the case's pools are gone (they stop with the process that ran the case, which has
%% just ended: their workers' OS processes take a moment to end).
measure_when_settled() ->
    ?LIB:wait_until(fun() -> supervisor:which_children(ocaml_pool_sup) =:= [] end, 15000),
    %% The heap of a process that just exited is freed after it is gone: the memory is
    %% read until it stops falling (at most 3 s).
    settle(erlang:memory(total), 30),
    measure().

settle(_Last, 0) ->
    ok;
settle(Last, Tries) ->
    timer:sleep(100),
    _ = [erlang:garbage_collect(P) || P <- processes()],
    case erlang:memory(total) of
        Now when Now < Last - (1 bsl 20) -> settle(Now, Tries - 1);
        _ -> ok
    end.

measure() ->
    _ = [erlang:garbage_collect(P) || P <- processes()],
    #{memory => erlang:memory(total), processes => erlang:system_info(process_count),
      atoms => erlang:system_info(atom_count), ports => length(erlang:ports()),
      detail => maps:from_list(erlang:memory()),
      port_list => [erlang:port_info(P, name) || P <- erlang:ports()],
      process_list => [{P, erlang:process_info(P, [initial_call, current_function, message_queue_len, total_heap_size])} || P <- processes()]}.

%% What a case may leave behind, its pools gone with the process that ran it: a few
%% processes, no atom but those of code a case alone loads (a worker creates none: the
%% policy and fuzz cases count them exactly), memory within 64 MB.
check_bounds(Case, Before, After) ->
    ct:pal("~p: before ~p~n    after ~p", [Case, maps:without([process_list], Before),
                                           maps:without([process_list], After)]),
    #{process_list := PB} = Before,
    #{process_list := PA} = After,
    ct:pal("new processes: ~p", [[X || {P, _} = X <- PA, not lists:keymember(P, 1, PB)]]),
    #{memory := M0, processes := P0, atoms := A0} = Before,
    #{memory := M1, processes := P1, atoms := A1} = After,
    ?assert(M1 - M0 < 64 bsl 20),
    ?assert(P1 - P0 < 50),
    ?assert(A1 - A0 < 100).

%%% Helpers (in the peer)

start_pool(Config, Extra) ->
    {ok, Pool} = ocaml:start_link(pool_options(Config, Extra)),
    Pool.

%% The hostile plugin first, then the test plugin: both export what the cases call.
pool_options(Config, Extra) ->
    ?LIB:pool_options(Config, maps:merge(#{plugins => [plugin(Config, "camlbeam_test"),
                                                       plugin(Config, "camlbeam_hostile")]},
                                         Extra)).

plugin(Config, Name) ->
    ?LIB:plugin(Config, Name).

serves(Pool) ->
    serves(Pool, 5000).

%% Some worker answers within Timeout ms.
serves(Pool, Timeout) ->
    ?LIB:wait_until(fun() -> ocaml:call(Pool, identity, [serving], 1000) =:= {ok, serving} end,
                    Timeout, 50),
    ok.

wait_workers(Pool, N) ->
    ?LIB:wait_until(fun() -> length(ocaml:workers(Pool)) =:= N end, 10000),
    ocaml:workers(Pool).

in_flight(Pool) ->
    lists:sum([N || #{in_flight := N} <- ocaml:workers(Pool)]).

%% The references of the requests in flight on the pool's one worker.
pending_refs(Pool) ->
    [Pending] = pending_tables(Pool),
    [Ref || {Ref, _, _, _, _, _} <- ets:tab2list(Pending)].

pending_tables(Pool) ->
    [Pending || #camlbeam_worker{key = {P, _}, handle = #ocaml_port{pending = Pending}}
                    <- ets:tab2list(camlbeam_workers),
                P =:= Pool].

%% The OS processes below OsPid (children, their children ...), from /proc.
descendants(OsPid) ->
    Parents = [{Pid, Parent} || Pid <- all_os_pids(), Parent <- [parent(Pid)], Parent =/= none],
    descendants([OsPid], Parents, []).

descendants([], _Parents, Found) ->
    Found;
descendants([Pid | Pids], Parents, Found) ->
    Children = [C || {C, P} <- Parents, P =:= Pid],
    descendants(Pids ++ Children, Parents, Found ++ Children).

all_os_pids() ->
    {ok, Names} = file:list_dir("/proc"),
    [list_to_integer(N) || N <- Names, lists:all(fun(C) -> C >= $0 andalso C =< $9 end, N)].

parent(Pid) ->
    case file:read_file("/proc/" ++ integer_to_list(Pid) ++ "/stat") of
        {ok, Stat} ->
            [_, AfterName] = string:split(Stat, ")", trailing),
            [_State, Parent | _] = string:lexemes(AfterName, " "),
            binary_to_integer(Parent);
        {error, _} ->
            none
    end.

rss(OsPid) ->
    {ok, Status} = file:read_file("/proc/" ++ integer_to_list(OsPid) ++ "/status"),
    [_, Rest] = binary:split(Status, <<"VmRSS:">>),
    [Kb | _] = string:lexemes(Rest, " \t\n"),
    binary_to_integer(Kb) * 1024.

%% N callers, one call each, at once: {I, Answer, Ms} for each, once each, within
%% Timeout + ?MARGIN, and nothing else in their mailboxes.
calls(Pool, N, Fun, ArgsOf, Timeout) ->
    Self = self(),
    [spawn_link(fun() -> Self ! {answer, I, timed_call(Pool, Fun, ArgsOf(I), Timeout)} end)
     || I <- lists:seq(1, N)],
    Answers = [receive {answer, I, {Answer, Ms}} -> {I, Answer, Ms}
               after Timeout + ?MARGIN + 10000 -> ct:fail({unanswered, I})
               end || I <- lists:seq(1, N)],
    Late = [{I, Ms} || {I, _, Ms} <- Answers, Ms > Timeout + ?MARGIN],
    ?assertEqual([], Late),
    Answers.

timed_call(Pool, Fun, Args, Timeout) ->
    Started = erlang:monotonic_time(millisecond),
    Answer = ocaml:call(Pool, Fun, Args, Timeout),
    Ms = erlang:monotonic_time(millisecond) - Started,
    timer:sleep(50),
    case ?LIB:flush() of
        [] -> {Answer, Ms};
        Stray -> {{stray, Answer, Stray}, Ms}
    end.

%% Callers calling until a time, each call checked as in calls/5.
callers_until(Pool, N, Until, Timeout) ->
    Self = self(),
    [spawn_link(fun() -> Self ! {done, self(), call_until(Pool, I, Until, Timeout, [])} end)
     || I <- lists:seq(1, N)],
    lists:append([receive {done, _, Results} -> Results after 60000 -> ct:fail(caller_stuck) end
                  || _ <- lists:seq(1, N)]).

call_until(Pool, I, Until, Timeout, Acc) ->
    case erlang:monotonic_time(millisecond) < Until of
        false ->
            Acc;
        true ->
            Started = erlang:monotonic_time(millisecond),
            Answer = ocaml:call(Pool, identity, [I], Timeout),
            Ms = erlang:monotonic_time(millisecond) - Started,
            Checked = case Answer of
                          {ok, I} -> Answer;
                          {ok, Other} -> {wrong_answer, Other};
                          _ -> Answer
                      end,
            %% Anything else in the caller's mailbox (an answer delivered twice, or late)
            %% fails the case as a stray.
            Late = case {Ms > Timeout + ?MARGIN, ?LIB:flush()} of
                       {true, _} -> {late, Ms, Checked};
                       {false, []} -> Checked;
                       {false, Strays} -> {stray, Strays, Checked}
                   end,
            case Answer of
                {error, no_worker} -> timer:sleep(20);
                _ -> ok
            end,
            call_until(Pool, I, Until, Timeout, [{I, Late, Ms} | Acc])
    end.

summary(Results) ->
    lists:foldl(fun({_, R, _}, Acc) -> maps:update_with(kind(R), fun(C) -> C + 1 end, 1, Acc) end,
                #{}, Results).

kind({ok, _}) -> ok;
kind({error, {worker_crashed, {exit_status, _}}}) -> worker_crashed_exit;
kind({error, {worker_crashed, R}}) when is_atom(R) -> {worker_crashed, R};
kind({error, {worker_crashed, _}}) -> worker_crashed_other;
kind({error, R}) when is_atom(R) -> R;
kind(Other) -> Other.

%% How many logged events (collected by add_log_collector) Pred accepts within Ms.
count_logged(Pred, Ms) ->
    Until = erlang:monotonic_time(millisecond) + Ms,
    count_logged(Pred, Until, 0).

count_logged(Pred, Until, Count) ->
    receive
        {logged, Event} ->
            count_logged(Pred, Until, Count + case Pred(Event) of true -> 1; false -> 0 end)
    after max(0, Until - erlang:monotonic_time(millisecond)) ->
        Count
    end.

flush_logged() ->
    receive {logged, Event} -> [Event | flush_logged()] after 0 -> [] end.

%% A collector that sees what OTP's default handler would print: its filters, copied.
add_default_filtered_collector() ->
    {ok, #{filters := Filters, filter_default := Default, level := Level}} =
        logger:get_handler_config(default),
    Id = camlbeam_test_default_filtered,
    ok = logger:add_handler(Id, camlbeam_test_log_collector,
                            #{config => #{pid => self()}, filters => Filters,
                              filter_default => Default,
                              level => case Level of none -> all; _ -> Level end}),
    Id.

%%% Frames made by hand

frame(Envelope, Payload) ->
    packet(frame_body(Envelope, Payload)).

%% A payload is a term, or bytes made by hand: {raw, Bytes}.
frame_body(Envelope, {raw, Bytes}) ->
    <<(term_to_binary(Envelope))/binary, Bytes/binary>>;
frame_body(Envelope, Payload) ->
    <<(term_to_binary(Envelope))/binary, (term_to_binary(Payload))/binary>>.

packet(Body) ->
    <<(byte_size(Body)):32, Body/binary>>.

%% The map of 33 keys whose references differ only in their fourth word, encoded by
%% hand (term_to_binary cannot make it: the VM cannot hold it): {raw, 214 bytes}.
crash_map() ->
    {raw, <<131, (crash_map_term())/binary>>}.

crash_map_term() ->
    Node = atom_to_binary(node()),
    Ref = fun(W) -> <<90, 4:16, 119, (byte_size(Node)), Node/binary, 1:32, 2:32, 0:32, 0:32, W:32>> end,
    Ints = [[<<97, I>>, <<97, I>>] || I <- lists:seq(1, 31)],
    iolist_to_binary([116, <<33:32>>, Ref(1), <<119, 1, "a">>, Ref(2), <<119, 1, "b">>, Ints]).

%% {erlang, self, [CrashMap]} as an Erl.call_erlang request.
erl_call_of({raw, <<131, Map/binary>>}) ->
    {raw, <<131, 104, 3, 119, 6, "erlang", 119, 4, "self", 108, 1:32, Map/binary, 106>>}.

%% The crash map's bytes, for the fuzzer's seeds.
crash_map_bytes() ->
    {raw, Bytes} = crash_map(),
    Bytes.
