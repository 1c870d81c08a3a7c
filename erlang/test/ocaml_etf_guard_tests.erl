%% EUnit tests of the guard in front of binary_to_term: what it refuses (and so keeps from
%% the VM's decoder), what it lets through unchanged, and a PropEr property that it accepts
%% every term term_to_binary writes and refuses every truncation of one. The VM-killing
%% payload itself is only ever decoded in a VM of its own (camlbeam_hostile_SUITE).
-module(ocaml_etf_guard_tests).

%% PropEr first: its LET is the one meant here (eunit.hrl defines its own only if unset).
-include_lib("proper/include/proper.hrl").
-include_lib("eunit/include/eunit.hrl").

%% What the guard answers for a reference it must not let in.
-define(FORGED, {error, <<"a reference of more than three words", _/binary>>}).

%%% Building blocks of hand-made external terms (without the version byte)

atom_ext(A) -> B = atom_to_binary(A), <<119, (byte_size(B)), B/binary>>.
int_ext(I) -> <<98, I:32/signed>>.
tuple_ext(Elements) -> [<<104, (length(Elements))>>, Elements].
list_ext(Elements) -> [<<108, (length(Elements)):32>>, Elements, <<106>>].
map_ext(Pairs) -> [<<116, (length(Pairs)):32>>, [[K, V] || {K, V} <- Pairs]].
%% NEWER_REFERENCE_EXT of this node's name (an atom that exists), creation 1.
ref_ext(Words) ->
    Node = atom_to_binary(node()),
    [<<90, (length(Words)):16, 119, (byte_size(Node)), Node/binary, 1:32>>, [<<W:32>> || W <- Words]].

ext(IoList) -> iolist_to_binary([131, IoList]).

%% A map of N keys (N > 32: a hash trie) whose first two keys are Key1 and Key2.
large_map(Key1, Key2, N) ->
    ext(map_ext([{Key1, atom_ext(a)}, {Key2, atom_ext(b)}
                 | [{int_ext(I), int_ext(I)} || I <- lists:seq(1, N - 2)]])).

%%% What it refuses

%% The map that crashes OTP 25's binary_to_term: two references that differ only in their
%% fourth word, as keys of a map of more than 32 keys, bare or inside any term. Refused
%% for the references themselves, wherever they are: a worker could also hand them out
%% one by one, and maps:from_list/1 of them crashes the VM as surely.
forged_references_test_() ->
    R1 = ref_ext([7, 0, 0, 1]),
    R2 = ref_ext([7, 0, 0, 2]),
    Wraps = [{bare, fun(X) -> X end}, {tuple, fun(X) -> tuple_ext([X]) end},
             {list, fun(X) -> list_ext([X]) end},
             {nested, fun(X) -> tuple_ext([atom_ext(k), list_ext([tuple_ext([X])])]) end},
             {small_map_key, fun(X) -> map_ext([{X, atom_ext(v)}]) end}],
    [{atom_to_list(Name),
      ?_assertMatch(?FORGED,
                    ocaml_etf_guard:check(large_map(Wrap(R1), Wrap(R2), 33)))}
     || {Name, Wrap} <- Wraps] ++
    [?_assertMatch(?FORGED, ocaml_etf_guard:check(ext(list_ext([R1, R2])))),
     ?_assertMatch(?FORGED, ocaml_etf_guard:check(ext(R1))),
     ?_assertMatch(?FORGED, ocaml_etf_guard:check(ext(map_ext([{atom_ext(k), R1}])))),
     %% In a fun's free variables too.
     ?_assertMatch(?FORGED, ocaml_etf_guard:check(fun_holding(R1))),
     %% NEW_REFERENCE_EXT as well as NEWER_REFERENCE_EXT.
     ?_assertMatch(?FORGED,
                   ocaml_etf_guard:check(ext([<<114, 4:16, 119, 8, "x@nohost", 1, 7:32, 0:32, 0:32, 1:32>>])))].

%% Fewer than four words that count: any reference. Trailing zero words do not count.
three_words_pass_test_() ->
    [?_assertEqual(ok, ocaml_etf_guard:check(large_map(ref_ext([7, 1, 0]), ref_ext([7, 2, 0]), 40))),
     ?_assertEqual(ok, ocaml_etf_guard:check(ext(ref_ext([7, 1, 0, 0])))),
     ?_assertEqual(ok, ocaml_etf_guard:check(ext(ref_ext([7, 1, 2, 0, 0])))),
     ?_assertEqual(ok, ocaml_etf_guard:check(ext(list_ext([ref_ext([7, 1, 0]), ref_ext([7, 1, 0, 0])]))))].

%% A fun made here, whose first free variable is the given term (hand-encoded).
fun_holding(Term) ->
    X = self(),
    F = fun() -> X end,
    <<131, 112, Size:32, Head:25/binary, R/binary>> = term_to_binary(F),
    %% Module, old index, old uniq, pid, then the one free variable (a pid): replaced.
    Pid = term_to_binary(X),
    <<131, PidExt/binary>> = Pid,
    PidSize = byte_size(PidExt),
    Fixed = byte_size(R) - PidSize,
    <<Before:Fixed/binary, _:PidSize/binary>> = R,
    Inner = iolist_to_binary(Term),
    NewSize = Size - PidSize + byte_size(Inner),
    <<131, 112, NewSize:32, Head/binary, Before/binary, Inner/binary>>.

refusals_test_() ->
    Check = fun ocaml_etf_guard:check/1,
    [?_assertMatch({error, <<"a compressed term", _/binary>>},
                   Check(term_to_binary(lists:duplicate(1000, 0), [compressed]))),
     ?_assertMatch({error, <<"an empty payload">>}, Check(<<>>)),
     ?_assertMatch({error, <<"not external term format", _/binary>>}, Check(<<1, 2, 3>>)),
     ?_assertMatch({error, <<"3 bytes after the term">>}, Check(<<131, 97, 1, 1, 2, 3>>)),
     ?_assertMatch({error, <<"the term ends early">>}, Check(<<131, 104, 2, 97, 1>>)),
     ?_assertMatch({error, _}, Check(<<131, 109, 0, 0, 0, 10, "short">>)),
     ?_assertMatch({error, <<"tag 117", _/binary>>}, Check(<<131, 117, 0, 0, 0, 0>>)),
     ?_assertMatch({error, <<"an atom cache reference", _/binary>>}, Check(<<131, 82, 0>>)),
     %% A list claiming four billion elements: refused once the bytes run out, in time
     %% proportional to the bytes, not to the claim.
     ?_assertMatch({error, _}, Check(<<131, 108, 255, 255, 255, 255, 106>>)),
     ?_assertMatch({error, _}, Check(<<131, 105, 255, 255, 255, 255>>)),
     ?_assertMatch({error, _}, Check(<<131, 116, 255, 255, 255, 255>>)),
     %% A reference whose node is not an atom.
     ?_assertMatch({error, _}, Check(<<131, 90, 0, 1, 97, 1, 0:32, 0:32>>)),
     %% A fun cut short.
     ?_assertMatch({error, _}, Check(binary:part(term_to_binary(fun() -> ok end), 0, 40))),
     %% A bignum with a sign byte that is not 0 or 1.
     ?_assertMatch({error, _}, Check(<<131, 110, 1, 2, 5>>))].

%% A fun's declared size is read by nobody (binary_to_term decodes the same whatever it
%% says): the walk does not read it either, and agrees with binary_to_term.
fun_size_is_not_read_test_() ->
    <<131, 112, Size:32, Rest/binary>> = term_to_binary(fun() -> ok end),
    [?_assertMatch({ok, F} when is_function(F), ocaml_etf_guard:decode(<<131, 112, (Size + D):32, Rest/binary>>))
     || D <- [-100, -1, 1, 100000]].

