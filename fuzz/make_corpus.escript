#!/usr/bin/env escript
%% -*- erlang -*-
%% Regenerates the seed corpora from a live OTP node, so every seed is bytes that real
%% Erlang produces (or, for the pre-OTP-23 forms it no longer writes, accepts):
%%   fuzz/make_corpus.escript            (run from anywhere; needs erl on PATH)
%% Writes fuzz/corpus/etf_decode/<name>.etf and fuzz/corpus/etf_text/<name>.txt.
-mode(compile).

main(_) ->
    Dir = filename:dirname(escript:script_name()),
    Etf = filename:join([Dir, "corpus", "etf_decode"]),
    Text = filename:join([Dir, "corpus", "etf_text"]),
    [ok = filelib:ensure_path(D) || D <- [Etf, Text]],
    [begin whole(Name, Bin), write(Etf, Name, ".etf", Bin) end || {Name, Bin} <- etf_seeds()],
    [write(Text, Name, ".txt", unicode:characters_to_binary(T)) || {Name, T} <- text_seeds()],
    io:format("~b etf seeds, ~b text seeds~n", [length(etf_seeds()), length(text_seeds())]).

%% Every seed is one complete term: binary_to_term/2 uses all of its bytes.
whole(Name, Bin) ->
    case binary_to_term(Bin, [used]) of
        {_, Used} when Used =:= byte_size(Bin) -> ok;
        {_, Used} -> error({trailing_bytes, Name, byte_size(Bin) - Used})
    end.

write(Dir, Name, Ext, Data) ->
    ok = file:write_file(filename:join(Dir, Name ++ Ext), Data).

%% A fun with one free variable: NEW_FUN_EXT with a non-empty environment.
closure(X) -> fun() -> X end.

terms() ->
    [{small_integer, 7}, {integer, -300}, {small_big, 1 bsl 40}, {negative_big, -(1 bsl 70)},
     {large_big, 1 bsl 2100}, {new_float, 1.5}, {negative_zero, -0.0},
     {atom_latin1, foo}, {atom_latin1_high, 'h\x{e9}llo'},
     {small_atom_utf8, list_to_atom([16#1F600, $x])},
     {atom_utf8, list_to_atom(lists:duplicate(64, 16#1F600))},
     {binary, <<1, 2, 3>>}, {empty_binary, <<>>}, {bitstring, <<1, 2, 3:5>>},
     {nil, []}, {string, "hello"}, {proper_list, [1, foo, <<"x">>]},
     {improper_list, [1, foo | bar]}, {empty_tuple, {}}, {small_tuple, {a, 1, "b"}},
     {large_tuple, list_to_tuple(lists:seq(1, 300))}, {empty_map, #{}},
     {small_map, #{a => 1, 2 => b, "k" => [v]}},
     {hash_map, maps:from_list([{I, I * I} || I <- lists:seq(1, 40)])},
     {pid, self()}, {port, hd(erlang:ports())}, {reference, make_ref()},
     {export_fun, fun lists:map/2}, {local_fun, fun(X) -> X end}, {closure, closure({7, x})},
     {nested, {ok, [#{key => {1.0, <<"v">>}}, [[[]]], {{{}}}], "str", -(1 bsl 64)}}].

etf_seeds() ->
    [{atom_to_list(N), term_to_binary(T)} || {N, T} <- terms()] ++
    [{"minor2_" ++ atom_to_list(N), term_to_binary(T, [{minor_version, 2}])}
     || {N, T} <- terms(), is_atom(T)] ++
    [{"old_float", term_to_binary(2.5, [{minor_version, 0}])},
     {"compressed_list", term_to_binary(lists:duplicate(200, 0), [compressed])},
     {"compressed_nested", term_to_binary(element(2, lists:last(terms())), [{compressed, 9}])},
     {"compressed_binary", term_to_binary(binary:copy(<<"abc">>, 100), [compressed])}] ++
    %% Forms OTP 25 no longer writes but still reads (binary_to_term accepts each).
    [{Name, binary:decode_hex(Hex)} || {Name, Hex} <-
        [{"old_pid", <<"836764000161000000010000000203">>},
         {"old_port", <<"8366640001610000000103">>},
         {"old_reference", <<"8365640001610000000103">>},
         {"new_reference", <<"83720001640001610300000001">>},
         {"v4_port", <<"837864000161000000010000000200000003">>},
         {"small_atom_latin1", <<"837303666F6F">>},
         {"bit_binary_8_bits", <<"834D0000000108AB">>},
         {"empty_list_ext", <<"836C000000006A">>},
         {"list_tail_chain", <<"836C0000000161016C0000000161026A">>},
         {"non_minimal_big", <<"836E040101000000">>}]].

%% Erlang syntax as ~tp prints it, plus the pid/port/reference spellings with a node that
%% Term::to_string() writes and parse_term() reads (Erlang's own <0.9.0> names no node).
text_seeds() ->
    Printable = [{atom_to_list(N), T} || {N, T} <- terms(),
                                          not (is_function(T) orelse is_pid(T) orelse
                                               is_port(T) orelse is_reference(T))] ++
        [{"quoted_atom", 'hello world'},
         {"float_exp", 1.0e-300}, {"bits", <<5:3>>}],
    [{Name, io_lib:format("~tp", [T])} || {Name, T} <- Printable] ++
    [{"pid", "#Pid<'nonode@nohost'.9.0.0>"}, {"port", "#Port<'a@h'.5.1>"},
     {"reference", "#Ref<'a@h'.1.2.3.4>"}, {"export_fun", "fun lists:map/2"},
     {"unicode_string", "\"\x{1F600}a\""},
     {"radix_char", "{16#FF, $a, -2#101}"}, {"map_of_lists", "#{[1|2] => \"s\", a => <<1,2,3:5>>}"}].
