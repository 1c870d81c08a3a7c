%% What only the nif transport has: one OCaml runtime inside this VM, shared by
%% every pool, kept across a new version of camlbeam_nif, never replaced by
%% another OCaml's (cpp/nif/README.md). The shared suites run the API, terms and
%% faults through it (group nif).
-module(camlbeam_nif_runtime_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").
-include("../src/camlbeam_registry.hrl").
-include("../src/ocaml_nif_transport.hrl").

-export([all/0, init_per_suite/1, end_per_suite/1]).
-export([one_runtime_for_every_pool/1, upgrade_keeps_the_runtime/1, another_ocaml_is_refused/1,
         large_maps_off_the_schedulers/1, answers_within_max_reply_size/1, exit_does_not_end_the_vm/1,
         options_that_do_not_apply/1, short_calls_run_where_they_are_made/1,
         calls_that_overrun_go_back_to_the_ocaml_thread/1, exports_that_call_erlang_stay_on_the_ocaml_thread/1,
         workers_run_at_once_on_domains/1, a_workers_calls_run_one_at_a_time/1, deadlines_on_every_domain/1,
         backtraces_on_every_domain/1, erlang_calls_from_every_domain/1, domains_as_the_application_says/1,
         declared_short_exports_run_where_they_are_made/1, declared_short_overruns_are_demoted_and_logged_once/1,
         declared_short_calls_end_at_their_deadline/1, normal_exports_run_on_dirty_schedulers/1,
         dirty_calls_end_at_their_deadline/1, exports_that_call_erlang_leave_the_dirty_schedulers/1,
         a_dirty_call_when_its_pool_stops/1, a_pools_lane/1]).
%% Called by the placement plugin through Erl.call_erlang; run in a peer VM.
-export([meet_in_erlang/2, domains_in_peer/1]).

-define(LIB, camlbeam_test_lib).

all() ->
    [one_runtime_for_every_pool, upgrade_keeps_the_runtime, another_ocaml_is_refused,
     large_maps_off_the_schedulers, answers_within_max_reply_size, exit_does_not_end_the_vm,
     options_that_do_not_apply, short_calls_run_where_they_are_made,
     calls_that_overrun_go_back_to_the_ocaml_thread, exports_that_call_erlang_stay_on_the_ocaml_thread,
     workers_run_at_once_on_domains, a_workers_calls_run_one_at_a_time, deadlines_on_every_domain,
     backtraces_on_every_domain, erlang_calls_from_every_domain, domains_as_the_application_says,
     declared_short_exports_run_where_they_are_made, declared_short_overruns_are_demoted_and_logged_once,
     declared_short_calls_end_at_their_deadline, normal_exports_run_on_dirty_schedulers,
     dirty_calls_end_at_their_deadline, exports_that_call_erlang_leave_the_dirty_schedulers,
     a_dirty_call_when_its_pool_stops, a_pools_lane].

init_per_suite(Config) ->
    Config1 = ?LIB:init_per_suite(Config),
    ?LIB:init_per_group(nif, Config1).

end_per_suite(Config) ->
    ?LIB:end_per_suite(Config).

%% Two pools, one runtime: both run in the VM's own OS process, and the plugin
%% is loaded once; the second pool gets its exports as the first did.
one_runtime_for_every_pool(Config) ->
    First = ?LIB:start_pool(Config, #{pool_size => 2}),
    Second = ?LIB:start_pool(Config, #{}),
    VmPid = list_to_integer(os:getpid()),
    ?assertEqual([VmPid, VmPid, VmPid], [P || Pool <- [First, Second], #{os_pid := P} <- ocaml:workers(Pool)]),
    ?assertEqual({ok, VmPid}, ocaml:call(First, os_pid, [])),
    ?assertEqual(ocaml:exports(First), ocaml:exports(Second)),
    ?assertNotEqual([], ocaml:exports(Second)),
    ?assertEqual({ok, 5}, ocaml:call(Second, add, [2, 3])),
    %% The worker of each pool is its own: OCaml sees which one runs a request.
    ?assertEqual({ok, 1}, ocaml:call(Second, worker_id, [])).

%% code:load_file/1 of camlbeam_nif, as a release upgrade does: the new
%% version loads the running library again, which keeps its runtime, its
%% plugins and the workers' handles; purging the old version unloads nothing.
upgrade_keeps_the_runtime(Config) ->
    Pool = ?LIB:start_pool(Config, #{pool_size => 2}),
    Workers = [Pid || #{pid := Pid} <- ocaml:workers(Pool)],
    ?assertEqual({ok, 3}, ocaml:call(Pool, add, [1, 2])),
    {ok, Info} = camlbeam_nif:runtime_info(),
    ?assertEqual({module, camlbeam_nif}, code:load_file(camlbeam_nif)),
    ?assert(erlang:check_old_code(camlbeam_nif)),
    [?assertEqual({ok, {N, upgraded}}, ocaml:call(Pool, identity, [{N, upgraded}])) || N <- lists:seq(1, 20)],
    %% No process runs the old code: nothing is killed.
    ?assertNot(code:purge(camlbeam_nif)),
    ?assertNot(erlang:check_old_code(camlbeam_nif)),
    %% The same runtime (its counters of calls answered by the NIF go on).
    Counters = [calls_on_scheduler, calls_on_dirty],
    {ok, After} = camlbeam_nif:runtime_info(),
    ?assertEqual(maps:without(Counters, Info), maps:without(Counters, After)),
    ?assertEqual(Workers, [Pid || #{pid := Pid} <- ocaml:workers(Pool)]),
    [?assertEqual({ok, N}, ocaml:call(Pool, add, [N, 0])) || N <- lists:seq(1, 20)],
    %% A new pool after the upgrade shares the same runtime and plugin.
    Other = ?LIB:start_pool(Config, #{}),
    ?assertEqual({ok, 7}, ocaml:call(Other, add, [3, 4])).

%% A VM runs one OCaml runtime: a pool that asks for another OCaml is
%% refused, and so is a new version of camlbeam_nif that would load another
%% OCaml's library; the running runtime serves on.
another_ocaml_is_refused(Config) ->
    Pool = ?LIB:start_pool(Config, #{}),
    {ok, #{ocaml_version := Running}} = camlbeam_nif:runtime_info(),
    Other = other_ocaml(Running),
    ?assertEqual({error, {ocaml_mismatch, Other, Running}},
                 ocaml:start_link(?LIB:pool_options(Config, #{ocaml => Other}))),
    ?assertEqual({error, {ocaml_mismatch, "0.0.0", Running}},
                 ocaml:start_link(?LIB:pool_options(Config, #{ocaml => "0.0.0"}))),
    Wanted = persistent_term:get({camlbeam_nif, ocaml}),
    persistent_term:put({camlbeam_nif, ocaml}, Other),
    try
        ?assertEqual({error, on_load_failure}, code:load_file(camlbeam_nif))
    after
        persistent_term:put({camlbeam_nif, ocaml}, Wanted)
    end,
    ?assertMatch({ok, #{ocaml_version := Running, flavour := native}}, camlbeam_nif:runtime_info()),
    ?assertEqual({ok, 3}, ocaml:call(Pool, add, [1, 2])).

%% OTP 25 makes a map of more than 32 keys with the scheduler's data, and crashes on
%% the library's OCaml thread, which is none: such maps are put together one key at a
%% time there, and a fun holding one (which only binary_to_term can make) is made by
%% the worker's process. Answers and Erl.send alike; the VM stays up.
large_maps_off_the_schedulers(Config) ->
    Pool = ?LIB:start_pool(Config, #{policy => #{send => any}}),
    Large = maps:from_list([{I, {I, self()}} || I <- lists:seq(1, 5000)]),
    ?assertEqual({ok, Large}, ocaml:call(Pool, identity, [Large])),
    Fun = fun() -> Large end,
    ?assertEqual({ok, Fun}, ocaml:call(Pool, identity, [Fun])),
    ?assertMatch({error, {badarg, #{got := Fun}}}, ocaml:call(Pool, add, [Fun, 1])),
    ?assertEqual({ok, ok}, ocaml:call(Pool, send, [self(), {sent, Fun}])),
    receive {sent, Got} -> ?assertEqual(Fun, Got) after 5000 -> ct:fail(not_sent) end,
    %% A map as the key of a large one, and the same key twice (a bad reply, not a map).
    Nested = #{Large => Fun, a => [Large]},
    ?assertEqual({ok, Nested}, ocaml:call(Pool, identity, [Nested])).

%% The pool's max_reply_size bounds what an answer may take in the VM, as it
%% bounds the port's frames: the build stops once past it (the size reported
%% is what was counted then), and Erl.send of such a message raises in OCaml.
answers_within_max_reply_size(Config) ->
    Pool = ?LIB:start_pool(Config, #{max_reply_size => 100000, policy => #{send => any}}),
    Small = binary:copy(<<"x">>, 50000),
    ?assertEqual({ok, Small}, ocaml:call(Pool, identity, [Small])),
    Big = binary:copy(<<"x">>, 200000),
    ?assertMatch({error, {reply_too_large, Size, 100000}} when Size > 100000,
                 ocaml:call(Pool, identity, [Big])),
    Long = lists:seq(1, 20000),
    ?assertMatch({error, {reply_too_large, Size, 100000}} when Size > 100000,
                 ocaml:call(Pool, identity, [Long])),
    {error, {ocaml_exception, <<"Failure">>, Message, _}} = ocaml:call(Pool, send, [self(), Big]),
    ?assertMatch({match, _}, re:run(Message, "Erl.send: the term takes more than 100000 bytes")),
    receive Unexpected -> ct:fail({sent, Unexpected}) after 0 -> ok end,
    ?assertEqual({ok, 3}, ocaml:call(Pool, add, [1, 2])).

%% Stdlib.exit in a plugin would end the VM with it: it raises Failure instead, and
%% the runtime serves on.
exit_does_not_end_the_vm(Config) ->
    Pool = ?LIB:start_pool(Config, #{plugins => [?LIB:plugin(Config, "camlbeam_hostile"),
                                                 ?LIB:plugin(Config, "camlbeam_test")]}),
    [?assertMatch({error, {ocaml_exception, <<"Failure">>, _, _}}, ocaml:call(Pool, exit, [Status]))
     || Status <- [0, 1, 3]],
    {error, {ocaml_exception, _, Message, _}} = ocaml:call(Pool, exit, [0]),
    ?assertMatch({match, _}, re:run(Message, "Stdlib.exit inside the Erlang VM")),
    ?assertEqual({ok, 3}, ocaml:call(Pool, add, [1, 2])).

%% What only a worker of its own OS process has is refused, not ignored.
options_that_do_not_apply(Config) ->
    ?assertEqual({error, {bad_option, max_memory, 1 bsl 30}},
                 ocaml:start_link(?LIB:pool_options(Config, #{max_memory => 1 bsl 30}))),
    ?assertEqual({error, {bad_option, executable, "/bin/true"}},
                 ocaml:start_link(?LIB:pool_options(Config, #{executable => "/bin/true"}))),
    ?assertEqual({error, {bad_option, flavour, bytecode}},
                 ocaml:start_link(?LIB:pool_options(Config, #{plugins => [?LIB:plugin(Config, "camlbeam_test", bytecode)]}))).

%% Under OCaml 5 a call of an export that has run short (under 50 us) at each of
%% its last 8 runs, with small arguments, runs on the scheduler that makes it, when
%% the OCaml thread has nothing to do: the NIF returns its answer. Under OCaml 4.13
%% every call is queued for the OCaml thread (cpp/nif/README.md says why).
short_calls_run_where_they_are_made(Config) ->
    {Pool, Worker} = placement_pool(Config, #{policy => #{send => given}}),
    case on_schedulers() of
        false ->
            ?assertEqual(lists:duplicate(20, {queued, {ok, 1}}),
                         [placed(Worker, placed_echo, [1]) || _ <- lists:seq(1, 20)]);
        true ->
            %% Queued until trusted (more than 8 calls if a run took longer on this
            %% shared machine); then here, answered as the NIF returns.
            ?assert(queued_until_here(Worker, placed_echo, [1]) >= 8),
            ?assertEqual([{here, {ok, N}} || N <- lists:seq(1, 5)],
                         [placed(Worker, placed_echo, [N]) || N <- lists:seq(1, 5)]),
            %% Arguments too large to convert on a scheduler are queued all the same.
            Long = lists:seq(1, 10000),
            ?assertEqual({queued, {ok, Long}}, placed(Worker, placed_echo, [Long])),
            %% Only once the OCaml thread is idle again: it may still be tidying up
            %% after that call when its answer arrives.
            timer:sleep(10),
            Small = #{a => [1.5, <<"b">>], self() => {make_ref(), -(1 bsl 70)}},
            ?assertEqual({here, {ok, Small}}, placed(Worker, placed_echo, [Small])),
            %% Erl.send from a call run here, under the pool's policy.
            _ = queued_until_here(Worker, placed_send, [self(), warm_up]),
            ?assertEqual({here, {ok, ok}}, placed(Worker, placed_send, [self(), {sent_from, here}])),
            flush(warm_up),
            receive {sent_from, here} -> ok after 5000 -> ct:fail(not_sent_from_here) end,
            %% And through the API, with no message left behind.
            ?assertEqual({ok, {x, 1}}, ocaml:call(Pool, placed_echo, [{x, 1}])),
            receive Unexpected -> ct:fail({left_in_mailbox, Unexpected}) after 100 -> ok end
    end.

%% A call run on a scheduler that takes longer than a millisecond sends its export's
%% calls off the scheduler (to a dirty one, its runs being under 10 ms), until it has
%% run short 8 times again. A
%% Stack_overflow there is an answer, as on the OCaml thread.
calls_that_overrun_go_back_to_the_ocaml_thread(Config) ->
    {_Pool, Worker} = placement_pool(Config, #{}),
    case on_schedulers() of
        false ->
            ?assertEqual(lists:duplicate(10, {queued, {ok, 0}}),
                         [placed(Worker, placed_busy, [0]) || _ <- lists:seq(1, 10)]);
        true ->
            _ = queued_until_here(Worker, placed_busy, [0]),
            ?assertEqual({here, {ok, 5}}, placed(Worker, placed_busy, [5])),
            ?assert(queued_until_here(Worker, placed_busy, [0]) >= 8),
            _ = queued_until_here(Worker, placed_depth, [10]),
            {here, Overflow} = placed(Worker, placed_depth, [1 bsl 40]),
            ?assertMatch({error, {ocaml_exception, <<"Stack_overflow">>, _, _}}, Overflow),
            %% Off the scheduler: its runs were under 10 ms, a dirty scheduler takes it.
            ?assertEqual({dirty, {ok, 10}}, placed(Worker, placed_depth, [10]))
    end.

%% Erl.call_erlang waits for an Erlang process: an export that called it once never
%% runs on a scheduler again, and one that runs there when it first calls it gets
%% Failure (an Erlang call cannot be waited for on a scheduler) and is sent back too.
exports_that_call_erlang_stay_on_the_ocaml_thread(Config) ->
    erlang_calls_leave(Config, here, placed_ask_erlang).

%% Where the calls of Fun run until one calls Erlang there: after it, on the OCaml
%% thread for good, where Erl.call_erlang works.
erlang_calls_leave(Config, Where, Fun) ->
    {_Pool, Worker} = placement_pool(Config, #{policy => #{erl_call => [{erlang, abs}]}}),
    case on_schedulers() of
        false ->
            ?assertEqual({queued, {ok, {ok, 7}}}, placed(Worker, Fun, [-7]));
        true ->
            _ = queued_until(Where, Worker, Fun, [0]),
            %% Off the OCaml thread: where Fun's calls ran last, or a dirty scheduler when
            %% the OCaml thread was busy for a moment as this scheduler asked for it.
            {Off, Refused} = placed(Worker, Fun, [-7]),
            ?assert(lists:member(Off, [Where, dirty])),
            {error, {ocaml_exception, <<"Failure">>, Message, _}} = Refused,
            ?assertMatch({match, _}, re:run(Message, "Erl.call_erlang from a call run on an Erlang scheduler")),
            ?assertEqual(lists:duplicate(10, {queued, {ok, 0}}), [placed(Worker, Fun, [0]) || _ <- lists:seq(1, 10)]),
            ?assertEqual({queued, {ok, {ok, 7}}}, placed(Worker, Fun, [-7]))
    end.

%% Under OCaml 5 an export the plugin declared short (Erl.export ~short:true) runs on
%% the scheduler that calls it from its first call, with small arguments, when the OCaml
%% thread has nothing to do; its exceptions are answers there as on the OCaml thread.
%% Under OCaml 4.13 it is queued as any other (cpp/nif/README.md says why).
declared_short_exports_run_where_they_are_made(Config) ->
    {Pool, Worker} = placement_pool(Config, #{}),
    case on_schedulers() of
        false ->
            ?assertEqual({queued, {ok, 1}}, placed(Worker, placed_declared_echo, [1]));
        true ->
            %% The OCaml thread may still be tidying up after the pool's load.
            ?assertEqual({here, {ok, 1}}, here_once_idle(Worker, placed_declared_echo, [1])),
            ?assertEqual({here, {ok, {x, 2}}}, here_once_idle(Worker, {camlbeam_placement, placed_declared_echo}, [{x, 2}])),
            %% An export that does not say so is measured first.
            ?assertEqual({queued, {ok, 0}}, placed(Worker, placed_spin, [0])),
            %% After which the OCaml thread tidies up again (under ASan, for a while).
            {here, Raised} = here_once_idle(Worker, placed_declared_raise, []),
            ?assertMatch({error, {ocaml_exception, <<"Failure">>, <<"Failure(\"raised on a scheduler\")">>, _}}, Raised),
            ?assertEqual({ok, [1.5]}, ocaml:call(Pool, placed_declared_echo, [[1.5]])),
            receive Unexpected -> ct:fail({left_in_mailbox, Unexpected}) after 100 -> ok end
    end.

%% A declared-short call that takes over a millisecond on a scheduler is answered, sends
%% the export's calls off the scheduler until they run short again (to the OCaml thread,
%% or a dirty scheduler once its runs have been under 10 ms), and is logged once for the
%% export, however many times it overruns.
declared_short_overruns_are_demoted_and_logged_once(Config) ->
    {_Pool, Worker} = placement_pool(Config, #{}),
    case on_schedulers() of
        false ->
            ?assertEqual({queued, {ok, 5}}, placed(Worker, placed_declared_busy, [5]));
        true ->
            Collector = ?LIB:add_log_collector(),
            try
                timer:sleep(50),
                ?assertEqual({here, {ok, 5}}, placed(Worker, placed_declared_busy, [5])),
                ?assertEqual({queued, {ok, 0}}, placed(Worker, placed_declared_busy, [0])),
                _ = ?LIB:logged(fun(#{level := warning} = Event) -> ?LIB:mentions(Event, ["declared short"]);
                                   (_) -> false
                                end, 5000),
                ?assert(queued_until_here(Worker, placed_declared_busy, [0]) >= 7),
                ?assertEqual({here, {ok, 5}}, placed(Worker, placed_declared_busy, [5])),
                %% Its runs on the OCaml thread were under 10 ms: a dirty scheduler takes it.
                ?assertEqual({dirty, {ok, 0}}, placed(Worker, placed_declared_busy, [0])),
                receive
                    {logged, #{level := warning} = Again} ->
                        ?assertNot(?LIB:mentions(Again, ["declared short"]))
                after 300 -> ok
                end
            after
                ?LIB:remove_log_collector(Collector)
            end
    end.

%% A call run on a scheduler still ends at its deadline: the export is interrupted at
%% its next poll point and the caller gets {error, timeout} on time, from the NIF.
declared_short_calls_end_at_their_deadline(Config) ->
    {_Pool, Worker} = placement_pool(Config, #{}),
    %% Once the OCaml thread is idle (a call of it has run here), under OCaml 5.
    _ = on_schedulers() andalso queued_until_here(Worker, placed_declared_late, [0]) >= 0,
    Started = erlang:monotonic_time(millisecond),
    {Where, Answer} = placed(Worker, placed_declared_late, [2000], 20),
    Took = erlang:monotonic_time(millisecond) - Started,
    ?assertEqual({error, timeout}, Answer),
    ?assert(Took < 500),
    case on_schedulers() of
        true -> ?assertEqual(here, Where);
        false -> ?assertEqual(queued, Where)
    end.

%% Under OCaml 5 a call of a normal export (its last 8 runs each under 10 ms, not
%% short), with small arguments, runs on a dirty CPU scheduler when the OCaml thread has
%% nothing to do: the NIF reschedules itself there and returns the answer. Its exceptions
%% are answers there too. Under OCaml 4.13 every such call is queued.
normal_exports_run_on_dirty_schedulers(Config) ->
    {_Pool, Worker} = placement_pool(Config, #{}),
    case on_schedulers() of
        false ->
            ?assertEqual(lists:duplicate(10, {queued, {ok, 2}}),
                         [placed(Worker, placed_normal, [2]) || _ <- lists:seq(1, 10)]),
            ?assertMatch({ok, #{calls_on_dirty := 0}}, camlbeam_nif:runtime_info());
        true ->
            ?assert(queued_until(dirty, Worker, placed_normal, [2]) >= 8),
            %% Most of them there: on this shared machine a run may take over 10 ms (the
            %% OS took the core away) and send the next few back to the OCaml thread.
            Placed = [placed(Worker, placed_normal, [2]) || _ <- lists:seq(1, 5)],
            ?assertEqual(lists:duplicate(5, {ok, 2}), [Answer || {_, Answer} <- Placed]),
            length([dirty || {dirty, _} <- Placed]) >= 3 orelse ct:fail({mostly_elsewhere, Placed}),
            {dirty, Raised} = placed(Worker, placed_normal, [-1]),
            ?assertMatch({error, {ocaml_exception, <<"Failure">>, <<"Failure(\"raised on a dirty scheduler\")">>, _}},
                         Raised),
            %% Arguments too large to convert there are queued all the same.
            Long = lists:seq(1, 10000),
            ?assertMatch({queued, {error, {badarg, _}}}, placed(Worker, placed_normal, [Long]))
    end.

%% A call run on a dirty scheduler still ends at its deadline: the export is interrupted
%% at its next poll point and the caller, blocked in the NIF, gets {error, timeout} on
%% time. The run past 10 ms sends the export's calls back to the OCaml thread.
dirty_calls_end_at_their_deadline(Config) ->
    {_Pool, Worker} = placement_pool(Config, #{}),
    case on_schedulers() of
        false ->
            ok;
        true ->
            _ = queued_until(dirty, Worker, placed_normal, [1]),
            Started = erlang:monotonic_time(millisecond),
            ?assertEqual({dirty, {error, timeout}}, placed(Worker, placed_normal, [2000], 30)),
            ?assert(erlang:monotonic_time(millisecond) - Started < 500),
            ?assertEqual({queued, {ok, 1}}, placed(Worker, placed_normal, [1]))
    end.

%% Erl.call_erlang cannot wait for a process on a dirty scheduler either: the call that
%% makes it there gets Failure, and the export's calls are queued for good.
exports_that_call_erlang_leave_the_dirty_schedulers(Config) ->
    erlang_calls_leave(Config, dirty, placed_normal_asks_erlang).

%% A call running on a dirty scheduler when its pool stops is answered as a queued one
%% is, by its worker's end: {error, {worker_crashed, shutdown}}, not its late result.
a_dirty_call_when_its_pool_stops(Config) ->
    {ok, Pool} = ocaml:start(?LIB:pool_options(Config, #{plugins => [?LIB:plugin(Config, "camlbeam_placement")]})),
    [Worker] = [W || #camlbeam_worker{handle = #ocaml_nif{worker = W}} <- camlbeam_registry:workers(Pool)],
    Dirty = case on_schedulers() of
                true -> _ = queued_until(dirty, Worker, {camlbeam_placement, placed_normal}, [1]), dirty_calls();
                false -> 0
            end,
    Self = self(),
    Caller = spawn_link(fun() -> Self ! {self(), ocaml:call(Pool, placed_normal, [300], 5000)} end),
    timer:sleep(100),
    ok = ocaml:stop(Pool),
    receive {Caller, Answer} -> ?assertEqual({error, {worker_crashed, shutdown}}, Answer)
    after 5000 -> ct:fail(no_answer)
    end,
    case on_schedulers() of
        true -> ?assertEqual(Dirty + 1, dirty_calls());
        false -> ok
    end.

%% Under OCaml 5 the runtime has a domain per scheduler (at most 16), and the calls of
%% two workers run at once, each on a domain: two calls that each wait for the other
%% meet. Under OCaml 4.13 one thread runs every call: the first waits alone.
workers_run_at_once_on_domains(Config) ->
    {_Pool, [First, Second]} = placement_pool(Config, #{pool_size => 2}, 2),
    {ok, #{domains := Domains}} = camlbeam_nif:runtime_info(),
    Expected = case on_schedulers() of
                   true ->
                       ?assertEqual(min(erlang:system_info(schedulers), 16), Domains),
                       if Domains >= 2 -> [met, met]; true -> [alone, met] end;
                   false ->
                       ?assertEqual(1, Domains),
                       [alone, met]
               end,
    ?assertEqual(Expected, lists:sort(meet([First, Second]))).

%% A worker's calls run one at a time, in order, as a port worker's: two calls of one
%% worker never meet, whatever the domains.
a_workers_calls_run_one_at_a_time(Config) ->
    {_Pool, [Worker]} = placement_pool(Config, #{}, 1),
    ?assertEqual([alone, met], lists:sort(meet([Worker, Worker]))).

%% Each domain keeps the deadlines of its calls: two calls that would run for 5 s, on
%% two workers at once, end at their 300 ms timeout, and each worker answers its next
%% call at once (it would wait behind a call still running).
deadlines_on_every_domain(Config) ->
    {_Pool, Workers} = placement_pool(Config, #{pool_size => 2}, 2),
    Self = self(),
    Started = erlang:monotonic_time(millisecond),
    Callers = [spawn_link(fun() -> Self ! {self(), timed(W, placed_spin, [5000], 300)} end) || W <- Workers],
    ?assertEqual([{error, timeout}, {error, timeout}],
                 [receive {C, Answer} -> Answer after 10000 -> ct:fail(no_answer) end || C <- Callers]),
    ?assert(erlang:monotonic_time(millisecond) - Started < 3000),
    ?assertEqual([{ok, 1}, {ok, 1}], [timed(W, placed_spin, [1], 2000) || W <- Workers]).

%% An exception has its backtrace on every domain (OCaml 5 records
%% backtraces per domain, and sizes minor heaps per domain): while the first worker's
%% call keeps one domain busy, the second worker's call raises on another.
backtraces_on_every_domain(Config) ->
    {_Pool, [First, Second]} = placement_pool(Config, #{pool_size => 2}, 2),
    Self = self(),
    Busy = spawn_link(fun() -> Self ! {self(), timed(First, placed_spin, [300], 5000)} end),
    timer:sleep(50),
    {error, {ocaml_exception, <<"Failure">>, Message, Backtrace}} = timed(Second, placed_raise, [], 5000),
    ?assertEqual(<<"Failure(\"raised where it was placed\")">>, Message),
    ?assertNotEqual(nomatch, binary:match(Backtrace, <<"Raised at Stdlib.failwith">>), Backtrace),
    receive {Busy, {ok, 300}} -> ok after 10000 -> ct:fail(busy_call_unanswered) end,
    %% And the worker's minor heap (Erl_host's GC defaults: 8 MB, unless OCAMLRUNPARAM
    %% says otherwise) on both domains at once.
    Setup = spawn_link(fun() -> Self ! {self(), timed(First, placed_setup, [300], 5000)} end),
    timer:sleep(50),
    {ok, {MinorHeap, true}} = timed(Second, placed_setup, [0], 5000),
    receive {Setup, Answer} -> ?assertEqual({ok, {MinorHeap, true}}, Answer) after 10000 -> ct:fail(no_answer) end,
    [?assertEqual(1 bsl 20, MinorHeap) || os:getenv("OCAMLRUNPARAM") =:= false, os:getenv("CAMLRUNPARAM") =:= false].

%% Each domain waits for its own Erl.call_erlang: two workers' calls of Erlang,
%% made at once, each wait in Erlang for the other (under OCaml 5) and each get
%% their own answer back (their tags do not cross). Under OCaml 4.13 the first waits
%% alone.
erlang_calls_from_every_domain(Config) ->
    {_Pool, [First, Second]} = placement_pool(Config, #{pool_size => 2,
                                                        policy => #{erl_call => [{?MODULE, meet_in_erlang}]}}, 2),
    ets:new(camlbeam_meet, [named_table, public]),
    ets:insert(camlbeam_meet, {arrived, 0}),
    Self = self(),
    Callers = [spawn_link(fun() -> Self ! {self(), Tag, timed(W, placed_meet_in_erlang, [Tag, 2], 10000)} end)
               || {W, Tag} <- [{First, first}, {Second, second}]],
    Answers = [receive {C, Tag, {ok, {ok, {Outcome, Tag}}}} -> Outcome;
                       {C, Tag, Other} -> ct:fail({Tag, Other})
               after 15000 -> ct:fail(no_answer) end || C <- Callers],
    {ok, #{domains := Domains}} = camlbeam_nif:runtime_info(),
    Expected = if Domains >= 2 -> [met, met]; true -> [alone, met] end,
    ?assertEqual(Expected, lists:sort(Answers)).

%% The application environment's nif_domains says how many domains run calls, in a
%% VM of its own (the runtime starts once per VM): 1 there, where this VM has one per
%% scheduler (workers_run_at_once_on_domains); the calls of two workers then take turns.
domains_as_the_application_says(Config) ->
    Paths = [Dir || Dir <- code:get_path(), not lists:prefix(code:lib_dir(), Dir)],
    {ok, Peer, _} = peer:start_link(#{connection => standard_io,
                                      args => lists:append([["-pa", Dir] || Dir <- Paths])}),
    try
        ok = peer:call(Peer, application, load, [camlbeam], 30000),
        ok = peer:call(Peer, application, set_env, [camlbeam, nif_domains, 1], 30000),
        ?assertEqual({1, [alone, met]}, peer:call(Peer, ?MODULE, domains_in_peer, [Config], 60000))
    after
        peer:stop(Peer)
    end.

%% In the peer: the domains its runtime runs, and two workers' calls that wait for
%% each other.
domains_in_peer(Config) ->
    _ = ?LIB:init_per_suite(Config),
    {_Pool, Workers} = placement_pool(Config, #{pool_size => 2}, 2),
    {ok, #{domains := Domains}} = camlbeam_nif:runtime_info(),
    {Domains, lists:sort(meet(Workers))}.

%% Counts itself in, and waits at most 1.5 s for N arrivals: {met | alone, Tag}.
meet_in_erlang(Tag, N) ->
    ets:update_counter(camlbeam_meet, arrived, 1),
    {wait_for_arrivals(N, 300), Tag}.

wait_for_arrivals(N, Tries) ->
    case ets:lookup_element(camlbeam_meet, arrived, 2) of
        Arrived when Arrived >= N -> met;
        _ when Tries =:= 0 -> alone;
        _ -> timer:sleep(5), wait_for_arrivals(N, Tries - 1)
    end.

%% The answers of placed_meet called on each of Workers at once, each waiting for them
%% all (at most 1.5 s).
meet(Workers) ->
    {queued, {ok, ok}} = placed(hd(Workers), placed_meet_reset, []),
    Self = self(),
    Callers = [spawn_link(fun() -> Self ! {self(), timed(W, placed_meet, [length(Workers), 1500], 10000)} end)
               || W <- Workers],
    [receive {C, {ok, Outcome}} -> Outcome after 15000 -> ct:fail(no_answer) end || C <- Callers].

%% A call queued with Timeout, answered by its deadline or its caller's.
timed(Worker, Fun, Args, Timeout) ->
    Ref = make_ref(),
    ok = camlbeam_nif:call(Worker, {call, Ref, Fun, Args, Timeout}, []),
    receive {Ref, Answer} -> Answer after Timeout + 5000 -> ct:fail({no_answer, Fun, Args}) end.

%% How many calls were queued before one ran here (at most 500 calls).
queued_until_here(Worker, Fun, Args) ->
    queued_until(here, Worker, Fun, Args).

%% Calls until one runs Where (here: on the calling scheduler; dirty: on a dirty one); how
%% many ran elsewhere before it.
queued_until(Where, Worker, Fun, Args) ->
    queued_until(Where, Worker, Fun, Args, 0).

queued_until(Where, Worker, Fun, Args, Elsewhere) when Elsewhere < 500 ->
    case placed(Worker, Fun, Args) of
        {Where, _} -> Elsewhere;
        {_, _} -> queued_until(Where, Worker, Fun, Args, Elsewhere + 1)
    end;
queued_until(Where, _Worker, Fun, Args, Elsewhere) ->
    ct:fail({never, Where, Fun, Args, Elsewhere}).

flush(Message) ->
    receive Message -> flush(Message) after 0 -> ok end.

%% ocaml:call's short way in (ocaml_nif_transport:call_in_lane/4): a call of a short
%% export of the pool runs on the calling scheduler with no worker chosen in Erlang.
%% A name the pool does not export (another pool's, in the same runtime) takes the way
%% through a worker, which answers undef; the lane goes with its pool. Under OCaml 4
%% a pool has none.
a_pools_lane(Config) ->
    {Pool, _Worker} = placement_pool(Config, #{}),
    Other = ?LIB:start_pool(Config, #{}),
    Pids = [whereis_pool(P) || P <- [Pool, Other]],
    Lanes = fun() -> [P || P <- maps:keys(ocaml_nif_transport:lanes()), lists:member(P, Pids)] end,
    case on_schedulers() of
        false ->
            ?assertEqual([], Lanes()),
            ?assertEqual(queue, ocaml_nif_transport:call_in_lane(Pool, placed_echo, [1], 5000));
        true ->
            ?assertEqual(lists:sort(Pids), lists:sort(Lanes())),
            %% Trusted as the API names it, {Module, Function}, by calls through the worker.
            ok = in_lane_after_calls(Pool, placed_echo, 500),
            %% (Domain 0 may be taken a moment: by a collection, a handle's release.)
            ?assertEqual({ok, 7}, in_lane(Pool, placed_echo, [7])),
            ?assertEqual({ok, 8}, in_lane(Pool, {camlbeam_placement, placed_echo}, [8])),
            ?assertEqual(queue, ocaml_nif_transport:call_in_lane(Other, placed_echo, [1], 5000)),
            ?assertEqual(queue, ocaml_nif_transport:call_in_lane(Other, {camlbeam_placement, placed_echo}, [1], 5000)),
            {ok, #{calls_on_scheduler := Before}} = camlbeam_nif:runtime_info(),
            ?assertEqual([{ok, N} || N <- lists:seq(1, 10)], [ocaml:call(Pool, placed_echo, [N]) || N <- lists:seq(1, 10)]),
            {ok, #{calls_on_scheduler := After}} = camlbeam_nif:runtime_info(),
            %% All of them in the lane, but for a moment when domain 0 was taken.
            ?assert(After - Before >= 8)
    end,
    ?assertEqual({error, {undef, placed_echo}}, ocaml:call(Other, placed_echo, [1])),
    ?assertEqual({error, {undef, {camlbeam_placement, placed_echo}}},
                 ocaml:call(Other, {camlbeam_placement, placed_echo}, [1])),
    ?assertEqual({ok, 5}, ocaml:call(Other, add, [2, 3])),
    ok = ocaml:stop(Pool),
    ok = ocaml:stop(Other),
    %% The registry forgets them once it sees the pools go.
    ok = ?LIB:wait_until(fun() -> Lanes() =:= [] end, 5000).

%% A call of an export declared short, made again (at most 50 times, 10 ms apart) while it
%% was queued: the OCaml thread, idle to the eye, may still be tidying up after the last
%% request it ran (a minor collection: slower under ASan), and a call meanwhile is queued.
here_once_idle(Worker, Fun, Args) ->
    here_once_idle(Worker, Fun, Args, 50).

here_once_idle(Worker, Fun, Args, Left) ->
    case placed(Worker, Fun, Args) of
        {queued, _} when Left > 1 -> timer:sleep(10), here_once_idle(Worker, Fun, Args, Left - 1);
        Placed -> Placed
    end.

%% A call through the pool's lane, tried again (at most 50 times, 10 ms apart) while the
%% lane answers queue.
in_lane(Pool, Fun, Args) ->
    in_lane(Pool, Fun, Args, 50).

in_lane(Pool, Fun, Args, Left) ->
    case ocaml_nif_transport:call_in_lane(Pool, Fun, Args, 5000) of
        queue when Left > 1 -> timer:sleep(10), in_lane(Pool, Fun, Args, Left - 1);
        Answer -> Answer
    end.

%% Calls Fun through the API until a call of it runs in the pool's lane, at most Left times.
in_lane_after_calls(_Pool, Fun, 0) ->
    ct:fail({never_in_the_lane, Fun});
in_lane_after_calls(Pool, Fun, Left) ->
    case ocaml_nif_transport:call_in_lane(Pool, Fun, [0], 5000) of
        queue ->
            {ok, 0} = ocaml:call(Pool, Fun, [0]),
            in_lane_after_calls(Pool, Fun, Left - 1);
        {ok, 0} ->
            ok
    end.

%% A pool of one worker with the placement plugin, and that worker's handle.
placement_pool(Config, Options) ->
    {Pool, [Worker]} = placement_pool(Config, Options, 1),
    {Pool, Worker}.

%% A pool with the placement plugin, and the handles of its Size workers.
placement_pool(Config, Options, Size) ->
    Pool = ?LIB:start_pool(Config, Options#{plugins => [?LIB:plugin(Config, "camlbeam_placement")]}),
    Workers = [Worker || #camlbeam_worker{handle = #ocaml_nif{worker = Worker}} <- camlbeam_registry:workers(whereis_pool(Pool))],
    ?assertEqual(Size, length(Workers)),
    {Pool, Workers}.

whereis_pool(Pool) when is_pid(Pool) -> Pool;
whereis_pool(Pool) -> whereis(Pool).

%% Where camlbeam_nif:call/3 ran a call, and its answer.
placed(Worker, Fun, Args) ->
    placed(Worker, Fun, Args, 10000).

placed(Worker, Fun, Args, Timeout) ->
    Ref = make_ref(),
    Given = [A || A <- Args, is_pid(A)],
    Dirty = dirty_calls(),
    case camlbeam_nif:call(Worker, {call, Ref, Fun, Args, Timeout}, Given) of
        {answered, Answer} ->
            %% This suite's calls are made one at a time: a dirty call counted meanwhile is this one.
            case dirty_calls() of
                Dirty -> {here, Answer};
                _ -> {dirty, Answer}
            end;
        ok -> receive {Ref, Answer} -> {queued, Answer} after 15000 -> ct:fail({no_answer, Fun, Args}) end
    end.

dirty_calls() ->
    {ok, #{calls_on_dirty := Calls}} = camlbeam_nif:runtime_info(),
    Calls.

on_schedulers() ->
    {ok, #{ocaml_version := Version}} = camlbeam_nif:runtime_info(),
    binary:first(Version) >= $5.

%% The release of the other OCaml whose library the build installed.
other_ocaml(Running) ->
    Priv = code:priv_dir(camlbeam),
    Others = [Version || "ocaml-" ++ Version <- [filename:basename(D) || D <- filelib:wildcard(filename:join(Priv, "ocaml-*"))],
                         list_to_binary(Version) =/= Running,
                         filelib:is_regular(filename:join([Priv, "ocaml-" ++ Version, "camlbeam_nif.so"]))],
    case Others of
        [Other | _] -> Other;
        [] -> ct:fail("no camlbeam_nif.so of an OCaml other than ~ts in ~ts: build both (make test does)",
                      [Running, Priv])
    end.
