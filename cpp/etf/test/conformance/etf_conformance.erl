%% The Erlang half of the ETF conformance test (see run_conformance.sh for the whole flow).
%%
%% generate: builds hand-picked edge-case terms plus Count random terms from a seeded PRNG,
%% and writes, for each term, what OTP itself makes of it: term_to_binary/1 (minor
%% version 1), term_to_binary(T, [{minor_version, 2}]) and, for a subset, compressed forms.
%% It also checks that the terms cover every kind of term the codec must handle, so a
%% change to the generator cannot silently drop a case.
%%
%% check: reads back the generated file and the file of encodings the C++ codec produced
%% for the same records, and checks that binary_to_term of each of our encodings is =:= to
%% the original term.
%%
%% Both files hold records of the same shape (the C++ driver reads and writes it too):
%%
%%   file   = magic record*
%%   record = u32 form_count, u8 flags, form*
%%   form   = u8 minor_version, u8 compression_level (0 = none), u32 size, bytes
%%
%% The first two forms of a record are always {1, 0} and {2, 0}. Flag bit 0 (VM-specific
%% map order) marks a term holding a map of more than 32 keys whose order on the wire no
%% encoder outside the VM that wrote it can know: see has_vm_specific_hash/1.
-module(etf_conformance).

-export([generate/1, check/1]).

-define(MAGIC, <<"CBETFC2\n">>).
-define(FLAG_VM_SPECIFIC_MAP_ORDER, 1).

%% Every node this module runs in halts by itself after this long, whatever happens.
-define(WATCHDOG_MS, 120000).

%% How many mismatches are printed in full before the rest are only counted.
-define(MAX_REPORTED, 5).

%% Random terms: maximum nesting of the generator, and how often one gets a compressed form.
-define(RANDOM_DEPTH, 3).
-define(COMPRESS_EVERY, 8).

%% Compressed forms, as {minor_version, level}: a small edge case gets them all; a large
%% one (at least LARGE_TERM bytes) and every COMPRESS_EVERY-th random term get one, in turn.
-define(COMPRESSED_FORMS, {{1, 1}, {2, 6}, {1, 9}, {2, 1}, {1, 6}, {2, 9}}).
-define(LARGE_TERM, 65536).

-define(MAX_ATOM_CHARS, 255).
-define(INT64_MIN, -(1 bsl 63)).
-define(INT64_MAX, (1 bsl 63) - 1).
%% OTP 25 writes a port as NEW_PORT_EXT only when its id fits in 28 bits [seen].
-define(PORT_V3_LIMIT, (1 bsl 28)).

%%% ===================================================================================
%%% Entry points (erl -run etf_conformance generate|check Args...). Both halt the node.
%%% ===================================================================================

generate([File, SeedText, CountText]) ->
    run_step("generate", fun() ->
        Seed = list_to_integer(SeedText),
        Count = list_to_integer(CountText),
        _ = rand:seed(exsss, Seed),
        Pools = make_pools(),
        Specials = special_terms(Pools),
        {ok, Out} = file:open(File, [write, raw, binary, {delayed_write, 1 bsl 20, 2000}]),
        ok = file:write(Out, ?MAGIC),
        Stats0 = #{features => #{}, records => 0, forms => 0, compressed => #{}},
        Stats1 = lists:foldl(fun({I, Term}, Acc) -> emit(Out, Term, {special, I}, Acc) end,
                             Stats0, lists:enumerate(Specials)),
        Stats = lists:foldl(
                  fun(I, Acc) -> emit(Out, random_term(Pools, ?RANDOM_DEPTH), {random, I}, Acc) end,
                  Stats1, lists:seq(1, Count)),
        ok = file:close(Out),
        report_generated(Stats, length(Specials), Count)
    end).

check([InputFile, OursFile]) ->
    run_step("check", fun() ->
        Theirs = read_records(InputFile),
        Ours = read_records(OursFile),
        case length(Theirs) =:= length(Ours) of
            true -> check_records(Theirs, Ours);
            false ->
                io:format("(b) FAILED: ~s holds ~b records but ~s holds ~b~n",
                          [InputFile, length(Theirs), OursFile, length(Ours)]),
                failed
        end
    end).

%% Runs one step under a watchdog and turns its outcome into the node's exit status:
%% 0 passed, 1 failed, 2 crashed, 3 timed out.
run_step(Name, Step) ->
    spawn(fun() ->
                  timer:sleep(?WATCHDOG_MS),
                  io:format(standard_error, "~s: timed out after ~b ms~n", [Name, ?WATCHDOG_MS]),
                  erlang:halt(3)
          end),
    Status = try Step() of
                 ok -> 0;
                 failed -> 1
             catch
                 Class:Reason:Stack ->
                     io:format(standard_error, "~s crashed: ~p:~p~n~p~n",
                               [Name, Class, Reason, Stack]),
                     2
             end,
    erlang:halt(Status).

%%% ===================================================================================
%%% Writing records
%%% ===================================================================================

compressed_forms({special, _}, PlainSize) when PlainSize < ?LARGE_TERM ->
    tuple_to_list(?COMPRESSED_FORMS);
compressed_forms({special, I}, _) ->
    [nth_compressed_form(I)];
compressed_forms({random, I}, _) when I rem ?COMPRESS_EVERY =:= 0 ->
    [nth_compressed_form(I div ?COMPRESS_EVERY)];
compressed_forms({random, _}, _) ->
    [].

nth_compressed_form(I) ->
    element(I rem tuple_size(?COMPRESSED_FORMS) + 1, ?COMPRESSED_FORMS).

