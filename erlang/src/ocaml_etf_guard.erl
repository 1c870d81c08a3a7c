%% @doc Decoding what a worker wrote: external terms from an untrusted source.
%%
%% `binary_to_term(_, [safe])' never creates an atom, but it is no guarantee
%% that decoding cannot hurt the VM: OTP 25's decoder overflows the VM's C
%% stack (the VM dies) on a map of more than 32 keys whose keys hold two
%% references that differ only after their third word, because its hash
%% reads three words of a reference and such keys tie at every depth of the
%% map's trie (checked on OTP 25.2.3: keys `R1' and `R2', `{R1}' and `{R2}',
%% `[R1]' and `[R2]' all kill it; see `cpp/etf/src/map_order.cpp'). So every
%% payload is walked here first, in Erlang, where a malformed term can only
%% raise. The walk refuses:
%% <ul>
%% <li>anything that is not exactly one well-formed term of the tags a worker
%%     writes (no compression, no atom cache references, no old `FUN_EXT',
%%     no trailing bytes);</li>
%% <li>a map of more than 32 keys whose keys hold references that OTP's hash
%%     cannot tell apart (same node, same first three words, different
%%     words after). Real references never do: their first three words are
%%     unique in their node. Only a forged term can.</li>
%% </ul>
%% The walk costs about as much as the decoding itself (each node is read
%% twice); a binary costs the same whatever its size.
-module(ocaml_etf_guard).

-export([decode/1, check/1]).
-export_type([refusal/0]).

%% Why a payload was not decoded: a sentence.
-type refusal() :: binary().

%% Maps up to this many keys are flatmaps, which OTP sorts by comparison
%% (exact); larger ones are hash tries.
-define(FLATMAP_MAX_KEYS, 32).

%% Reference words OTP 25's hash reads.
-define(HASHED_REF_WORDS, 3).

%%% API

%% @doc Decodes a payload a worker wrote: `{ok, Term}' once the walk found
%% nothing that could hurt the VM and `binary_to_term(_, [safe])' accepted
%% it, else `{error, Why}'. An atom this VM does not know is named in Why
%% (as text: no atom is created).
-spec decode(binary()) -> {ok, term()} | {error, refusal()}.
decode(Payload) when is_binary(Payload) ->
    case check(Payload) of
        ok ->
            try
                {ok, binary_to_term(Payload, [safe])}
            catch
                error:badarg -> {error, explain_badarg(Payload)}
            end;
        {error, _} = Refused ->
            Refused
    end.

%% @doc The walk alone: `ok' if `binary_to_term(Payload, [safe])' can be
%% given the payload without risk.
-spec check(binary()) -> ok | {error, refusal()}.
check(<<131, 80, _/binary>>) ->
    {error, <<"a compressed term (a worker never compresses)">>};
check(<<131, Term/binary>>) ->
    try
        walk(Term, 1)
    catch
        throw:{refused, Why} -> {error, Why};
        %% A length that runs past the end, a node that is not an atom ...
        error:{badmatch, _} -> {error, <<"a malformed term">>}
    end;
check(<<>>) ->
    {error, <<"an empty payload">>};
check(_) ->
    {error, <<"not external term format (no version byte 131)">>}.

%%% The walk

%% walk(Bin, N): N whole terms make up Bin exactly, or the walk throws. ETF
%% is prefix notation, so a container only adds its elements to the count:
%% no stack, whatever the depth. The binary is only ever matched here, so
%% the compiler keeps one match context for the whole walk (erlc
%% +bin_opt_info): no sub-binary per term. A map of more than 32 keys is
%% checked on its own (large_map/2), the only place that looks inside terms.
-spec walk(binary(), non_neg_integer()) -> ok.
walk(<<97, _, R/binary>>, N) -> walk(R, N - 1);
walk(<<98, _:32, R/binary>>, N) -> walk(R, N - 1);
walk(<<70, _:64, R/binary>>, N) -> walk(R, N - 1);
walk(<<106, R/binary>>, N) -> walk(R, N - 1);
walk(<<104, Arity, R/binary>>, N) -> walk(R, N - 1 + Arity);
walk(<<108, Len:32, R/binary>>, N) -> walk(R, N + Len);
walk(<<109, Len:32, _:Len/binary, R/binary>>, N) -> walk(R, N - 1);
walk(<<100, Len:16, _:Len/binary, R/binary>>, N) -> walk(R, N - 1);
walk(<<119, Len, _:Len/binary, R/binary>>, N) -> walk(R, N - 1);
walk(<<118, Len:16, _:Len/binary, R/binary>>, N) -> walk(R, N - 1);
walk(<<107, Len:16, _:Len/binary, R/binary>>, N) -> walk(R, N - 1);
walk(<<110, Len, Sign, _:Len/binary, R/binary>>, N) when Sign =< 1 -> walk(R, N - 1);
walk(<<116, Arity:32, R/binary>>, N) when Arity =< ?FLATMAP_MAX_KEYS -> walk(R, N - 1 + 2 * Arity);
walk(<<>>, 0) -> ok;
walk(<<_, _/binary>> = Rest, 0) -> refuse(text("~b bytes after the term", [byte_size(Rest)]));
walk(<<Tag, R/binary>>, N) -> walk(skip_rare(Tag, R), N - 1);
walk(<<>>, _) -> refuse(<<"the term ends early">>).

%% skip(Bin, N): Bin with N whole terms taken off its front; for the rare
%% paths, where the rest is wanted.
-spec skip(binary(), non_neg_integer()) -> binary().
skip(Bin, 0) -> Bin;
skip(<<104, Arity, R/binary>>, N) -> skip(R, N - 1 + Arity);
skip(<<108, Len:32, R/binary>>, N) -> skip(R, N + Len);
skip(<<116, Arity:32, R/binary>>, N) when Arity =< ?FLATMAP_MAX_KEYS -> skip(R, N - 1 + 2 * Arity);
skip(<<Tag, R/binary>>, N) -> skip(skip_rare(Tag, R), N - 1);
skip(<<>>, _) -> refuse(<<"the term ends early">>).

%% The term whose tag was Tag, at the front of R, taken off (what it holds
%% inside, a large map's pairs, a fun's free variables, walked on the way).
-spec skip_rare(byte(), binary()) -> binary().
skip_rare(97, <<_, R/binary>>) -> R;
skip_rare(98, <<_:32, R/binary>>) -> R;
skip_rare(70, <<_:64, R/binary>>) -> R;
skip_rare(106, R) -> R;
skip_rare(109, <<Len:32, _:Len/binary, R/binary>>) -> R;
skip_rare(119, <<Len, _:Len/binary, R/binary>>) -> R;
skip_rare(118, <<Len:16, _:Len/binary, R/binary>>) -> R;
skip_rare(107, <<Len:16, _:Len/binary, R/binary>>) -> R;
skip_rare(110, <<Len, Sign, _:Len/binary, R/binary>>) when Sign =< 1 -> R;
skip_rare(105, <<Arity:32, R/binary>>) -> skip(R, Arity);
skip_rare(116, <<Arity:32, R/binary>>) when Arity > ?FLATMAP_MAX_KEYS -> large_map(R, Arity);
skip_rare(111, <<Len:32, Sign, _:Len/binary, R/binary>>) when Sign =< 1 -> R;
skip_rare(77, <<Len:32, Bits, _:Len/binary, R/binary>>) when Len > 0, Bits >= 1, Bits =< 8 -> R;
skip_rare(99, <<_:31/binary, R/binary>>) -> R;
skip_rare(100, <<Len:16, _:Len/binary, R/binary>>) -> R;
skip_rare(115, <<Len, _:Len/binary, R/binary>>) -> R;
skip_rare(88, R0) -> <<_:32, _:32, _:32, R/binary>> = atom(R0), R;
skip_rare(103, R0) -> <<_:32, _:32, _, R/binary>> = atom(R0), R;
skip_rare(89, R0) -> <<_:32, _:32, R/binary>> = atom(R0), R;
skip_rare(102, R0) -> <<_:32, _, R/binary>> = atom(R0), R;
skip_rare(120, R0) -> <<_:64, _:32, R/binary>> = atom(R0), R;
skip_rare(Tag, R) when Tag =:= 90; Tag =:= 114; Tag =:= 101 -> element(2, reference(<<Tag, R/binary>>));
skip_rare(113, R) -> skip(R, 3);  % EXPORT_EXT: module, function, arity
skip_rare(112, <<Size:32, Fun:(Size - 4)/binary, R/binary>>) -> fun_body(Fun), R;
skip_rare(82, _) -> refuse(<<"an atom cache reference outside a distribution header">>);
skip_rare(Tag, _) when Tag =:= 100; Tag =:= 115; Tag =:= 118; Tag =:= 119; Tag =:= 97; Tag =:= 98;
                       Tag =:= 70; Tag =:= 109; Tag =:= 107; Tag =:= 110; Tag =:= 111; Tag =:= 77;
                       Tag =:= 99; Tag =:= 104; Tag =:= 105; Tag =:= 108; Tag =:= 116; Tag =:= 112 ->
    refuse(text("a term of tag ~b that ends early or is malformed", [Tag]));
skip_rare(Tag, _) -> refuse(text("tag ~b, which no worker writes", [Tag])).

%% NEW_FUN_EXT after its size: arity, uniq, index, free variable count,
%% then module, old index, old uniq, pid and the free variables, exactly.
-spec fun_body(binary()) -> ok.
fun_body(Fun) ->
    case skip(fun_contents(Fun), 1) of
        <<>> -> ok;
        _ -> refuse(<<"a fun whose size does not match its contents">>)
    end.

%% What a fun holds after its fixed fields, as the elements of one tuple:
%% `<<104, 4 + NumFree, ...>>' (the free variable count fits 255 in practice;
%% a larger one is walked as a large tuple).
-spec fun_contents(binary()) -> binary().
fun_contents(<<_Arity, _Uniq:16/binary, _Index:32, NumFree:32, Rest/binary>>) ->
    <<105, (4 + NumFree):32, Rest/binary>>;
fun_contents(_) ->
    refuse(<<"a truncated fun">>).

%% A reference's node, its words with trailing zero words left out (a
%% shorter reference equal in value hashes alike), and what follows it.
-spec reference(binary()) -> {{binary(), [non_neg_integer()]}, binary()}.
reference(<<90, Len:16, R0/binary>>) when Len >= 1, Len =< 5 ->
    {Node, <<_Creation:32, Words:(4 * Len)/binary, R/binary>>} = node_name(R0),
    {{Node, significant([W || <<W:32>> <= Words])}, R};
reference(<<114, Len:16, R0/binary>>) when Len >= 1, Len =< 5 ->
    {Node, <<_Creation, Words:(4 * Len)/binary, R/binary>>} = node_name(R0),
    {{Node, significant([W || <<W:32>> <= Words])}, R};
reference(<<101, R0/binary>>) ->
    {Node, <<Word:32, _Creation, R/binary>>} = node_name(R0),
    {{Node, significant([Word])}, R};
reference(_) ->
    refuse(<<"a malformed reference">>).

-spec significant([non_neg_integer()]) -> [non_neg_integer()].
significant(Words) ->
    lists:reverse(lists:dropwhile(fun(W) -> W =:= 0 end, lists:reverse(Words))).

%% The atom at the front (a node name), skipped.
-spec atom(binary()) -> binary().
atom(Bin) -> element(2, node_name(Bin)).

%% The atom at the front as UTF-8 text (the same atom can come in either
%% encoding), and what follows it.
-spec node_name(binary()) -> {binary(), binary()}.
node_name(<<119, Len, Text:Len/binary, R/binary>>) -> {Text, R};
node_name(<<118, Len:16, Text:Len/binary, R/binary>>) -> {Text, R};
node_name(<<115, Len, Text:Len/binary, R/binary>>) -> {latin1(Text), R};
node_name(<<100, Len:16, Text:Len/binary, R/binary>>) -> {latin1(Text), R};
node_name(_) -> refuse(<<"a pid, port or reference whose node is not an atom">>).

-spec latin1(binary()) -> binary().
latin1(Text) ->
    case unicode:characters_to_binary(Text, latin1, utf8) of
        Utf8 when is_binary(Utf8) -> Utf8
    end.

%%% Maps of more than 32 keys

%% Walks the Arity pairs of a large map whose header is consumed, refusing
%% keys OTP's hash cannot tell apart; returns what follows the map.
-spec large_map(binary(), non_neg_integer()) -> binary().
large_map(Bin, Arity) ->
    {Rest, Refs} = pairs(Bin, Arity, key, 1, []),
    case ties(Refs) of
        false -> Rest;
        true -> refuse(text("a map of ~b keys whose keys hold references that differ only "
                            "after their third word: OTP 25's binary_to_term cannot decode it "
                            "without crashing the VM", [Arity]))
    end.

%% pairs(Bin, Pairs, Part, Left, Refs): Left more terms of the key or value
%% (Part) of the first of Pairs pairs; the references met in keys, and what
%% follows the last pair. Counting as walk/2 does, in one pass.
-spec pairs(binary(), non_neg_integer(), key | value, non_neg_integer(),
            [{binary(), [non_neg_integer()]}]) -> {binary(), [{binary(), [non_neg_integer()]}]}.
pairs(Bin, Pairs, key, 0, Refs) -> pairs(Bin, Pairs, value, 1, Refs);
pairs(Bin, 1, value, 0, Refs) -> {Bin, Refs};
pairs(Bin, Pairs, value, 0, Refs) -> pairs(Bin, Pairs - 1, key, 1, Refs);
pairs(<<97, _, R/binary>>, Pairs, Part, Left, Refs) -> pairs(R, Pairs, Part, Left - 1, Refs);
pairs(<<98, _:32, R/binary>>, Pairs, Part, Left, Refs) -> pairs(R, Pairs, Part, Left - 1, Refs);
pairs(<<104, Arity, R/binary>>, Pairs, Part, Left, Refs) -> pairs(R, Pairs, Part, Left - 1 + Arity, Refs);
pairs(<<105, Arity:32, R/binary>>, Pairs, Part, Left, Refs) -> pairs(R, Pairs, Part, Left - 1 + Arity, Refs);
pairs(<<108, Len:32, R/binary>>, Pairs, Part, Left, Refs) -> pairs(R, Pairs, Part, Left + Len, Refs);
pairs(<<116, Arity:32, R/binary>>, Pairs, Part, Left, Refs) when Arity =< ?FLATMAP_MAX_KEYS ->
    pairs(R, Pairs, Part, Left - 1 + 2 * Arity, Refs);
pairs(<<Tag, _/binary>> = Bin, Pairs, key, Left, Refs) when Tag =:= 90; Tag =:= 114; Tag =:= 101 ->
    {Ref, R} = reference(Bin),
    pairs(R, Pairs, key, Left - 1, [Ref | Refs]);
pairs(<<116, Arity:32, R/binary>>, Pairs, key, Left, Refs0) ->
    %% A large map in a key: checked on its own, and its references (keys and
    %% values) are the key's too.
    _ = large_map(R, Arity),
    {After, Refs} = refs(R, 2 * Arity, Refs0),
    pairs(After, Pairs, key, Left - 1, Refs);
pairs(<<112, Size:32, Fun:(Size - 4)/binary, R/binary>>, Pairs, key, Left, Refs0) ->
    {<<>>, Refs} = refs(fun_contents(Fun), 1, Refs0),
    pairs(R, Pairs, key, Left - 1, Refs);
pairs(<<Tag, R/binary>>, Pairs, Part, Left, Refs) ->
    pairs(skip_rare(Tag, R), Pairs, Part, Left - 1, Refs);
pairs(<<>>, _, _, _, _) ->
    refuse(<<"the term ends early">>).

%% Like skip/2, collecting every reference on the way (a key can hold them at
%% any depth): containers are walked here, leaves by skip/2. A large map
%% inside a key is checked on its own, and every reference in it (keys and
%% values) counts for the key too.
-spec refs(binary(), non_neg_integer(), [{binary(), [non_neg_integer()]}]) ->
    {binary(), [{binary(), [non_neg_integer()]}]}.
refs(Bin, 0, Refs) -> {Bin, Refs};
refs(<<104, Arity, R/binary>>, N, Refs) -> refs(R, N - 1 + Arity, Refs);
refs(<<105, Arity:32, R/binary>>, N, Refs) -> refs(R, N - 1 + Arity, Refs);
refs(<<108, Len:32, R/binary>>, N, Refs) -> refs(R, N + Len, Refs);
refs(<<116, Arity:32, R/binary>>, N, Refs) ->
    Arity =< ?FLATMAP_MAX_KEYS orelse large_map(R, Arity),
    refs(R, N - 1 + 2 * Arity, Refs);
refs(<<112, Size:32, Fun:(Size - 4)/binary, R/binary>>, N, Refs0) ->
    {<<>>, Refs} = refs(fun_contents(Fun), 1, Refs0),
    refs(R, N - 1, Refs);
refs(<<Tag, _/binary>> = Bin, N, Refs) when Tag =:= 90; Tag =:= 114; Tag =:= 101 ->
    {Ref, R} = reference(Bin),
    refs(R, N - 1, [Ref | Refs]);
refs(Bin, N, Refs) ->
    refs(skip(Bin, 1), N - 1, Refs).

%% Whether two of the references tie in OTP 25's hash without being equal:
%% same node, same first three words, other words. One pass, a map of what
%% was seen: a large map can have a million keys.
-spec ties([{binary(), [non_neg_integer()]}]) -> boolean().
ties(Refs) ->
    ties(Refs, #{}).

-spec ties([{binary(), [non_neg_integer()]}], #{{binary(), [non_neg_integer()]} => [non_neg_integer()]}) ->
    boolean().
ties([], _Seen) ->
    false;
ties([{Node, Words} | Refs], Seen) ->
    Hashed = {Node, significant(lists:sublist(Words, ?HASHED_REF_WORDS))},
    case Seen of
        #{Hashed := Words} -> ties(Refs, Seen);
        #{Hashed := _OtherWords} -> true;
        #{} -> ties(Refs, Seen#{Hashed => Words})
    end.

%%% Explaining a refusal by binary_to_term

%% The walk accepted the payload, so binary_to_term refused it for an atom
%% (or a node name) this VM does not know, or an export fun whose module is
%% not loaded: name the first unknown atom if there is one.
-spec explain_badarg(binary()) -> refusal().
explain_badarg(<<131, Term/binary>> = Payload) ->
    case unknown_atom(Term, 1) of
        {unknown, Text} ->
            text("the atom '~ts' is not known to this VM (a worker's answer cannot create atoms)",
                 [printable(Text)]);
        none ->
            text("a term of ~b bytes that binary_to_term(_, [safe]) refuses (an export fun or "
                 "a value this VM does not accept)", [byte_size(Payload)])
    end.

%% The first atom in N terms at the front of Bin that is not an existing atom.
-spec unknown_atom(binary(), non_neg_integer()) -> {unknown, binary()} | none.
unknown_atom(_, 0) ->
    none;
unknown_atom(<<Tag, _/binary>> = Bin, N) when Tag =:= 100; Tag =:= 115; Tag =:= 118; Tag =:= 119 ->
    {Text, R} = node_name(Bin),
    try binary_to_existing_atom(Text, utf8) of
        _ -> unknown_atom(R, N - 1)
    catch
        error:badarg -> {unknown, Text}
    end;
unknown_atom(<<104, Arity, R/binary>>, N) -> unknown_atom(R, N - 1 + Arity);
unknown_atom(<<105, Arity:32, R/binary>>, N) -> unknown_atom(R, N - 1 + Arity);
unknown_atom(<<108, Len:32, R/binary>>, N) -> unknown_atom(R, N + Len);
unknown_atom(<<116, Arity:32, R/binary>>, N) -> unknown_atom(R, N - 1 + 2 * Arity);
unknown_atom(<<Tag, _/binary>> = Bin, N)
  when Tag =:= 88; Tag =:= 103; Tag =:= 89; Tag =:= 102; Tag =:= 120; Tag =:= 90; Tag =:= 114;
       Tag =:= 101 ->
    %% The node name follows the tag byte (and a reference's length).
    Skip = case Tag of 90 -> 3; 114 -> 3; _ -> 1 end,
    <<_:Skip/binary, Node/binary>> = Bin,
    case unknown_atom(Node, 1) of
        none -> unknown_atom(skip(Bin, 1), N - 1);
        Unknown -> Unknown
    end;
unknown_atom(<<113, R/binary>>, N) -> unknown_atom(R, N + 2);
unknown_atom(<<112, _Size:32, _Arity, _Uniq:16/binary, _Index:32, NumFree:32, R/binary>>, N) ->
    unknown_atom(R, N - 1 + 4 + NumFree);
unknown_atom(Bin, N) ->
    unknown_atom(skip(Bin, 1), N - 1).

%% The text of an atom as a message shows it: at most 255 characters (an atom
%% has no more; a forged one may).
-spec printable(binary()) -> binary().
printable(Text) ->
    case unicode:characters_to_list(Text) of
        Chars when is_list(Chars) -> text("~ts", [string:slice(Chars, 0, 255)]);
        _ -> <<"(not UTF-8)">>
    end.

%%% Helpers

-spec refuse(binary()) -> no_return().
refuse(Why) ->
    throw({refused, Why}).

-spec text(io:format(), [term()]) -> binary().
text(Format, Args) ->
    case unicode:characters_to_binary(io_lib:format(Format, Args)) of
        Text when is_binary(Text) -> Text
    end.
