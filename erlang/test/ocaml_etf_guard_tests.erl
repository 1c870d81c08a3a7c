%% EUnit tests of the guard in front of binary_to_term: what it refuses (and so keeps from
%% the VM's decoder), what it lets through unchanged, and a PropEr property that it accepts
%% every term term_to_binary writes and refuses every truncation of one. The VM-killing
%% payload itself is only ever decoded in a VM of its own (camlbeam_hostile_SUITE).
-module(ocaml_etf_guard_tests).

%% PropEr first: its LET is the one meant here (eunit.hrl defines its own only if unset).
-include_lib("proper/include/proper.hrl").
-include_lib("eunit/include/eunit.hrl").

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
%% fourth word, as keys of a map of more than 32 keys, bare or inside any term.
tying_references_test_() ->
    R1 = ref_ext([7, 0, 0, 1]),
    R2 = ref_ext([7, 0, 0, 2]),
    Wraps = [{bare, fun(X) -> X end}, {tuple, fun(X) -> tuple_ext([X]) end},
             {list, fun(X) -> list_ext([X]) end},
             {nested, fun(X) -> tuple_ext([atom_ext(k), list_ext([tuple_ext([X])])]) end},
             {small_map_key, fun(X) -> map_ext([{X, atom_ext(v)}]) end}],
    [{atom_to_list(Name),
      ?_assertMatch({error, <<"a map of 33 keys whose keys hold references", _/binary>>},
                    ocaml_etf_guard:check(large_map(Wrap(R1), Wrap(R2), 33)))}
     || {Name, Wrap} <- Wraps] ++
    [%% A three-word reference and a four-word one equal in their first three words.
     ?_assertMatch({error, _}, ocaml_etf_guard:check(large_map(ref_ext([7, 0, 0]), R1, 40))),
     %% The same map inside another term, and as a value of a map.
     ?_assertMatch({error, _}, ocaml_etf_guard:check(
                                 ext(tuple_ext([atom_ext(ok), tl_of(large_map(R1, R2, 33))])))),
     ?_assertMatch({error, _}, ocaml_etf_guard:check(
                                 ext(map_ext([{atom_ext(k), tl_of(large_map(R1, R2, 33))}]))))].

tl_of(<<131, Rest/binary>>) -> Rest.

%% Maps the decoder handles: 32 keys or fewer (sorted by comparison), references that
%% differ within their first three words, equal references in two keys, references in
%% values only.
harmless_maps_test_() ->
    R1 = ref_ext([7, 0, 0, 1]),
    R2 = ref_ext([7, 0, 0, 2]),
    [?_assertEqual(ok, ocaml_etf_guard:check(large_map(R1, R2, 32))),
     ?_assertEqual(ok, ocaml_etf_guard:check(large_map(ref_ext([7, 1, 0, 1]), ref_ext([7, 2, 0, 1]), 40))),
     ?_assertEqual(ok, ocaml_etf_guard:check(large_map(tuple_ext([R1, atom_ext(x)]),
                                                       tuple_ext([R1, atom_ext(y)]), 40))),
     ?_assertEqual(ok, ocaml_etf_guard:check(
                         ext(map_ext([{int_ext(I), if I < 3 -> R1; true -> R2 end}
                                      || I <- lists:seq(1, 40)]))))].

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
     %% A fun whose declared size disagrees with its contents.
     ?_assertMatch({error, _}, Check(fun_with_size_off_by(1))),
     %% A bignum with a sign byte that is not 0 or 1.
     ?_assertMatch({error, _}, Check(<<131, 110, 1, 2, 5>>))].

fun_with_size_off_by(Delta) ->
    <<131, 112, Size:32, Rest/binary>> = term_to_binary(fun() -> ok end),
    <<131, 112, (Size + Delta):32, Rest/binary>>.

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
