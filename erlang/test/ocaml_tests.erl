%% EUnit tests of module ocaml that need no worker: its documentation as the shell and
%% iex read it, and the errors for arguments of the wrong type (what an Elixir caller
%% passing a keyword list or a string gets).
-module(ocaml_tests).

-include_lib("eunit/include/eunit.hrl").

%% code:get_doc/1's answer (EEP 48): {docs_v1, Anno, BeamLanguage, Format, ModuleDoc,
%% Metadata, Docs}, the record of kernel's eep48.hrl, whose untyped fields this
%% application's warnings refuse.
-define(DOCS(ModuleDoc, Entries), {docs_v1, _, _, _, ModuleDoc, _, Entries}).

%%% Documentation

%% h(ocaml, call) renders what code:get_doc/1 returns: the doc of call/3 and call/4.
call_is_documented_test() ->
    {ok, Docs} = code:get_doc(ocaml),
    %% As a terminal of 80 columns shows it. shell_docs asks the group leader for its
    %% options whatever it is told, which eunit's cannot answer: the VM's own terminal
    %% does.
    Shell = #{encoding => unicode, ansi => false, columns => 80},
    EunitLeader = group_leader(),
    group_leader(whereis(user), self()),
    Lines = try shell_docs:render(ocaml, call, Docs, Shell)
            after group_leader(EunitLeader, self())
            end,
    %% The text as one line, wherever the terminal's width wrapped it.
    Rendered = lists:join(" ", string:lexemes(unicode:characters_to_list(Lines), " \n")),
    [?assertNotEqual(nomatch, string:find(Rendered, Text), Text)
     || Text <- ["-spec call(Pool :: pool(), Fun :: fun_name(), Args :: [term()]) ->",
                 "-spec call(Pool :: pool(), Fun :: fun_name(), Args :: [term()], Timeout :: timeout()) ->",
                 "on the least loaded worker of the pool, and waits up to 5000 ms",
                 "and waits up to Timeout milliseconds for its answer",
                 "A call that times out answers {error, timeout}"]].

