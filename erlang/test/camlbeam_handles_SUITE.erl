%% OCaml values held by Erlang (ocaml:ref(), Erl.Term.Handle): under the nif
%% transport they outlive the calls that made them, work from any process, are
%% released once the garbage collector frees their terms (also across a new
%% version of camlbeam_nif), and may monitor a process. The port transport
%% cannot carry them, and says so (issue 15, item 3; cpp/nif/src/handles.hpp).
-module(camlbeam_handles_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, groups/0, suite/0, init_per_suite/1, end_per_suite/1, init_per_group/2, end_per_group/2]).
-export([handle_outlives_its_call/1, handle_from_another_process/1, garbage_collect_releases_it/1,
         handle_survives_a_nif_upgrade/1, monitor_runs_on_down/1, monitor_of_a_dead_process/1,
         port_refuses_handles/1]).

-define(LIB, camlbeam_test_lib).
%% How long a release may take: the runtime's thread drains them between requests,
%% woken by the release and by ocaml:handles/0.
-define(RELEASE_MS, 5000).

-spec suite() -> [tuple()].
suite() ->
    [{timetrap, {seconds, 120}}].

-spec all() -> [{group, atom()}].
all() ->
    [{group, Group} || {Group, _, _} <- groups()].

-spec groups() -> [{atom(), list(), [atom()]}].
groups() ->
    ?LIB:groups(fun cases/1).

-spec cases(atom()) -> [atom()].
cases(nif) ->
    [handle_outlives_its_call, handle_from_another_process, garbage_collect_releases_it,
     handle_survives_a_nif_upgrade, monitor_runs_on_down, monitor_of_a_dead_process];
cases(_Port) ->
    [port_refuses_handles].

-spec init_per_suite(list()) -> list().
init_per_suite(Config) -> ?LIB:init_per_suite(Config).
-spec end_per_suite(list()) -> term().
end_per_suite(Config) -> ?LIB:end_per_suite(Config).
-spec init_per_group(atom(), list()) -> list().
init_per_group(Group, Config) -> ?LIB:init_per_group(Group, Config).
-spec end_per_group(atom(), list()) -> ok.
end_per_group(_Group, _Config) -> ok.

