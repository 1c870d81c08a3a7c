%% EUnit tests of the transport behaviour (ocaml_transport): the couplings by name, their
%% modules implementing every callback, and the in-flight counters.
-module(ocaml_transport_tests).

-include_lib("eunit/include/eunit.hrl").

callback_modules_test() ->
    ?assertEqual({ok, ocaml_port_transport}, ocaml_transport:callback_module(port)),
    ?assertEqual({ok, ocaml_node_transport}, ocaml_transport:callback_module(node)),
    ?assertEqual({ok, ocaml_nif_transport}, ocaml_transport:callback_module(nif)),
    %% Every name the option accepts has an answer here.
    [?assertMatch({_, _}, ocaml_transport:callback_module(Name)) || Name <- ocaml_transport:names()].

%% Each built coupling's module exports every callback, and says it implements the
%% behaviour (so that the compiler checks it too).
couplings_implement_every_callback_test_() ->
    Callbacks = ocaml_transport:behaviour_info(callbacks),
    [{atom_to_list(Module),
      fun() ->
              ?assert(length(Callbacks) >= 10),
              ?assertEqual([], Callbacks -- Module:module_info(exports)),
              ?assert(lists:member(ocaml_transport,
                                   proplists:get_value(behaviour, Module:module_info(attributes), [])))
      end} || Module <- [ocaml_port_transport, ocaml_nif_transport, ocaml_node_transport]].

%% Every callback is documented (h(ocaml_transport) in the shell), and so is every export.
callbacks_are_documented_test() ->
    {ok, {docs_v1, _, _, _, #{<<"en">> := _}, _, Entries}} = code:get_doc(ocaml_transport),
    Documented = [{Kind, Name, Arity} || {{Kind, Name, Arity}, _, _, #{<<"en">> := Doc}, _} <- Entries,
                                         Doc =/= []],
    ?assertEqual([], [{callback, N, A} || {N, A} <- ocaml_transport:behaviour_info(callbacks)] -- Documented),
    ?assertEqual([], [{function, N, A} || {N, A} <- ocaml_transport:module_info(exports),
                                          N =/= module_info, N =/= behaviour_info] -- Documented).

counter_test() ->
    Counter = ocaml_transport:new_counter(),
    ?assertEqual(0, ocaml_transport:in_flight(Counter)),
    ok = ocaml_transport:count_in(Counter),
    ok = ocaml_transport:count_in(Counter),
    ?assertEqual(2, ocaml_transport:in_flight(Counter)),
    ok = ocaml_transport:count_out(Counter),
    ?assertEqual(1, ocaml_transport:in_flight(Counter)),
    ok = ocaml_transport:correct(Counter, -1),
    ?assertEqual(0, ocaml_transport:in_flight(Counter)).

%% Callers on every scheduler counting in and out at once lose nothing.
counter_under_concurrency_test() ->
    Counter = ocaml_transport:new_counter(),
    Self = self(),
    Callers = [spawn_link(fun() ->
                                  [begin ok = ocaml_transport:count_in(Counter),
                                         ok = ocaml_transport:count_out(Counter)
                                   end || _ <- lists:seq(1, 10000)],
                                  ok = ocaml_transport:count_in(Counter),
                                  Self ! {done, self()}
                          end) || _ <- lists:seq(1, 8)],
    [receive {done, Caller} -> ok end || Caller <- Callers],
    ?assertEqual(8, ocaml_transport:in_flight(Counter)).
