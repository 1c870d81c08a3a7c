%% EUnit tests of the pure parts: option validation, flavour and executable choice.
-module(ocaml_options_tests).

-include_lib("eunit/include/eunit.hrl").

defaults_test() ->
    {ok, Config} = ocaml_options:validate(#{}),
    ?assertEqual(#{transport => port, nodes => [], plugins => [], pool_size => 1, flavour => native,
                   executable => undefined, ocaml => default, max_queue => 10000,
                   max_queue_bytes => 8 bsl 20, start_timeout => 10000, name => undefined,
                   policy => #{send => given, erl_call => none, max_erl_calls => 8},
                   max_request_size => 1 bsl 30, max_reply_size => 64 bsl 20,
                   max_memory => infinity, restart_backoff => {100, 30000},
                   cast_timeout => 5000, cancel_grace => 1000, stall_timeout => 5000,
                   max_atoms => 1024},
                 Config).

every_option_test() ->
    Options = #{transport => port, nodes => [], plugins => ["a.cmxs", <<"b.cmxs">>], pool_size => 3,
                flavour => native, executable => "/bin/w", ocaml => "5.3.0", max_queue => 5,
                max_queue_bytes => 2,
                start_timeout => infinity, name => my_pool,
                policy => #{send => any, erl_call => [{lists, reverse}, {erlang, node, 0}],
                            max_erl_calls => 1},
                max_request_size => 16#ffffffff, max_reply_size => 1, max_memory => 1 bsl 30,
                restart_backoff => {0, 0}, cast_timeout => infinity, cancel_grace => 0,
                stall_timeout => 1, max_atoms => 0},
    ?assertEqual({ok, Options}, ocaml_options:validate(Options)).

