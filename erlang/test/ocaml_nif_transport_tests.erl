%% EUnit tests of how the nif coupling names a call's function in its pool
%% (ocaml_nif_transport:qualify/2): against the names the registry keeps of each pool's
%% exports (camlbeam_registry:exporters/2), without any OCaml. The answers must be those a
%% port worker of the pool gives (Erl's dispatch), as the Common Test suites check on
%% real workers.
-module(ocaml_nif_transport_tests).

-include_lib("eunit/include/eunit.hrl").

-define(TYPE, <<"fun((ocaml:int63(), ocaml:int63()) -> ocaml:int63())">>).

qualify_test_() ->
    {setup, fun start_registry/0, fun stop_registry/1,
     [{"a pool's own exports, by step", fun own_exports/0},
      {"plugins count once in the pool's list", fun listed_plugins_only/0},
      {"a new version of a module replaces its names", fun module_replaced/0},
      {"pools do not see each other's names", fun pools_apart/0},
      {"a pool gone, or not registered again yet", fun pool_gone/0},
      {"a restored pool has its names at once", fun restored_pool/0}]}.

own_exports() ->
    {Pool, A} = {pool(), <<"/plugins/a.cmxs">>},
    [A] = camlbeam_registry:register_pool(Pool, self(), [A]),
    ?assertEqual({error, {undef, add}}, ocaml_nif_transport:qualify(Pool, add)),
    ok = camlbeam_registry:set_exports(Pool, #{hello => [{static, hi, 0, ?TYPE}],
                                               A => [{test, add, 2, ?TYPE},
                                                     {test, raw, any, <<"fun((...) -> term())">>}]}),
    ?assertEqual({ok, {test, add}}, ocaml_nif_transport:qualify(Pool, add)),
    ?assertEqual({ok, {test, add}}, ocaml_nif_transport:qualify(Pool, {test, add})),
    ?assertEqual({ok, {static, hi}}, ocaml_nif_transport:qualify(Pool, hi)),
    %% The arity is not looked at, as Erl's dispatch does not: badarity is the export's answer.
    ?assertEqual({ok, {test, raw}}, ocaml_nif_transport:qualify(Pool, raw)),
    ?assertEqual({error, {undef, nope}}, ocaml_nif_transport:qualify(Pool, nope)),
    ?assertEqual({error, {undef, {test, hi}}}, ocaml_nif_transport:qualify(Pool, {test, hi})),
    ?assertEqual({error, {undef, {nope, add}}}, ocaml_nif_transport:qualify(Pool, {nope, add})),
    stop(Pool).

%% A plugin's exports are reported while it loads, before the load has answered: they
%% count once the pool lists it (the load succeeded), as ocaml:exports/1 shows them.
listed_plugins_only() ->
    {Pool, A, B} = {pool(), <<"/plugins/a.cmxs">>, <<"/plugins/b.cmxs">>},
    [A] = camlbeam_registry:register_pool(Pool, self(), [A]),
    ok = camlbeam_registry:set_exports(Pool, #{A => [{twin, add, 2, ?TYPE}]}),
    ok = camlbeam_registry:set_exports(Pool, #{A => [{twin, add, 2, ?TYPE}],
                                               B => [{test, add, 2, ?TYPE}, {test, only, 0, ?TYPE}]}),
    ?assertEqual({ok, {twin, add}}, ocaml_nif_transport:qualify(Pool, add)),
    ?assertEqual({error, {undef, only}}, ocaml_nif_transport:qualify(Pool, only)),
    ok = camlbeam_registry:set_plugins(Pool, [A, B]),
    %% Sorted, as Erl sorts them.
    ?assertEqual({error, {ambiguous, add, [test, twin]}}, ocaml_nif_transport:qualify(Pool, add)),
    ?assertEqual({ok, {twin, add}}, ocaml_nif_transport:qualify(Pool, {twin, add})),
    ?assertEqual({ok, {test, only}}, ocaml_nif_transport:qualify(Pool, only)),
    %% A load that failed leaves the list: its names go.
    ok = camlbeam_registry:set_plugins(Pool, [A]),
    ?assertEqual({ok, {twin, add}}, ocaml_nif_transport:qualify(Pool, add)),
    ?assertEqual({error, {undef, only}}, ocaml_nif_transport:qualify(Pool, only)),
    stop(Pool).

