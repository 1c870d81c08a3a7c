%% EUnit tests of the policy of what OCaml may do to Erlang.
-module(ocaml_policy_tests).

-include_lib("eunit/include/eunit.hrl").

default_denies_calls_and_sends_to_strangers_test() ->
    Policy = ocaml_policy:default(),
    ?assertEqual(given, maps:get(send, Policy)),
    ?assertNot(ocaml_policy:may_call(Policy, erlang, halt, 0)),
    ?assertNot(ocaml_policy:may_call(Policy, erlang, binary_to_atom, 2)).

may_call_test_() ->
    {ok, Listed} = ocaml_policy:validate(#{erl_call => [{lists, reverse}, {erlang, node, 0}]}),
    {ok, All} = ocaml_policy:validate(#{erl_call => all}),
    [?_assert(ocaml_policy:may_call(Listed, lists, reverse, 1)),
     ?_assert(ocaml_policy:may_call(Listed, lists, reverse, 2)),
     ?_assert(ocaml_policy:may_call(Listed, erlang, node, 0)),
     ?_assertNot(ocaml_policy:may_call(Listed, erlang, node, 1)),
     ?_assertNot(ocaml_policy:may_call(Listed, erlang, halt, 0)),
     ?_assert(ocaml_policy:may_call(All, erlang, halt, 0))].

given_pids_test() ->
    Self = self(),
    ?assertEqual([Self, Self], ocaml_policy:given_pids([1, Self, {Self}, [Self], Self])),
    %% Improper arguments (the worker answers bad_request): the pids before the tail.
    ?assertEqual([Self], ocaml_policy:given_pids([Self, 1 | Self])).

validate_test_() ->
    [?_assertEqual(error, ocaml_policy:validate(#{send => everyone})),
     ?_assertEqual(error, ocaml_policy:validate(#{unknown => 1})),
     ?_assertEqual(error, ocaml_policy:validate([])),
     ?_assertEqual(error, ocaml_policy:validate(#{erl_call => [{lists, map} | tail]})),
     ?_assertEqual({ok, #{send => none, erl_call => none, max_erl_calls => 8}},
                   ocaml_policy:validate(#{send => none}))].
