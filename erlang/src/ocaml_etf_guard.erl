%% @doc Decoding what a worker wrote: external terms from an untrusted source.
%%
%% `binary_to_term(_, [safe])' never creates an atom, but it is no guarantee
%% that what it decodes cannot hurt the VM. OTP 25 hashes three words of a
%% reference: two references that differ only after their third word tie at
%% every depth of a map's trie, and a map of more than 32 keys holding them
%% (bare, or inside tuples, lists, maps) overflows the VM's C stack, whether
%% `binary_to_term' builds it or `maps:from_list/1' does later (checked on
%% OTP 25.2.3; see `cpp/etf/src/map_order.cpp'). Real references never differ
%% that way: their first three words are unique in their node. So a forged
%% one must never enter the VM, in any term, lest it be a map key later.
%%
%% Every payload is walked here first, in Erlang, where a malformed term can
%% only raise. The walk refuses:
%% <ul>
%% <li>anything that is not exactly one well-formed term of the tags a worker
%%     writes (no compression, no atom cache references, no old `FUN_EXT',
%%     no trailing bytes);</li>
%% <li>a reference of more than three words (trailing zero words not
%%     counted), unless it names this node with its current creation, which
%%     `binary_to_term' checks against the references this node made. An
%%     OTP 25 node makes only three-word references; a longer one of another
%%     node cannot be told apart from its cousins by OTP 25's hash, and would
%%     be refused even if real.</li>
%% </ul>
%% The walk is one pass with no recursion: a container adds its elements to a
%% count of terms still to come, so its cost is one step per term whatever
%% the nesting, and a binary is skipped whatever its size. It costs about as
%% much as the decoding itself (less for binaries).
-module(ocaml_etf_guard).

-export([decode/1, check/1]).
-export_type([refusal/0]).

%% Why a payload was not decoded: a sentence.
-type refusal() :: binary().

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

%% walk(Bin, N): N whole terms make up Bin exactly, or the walk throws. ETF is
%% prefix notation, so a container only adds its elements to the count: no
%% stack, whatever the depth. A fun's declared size is not read, as
%% binary_to_term does not read it (checked on OTP 25.2.3: any size decodes
%% the same): its fields are walked as terms, as binary_to_term walks them.
%% The binary is only ever matched here, so the compiler keeps one match
%% context for the whole walk (erlc +bin_opt_info): no sub-binary per term.
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
walk(<<116, Arity:32, R/binary>>, N) -> walk(R, N - 1 + 2 * Arity);
walk(<<105, Arity:32, R/binary>>, N) -> walk(R, N - 1 + Arity);
walk(<<113, R/binary>>, N) -> walk(R, N - 1 + 3);  % EXPORT_EXT: module, function, arity
walk(<<112, _Size:32, _Arity, _Uniq:16/binary, _Index:32, NumFree:32, R/binary>>, N) ->
    %% NEW_FUN_EXT: then module, old index, old uniq, pid, and the free variables.
    walk(R, N - 1 + 4 + NumFree);
walk(<<>>, 0) -> ok;
walk(<<_, _/binary>> = Rest, 0) -> refuse(text("~b bytes after the term", [byte_size(Rest)]));
walk(<<Tag, R/binary>>, N) -> walk(leaf(Tag, R), N - 1);
walk(<<>>, _) -> refuse(<<"the term ends early">>).

%% The leaf whose tag was Tag, at the front of R, taken off.
-spec leaf(byte(), binary()) -> binary().
leaf(115, <<Len, _:Len/binary, R/binary>>) -> R;
leaf(111, <<Len:32, Sign, _:Len/binary, R/binary>>) when Sign =< 1 -> R;
leaf(77, <<Len:32, Bits, _:Len/binary, R/binary>>) when Bits =< 8 -> R;
leaf(99, <<_:31/binary, R/binary>>) -> R;
leaf(88, R0) -> <<_:32, _:32, _:32, R/binary>> = skip_atom(R0), R;
leaf(103, R0) -> <<_:32, _:32, _, R/binary>> = skip_atom(R0), R;
leaf(89, R0) -> <<_:32, _:32, R/binary>> = skip_atom(R0), R;
leaf(102, R0) -> <<_:32, _, R/binary>> = skip_atom(R0), R;
leaf(120, R0) -> <<_:64, _:32, R/binary>> = skip_atom(R0), R;
leaf(90, <<Len:16, R0/binary>>) when Len >= 1, Len =< 5 ->
    {Node, <<Creation:32, Words:(4 * Len)/binary, R/binary>>} = node_name(R0),
    reference(Node, Creation, Words),
    R;
leaf(114, <<Len:16, R0/binary>>) when Len >= 1, Len =< 5 ->
    {Node, <<Creation, Words:(4 * Len)/binary, R/binary>>} = node_name(R0),
    reference(Node, Creation, Words),
    R;
leaf(101, R0) -> <<_:32, _, R/binary>> = skip_atom(R0), R;
leaf(82, _) -> refuse(<<"an atom cache reference outside a distribution header">>);
leaf(Tag, _) when Tag =:= 100; Tag =:= 115; Tag =:= 118; Tag =:= 119; Tag =:= 97; Tag =:= 98;
                  Tag =:= 70; Tag =:= 109; Tag =:= 107; Tag =:= 110; Tag =:= 111; Tag =:= 77;
                  Tag =:= 99; Tag =:= 104; Tag =:= 105; Tag =:= 108; Tag =:= 116; Tag =:= 112;
                  Tag =:= 90; Tag =:= 114 ->
    refuse(text("a term of tag ~b that ends early or is malformed", [Tag]));
leaf(Tag, _) -> refuse(text("tag ~b, which no worker writes", [Tag])).

%% Refuses a reference OTP 25 could not tell from another of its node: more
%% than three words that count, on a node other than this one as it is now.
-spec reference(binary(), non_neg_integer(), binary()) -> ok.
reference(Node, Creation, Words) ->
    case significant_words(Words) > ?HASHED_REF_WORDS andalso
             not (Node =:= atom_to_binary(node()) andalso Creation =:= erlang:system_info(creation)) of
        true -> refuse(<<"a reference of more than three words that this node did not make: OTP 25 "
                         "cannot tell it from others in a map, and such a map crashes the VM">>);
        false -> ok
    end.

%% How many words are left once the trailing zero words are (a shorter
%% reference equal in value hashes alike).
-spec significant_words(binary()) -> non_neg_integer().
significant_words(<<>>) -> 0;
significant_words(Words) ->
    case binary:part(Words, byte_size(Words) - 4, 4) of
        <<0:32>> -> significant_words(binary:part(Words, 0, byte_size(Words) - 4));
        _ -> byte_size(Words) div 4
    end.

%% The atom at the front (a node name), skipped.
-spec skip_atom(binary()) -> binary().
skip_atom(Bin) -> element(2, node_name(Bin)).

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

%% The first atom in N terms at the front of Bin (a well-formed term: the walk
%% accepted it) that is not an existing atom. Counting as walk/3 does.
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
unknown_atom(<<113, R/binary>>, N) -> unknown_atom(R, N - 1 + 3);
unknown_atom(<<112, _Size:32, _Arity, _Uniq:16/binary, _Index:32, NumFree:32, R/binary>>, N) ->
    unknown_atom(R, N - 1 + 4 + NumFree);
unknown_atom(<<Tag, R/binary>>, N)
  when Tag =:= 88; Tag =:= 103; Tag =:= 89; Tag =:= 102; Tag =:= 120; Tag =:= 90; Tag =:= 114;
       Tag =:= 101 ->
    %% The node name follows the tag byte (and a reference's length).
    Node = case Tag of
               90 -> binary:part(R, 2, byte_size(R) - 2);
               114 -> binary:part(R, 2, byte_size(R) - 2);
               _ -> R
           end,
    case unknown_atom(Node, 1) of
        none -> unknown_atom(leaf(Tag, R), N - 1);
        Unknown -> Unknown
    end;
unknown_atom(<<Tag, R/binary>>, N) ->
    unknown_atom(skip_scalar(Tag, R), N - 1).

%% A scalar the walk's first clauses take off: what follows it.
-spec skip_scalar(byte(), binary()) -> binary().
skip_scalar(97, <<_, R/binary>>) -> R;
skip_scalar(98, <<_:32, R/binary>>) -> R;
skip_scalar(70, <<_:64, R/binary>>) -> R;
skip_scalar(106, R) -> R;
skip_scalar(109, <<Len:32, _:Len/binary, R/binary>>) -> R;
skip_scalar(107, <<Len:16, _:Len/binary, R/binary>>) -> R;
skip_scalar(110, <<Len, _Sign, _:Len/binary, R/binary>>) -> R;
skip_scalar(Tag, R) -> leaf(Tag, R).

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