module_replaced() ->
    {Pool, V1, V2} = {pool(), <<"/plugins/twin.cmxs">>, <<"/plugins/twin_v2.cmxs">>},
    [V1] = camlbeam_registry:register_pool(Pool, self(), [V1]),
    ok = camlbeam_registry:set_exports(Pool, #{V1 => [{twin, add, 2, ?TYPE}, {twin, old, 0, ?TYPE}]}),
    ?assertEqual({ok, {twin, old}}, ocaml_nif_transport:qualify(Pool, old)),
    ok = camlbeam_registry:set_exports(Pool, #{V1 => [{twin, add, 2, ?TYPE}, {twin, old, 0, ?TYPE}],
                                               V2 => [{twin, add, 2, ?TYPE}, {twin, new, 0, ?TYPE}]}),
    ok = camlbeam_registry:set_plugins(Pool, [V1, V2]),
    ?assertEqual({ok, {twin, add}}, ocaml_nif_transport:qualify(Pool, add)),
    ?assertEqual({ok, {twin, new}}, ocaml_nif_transport:qualify(Pool, new)),
    ?assertEqual({error, {undef, old}}, ocaml_nif_transport:qualify(Pool, old)),
    ?assertEqual({error, {undef, {twin, old}}}, ocaml_nif_transport:qualify(Pool, {twin, old})),
    stop(Pool).

pools_apart() ->
    {Pool, Other, A, B} = {pool(), pool(), <<"/plugins/a.cmxs">>, <<"/plugins/b.cmxs">>},
    [A] = camlbeam_registry:register_pool(Pool, self(), [A]),
    [A, B] = camlbeam_registry:register_pool(Other, self(), [A, B]),
    Exports = #{A => [{test, add, 2, ?TYPE}], B => [{twin, add, 2, ?TYPE}, {twin, only, 0, ?TYPE}]},
    ok = camlbeam_registry:set_exports(Pool, maps:with([A], Exports)),
    ok = camlbeam_registry:set_exports(Other, Exports),
    ?assertEqual({ok, {test, add}}, ocaml_nif_transport:qualify(Pool, add)),
    ?assertEqual({error, {undef, only}}, ocaml_nif_transport:qualify(Pool, only)),
    ?assertEqual({error, {undef, {twin, add}}}, ocaml_nif_transport:qualify(Pool, {twin, add})),
    ?assertEqual({error, {ambiguous, add, [test, twin]}}, ocaml_nif_transport:qualify(Other, add)),
    ?assertEqual({ok, {twin, only}}, ocaml_nif_transport:qualify(Other, only)),
    stop(Pool),
    stop(Other).

%% `unsent': the caller looks for another worker, and finds the pool gone (noproc), as
%% while the registry restarts; never an undef the pool's workers would not answer.
pool_gone() ->
    {Pool, A} = {pool(), <<"/plugins/a.cmxs">>},
    ?assertEqual(unsent, ocaml_nif_transport:qualify(Pool, add)),
    [A] = camlbeam_registry:register_pool(Pool, self(), [A]),
    ok = camlbeam_registry:set_exports(Pool, #{A => [{test, add, 2, ?TYPE}]}),
    ?assertEqual({ok, {test, add}}, ocaml_nif_transport:qualify(Pool, add)),
    %% Dead, its rows not deleted yet: a name it did not export is no undef either.
    ok = sys:suspend(camlbeam_registry),
    try
        Monitor = erlang:monitor(process, Pool),
        stop(Pool),
        receive {'DOWN', Monitor, process, Pool, _} -> ok end,
        ?assertEqual(unsent, ocaml_nif_transport:qualify(Pool, nope))
    after
        sys:resume(camlbeam_registry)
    end,
    ok = wait_until(fun() -> ocaml_nif_transport:qualify(Pool, add) =:= unsent end, 50),
    ?assertEqual(unsent, ocaml_nif_transport:qualify(Pool, {test, add})),
    ?assertEqual([], ets:select(camlbeam_pool_names, [{{{Pool, '_'}, '_'}, [], [true]}])).

restored_pool() ->
    {Pool, A} = {pool(), <<"/plugins/a.cmxs">>},
    ok = camlbeam_registry:restore_pool(Pool, self(), [A], #{A => [{test, add, 2, ?TYPE}]}, #{}),
    ?assertEqual({ok, {test, add}}, ocaml_nif_transport:qualify(Pool, add)),
    stop(Pool).

%%% Helpers

%% A process standing for a pool, which the registry monitors.
pool() ->
    spawn(fun() -> receive stop -> ok end end).

stop(Pool) ->
    Pool ! stop,
    ok.

wait_until(Done, Tries) ->
    case Done() of
        true -> ok;
        false when Tries > 0 -> timer:sleep(10), wait_until(Done, Tries - 1);
        false -> timeout
    end.

start_registry() ->
    case whereis(camlbeam_registry) of
        undefined ->
            {ok, Registry} = camlbeam_registry:start_link(),
            unlink(Registry),
            {started, Registry};
        Running ->
            {running, Running}
    end.

stop_registry({started, Registry}) ->
    gen_server:stop(Registry);
stop_registry({running, _}) ->
    ok.