emit(Out, Term, Origin, Stats) ->
    Plain = encode(Term, 1, 0),
    Forms = [{1, 0, Plain}
             | [{Minor, Level, encode(Term, Minor, Level)}
                || {Minor, Level} <- [{2, 0} | compressed_forms(Origin, byte_size(Plain))]]],
    [assert_otp_round_trip(Origin, Term, Form) || Form <- Forms],
    TermFeatures = term_features(Term),
    Flags = case lists:member(hashmap_vm_specific_order, TermFeatures) of
                true -> ?FLAG_VM_SPECIFIC_MAP_ORDER;
                false -> 0
            end,
    ok = file:write(Out, [<<(length(Forms)):32, Flags>>
                          | [[<<Minor, Level, (byte_size(B)):32>>, B] || {Minor, Level, B} <- Forms]]),
    #{features := Features, records := Records, forms := NForms, compressed := Zipped} = Stats,
    Stats#{features := lists:foldl(fun bump/2, Features, TermFeatures),
           records := Records + 1,
           forms := NForms + length(Forms),
           compressed := lists:foldl(fun count_compressed/2, Zipped, Forms)}.

%% The checker compares our encodings with what OTP decodes from its own, so every term
%% must survive OTP's own round trip; one that does not is an OTP quirk to steer clear of.
assert_otp_round_trip(Origin, Term, {Minor, Level, Bytes}) ->
    case binary_to_term(Bytes) of
        Term -> ok;
        _ -> error({otp_does_not_round_trip, Origin, Minor, Level, Term})
    end.

%% term_to_binary/1 itself for the default, so the test pins what callers actually get.
encode(Term, 1, 0) -> term_to_binary(Term);
encode(Term, Minor, 0) -> term_to_binary(Term, [{minor_version, Minor}]);
encode(Term, Minor, Level) -> term_to_binary(Term, [{minor_version, Minor}, {compressed, Level}]).

%% term_to_binary keeps the plain form when compressing does not make it smaller, so count
%% the forms that really are compressed: coverage requires some at every level.
count_compressed({_, Level, <<131, 80, _/binary>>}, Acc) -> bump({compressed, Level}, Acc);
count_compressed(_, Acc) -> Acc.

bump(Key, Map) -> maps:update_with(Key, fun(N) -> N + 1 end, 1, Map).

report_generated(#{features := Features, records := Records, forms := Forms,
                   compressed := Zipped}, NSpecials, NRandom) ->
    io:format("generated ~b terms (~b edge cases + ~b random) in ~b encodings, "
              "~b of them zlib-compressed~n",
              [Records, NSpecials, NRandom, Forms, lists:sum(maps:values(Zipped))]),
    Counted = maps:merge(Features, Zipped),
    io:format("coverage (terms per feature):~n~s~n",
              [[io_lib:format("  ~w ~b~n", [F, N]) || {F, N} <- lists:sort(maps:to_list(Counted))]]),
    case [F || F <- required_features(), not maps:is_key(F, Counted)] of
        [] -> ok;
        Missing ->
            io:format("generate FAILED: no generated term has ~p~n", [Missing]),
            failed
    end.

%%% ===================================================================================
%%% Reading records and checking our encodings (direction b)
%%% ===================================================================================

read_records(File) ->
    {ok, Bin} = file:read_file(File),
    MagicSize = byte_size(?MAGIC),
    case Bin of
        <<Magic:MagicSize/binary, Rest/binary>> when Magic =:= ?MAGIC -> parse_records(Rest, []);
        _ -> error({bad_magic, File})
    end.

parse_records(<<>>, Acc) ->
    lists:reverse(Acc);
parse_records(<<N:32, _Flags, Rest0/binary>>, Acc) ->
    {Forms, Rest} = parse_forms(N, Rest0, []),
    parse_records(Rest, [Forms | Acc]).

parse_forms(0, Rest, Acc) ->
    {lists:reverse(Acc), Rest};
parse_forms(N, <<Minor, Level, Size:32, Bytes:Size/binary, Rest/binary>>, Acc) ->
    parse_forms(N - 1, Rest, [{Minor, Level, Bytes} | Acc]).

check_records(Theirs, Ours) ->
    {Passed, Failed} = check_records(Theirs, Ours, 0, {0, 0}),
    io:format("(b) binary_to_term of our encodings: ~b passed, ~b failed~n", [Passed, Failed]),
    case Failed of
        0 -> ok;
        _ -> failed
    end.

check_records([], [], _, Counts) ->
    Counts;
check_records([TheirForms | Theirs], [OurForms | Ours], Index, Counts0) ->
    %% The original term, read back through OTP itself from its own default encoding.
    [{1, 0, Original} | _] = TheirForms,
    Term = binary_to_term(Original),
    length(TheirForms) =:= length(OurForms)
        orelse error({form_count_mismatch, Index, length(TheirForms), length(OurForms)}),
    Counts = lists:foldl(fun(Pair, Acc) -> check_form(Index, Term, Pair, Acc) end,
                         Counts0, lists:zip(TheirForms, OurForms)),
    check_records(Theirs, Ours, Index + 1, Counts).

check_form(Index, Term, {{Minor, Level, TheirBytes}, {Minor, Level, OurBytes}}, {P, F}) ->
    case decode_ours(OurBytes) of
        {ok, Decoded} when Decoded =:= Term ->
            {P + 1, F};
        Outcome when F < ?MAX_REPORTED ->
            report_mismatch(Index, Minor, Level, Term, Outcome, TheirBytes, OurBytes),
            {P, F + 1};
        _ ->
            {P, F + 1}
    end;
check_form(Index, _, {{Minor, Level, _}, {OurMinor, OurLevel, _}}, _) ->
    error({form_mismatch, Index, {Minor, Level}, {OurMinor, OurLevel}}).

%% An empty encoding is the C++ driver's way of saying its codec failed on this form.
decode_ours(<<>>) ->
    {error, no_encoding_from_cpp};
decode_ours(Bytes) ->
    try binary_to_term(Bytes) of
        T -> {ok, T}
    catch
        error:Reason -> {error, Reason}
    end.