%% An answer naming an atom this VM does not know is refused by binary_to_term; the
%% message names it, and it still does not exist.
unknown_atom_named_test_() ->
    Name = <<"camlbeam_guard_test_never_an_atom">>,
    Payload = ext(tuple_ext([atom_ext(ok), list_ext([int_ext(1), <<119, (byte_size(Name)), Name/binary>>])])),
    [?_assertEqual({error, <<"the atom 'camlbeam_guard_test_never_an_atom' is not known to this VM "
                             "(a worker's answer cannot create atoms)">>},
                   ocaml_etf_guard:decode(Payload)),
     ?_assertError(badarg, binary_to_existing_atom(Name)),
     %% Inside a pid's node name too.
     ?_assertMatch({error, <<"the atom 'nosuchnode@nowhere'", _/binary>>},
                   ocaml_etf_guard:decode(<<131, 88, 119, 18, "nosuchnode@nowhere", 1:32, 0:32, 0:32>>))].

%% Nesting costs one step per term, whatever its shape: large maps as keys of large maps,
%% funs in funs, large tuples in large tuples, each 10,000 deep, walked in well under a
%% second (the walk once doubled with each level of nested map keys).
nesting_is_linear_test_() ->
    Depth = 10000,
    Maps = lists:foldl(fun(_, Inner) -> [<<116, 33:32>>, Inner, atom_ext(v),
                                         [[int_ext(I), int_ext(I)] || I <- lists:seq(1, 32)]] end,
                       [<<106>>], lists:seq(1, Depth)),
    Tuples = lists:foldl(fun(_, Inner) -> [<<105, 1:32>>, Inner] end, [<<106>>], lists:seq(1, Depth)),
    Funs = lists:foldl(fun(_, <<131, Inner/binary>>) -> fun_holding([Inner]) end, term_to_binary(x),
                       lists:seq(1, 200)),
    Timed = fun(Bin) ->
                    {Us, Result} = timer:tc(fun() -> ocaml_etf_guard:check(Bin) end),
                    {Result, Us < 1000000}
            end,
    [?_assertEqual({ok, true}, Timed(ext(Maps))),
     ?_assertEqual({ok, true}, Timed(ext(Tuples))),
     ?_assertEqual({ok, true}, Timed(strip_version(Funs)))].