%% The policy's defaults fill in what it leaves out.
partial_policy_test() ->
    {ok, #{policy := Policy}} = ocaml_options:validate(#{policy => #{erl_call => all}}),
    ?assertEqual(#{send => given, erl_call => all, max_erl_calls => 8}, Policy).

unknown_option_test() ->
    ?assertEqual({error, {unknown_option, pool}}, ocaml_options:validate(#{pool => 1})).

bad_options_test_() ->
    [?_assertEqual({error, {bad_option, Key, Value}}, ocaml_options:validate(#{Key => Value}))
     || {Key, Value} <- [{transport, carrier_pigeon}, {transport, "port"},
                         {plugins, "a.cmxs"}, {plugins, [a]}, {plugins, [""]}, {plugins, [<<>>]},
                         {pool_size, 0}, {pool_size, 1.0}, {flavour, any}, {flavour, "native"},
                         {executable, 42}, {executable, ""}, {max_queue, 0}, {max_queue, infinity},
                         {start_timeout, -1}, {start_timeout, 1.5}, {name, "pool"},
                         {policy, all}, {policy, #{send => everyone}}, {policy, #{sends => any}},
                         {policy, #{erl_call => some}}, {policy, #{erl_call => [lists]}},
                         {policy, #{erl_call => [{lists, "reverse"}]}},
                         {policy, #{erl_call => [{lists, reverse, -1}]}},
                         {policy, #{max_erl_calls => 0}},
                         {max_request_size, 0}, {max_request_size, 1 bsl 32},
                         {max_reply_size, 1 bsl 32}, {max_reply_size, infinity},
                         {max_memory, 0}, {max_queue_bytes, 0}, {max_queue_bytes, 1},
                         {restart_backoff, 100}, {restart_backoff, {200, 100}},
                         {restart_backoff, {-1, 100}}, {cast_timeout, -1}, {cancel_grace, infinity},
                         {stall_timeout, 0}, {stall_timeout, infinity},
                         {stall_timeout, -5}, {max_atoms, -1}, {max_atoms, infinity},
                         {max_atoms, 1.0}, {ocaml, 5}, {ocaml, ""}, {ocaml, "../5.3.0"},
                         {ocaml, "5.3/../.."}, {ocaml, "5..3"}, {ocaml, "trunk"},
                         {ocaml, <<"5.3.0/x">>}, {ocaml, lists:duplicate(33, $5)},
                         {nodes, ocaml@h}, {nodes, ["ocaml@h"]}, {nodes, [ocaml]}, {nodes, ['@h']},
                         {nodes, ['ocaml@']}, {nodes, ['a@b@c']}]] ++
        [?_assertEqual({error, {unknown_option, erl_call}}, ocaml_options:validate(#{erl_call => all}))].

%% Given nodes are the node transport's, one worker each.
nodes_test_() ->
    Nodes = ['ocaml@h1', 'ocaml@h2'],
    [?_assertMatch({ok, #{nodes := Nodes, pool_size := 2}}, ocaml_options:validate(#{transport => node, nodes => Nodes})),
     ?_assertMatch({ok, #{nodes := Nodes, pool_size := 2}},
                   ocaml_options:validate(#{transport => node, nodes => Nodes, pool_size => 2})),
     ?_assertMatch({ok, #{nodes := [], pool_size := 3}}, ocaml_options:validate(#{transport => node, pool_size => 3})),
     ?_assertEqual({error, {bad_option, pool_size, 3}},
                   ocaml_options:validate(#{transport => node, nodes => Nodes, pool_size => 3})),
     ?_assertEqual({error, {bad_option, nodes, Nodes}}, ocaml_options:validate(#{nodes => Nodes})),
     ?_assertEqual({error, {bad_option, nodes, ['a@h', 'a@h']}},
                   ocaml_options:validate(#{transport => node, nodes => ['a@h', 'a@h']}))].

every_transport_name_is_an_option_test_() ->
    [?_assertMatch({ok, #{transport := Name}}, ocaml_options:validate(#{transport => Name}))
     || Name <- [port, node, nif]].

flavour_from_plugins_test_() ->
    Flavour = fun(Options) ->
                  {ok, #{flavour := F}} = ocaml_options:validate(Options),
                  F
              end,
    [?_assertEqual(native, Flavour(#{plugins => ["a.cmxs"]})),
     ?_assertEqual(bytecode, Flavour(#{plugins => ["a.cma"]})),
     ?_assertEqual(bytecode, Flavour(#{plugins => [<<"dir/a.cmo">>, "b.CMA"]})),
     ?_assertEqual(native, Flavour(#{plugins => []})),
     %% Extensions of neither kind do not vote.
     ?_assertEqual(bytecode, Flavour(#{plugins => ["a.so", "b.cma"]})),
     %% The option wins over the extensions: the worker then refuses what it cannot load.
     ?_assertEqual(native, Flavour(#{plugins => ["a.cma"], flavour => native})),
     %% A user's executable says itself which flavour it is.
     ?_assertEqual(any, Flavour(#{executable => "/bin/w"})),
     ?_assertEqual(bytecode, Flavour(#{executable => "/bin/w", plugins => ["a.cma"]}))].

mixed_plugin_kinds_test() ->
    ?assertEqual({error, {mixed_plugin_kinds, #{native => ["a.cmxs", "c.cmxs"],
                                                bytecode => [<<"b.cma">>]}}},
                 ocaml_options:validate(#{plugins => ["a.cmxs", <<"b.cma">>, "c.cmxs"]})).

executable_test_() ->
    Config = fun(Options) ->
                 {ok, C} = ocaml_options:validate(Options),
                 C
             end,
    Env = #{port_executable => "/env/native", port_bytecode_executable => "/env/bytecode",
            priv_dir => "/priv"},
    Priv = #{priv_dir => "/priv"},
    [?_assertEqual({ok, "/mine"},
                   ocaml_options:executable(Config(#{executable => "/mine"}), Env)),
     ?_assertEqual({ok, "/env/native"}, ocaml_options:executable(Config(#{}), Env)),
     ?_assertEqual({ok, "/env/bytecode"},
                   ocaml_options:executable(Config(#{plugins => ["p.cma"]}), Env)),
     ?_assertEqual({ok, "/priv/camlbeam-port"}, ocaml_options:executable(Config(#{}), Priv)),
     ?_assertEqual({ok, "/priv/camlbeam-port-bytecode"},
                   ocaml_options:executable(Config(#{flavour => bytecode}), Priv)),
     ?_assertEqual({error, no_priv_dir}, ocaml_options:executable(Config(#{}), #{})),
     %% Workers of another OCaml are in their own directory of priv; the environment's
     %% executables are the default OCaml's.
     ?_assertEqual({ok, "/priv/ocaml-5.3.0/camlbeam-port"},
                   ocaml_options:executable(Config(#{ocaml => "5.3.0"}), Env)),
     ?_assertEqual({ok, "/priv/ocaml-5.3.0+flambda/camlbeam-port-bytecode"},
                   ocaml_options:executable(Config(#{ocaml => <<"5.3.0+flambda">>, flavour => bytecode}), Env)),
     ?_assertEqual({ok, "/mine"},
                   ocaml_options:executable(Config(#{ocaml => "5.3.0", executable => "/mine"}), Env)),
     ?_assertEqual({error, no_priv_dir}, ocaml_options:executable(Config(#{ocaml => "5.3.0"}), #{})),
     %% The node transport's own executable.
     ?_assertEqual({ok, "/priv/camlbeam-node"}, ocaml_options:executable(Config(#{transport => node}), Priv)),
     ?_assertEqual({ok, "/env/node"},
                   ocaml_options:executable(Config(#{transport => node}), Env#{node_executable => "/env/node"})),
     ?_assertEqual({ok, "/priv/ocaml-5.3.0/camlbeam-node"},
                   ocaml_options:executable(Config(#{transport => node, ocaml => "5.3.0"}), Env))].