report_mismatch(Index, Minor, Level, Term, Outcome, TheirBytes, OurBytes) ->
    io:format("(b) MISMATCH record ~b (minor_version ~b, compression ~b):~n"
              "  original term:    ~P~n", [Index, Minor, Level, Term, 12]),
    case Outcome of
        {ok, Decoded} -> io:format("  ours decodes to:  ~P~n", [Decoded, 12]);
        {error, Why} -> io:format("  ours is rejected: ~p~n", [Why])
    end,
    io:format("  Erlang bytes (~b): ~s~n  our bytes    (~b): ~s~n",
              [byte_size(TheirBytes), hex_prefix(TheirBytes),
               byte_size(OurBytes), hex_prefix(OurBytes)]).

hex_prefix(Bytes) ->
    Shown = binary:part(Bytes, 0, min(byte_size(Bytes), 96)),
    Hex = lists:join(" ", [io_lib:format("~2.16.0B", [B]) || <<B>> <= Shown]),
    [Hex, [" ..." || byte_size(Bytes) > byte_size(Shown)]].

%%% ===================================================================================
%%% Pools: the finite sets random terms draw atoms, node names and local identifiers from.
%%% Atoms are never freed, so random terms reuse a pool instead of minting new ones.
%%% ===================================================================================

make_pools() ->
    Port = open_port({spawn_executable, "/bin/true"}, []),
    #{atoms => list_to_tuple(edge_atoms() ++ [random_atom() || _ <- lists:seq(1, 400)]),
      nodes => list_to_tuple([atom_ext(Name) || Name <- short_node_names()]),
      long_nodes => list_to_tuple([atom_ext(Name) || Name <- long_node_names()]),
      local_pids => list_to_tuple([self() | [spawn(fun idle/0) || _ <- lists:seq(1, 8)]]),
      local_ports => list_to_tuple([Port | erlang:ports()]),
      ref_words => {1, 2, 3, 4, 5}}.

%% The pools for map keys: only 3-word references, the size OTP 25 itself makes. With other
%% sizes OTP 25's maps misbehave [seen]: two keys that differ only after their third word
%% crash the VM (a segfault in maps:from_list building a HAMT), and #Ref<N.1> and
%% #Ref<N.0.1>, which are =:=, are both kept as keys of one map.
key_pools(Pools) ->
    Pools#{ref_words := {3}}.

idle() ->
    receive stop -> ok end.

pick(Tuple) when is_tuple(Tuple) -> element(rand:uniform(tuple_size(Tuple)), Tuple);
pick(List) when is_list(List) -> lists:nth(rand:uniform(length(List)), List).

pool(Name, Pools) -> pick(maps:get(Name, Pools)).

%% Code points of each UTF-8 width (surrogates are not characters, so atoms reject them).
code_point(ascii) -> rand:uniform(128) - 1;
code_point(latin1_high) -> 127 + rand:uniform(128);
code_point(two_byte) -> 16#FF + rand:uniform(16#700);
code_point(three_byte) ->
    C = 16#7FF + rand:uniform(16#F800),
    case C >= 16#D800 andalso C =< 16#DFFF of
        true -> code_point(three_byte);
        false -> C
    end;
code_point(four_byte) -> 16#FFFF + rand:uniform(16#100000).

chars(N, Width) -> [code_point(Width) || _ <- lists:seq(1, N)].

%% Atoms at the limits of both atom encodings: 255 characters at every UTF-8 width, and
%% UTF-8 sizes of exactly 255 and 256 bytes (SMALL_ATOM_UTF8_EXT vs ATOM_UTF8_EXT).
edge_atoms() ->
    [list_to_atom(Chars)
     || Chars <- ["", "a", "ok", "true", "false", "undefined", "hello world", [0],
                  "\x{e9}t\x{e9}", lists:seq(128, 255), lists:seq(1, 127)]
            ++ [chars(?MAX_ATOM_CHARS, W)
                || W <- [ascii, latin1_high, two_byte, three_byte, four_byte]]
            ++ [chars(85, three_byte),                          % 255 bytes
                chars(127, two_byte) ++ "x",                    % 255 bytes
                chars(128, two_byte),                           % 256 bytes
                chars(64, four_byte),                           % 256 bytes
                chars(63, four_byte) ++ chars(1, three_byte)]]. % 255 bytes

random_atom() ->
    Length = case rand:uniform(10) of
                 1 -> rand:uniform(?MAX_ATOM_CHARS + 1) - 1;
                 N when N =< 4 -> rand:uniform(32);
                 _ -> rand:uniform(8)
             end,
    case rand:uniform(4) of
        1 -> list_to_atom(chars(Length, ascii));
        2 -> list_to_atom(chars(Length, latin1_high));
        3 -> list_to_atom(chars(Length, pick([two_byte, three_byte, four_byte])));
        4 -> list_to_atom([code_point(pick([ascii, latin1_high, two_byte, three_byte, four_byte]))
                           || _ <- lists:seq(1, Length)])
    end.

%% Other nodes' names: ASCII, Latin-1 and UTF-8, and as long as an atom can be.
short_node_names() ->
    ['other@host', 'a@b', 'n\x{e9}ud@h\x{f4}te', list_to_atom("узел@хост")].

long_node_names() ->
    [list_to_atom(chars(?MAX_ATOM_CHARS - 2, four_byte) ++ "@h"),
     list_to_atom(lists:duplicate(?MAX_ATOM_CHARS - 5, $n) ++ "@host")].

%% The ATOM_EXT/SMALL_ATOM_UTF8_EXT/ATOM_UTF8_EXT bytes of an atom, as OTP writes them:
%% what a crafted NEW_PID/V4_PORT/NEWER_REFERENCE carries as its node.
atom_ext(Atom) ->
    <<131, Ext/binary>> = term_to_binary(Atom),
    Ext.

