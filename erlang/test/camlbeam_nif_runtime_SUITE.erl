%% What only the nif transport has: one OCaml runtime inside this VM, shared by
%% every pool, kept across a new version of camlbeam_nif, never replaced by
%% another OCaml's (cpp/nif/README.md). The shared suites run the API, terms and
%% faults through it (group nif).
-module(camlbeam_nif_runtime_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, init_per_suite/1, end_per_suite/1]).
-export([one_runtime_for_every_pool/1, upgrade_keeps_the_runtime/1, another_ocaml_is_refused/1,
         large_maps_off_the_schedulers/1, answers_within_max_reply_size/1, exit_does_not_end_the_vm/1,
         options_that_do_not_apply/1]).

-define(LIB, camlbeam_test_lib).

all() ->
    [one_runtime_for_every_pool, upgrade_keeps_the_runtime, another_ocaml_is_refused,
     large_maps_off_the_schedulers, answers_within_max_reply_size, exit_does_not_end_the_vm,
     options_that_do_not_apply].

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
    ?assertEqual({ok, Info}, camlbeam_nif:runtime_info()),
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
    ?assertEqual({ok, #{ocaml_version => Running, flavour => native}}, camlbeam_nif:runtime_info()),
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