%% Every function a user can call has a text of its own, and so has the module.
every_export_is_documented_test() ->
    {ok, ?DOCS(#{<<"en">> := ModuleDoc}, Entries)} = code:get_doc(ocaml),
    ?assertNotEqual([], ModuleDoc),
    Documented = [{Name, Arity} || {{function, Name, Arity}, _, _, #{<<"en">> := Doc}, _} <- Entries,
                                   Doc =/= []],
    Exported = [Export || {Name, _} = Export <- ocaml:module_info(exports),
                          Name =/= module_info],
    ?assertEqual([], Exported -- Documented).

%% So has every exported type (ht(ocaml) in the shell), among them the two a badarg error
%% names (`expected => <<"ocaml:int63()">>').
every_type_is_documented_test() ->
    {ok, ?DOCS(_, Entries)} = code:get_doc(ocaml),
    Types = [{Name, Doc} || {{type, Name, 0}, _, _, Doc, _} <- Entries],
    ?assertEqual([], [Name || {Name, Doc} <- Types, not is_map_key(<<"en">>, Doc)]),
    ?assertEqual([], [int63, int64] -- [Name || {Name, _} <- Types]).

%% The documentation is in the beam itself, where iex's h (Elixir's Code.fetch_docs/1)
%% reads it: neither rebar3 nor Mix copies a doc/chunks directory into the build.
docs_are_in_the_beam_test() ->
    {ok, {ocaml, [{"Docs", Chunk}]}} = beam_lib:chunks(code:which(ocaml), ["Docs"]),
    ?assertMatch(?DOCS(#{<<"en">> := _}, [_ | _]), binary_to_term(Chunk)).

%%% Arguments of the wrong type

%% Each case: the call, the argument at fault, and how its explanation begins.
bad_arguments() ->
    Pool = self(),
    [{fun() -> ocaml:start_link([{plugins, ["a.cmxs"]}]) end, 1, "not a map of options"},
     {fun() -> ocaml:start([{plugins, ["a.cmxs"]}]) end, 1, "not a map of options"},
     {fun() -> ocaml:child_spec(plugins) end, 1, "not a map of options"},
     {fun() -> ocaml:call(Pool, "fib", [1]) end, 2,
      "the name of an OCaml function is an atom, such as fib, not a string"},
     {fun() -> ocaml:call(Pool, <<"fib">>, [1], 100) end, 2,
      "the name of an OCaml function is an atom, such as fib, not a string"},
     {fun() -> ocaml:call(Pool, 17, [1]) end, 2,
      "not the name of an OCaml function: an atom, such as fib, or {Module, Function}, such as {mathlib, fib}"},
     {fun() -> ocaml:call(Pool, {mathlib}, [1]) end, 2,
      "not {Module, Function}: that is a tuple of two atoms, such as {mathlib, fib}"},
     {fun() -> ocaml:call(Pool, {"mathlib", fib}, [1], 100) end, 2, "not {Module, Function}"},
     {fun() -> ocaml:cast(Pool, {mathlib, fib, 1}, [1]) end, 2, "not {Module, Function}"},
     {fun() -> ocaml:call(Pool, fib, 1) end, 3, "not a list of arguments"},
     {fun() -> ocaml:call(Pool, fib, [1], -1) end, 4, "not a timeout"},
     {fun() -> ocaml:call("pool", fib, [1]) end, 1, "not a pool"},
     {fun() -> ocaml:cast(Pool, "log", []) end, 2, "the name of an OCaml function is an atom"},
     {fun() -> ocaml:cast({pool}, log, []) end, 1, "not a pool"},
     {fun() -> ocaml:load(Pool, 'a.cmxs') end, 2, "not the path of a plugin file"},
     {fun() -> ocaml:load(<<"pool">>, "a.cmxs") end, 1, "not a pool"},
     {fun() -> ocaml:stop("pool") end, 1, "not a pool"},
     {fun() -> ocaml:workers(1) end, 1, "not a pool"},
     {fun() -> ocaml:exports("pool") end, 1, "not a pool"}].

%% badarg, and the shell's report names the argument and says what it should be.
bad_arguments_are_explained_test_() ->
    [{Expected, fun() -> explained(Call, Position, Expected) end}
     || {Call, Position, Expected} <- bad_arguments()].

explained(Call, Position, Expected) ->
    try Call() of
        Result -> ?assertEqual(badarg, Result)
    catch
        error:badarg:Stack ->
            [{ocaml, _, _, _} | _] = Stack,
            ?assertEqual([Position], maps:keys(ocaml:format_error(badarg, Stack))),
            Report = lists:flatten(io_lib:format("~ts", [erl_error:format_exception(error, badarg, Stack)])),
            Line = lists:flatten(io_lib:format("*** argument ~b: ", [Position])),
            ?assertNotEqual(nomatch, string:find(Report, Line ++ Expected), Report)
    end.

%% An Elixir caller (Elixir passes a pretty_printer) is answered in Elixir's syntax:
%% the options are a map, not the keyword list it wrote; the name is :fib.
elixir_syntax_test() ->
    Elixir = fun(Function, Args) ->
                     Stack = [{ocaml, Function, Args, [{error_info, #{module => ocaml,
                                                                      pretty_printer => fun io_lib:write/1}}]}],
                     maps:map(fun(_, Text) -> unicode:characters_to_list(Text) end,
                              ocaml:format_error(badarg, Stack))
             end,
    ?assertEqual(#{1 => "the options are a map, not a keyword list: "
                        "%{plugins: [\"priv/mathlib.cmxs\"], pool_size: 2}"},
                 Elixir(start_link, [[{plugins, []}]])),
    ?assertEqual(#{2 => "the name of an OCaml function is an atom, such as :fib, not a string"},
                 Elixir(call, [self(), <<"fib">>, []])),
    ?assertEqual(#{2 => "not {Module, Function}: that is a tuple of two atoms, such as {:mathlib, :fib}"},
                 Elixir(cast, [self(), {<<"mathlib">>, <<"fib">>}, []])),
    ?assertEqual(#{4 => "not a timeout: milliseconds (a non-negative integer) or :infinity"},
                 Elixir(call, [self(), fib, [], nil])).

%% Arguments of the right type raise nothing, whatever the pool: a pool that does not
%% exist is a value.
good_arguments_test() ->
    ?assertEqual({error, noproc}, ocaml:call(no_such_pool, fib, [1])),
    ?assertEqual({error, noproc}, ocaml:call(no_such_pool, fib, [1], infinity)),
    ?assertEqual(ok, ocaml:cast(no_such_pool, fib, [])),
    ?assertEqual({error, noproc}, ocaml:call(no_such_pool, {mathlib, fib}, [1])),
    ?assertEqual(ok, ocaml:cast(no_such_pool, {mathlib, fib}, [])),
    ?assertEqual([], ocaml:exports(no_such_pool)),
    ?assertEqual({error, noproc}, ocaml:load(no_such_pool, <<"a.cmxs">>)),
    ?assertEqual(ok, ocaml:stop(no_such_pool)),
    ?assertEqual([], ocaml:workers(no_such_pool)),
    ?assertEqual(#{}, ocaml:format_error(badarg, [{ocaml, call, [self(), fib, [], 5], []}])).

%%% Couplings

%% The node transport needs a distributed VM (EUnit's is not): a pool of it is refused
%% before anything starts (no application needed), with an error format_error/1 says in a
%% sentence, and child_spec/1 raises it as any bad option.
node_transport_needs_distribution_test() ->
    false = erlang:is_alive(),
    Error = not_distributed,
    ?assertEqual({error, Error}, ocaml:start(#{transport => node})),
    ?assertEqual({error, Error}, ocaml:start_link(#{transport => node, pool_size => 2})),
    ?assertError({bad_pool_options, Error}, ocaml:child_spec(#{transport => node})),
    ?assertEqual("the node transport needs this VM to be a distributed node (erl -sname Name, or "
                 "net_kernel:start/2)", ocaml:format_error(Error)).