strip_version(<<131, _/binary>> = Bin) -> Bin.

%%% What it lets through

accepts_what_term_to_binary_writes_test_() ->
    Terms = [42, -1, 1 bsl 70, -(1 bsl 2000), 3.5, -0.0, atom, 'ünïcödé', <<>>, <<"bin">>,
             <<1:3>>, [], "string", [1 | 2], {}, {a, {b, [c]}}, #{}, #{a => 1},
             maps:from_list([{I, I} || I <- lists:seq(1, 100)]),
             maps:from_list([{{make_ref()}, I} || I <- lists:seq(1, 100)]),
             self(), make_ref(), hd(erlang:ports()), fun lists:reverse/1, fun() -> self() end,
             lists:duplicate(300, x), list_to_tuple(lists:seq(1, 300)),
             lists:foldl(fun(_, Acc) -> [Acc] end, [], lists:seq(1, 100000))],
    [?_assertEqual({ok, T}, ocaml_etf_guard:decode(term_to_binary(T))) || T <- Terms] ++
    [?_assertEqual({ok, T}, ocaml_etf_guard:decode(term_to_binary(T, [{minor_version, 2}]))) || T <- Terms] ++
    [?_assertEqual({ok, T}, ocaml_etf_guard:decode(term_to_binary(T, [{minor_version, 0}]))) || T <- Terms].

%% Every term term_to_binary writes passes, decoding to itself; no strict prefix of its
%% encoding does (so nothing truncated ever reaches binary_to_term).
prop_round_trip_and_truncation() ->
    ?FORALL(T, any(),
            begin
                B = term_to_binary(T),
                Prefixes = [binary:part(B, 0, N) || N <- lists:seq(0, byte_size(B) - 1)],
                ocaml_etf_guard:decode(B) =:= {ok, T}
                    andalso lists:all(fun(P) -> ocaml_etf_guard:check(P) =/= ok end, Prefixes)
            end).

proper_test_() ->
    {timeout, 120,
     ?_assert(proper:quickcheck(prop_round_trip_and_truncation(),
                                [{numtests, 2000}, {to_file, user}, {max_size, 30}]))}.