%% Identifiers of other nodes, made the only way Erlang can: by decoding crafted bytes.
%% References have 1 to 5 words: OTP 25 decodes a 0-word NEWER_REFERENCE_EXT on its own,
%% but not inside a list, so it is no term OTP can exchange [seen].
foreign_pid(NodeExt, Id, Serial, Creation) ->
    binary_to_term(<<131, 88, NodeExt/binary, Id:32, Serial:32, Creation:32>>).

foreign_port(NodeExt, Id, Creation) ->
    binary_to_term(<<131, 120, NodeExt/binary, Id:64, Creation:32>>).

foreign_ref(NodeExt, Creation, Words) ->
    binary_to_term(<<131, 90, (length(Words)):16, NodeExt/binary, Creation:32,
                     <<<<W:32>> || W <- Words>>/binary>>).

u32_edge() -> pick([0, 1, 255, 16#7FFF, ?PORT_V3_LIMIT - 1, ?PORT_V3_LIMIT, 16#7FFFFFFF,
                    16#80000000, 16#FFFFFFFF, rand:uniform(1 bsl 32) - 1]).

port_id_edge() -> pick([u32_edge(), 1 bsl 32, 1 bsl 40, (1 bsl 64) - 1,
                        rand:uniform(1 bsl 64) - 1]).

random_foreign(Pools) ->
    Node = case rand:uniform(10) of
               1 -> pool(long_nodes, Pools);
               _ -> pool(nodes, Pools)
           end,
    case rand:uniform(3) of
        1 -> foreign_pid(Node, u32_edge(), u32_edge(), u32_edge());
        2 -> foreign_port(Node, port_id_edge(), u32_edge());
        3 -> foreign_ref(Node, u32_edge(), [u32_edge() || _ <- lists:seq(1, pool(ref_words, Pools))])
    end.

%%% ===================================================================================
%%% Random terms
%%% ===================================================================================

%% Depth bounds the nesting. Containers whose children are leaves (Depth 1) may be long;
%% deeper ones hold a few children, which keeps the average term a few hundred bytes.
random_term(Pools, Depth) when Depth =< 0 ->
    random_leaf(Pools);
random_term(Pools, Depth) ->
    case rand:uniform(20) of
        N when N =< 8 -> random_leaf(Pools);
        N when N =< 11 -> random_list(Pools, Depth - 1);
        N when N =< 14 -> random_tuple(Pools, Depth - 1);
        N when N =< 17 -> random_map(Pools, Depth - 1);
        _ -> random_fun(Pools, Depth - 1)
    end.

random_leaf(Pools) ->
    case rand:uniform(10) of
        1 -> random_integer();
        2 -> random_integer();
        3 -> random_float();
        4 -> pool(atoms, Pools);
        5 -> random_binary();
        6 -> random_bitstring();
        7 -> [];
        8 -> pick([pool(local_pids, Pools), pool(local_ports, Pools), make_ref()]);
        9 -> random_foreign(Pools);
        10 -> random_export_fun(Pools)
    end.

%% Cheap, small leaves for the very wide edge cases (100,000 elements).
small_leaf(Pools) ->
    case rand:uniform(6) of
        1 -> rand:uniform(256) - 1;
        2 -> rand:uniform(1 bsl 32) - (1 bsl 31) - 1;
        3 -> rand:uniform();
        4 -> pick([a, b, ok, 'é', []]);
        5 -> rand:bytes(rand:uniform(4) - 1);
        6 -> pool(local_pids, Pools)
    end.

small_leaves(Pools, N) -> [small_leaf(Pools) || _ <- lists:seq(1, N)].

%% Short lengths mostly, with a tail long enough to cross the encodings' size limits.
random_length() ->
    case rand:uniform(100) of
        N when N =< 5 -> 0;
        N when N =< 75 -> rand:uniform(4);
        N when N =< 99 -> 4 + rand:uniform(28);
        _ -> rand:uniform(300)
    end.

%% The number of children of a container whose children have the given depth.
child_count(0) -> random_length();
child_count(_) -> rand:uniform(5) - 1.

random_integer() ->
    Sign = pick([1, -1]),
    case rand:uniform(8) of
        1 -> rand:uniform(256) - 1;                             % SMALL_INTEGER_EXT
        2 -> -rand:uniform(255);                                % INTEGER_EXT
        3 -> rand:uniform(1 bsl 32) - (1 bsl 31) - 1;           % INTEGER_EXT
        %% 2^59: where OTP's small integers end and its bignums begin (64-bit VM).
        4 -> near(Sign * pick([256, 1 bsl 27, 1 bsl 31, 1 bsl 32, 1 bsl 59, 1 bsl 63,
                               1 bsl 64, 1 bsl (8 * 255), 1 bsl (8 * 256)]));
        5 -> pick([?INT64_MIN, ?INT64_MAX, ?INT64_MIN - 1, ?INT64_MAX + 1]);
        _ -> Sign * random_magnitude(pick([rand:uniform(9), rand:uniform(40), rand:uniform(300)]))
    end.

near(N) -> N + rand:uniform(5) - 3.

%% A positive integer of exactly Bytes bytes.
random_magnitude(Bytes) ->
    <<High, Low/binary>> = rand:bytes(Bytes),
    binary:decode_unsigned(<<(max(High, 1)), Low/binary>>).

random_float() ->
    case rand:uniform(5) of
        1 -> pick(edge_floats());
        2 -> float_from_bits();
        3 -> (rand:uniform() - 0.5) * math:pow(10, rand:uniform(600) - 300);
        4 -> float(rand:uniform(2001) - 1001);  % numerically equal to an integer
        5 -> rand:normal()
    end.

float_of_bits(Bits) ->
    <<F/float>> = <<Bits:64>>,
    F.

%% Any finite double; the match fails for NaN and the infinities, so draw again.
float_from_bits() ->
    case <<(rand:uniform(1 bsl 64) - 1):64>> of
        <<F/float>> -> F;
        _ -> float_from_bits()
    end.

%% -0.0 is built from its bits: OTP 25 treats 0.0 and -0.0 as the same literal.
edge_floats() ->
    [0.0, float_of_bits(1 bsl 63), 1.0, -1.0, 0.1, 0.5, 1.0e15, 1.0e16, 9007199254740992.0,
     float_of_bits(1), float_of_bits(1 bsl 63 + 1),        % smallest subnormals, both signs
     float_of_bits(16#000FFFFFFFFFFFFF),                    % largest subnormal
     2.2250738585072014e-308, 1.7976931348623157e308, -1.7976931348623157e308].

random_binary() ->
    case rand:uniform(10) of
        1 -> binary:part(rand:bytes(64), rand:uniform(32), rand:uniform(31)); % a sub-binary
        _ -> rand:bytes(random_length())
    end.

random_bitstring() ->
    Bits = rand:uniform(7),
    <<(rand:bytes(random_length()))/binary, (rand:uniform(1 bsl Bits) - 1):Bits>>.

random_list(Pools, Depth) ->
    case rand:uniform(6) of
        1 -> random_terms(Pools, Depth, child_count(Depth));
        2 -> random_terms(Pools, Depth, child_count(Depth)) ++ random_leaf(Pools); % often improper
        3 -> byte_list(random_length() + 1);
        4 -> byte_list(random_length() + 1) ++ random_leaf(Pools);
        5 -> almost_string(Pools);
        6 -> [random_term(Pools, Depth) | random_term(Pools, Depth)]
    end.

random_terms(Pools, Depth, N) -> [random_term(Pools, Depth) || _ <- lists:seq(1, N)].

byte_list(N) -> binary_to_list(rand:bytes(N)).

%% A byte list spoiled by one element, so it must not be written as STRING_EXT.
almost_string(Pools) ->
    Bytes = byte_list(rand:uniform(40)),
    {Before, After} = lists:split(rand:uniform(length(Bytes) + 1) - 1, Bytes),
    Spoiler = pick([256, -1, 1.0, 1 bsl 70, pool(atoms, Pools), <<"x">>, "x"]),
    Before ++ [Spoiler | After].

random_tuple(Pools, 0) ->
    case rand:uniform(100) of
        1 -> list_to_tuple(small_leaves(Pools, pick([255, 256, 257, rand:uniform(600)])));
        _ -> list_to_tuple(random_terms(Pools, 0, random_length() rem 12))
    end;
random_tuple(Pools, Depth) ->
    list_to_tuple(random_terms(Pools, Depth, child_count(Depth))).

%% Maps of up to 32 keys are flatmaps, larger ones HAMTs, which OTP writes in the order of
%% its keys' hashes. Keys are at most one level deep, so that large maps see composite keys
%% while the nesting still ends. Half the large maps have only portable keys, the kind
%% whose hash, and so whose order on the wire, does not depend on the VM
%% (see has_vm_specific_hash/1).
random_map(Pools, 0) ->
    case rand:uniform(30) of
        1 -> random_map(Pools, 0, 32 + rand:uniform(100), pick([any, portable]));
        2 -> random_map(Pools, 0, pick([31, 32, 33]), pick([any, portable]));
        _ -> random_map(Pools, 0, random_length() rem 10, any)
    end;
random_map(Pools, 1) ->
    case rand:uniform(30) of
        1 -> random_map(Pools, 1, 32 + rand:uniform(50), pick([any, portable]));
        _ -> random_map(Pools, 1, child_count(1), any)
    end;
random_map(Pools, Depth) ->
    random_map(Pools, Depth, child_count(Depth), any).

random_map(Pools, Depth, NKeys, KeyKind) ->
    KeyPools = key_pools(Pools),
    Key = fun(any) -> random_term(KeyPools, min(Depth, 1));
             (portable) -> portable_term(min(Depth, 1))
          end,
    Pairs = [{Key(KeyKind), random_term(Pools, Depth)} || _ <- lists:seq(1, NKeys)],
    maps:from_list(Pairs ++ numerically_equal_keys(Pools)).

%% Terms without atoms, pids, ports, references or funs.
portable_term(0) ->
    case rand:uniform(5) of
        1 -> random_integer();
        2 -> random_float();
        3 -> random_binary();
        4 -> random_bitstring();
        5 -> pick([[], byte_list(random_length() + 1)])
    end;
portable_term(Depth) ->
    Children = fun() -> [portable_term(Depth - 1) || _ <- lists:seq(1, child_count(Depth - 1))] end,
    case rand:uniform(4) of
        1 -> Children();
        2 -> list_to_tuple(Children());
        3 -> maps:from_list([{portable_term(Depth - 1), portable_term(Depth - 1)}
                             || _ <- lists:seq(1, child_count(Depth - 1))]);
        4 -> portable_term(0)
    end.

%% Sometimes an integer key and the float of the same value: distinct map keys, adjacent
%% in the key order.
numerically_equal_keys(Pools) ->
    case rand:uniform(4) of
        1 ->
            I = pick([0, 1, -1, rand:uniform(1000), 1 bsl 53, 1 bsl 70, -(1 bsl 64)]),
            [{I, random_leaf(Pools)}, {float(I), random_leaf(Pools)}];
        _ -> []
    end.

random_export_fun(Pools) ->
    erlang:make_fun(pool(atoms, Pools), pool(atoms, Pools), rand:uniform(256) - 1).

%% Local funs of several shapes (arity, number of free variables); the free variables are
%% random terms, often funs themselves.
random_fun(Pools, Depth) ->
    Env = fun() -> case rand:uniform(3) of
                       1 when Depth > 0 -> random_fun(Pools, Depth - 1);
                       _ -> random_term(Pools, Depth)
                   end
          end,
    case rand:uniform(5) of
        1 -> random_export_fun(Pools);
        2 -> fun() -> no_free_variables end;
        3 -> closure(Env());
        4 -> closure(Env(), Env());
        5 -> closure(Env(), Env(), Env())
    end.

closure(A) -> fun() -> A end.
closure(A, B) -> fun(X) -> {X, A, B} end.
closure(A, B, C) -> fun(X, Y) -> [X, Y, A, B, C] end.

%%% ===================================================================================
%%% Hand-picked edge cases: every limit of every encoding, whatever the random draw.
%%% ===================================================================================

special_terms(Pools) ->
    lists:append([scalar_edges(Pools), identifier_edges(Pools), container_edges(Pools),
                  map_edges(Pools), fun_edges(Pools), deep_terms(Pools)]).

scalar_edges(Pools) ->
    Powers = [1 bsl B || B <- [8, 27, 31, 32, 63, 64, 8 * 255, 8 * 256]],
    Integers = [0, 255, 256, -1, -255, -256, ?INT64_MIN, ?INT64_MAX, ?INT64_MIN - 1,
                ?INT64_MAX + 1, (1 bsl 64) - 1, -(1 bsl 64) + 1]
        ++ [S * (P + D) || P <- Powers, D <- [-1, 0, 1], S <- [1, -1]]
        ++ [S * random_magnitude(100000) || S <- [1, -1]],
    Binaries = [<<>>, <<0>>, rand:bytes(100000), binary:copy(<<0>>, 100000),
                binary:copy(<<"compressible ">>, 8000)],
    Bitstrings = [<<(rand:bytes(N))/binary, 1:Bits>> || N <- [0, 1, 100], Bits <- lists:seq(1, 7)]
        ++ [<<(rand:bytes(100000))/binary, 5:3>>],
    Integers ++ edge_floats() ++ edge_atoms() ++ Binaries ++ Bitstrings
        ++ [[], {}, {maps:get(atoms, Pools)}].

identifier_edges(Pools) ->
    Nodes = tuple_to_list(maps:get(nodes, Pools)) ++ tuple_to_list(maps:get(long_nodes, Pools)),
    Creations = [0, 1, 3, 16#80000000, 16#FFFFFFFF],
    Pids = [foreign_pid(N, Id, Serial, C) || N <- Nodes, C <- Creations,
                                             {Id, Serial} <- [{0, 0}, {16#7FFF, 16#1FFF},
                                                              {16#FFFFFFFF, 16#FFFFFFFF}]],
    Ports = [foreign_port(N, Id, C)
             || N <- Nodes, C <- Creations, Id <- [0, ?PORT_V3_LIMIT - 1, ?PORT_V3_LIMIT, 16#FFFFFFFF,
                                       1 bsl 32, (1 bsl 64) - 1]],
    Refs = [foreign_ref(N, C, lists:duplicate(Words, 16#FFFFFFFF))
            || N <- Nodes, C <- Creations, Words <- lists:seq(1, 5)],
    {_, MonitorRef} = spawn_monitor(fun() -> ok end),
    Local = tuple_to_list(maps:get(local_pids, Pools)) ++ tuple_to_list(maps:get(local_ports, Pools))
        ++ [make_ref(), alias(), MonitorRef],
    Pids ++ Ports ++ Refs ++ Local ++ [list_to_tuple(Local)].

container_edges(Pools) ->
    Strings = [byte_list(N) || N <- [1, 254, 255, 256, 65534, 65535, 65536]],
    Lists = [lists:seq(1, 100000),                           % INTEGER_EXT and SMALL_INTEGER_EXT
             lists:duplicate(65535, 0) ++ [256],             % 65536 elements, not a string
             lists:seq(0, 255) ++ improper_tail,
             [1 | 2], [[] | []], [[]], ["", <<>>, {}],
             random_terms(Pools, 2, 1000),
             small_leaves(Pools, 100000) ++ <<"wide and improper">>],
    Tuples = [list_to_tuple(random_terms(Pools, 1, N)) || N <- [1, 254, 255, 256]]
        ++ [list_to_tuple(small_leaves(Pools, N)) || N <- [65535, 65536, 100000]],
    Strings ++ Lists ++ Tuples.

%% Maps on both sides of the flatmap/HAMT boundary, with keys of every kind, including
%% 1 and 1.0, and HAMTs deep enough to have several levels and rehashed collisions.
map_edges(Pools) ->
    {_, MonitorRef} = spawn_monitor(fun() -> ok end),
    KeyPools = key_pools(Pools),
    %% Small integers are immediate words up to 2^59 and bignums beyond, hashed apart.
    Portable = [1, 1.0, 0, 0.0, -1, -1.0, 255, 256, -256, 1 bsl 70, float(1 bsl 70),
                -(1 bsl 64), 1 bsl 64, (1 bsl 59) - 1, 1 bsl 59, -(1 bsl 59), -(1 bsl 59) - 1,
                2.5, "", "abc", "a string of more than four bytes", [1 | 2], [256, 1], {}, {1},
                {1.0}, #{}, #{1 => 2}, #{1.0 => 2}, <<>>, <<1>>, <<1:1>>, <<255, 3:2>>,
                [<<"nested">>, {[]}]],
    VmSpecific = [a, 'ü', list_to_atom("ключ"), [a, b], {a}, #{a => 1}, self(), make_ref(),
                  MonitorRef, pool(local_ports, Pools), random_foreign(KeyPools),
                  random_foreign(KeyPools), random_foreign(KeyPools), fun erlang:abs/1,
                  closure(1), closure({1.0}, 1)],
    %% Maps of every size from 1 up, with portable keys first.
    Valued = [{K, I} || {I, K} <- lists:enumerate(Portable ++ VmSpecific)],
    PortableValued = lists:sublist(Valued, length(Portable)),
    [maps:from_list(lists:sublist(Valued, N)) || N <- lists:seq(1, length(Valued))]
        ++ [maps:from_list([{I, I} || I <- lists:seq(1, N)]) || N <- [0, 1, 31, 32, 33, 64, 1000]]
        ++ [random_map_of_size(KeyPools, N, #{}) || N <- [32, 33, 500]]
        ++ [maps:from_list([{portable_term(2), I} || I <- lists:seq(1, N)]) || N <- [40, 500]]
        ++ [maps:from_list([{I, I * I} || I <- lists:seq(-50000, 50000)]),
            maps:from_list([{float(I), I} || I <- lists:seq(1, 20000)] ++ PortableValued),
            maps:from_list([{float(I), I} || I <- lists:seq(1, 100)] ++ Valued),
            maps:from_list([{maps:from_list(Valued), Valued}, {Valued, #{deep => #{map => 1}}}])].

%% KeyPools serve the values too, which does no harm.
random_map_of_size(_, N, Map) when map_size(Map) >= N ->
    Map;
random_map_of_size(KeyPools, N, Map) ->
    random_map_of_size(KeyPools, N, Map#{random_term(KeyPools, 2) => random_term(KeyPools, 2)}).

%% Local funs whose environments hold funs, export funs of every arity, and erl_eval funs,
%% whose environments are large terms (bindings and abstract code).
fun_edges(Pools) ->
    Inner = closure(closure(closure(<<"innermost">>), 2), self(), make_ref()),
    Exports = [erlang:make_fun(M, F, A)
               || {M, F} <- [{lists, map}, {erlang, '+'}, {'', ''},
                             {pool(atoms, Pools), pool(atoms, Pools)}],
                  A <- [0, 1, 255]],
    {ok, Tokens, _} = erl_scan:string("fun(X) -> {X, Captured, [Y || Y <- List]} end."),
    {ok, Exprs} = erl_parse:parse_exprs(Tokens),
    Bindings = erl_eval:add_binding('Captured', Inner,
                                    erl_eval:add_binding('List', "list", erl_eval:new_bindings())),
    {value, EvalFun, _} = erl_eval:exprs(Exprs, Bindings),
    [fun() -> ok end, Inner, closure(Inner, Inner, Inner), EvalFun | Exports].

%% Terms nested 10,000 and 100,000 deep (containers open at once while decoding):
%% Erlang encodes them, so the codec must handle them without recursing.
deep_terms(Pools) ->
    [nest(Kind, Depth, pool(atoms, Pools))
     || Depth <- [10000, 100000], Kind <- [tuple, list, map, mixed]]
        ++ [nest(fun_env, 10000, leaf)].

nest(Kind, Depth, Leaf) ->
    lists:foldl(fun(Level, Inner) -> wrap(Kind, Level, Inner) end, Leaf, lists:seq(1, Depth)).

wrap(tuple, _, T) -> {T};
wrap(list, _, T) -> [T];
wrap(map, Level, T) -> #{Level => T};
wrap(fun_env, _, T) -> closure(T);
wrap(mixed, Level, T) ->
    case Level rem 5 of
        0 -> {T};
        1 -> [T];
        2 -> #{key => T};
        3 -> [x | T];
        4 -> closure(T)
    end.

%%% ===================================================================================
%%% Coverage: which kinds of term (per encoding) the generated terms hold
%%% ===================================================================================

required_features() ->
    [small_integer, integer, small_big, large_big, int64_limit, float, negative_zero,
     subnormal, huge_float, atom_ascii, atom_latin1, atom_unicode, atom_255_four_byte,
     atom_utf8_over_255_bytes, empty_binary, binary, binary_100k,
     {bitstring, 1}, {bitstring, 2}, {bitstring, 3}, {bitstring, 4}, {bitstring, 5},
     {bitstring, 6}, {bitstring, 7}, nil, string, string_65535, byte_list_65536, list,
     improper_list, empty_tuple, small_tuple, tuple_255, large_tuple, empty_map, flatmap,
     flatmap_32, hashmap_portable_order, hashmap_vm_specific_order, map_key_map, map_key_tuple,
     map_key_float, numerically_equal_keys,
     local_pid, foreign_pid, local_port, foreign_port, v4_port, local_ref, foreign_ref,
     local_fun, closure, fun_in_closure, export_fun, depth_10000, depth_100000,
     {compressed, 1}, {compressed, 6}, {compressed, 9}].

%% The features a term has, each once.
term_features(Term) ->
    {Features, Depth} = features(Term, #{}),
    maps:keys(Features) ++ [depth_10000 || Depth >= 10000] ++ [depth_100000 || Depth >= 100000].

%% Returns the set of features of a term and its nesting depth in containers.
features(T, Acc) when is_integer(T) -> {Acc#{integer_feature(T) => true}, 0};
features(T, Acc) when is_float(T) -> {float_features(T, Acc#{float => true}), 0};
features(T, Acc) when is_atom(T) -> {atom_features(T, Acc), 0};
features(<<>>, Acc) -> {Acc#{empty_binary => true}, 0};
features(T, Acc) when is_binary(T), byte_size(T) >= 100000 -> {Acc#{binary_100k => true}, 0};
features(T, Acc) when is_binary(T) -> {Acc#{binary => true}, 0};
features(T, Acc) when is_bitstring(T) -> {Acc#{{bitstring, bit_size(T) rem 8} => true}, 0};
features(T, Acc) when is_pid(T) -> {Acc#{locality(T, pid) => true}, 0};
features(T, Acc) when is_reference(T) -> {Acc#{locality(T, ref) => true}, 0};
features(T, Acc) when is_port(T) -> {port_features(T, Acc#{locality(T, port) => true}), 0};
features([], Acc) -> {Acc#{nil => true}, 0};
features(T, Acc) when is_list(T) -> list_features(T, Acc);
features(T, Acc) when is_tuple(T) -> tuple_features(T, Acc);
features(T, Acc) when is_map(T) -> map_features(T, Acc);
features(T, Acc) when is_function(T) -> fun_features(T, Acc).

integer_feature(I) when I >= 0, I =< 255 -> small_integer;
integer_feature(I) when I >= -(1 bsl 31), I < 1 bsl 31 -> integer;
integer_feature(I) when I =:= ?INT64_MIN; I =:= ?INT64_MAX; I =:= ?INT64_MIN - 1;
                        I =:= ?INT64_MAX + 1 -> int64_limit;
integer_feature(I) when abs(I) < 1 bsl (8 * 255) -> small_big;
integer_feature(_) -> large_big.

float_features(F, Acc) ->
    <<Sign:1, Exponent:11, Fraction:52>> = <<F/float>>,
    case {Sign, Exponent, Fraction} of
        {1, 0, 0} -> Acc#{negative_zero => true};
        {_, 0, _} when Fraction =/= 0 -> Acc#{subnormal => true};
        _ when abs(F) > 1.0e300 -> Acc#{huge_float => true};
        _ -> Acc
    end.

atom_features(A, Acc) ->
    Chars = atom_to_list(A),
    Class = case lists:max([0 | Chars]) of
                Max when Max < 128 -> atom_ascii;
                Max when Max < 256 -> atom_latin1;
                _ -> atom_unicode
            end,
    Limits = [atom_255_four_byte || length(Chars) =:= 255, lists:min(Chars) > 16#FFFF]
        ++ [atom_utf8_over_255_bytes || byte_size(atom_to_binary(A, utf8)) > 255],
    set_all([Class | Limits], Acc).

set_all(Features, Acc) -> lists:foldl(fun(F, A) -> A#{F => true} end, Acc, Features).

locality(T, Kind) when node(T) =:= node() -> list_to_atom("local_" ++ atom_to_list(Kind));
locality(_, Kind) -> list_to_atom("foreign_" ++ atom_to_list(Kind)).

%% The port id is not reachable from Erlang, but the encoding shows it.
port_features(Port, Acc) ->
    case term_to_binary(Port) of
        <<131, 120, _/binary>> -> Acc#{v4_port => true};
        _ -> Acc
    end.

list_features(List, Acc) ->
    {Elements, Tail} = split_improper(List, []),
    Length = length(Elements),
    Kind = case Tail =:= [] andalso lists:all(fun is_byte/1, Elements) of
               true when Length =:= 65535 -> string_65535;
               true when Length < 65535 -> string;
               true -> byte_list_65536;
               false when Tail =:= [] -> list;
               false -> improper_list
           end,
    children(Elements ++ [Tail], Acc#{Kind => true}).

split_improper([H | T], Acc) -> split_improper(T, [H | Acc]);
split_improper(Tail, Acc) -> {lists:reverse(Acc), Tail}.

is_byte(X) -> is_integer(X) andalso X >= 0 andalso X =< 255.

tuple_features(T, Acc) ->
    Kind = case tuple_size(T) of
               0 -> empty_tuple;
               255 -> tuple_255;
               N when N < 255 -> small_tuple;
               _ -> large_tuple
           end,
    children(tuple_to_list(T), Acc#{Kind => true}).

map_features(M, Acc) ->
    Keys = maps:keys(M),
    Kind = case map_size(M) of
               0 -> empty_map;
               32 -> flatmap_32;
               N when N < 32 -> flatmap;
               _ -> case lists:any(fun has_vm_specific_hash/1, Keys) of
                        true -> hashmap_vm_specific_order;
                        false -> hashmap_portable_order
                    end
           end,
    KeyKinds = [map_key_map || lists:any(fun is_map/1, Keys)]
        ++ [map_key_tuple || lists:any(fun is_tuple/1, Keys)]
        ++ [map_key_float || lists:any(fun is_float/1, Keys)]
        ++ [numerically_equal_keys || lists:any(fun(K) -> has_integer_twin(K, M) end, Keys)],
    children(lists:append([[K, V] || {K, V} <- maps:to_list(M)]), set_all([Kind | KeyKinds], Acc)).

%% A map of more than 32 keys is a HAMT, written in the order of its keys' hashes, and OTP
%% 25's map hash (make_internal_hash in erts/emulator/beam/utils.c) hashes an atom by its
%% index in this VM's atom table, a local pid or port by its in-memory word, and another
%% node's pid, port or reference and an export fun by the address of a table entry [seen:
%% the same atom-keyed map encodes differently in two VMs that created the atoms in
%% another order]. An encoder outside the VM cannot know these; it cannot even tell a
%% local pid or reference from a remote one. So such a map's order is VM-specific, and
%% the C++ driver checks our encoding of it entry for entry instead of byte for byte.
has_vm_specific_hash(T) when is_atom(T); is_pid(T); is_port(T); is_reference(T);
                             is_function(T) ->
    true;
has_vm_specific_hash([H | T]) -> has_vm_specific_hash(H) orelse has_vm_specific_hash(T);
has_vm_specific_hash(T) when is_tuple(T) -> lists:any(fun has_vm_specific_hash/1, tuple_to_list(T));
has_vm_specific_hash(T) when is_map(T) ->
    lists:any(fun has_vm_specific_hash/1, maps:keys(T) ++ maps:values(T));
has_vm_specific_hash(_) ->
    false.

%% True for a float key whose value is an integer that is also a key.
has_integer_twin(K, M) when is_float(K), K == trunc(K) -> maps:is_key(trunc(K), M);
has_integer_twin(_, _) -> false.

fun_features(F, Acc) ->
    case erlang:fun_info(F, type) of
        {type, external} -> {Acc#{export_fun => true}, 0};
        {type, local} ->
            {env, Env} = erlang:fun_info(F, env),
            Kinds = [local_fun] ++ [closure || Env =/= []]
                ++ [fun_in_closure || lists:any(fun is_function/1, Env)],
            children(Env, set_all(Kinds, Acc))
    end.

%% Features of the children, and the depth of the container holding them.
children(Children, Acc0) ->
    {Acc, MaxDepth} = lists:foldl(fun(C, {A, D}) ->
                                          {A1, D1} = features(C, A),
                                          {A1, max(D, D1)}
                                  end, {Acc0, 0}, Children),
    {Acc, MaxDepth + 1}.