-spec start_pool(list()) -> ocaml:pool().
start_pool(Config) ->
    ?LIB:start_pool(Config, #{plugins => [?LIB:plugin(Config, "camlbeam_handles")], policy => #{send => any}}).

%% A handle is an opaque term that later calls take back as the same OCaml value;
%% each answer makes a new term, and a handle of another kind is refused.
handle_outlives_its_call(Config) ->
    Pool = start_pool(Config),
    {ok, H} = ocaml:call(Pool, handle_counter, [5]),
    ?assert(is_reference(H)),
    ?assertEqual({ok, 6}, ocaml:call(Pool, handle_incr, [H])),
    ?assertEqual({ok, 7}, ocaml:call(Pool, handle_incr, [H])),
    ?assertEqual({ok, 7}, ocaml:call(Pool, handle_read, [H])),
    ?assertEqual({ok, <<"counter">>}, ocaml:call(Pool, handle_name, [H])),
    {ok, {A, B}} = ocaml:call(Pool, handle_twice, [H]),
    ?assertNotEqual(A, B),
    ?assertEqual({ok, true}, ocaml:call(Pool, handle_same, [A, B])),
    ?assertEqual({ok, true}, ocaml:call(Pool, handle_same, [A, H])),
    ?assertEqual({ok, 8}, ocaml:call(Pool, handle_incr, [B])),
    {ok, G} = ocaml:call(Pool, handle_gauge, [1]),
    ?assertEqual({ok, false}, ocaml:call(Pool, handle_same, [G, H])),
    ?assertMatch({error, {badarg, _}}, ocaml:call(Pool, handle_incr, [G])),
    ?assertMatch({error, {badarg, _}}, ocaml:call(Pool, handle_incr, [make_ref()])),
    %% Inside an answer, and in a message of Erl.send.
    {ok, {ok, C}} = ocaml:call(Pool, handle_in_answer, [41]),
    ?assertEqual({ok, 42}, ocaml:call(Pool, handle_incr, [C])),
    ?assertEqual({ok, ok}, ocaml:call(Pool, handle_send, [self(), 9])),
    D = receive Sent -> Sent after 5000 -> ct:fail(no_message) end,
    ?assertEqual({ok, 10}, ocaml:call(Pool, handle_incr, [D])),
    %% As map keys; not of a map over 32 keys, whose order OTP's hash of each key decides.
    {ok, Keys} = ocaml:call(Pool, handle_keys, [32]),
    ?assertEqual(lists:seq(0, 31), lists:sort(maps:values(Keys))),
    [?assertEqual({ok, V}, ocaml:call(Pool, handle_read, [K])) || {K, V} <- maps:to_list(Keys)],
    {error, {bad_reply, Why}} = ocaml:call(Pool, handle_keys, [33]),
    ?assertNotEqual(nomatch, binary:match(Why, <<"more than 32 keys">>)).

%% Another process, and another pool of the VM, use the handle too.
handle_from_another_process(Config) ->
    Pool = start_pool(Config),
    Other = start_pool(Config),
    {ok, H} = ocaml:call(Pool, handle_counter, [0]),
    Self = self(),
    Pids = [spawn_link(fun() -> Self ! {self(), [ocaml:call(Other, handle_incr, [H]) || _ <- lists:seq(1, 10)]} end)
            || _ <- lists:seq(1, 4)],
    [receive {P, Answers} -> ?assertEqual(10, length([ok || {ok, _} <- Answers])) end || P <- Pids],
    ?assertEqual({ok, 40}, ocaml:call(Pool, handle_read, [H])).

%% Handles held by a process live while it keeps them; once it drops them and
%% collects its garbage, the VM frees the resources, the runtime releases the
%% OCaml values, and OCaml's GC collects them.
garbage_collect_releases_it(Config) ->
    Pool = start_pool(Config),
    #{live := Live0} = settled(),
    {ok, Finalised0} = ocaml:call(Pool, handle_finalised, []),
    Holder = holder(Pool, 10),
    ?assertEqual(Live0 + 10, live()),
    %% The handles outlive their calls: the OCaml GC keeps their values.
    ?assertEqual({ok, Finalised0}, ocaml:call(Pool, handle_finalised, [])),
    [?assertEqual({ok, N + 1}, ocaml:call(Pool, handle_incr, [H])) || {N, H} <- held(Holder)],
    drop(Holder),
    ?assertMatch(#{live := Live0, unreleased := 0}, settled()),
    ?assertEqual({ok, Finalised0 + 10}, ocaml:call(Pool, handle_finalised, [])).

%% code:load_file/1 of camlbeam_nif (a release upgrade): the handles alive keep
%% their values and work, and are released after it, once freed.
handle_survives_a_nif_upgrade(Config) ->
    Pool = start_pool(Config),
    #{live := Live0} = settled(),
    {ok, Finalised0} = ocaml:call(Pool, handle_finalised, []),
    Holder = holder(Pool, 3),
    ?assertEqual({module, camlbeam_nif}, code:load_file(camlbeam_nif)),
    ?assert(erlang:check_old_code(camlbeam_nif)),
    [?assertEqual({ok, N + 1}, ocaml:call(Pool, handle_incr, [H])) || {N, H} <- held(Holder)],
    ?assertNot(code:purge(camlbeam_nif)),
    [?assertEqual({ok, N + 2}, ocaml:call(Pool, handle_incr, [H])) || {N, H} <- held(Holder)],
    ?assertEqual(Live0 + 3, live()),
    %% A handle made after the upgrade too.
    {ok, New} = ocaml:call(Pool, handle_counter, [1]),
    ?assertEqual({ok, 2}, ocaml:call(Pool, handle_incr, [New])),
    drop(Holder),
    #{live := Live} = settled(),
    ?assertEqual({ok, Finalised0 + 3}, ocaml:call(Pool, handle_finalised, [])),
    %% New is used last here: alive until now, whatever this process collected.
    ?assertEqual({ok, 3}, ocaml:call(Pool, handle_incr, [New])),
    ?assertEqual(Live0 + 1, Live).

%% A handle that monitors a process runs its on_down once when it exits, however
%% many Erlang terms the handle has. Ten more handles monitor it too (under OCaml 5
%% most are made on the calling scheduler: Service::run_here).
monitor_runs_on_down(Config) ->
    Pool = start_pool(Config),
    Victim = spawn(fun() -> receive stop -> ok end end),
    {ok, Downs0} = ocaml:call(Pool, handle_downs, []),
    Others = [begin {ok, O} = ocaml:call(Pool, handle_monitor, [Victim]), O end || _ <- lists:seq(1, 10)],
    {ok, H} = ocaml:call(Pool, handle_monitor, [Victim]),
    {ok, {A, B}} = ocaml:call(Pool, handle_twice, [H]),
    ?assertEqual({ok, false}, ocaml:call(Pool, handle_down, [H])),
    Victim ! stop,
    ?LIB:wait_until(fun() -> ocaml:call(Pool, handle_down, [A]) =:= {ok, true} end, 5000),
    timer:sleep(100),
    ?assertEqual({ok, true}, ocaml:call(Pool, handle_down, [B])),
    ?LIB:wait_until(fun() -> ocaml:call(Pool, handle_downs, []) =:= {ok, Downs0 + 11} end, 5000),
    [?assertEqual({ok, true}, ocaml:call(Pool, handle_down, [O])) || O <- Others],
    timer:sleep(100),
    ?assertEqual({ok, Downs0 + 11}, ocaml:call(Pool, handle_downs, [])).

%% A process gone before its handle crosses: on_down runs all the same.
monitor_of_a_dead_process(Config) ->
    Pool = start_pool(Config),
    {Dead, Ref} = spawn_monitor(fun() -> ok end),
    receive {'DOWN', Ref, process, Dead, _} -> ok end,
    {ok, H} = ocaml:call(Pool, handle_monitor, [Dead]),
    ?LIB:wait_until(fun() -> ocaml:call(Pool, handle_down, [H]) =:= {ok, true} end, 5000).

%% A pipe carries no OCaml value: an answer or a message holding a handle is an
%% error that says so.
port_refuses_handles(Config) ->
    Pool = start_pool(Config),
    {error, {bad_reply, Why}} = ocaml:call(Pool, handle_in_answer, [1]),
    ?assertNotEqual(nomatch, binary:match(Why, <<"handle">>)),
    ?assertNotEqual(nomatch, binary:match(Why, <<"nif">>)),
    {error, {ocaml_exception, <<"Failure">>, Message, _}} = ocaml:call(Pool, handle_send, [self(), 1]),
    ?assertNotEqual(nomatch, binary:match(Message, <<"nif">>)),
    ?assertEqual({ok, 0}, ocaml:call(Pool, handle_downs, [])).

%% Helpers

%% The handle counts once nothing waits for release.
-spec settled() -> camlbeam_nif:handle_counts().
settled() ->
    ?LIB:wait_until(fun() -> maps:get(unreleased, ocaml:handles()) =:= 0 end, ?RELEASE_MS),
    Counts = ocaml:handles(),
    timer:sleep(50),
    case ocaml:handles() of
        Counts -> Counts;
        _ -> settled()
    end.

-spec live() -> non_neg_integer().
live() ->
    maps:get(live, ocaml:handles()).

%% A process holding N counter handles (0 .. N-1), made by its own calls.
-spec holder(ocaml:pool(), pos_integer()) -> pid().
holder(Pool, N) ->
    Self = self(),
    Holder = spawn_link(fun() ->
                                Handles = [begin {ok, H} = ocaml:call(Pool, handle_counter, [I]), {I, H} end
                                           || I <- lists:seq(0, N - 1)],
                                Self ! {self(), made},
                                hold(Handles)
                        end),
    receive {Holder, made} -> Holder end.

-spec hold([{integer(), ocaml:ref()}]) -> no_return().
hold(Handles) ->
    receive
        {From, held} ->
            From ! {self(), Handles},
            hold(Handles);
        {From, drop} ->
            released(From)
    end.

%% The handles are gone from the process's own variables: its next collection frees them.
-spec released(pid()) -> no_return().
released(From) ->
    true = erlang:garbage_collect(),
    From ! {self(), dropped},
    receive stop -> exit(normal) end.

%% The handles a holder holds. The copies this process gets go with its own
%% garbage (collected in drop/1).
-spec held(pid()) -> [{integer(), ocaml:ref()}].
held(Holder) ->
    Holder ! {self(), held},
    receive {Holder, Handles} -> Handles end.

-spec drop(pid()) -> ok.
drop(Holder) ->
    Holder ! {self(), drop},
    receive {Holder, dropped} -> ok end,
    true = erlang:garbage_collect(),
    ok.
