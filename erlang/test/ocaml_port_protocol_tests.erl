%% EUnit tests of the wire protocol's pure parts: the stream cut into frames against a
%% limit, envelopes parsed by hand, answers decoded (cpp/port/README.md, protocol 2).
-module(ocaml_port_protocol_tests).

-include_lib("eunit/include/eunit.hrl").

%% A frame as the worker writes it: envelope, then payload, each a whole external term.
frame(Envelope, Payload) ->
    <<(term_to_binary(Envelope))/binary, (term_to_binary(Payload))/binary>>.

%% The same with its {packet, 4} header, as it comes down the pipe.
packet(Body) ->
    <<(byte_size(Body)):32, Body/binary>>.

%%% Framing

frames_test() ->
    F1 = frame({reply, make_ref()}, {ok, 1}),
    F2 = frame({log, warning}, <<"hi">>),
    Stream = <<(packet(F1))/binary, (packet(F2))/binary>>,
    Framer = ocaml_port_protocol:new_framer(),
    ?assertMatch({ok, [F1, F2], _}, ocaml_port_protocol:frames(Stream, Framer, 1000)).

%% The stream cut at every byte: the same frames come out, whatever the reads.
frames_across_reads_test() ->
    Bodies = [frame({reply, make_ref()}, {ok, binary:copy(<<I>>, I * 7)}) || I <- lists:seq(1, 40)],
    Stream = iolist_to_binary([packet(B) || B <- Bodies]),
    [?assertEqual(Bodies, feed(pieces(Stream, Size), 1 bsl 20))
     || Size <- [1, 2, 3, 4, 5, 7, 64, 1000, byte_size(Stream)]].

pieces(<<>>, _) -> [];
pieces(Bin, Size) when byte_size(Bin) =< Size -> [Bin];
pieces(Bin, Size) -> <<P:Size/binary, R/binary>> = Bin, [P | pieces(R, Size)].

feed(Pieces, Limit) ->
    {Frames, _} = lists:foldl(
                    fun(Piece, {Acc, Framer}) ->
                            {ok, New, Framer2} = ocaml_port_protocol:frames(Piece, Framer, Limit),
                            {Acc ++ New, Framer2}
                    end, {[], ocaml_port_protocol:new_framer()}, Pieces),
    Frames.

%% A worker announcing a huge frame is refused at the header: nothing is allocated for it
%% (the VM's own {packet, 4} would allocate 2 GB for these four bytes).
frame_over_the_limit_test_() ->
    New = ocaml_port_protocol:new_framer(),
    [?_assertEqual({error, {frame_too_large, 16#7fffffff, 100}},
                   ocaml_port_protocol:frames(<<16#7f, 16#ff, 16#ff, 16#ff>>, New, 100)),
     ?_assertEqual({error, {frame_too_large, 101, 100}},
                   ocaml_port_protocol:frames(<<101:32, 0:800>>, New, 100)),
     ?_assertMatch({ok, [_], _}, ocaml_port_protocol:frames(<<100:32, 0:800>>, New, 100)),
     ?_assertEqual({error, empty_frame}, ocaml_port_protocol:frames(<<0:32>>, New, 100)),
     %% A header split across reads is checked once whole.
     ?_assertEqual({error, {frame_too_large, 16#01000000, 100}},
                   begin
                       {ok, [], F} = ocaml_port_protocol:frames(<<1, 0>>, New, 100),
                       ocaml_port_protocol:frames(<<0, 0>>, F, 100)
                   end)].

%%% Envelopes

reply_frame_test() ->
    Ref = make_ref(),
    Frame = frame({reply, Ref}, {ok, [1, 2, 3]}),
    {ok, {reply, Ref}, Payload} = ocaml_port_protocol:parse_frame(Frame),
    ?assertEqual(term_to_binary({ok, [1, 2, 3]}), Payload),
    ?assertEqual({ok, [1, 2, 3]}, ocaml_port_protocol:decode_answer(Payload)).

payload_stays_a_sub_binary_test() ->
    Big = binary:copy(<<"x">>, 100000),
    Frame = frame({reply, make_ref()}, {ok, Big}),
    {ok, _, Payload} = ocaml_port_protocol:parse_frame(Frame),
    %% Same underlying binary: no copy of a large answer.
    ?assertEqual(binary:referenced_byte_size(Frame), binary:referenced_byte_size(Payload)).

other_envelopes_test_() ->
    Self = self(),
    [?_assertMatch({ok, {send, Self}, _}, ocaml_port_protocol:parse_frame(frame({send, Self}, hi))),
     ?_assertMatch({ok, {erl_call, 7}, _},
                   ocaml_port_protocol:parse_frame(frame({erl_call, 7}, {lists, reverse, [[1]]}))),
     ?_assertMatch({ok, {erl_call, 123456789012}, _},
                   ocaml_port_protocol:parse_frame(frame({erl_call, 123456789012}, {m, f, []}))),
     ?_assertMatch({ok, {log, warning}, _},
                   ocaml_port_protocol:parse_frame(frame({log, warning}, <<"careful">>))),
     ?_assertMatch({ok, {heartbeat, 1500}, _},
                   ocaml_port_protocol:parse_frame(frame({heartbeat, 1500}, []))),
     %% A level logger does not know is still worth a line.
     ?_assertMatch({ok, {log, warning}, _},
                   ocaml_port_protocol:parse_frame(frame({log, shouting}, <<"!">>))),
     %% Atoms in any of their four encodings.
     ?_assertMatch({ok, {log, error}, _},
                   ocaml_port_protocol:parse_frame(
                     <<131, 104, 2, 118, 3:16, "log", 115, 5, "error", (term_to_binary(<<>>))/binary>>))].

malformed_frames_test_() ->
    Parse = fun ocaml_port_protocol:parse_frame/1,
    [?_assertEqual({error, {bad_envelope, <<"junk!">>}}, Parse(<<"junk!">>)),
     ?_assertEqual({error, {bad_envelope, <<>>}}, Parse(<<>>)),
     %% Only the head of a large junk frame is kept for the report.
     ?_assertEqual({error, {bad_envelope, binary:copy(<<0>>, 32)}}, Parse(binary:copy(<<0>>, 1000))),
     ?_assertMatch({error, {no_payload, _}}, Parse(term_to_binary({reply, make_ref()}))),
     ?_assertMatch({error, {no_payload, _}},
                   Parse(<<(term_to_binary({reply, make_ref()}))/binary, "trailing">>)),
     ?_assertMatch({error, {bad_envelope, _}}, Parse(frame({reply, not_a_ref}, ok))),
     ?_assertMatch({error, {bad_envelope, _}}, Parse(frame({send, not_a_pid}, ok))),
     ?_assertMatch({error, {bad_envelope, _}}, Parse(frame({erl_call, <<"id">>}, ok))),
     ?_assertMatch({error, {bad_envelope, _}}, Parse(frame({heartbeat, -1}, []))),
     ?_assertMatch({error, {bad_envelope, _}}, Parse(frame(hello, ok))),
     ?_assertMatch({error, {bad_envelope, _}}, Parse(frame({hello, 1}, ok))),
     ?_assertMatch({error, {bad_envelope, _}}, Parse(frame({log, 1}, <<>>))),
     ?_assertMatch({error, {bad_envelope, _}}, Parse(frame({reply, make_ref(), x}, ok))),
     %% A compressed envelope is not one the worker writes.
     ?_assertMatch({error, {bad_envelope, _}},
                   Parse(begin
                             <<131, Envelope/binary>> = term_to_binary({reply, make_ref()}),
                             <<131, 80, (byte_size(Envelope)):32, (zlib:compress(Envelope))/binary,
                               (term_to_binary(ok))/binary>>
                         end)),
     %% A reference that claims more bytes than there are.
     ?_assertMatch({error, {bad_envelope, _}},
                   Parse(<<131, 104, 2, 119, 5, "reply", 90, 0, 5, 119, 1, "x", 0:32>>))].

%% The answer frame as camlbeam-port writes it, made by hand (the fast path of
%% parse_frame/1; term_to_binary's own encoding of atoms changes with OTP releases), and
%% what binary_to_term refuses in one: an unknown node, no words, a forged local
%% reference.
hand_made_reply_test_() ->
    Node = atom_to_binary(node()),
    Reply = fun(NodeName, Words) ->
                    <<131, 104, 2, 100, 5:16, "reply", 90, (length(Words)):16, 100, (byte_size(NodeName)):16,
                      NodeName/binary, 0:32, (<< <<W:32>> || W <- Words >>)/binary,
                      (term_to_binary({ok, 1}))/binary>>
            end,
    Ref = make_ref(),
    <<131, 90, 3:16, 100, _:16, _:(byte_size(Node))/binary, Creation:32, RefWords:12/binary>> = term_to_binary(Ref),
    Real = <<131, 104, 2, 100, 5:16, "reply", 90, 3:16, 100, (byte_size(Node)):16, Node/binary, Creation:32,
             RefWords/binary, (term_to_binary({ok, 1}))/binary>>,
    [?_assertMatch({ok, {reply, Ref}, _}, ocaml_port_protocol:parse_frame(Real)),
     ?_assertMatch({error, {bad_envelope, _}},
                   ocaml_port_protocol:parse_frame(Reply(<<"camlbeam_no_such_node@nowhere">>, [1, 2, 3]))),
     ?_assertMatch({error, {bad_envelope, _}}, ocaml_port_protocol:parse_frame(Reply(Node, []))),
     ?_assertMatch({error, {bad_envelope, _}},
                   ocaml_port_protocol:parse_frame(Reply(binary:copy(<<"n">>, 300), [1, 2, 3]))),
     ?_assertMatch({error, {bad_envelope, _}},
                   ocaml_port_protocol:parse_frame(Reply(Node, [16#ffffffff, 16#ffffffff, 16#ffffffff])))].

%% An envelope naming an atom this VM does not know: refused without creating it, and
%% never decoded (only its text is compared).
unknown_atom_in_envelope_test() ->
    Name = "camlbeam_unit_test_never_an_atom",
    Envelope = <<131, 104, 2, 119, (length(Name)), (list_to_binary(Name))/binary, 97, 1>>,
    ?assertMatch({error, {bad_envelope, _}},
                 ocaml_port_protocol:parse_frame(<<Envelope/binary, (term_to_binary(ok))/binary>>)),
    ?assertError(badarg, list_to_existing_atom(Name)).

%%% Payloads

decode_answer_test_() ->
    Decode = fun(Term) -> ocaml_port_protocol:decode_answer(term_to_binary(Term)) end,
    UnknownAtom = <<131, 104, 2, 119, 2, "ok", 119, 21, "camlbeam_unit_unknown">>,
    [?_assertEqual({ok, 1}, Decode({ok, 1})),
     ?_assertEqual({error, {undef, f}}, Decode({error, {undef, f}})),
     ?_assertMatch({error, {bad_reply, <<"not an answer", _/binary>>}}, Decode(ok)),
     %% The unknown atom is named, and not created.
     ?_assertEqual({error, {bad_reply, <<"the atom 'camlbeam_unit_unknown' is not known to this VM "
                                        "(a worker's answer cannot create atoms)">>}},
                   ocaml_port_protocol:decode_answer(UnknownAtom)),
     ?_assertError(badarg, list_to_existing_atom("camlbeam_unit_unknown")),
     ?_assertMatch({error, {bad_reply, _}}, ocaml_port_protocol:decode_answer(<<131, 255>>))].

is_ok_answer_test_() ->
    [?_assert(ocaml_port_protocol:is_ok_answer(term_to_binary({ok, 1}))),
     ?_assert(ocaml_port_protocol:is_ok_answer(term_to_binary({ok, 1}, [{minor_version, 2}]))),
     ?_assertNot(ocaml_port_protocol:is_ok_answer(term_to_binary({error, 1}))),
     ?_assertNot(ocaml_port_protocol:is_ok_answer(term_to_binary({ok, 1, 2}))),
     ?_assertNot(ocaml_port_protocol:is_ok_answer(<<>>))].

decode_hello_test_() ->
    Decode = fun(Term) -> ocaml_port_protocol:decode_hello(term_to_binary(Term)) end,
    [?_assertEqual({ok, #{flavour => native, ocaml_version => <<"4.13.1">>, os_pid => 42, atoms => [],
                          exports => []}},
                   Decode({ok, #{protocol => 2, flavour => native, ocaml_version => <<"4.13.1">>,
                                 os_pid => 42}})),
     %% A static worker's own code declared atoms and exports.
     ?_assertEqual({ok, #{flavour => native, ocaml_version => <<"4.13.1">>, os_pid => 42,
                          atoms => [<<"bad_header">>],
                          exports => [{<<"static">>, <<"fib">>, 1, <<"fun((ocaml:int63()) -> ocaml:int63())">>}]}},
                   Decode({ok, #{protocol => 2, flavour => native, ocaml_version => <<"4.13.1">>,
                                 os_pid => 42, atoms => [<<"bad_header">>],
                                 exports => [{<<"static">>, <<"fib">>, 1,
                                              <<"fun((ocaml:int63()) -> ocaml:int63())">>}]}})),
     ?_assertMatch({error, {bad_hello, <<"export 1 is not {Module, Function, Arity, Signature}", _/binary>>}},
                   Decode({ok, #{protocol => 2, flavour => native, ocaml_version => <<"4.13.1">>,
                                 os_pid => 42, exports => [{<<"static">>, <<"fib">>}]}})),
     ?_assertMatch({error, {bad_hello, <<"declared atom 1 cannot be an atom", _/binary>>}},
                   Decode({ok, #{protocol => 2, flavour => native, ocaml_version => <<"4.13.1">>,
                                 os_pid => 42, atoms => [bad_header]}})),
     ?_assertEqual({error, {protocol_mismatch, 1}},
                   Decode({ok, #{protocol => 1, flavour => native, ocaml_version => <<"5.1">>}})),
     %% A worker of protocol 1 refuses a hello of protocol 2.
     ?_assertEqual({error, {protocol_mismatch, <<"hello: this worker speaks protocol 1, not 2">>}},
                   Decode({error, {bad_request, <<"hello: this worker speaks protocol 1, not 2">>}})),
     ?_assertMatch({error, {bad_hello, _}}, Decode({ok, #{protocol => 2, flavour => jit,
                                                          ocaml_version => <<>>, os_pid => 1}})),
     ?_assertMatch({error, {bad_hello, _}}, Decode({ok, #{protocol => 2, flavour => native,
                                                          ocaml_version => <<>>}})),
     ?_assertMatch({error, {bad_hello, _}}, Decode({error, nope}))].

decode_load_test_() ->
    Decode = fun(Term) -> ocaml_port_protocol:decode_load(term_to_binary(Term)) end,
    [?_assertEqual({ok, #{atoms => [], exports => []}}, Decode(ok)),
     ?_assertEqual({ok, #{atoms => [<<"bad_header">>, <<"ünïcode"/utf8>>], exports => []}},
                   Decode({ok, #{atoms => [<<"bad_header">>, <<"ünïcode"/utf8>>]}})),
     ?_assertEqual({ok, #{atoms => [], exports => [{<<"mathlib">>, <<"fib">>, 1, <<"fun((ocaml:int63()) -> ocaml:int63())">>},
                                                   {<<"mathlib">>, <<"raw">>, any, <<"fun((...) -> term())">>}]}},
                   Decode({ok, #{exports => [{<<"mathlib">>, <<"fib">>, 1, <<"fun((ocaml:int63()) -> ocaml:int63())">>},
                                             {<<"mathlib">>, <<"raw">>, any, <<"fun((...) -> term())">>}]}})),
     ?_assertMatch({error, {bad_reply, <<"export 2 names a module or function that cannot be an atom", _/binary>>}},
                   Decode({ok, #{exports => [{<<"m">>, <<"f">>, 0, <<>>}, {<<"m">>, <<255>>, 0, <<>>}]}})),
     ?_assertMatch({error, {bad_reply, _}}, Decode({ok, #{exports => [{<<"m">>, <<"f">>, -1, <<>>}]}})),
     ?_assertMatch({error, {bad_reply, _}}, Decode({ok, #{exports => [{<<"m">>, <<"f">>, 1, sig}]}})),
     ?_assertMatch({error, {bad_reply, _}}, Decode({ok, #{exports => [{m, <<"f">>, 1, <<>>}]}})),
     ?_assertMatch({error, {bad_reply, <<"the exports are not a proper list">>}},
                   Decode({ok, #{exports => [{<<"m">>, <<"f">>, 1, <<>>} | tail]}})),
     ?_assertMatch({error, {bad_reply, <<"declared atom 2 cannot be", _/binary>>}},
                   Decode({ok, #{atoms => [<<"a">>, <<255>>]}})),
     ?_assertMatch({error, {bad_reply, _}}, Decode({ok, #{atoms => [<<"a">> | <<"b">>]}})),
     ?_assertMatch({error, {bad_reply, _}}, Decode({ok, #{atoms => <<"a">>}})),
     ?_assertMatch({error, {bad_reply, _}}, Decode({ok, #{other => 1}})),
     ?_assertEqual({error, {load_failed, enoent, <<"x: no such file">>}},
                   Decode({error, {load_failed, enoent, <<"x: no such file">>}})),
     ?_assertEqual({error, timeout}, Decode({error, timeout})),
     ?_assertMatch({error, {bad_reply, _}}, Decode({ok, loaded}))].

%% The texts are checked as binary_to_atom/2 would take them: at most 255 characters,
%% whatever their size in bytes.
atom_texts_test_() ->
    Check = fun ocaml_port_protocol:atom_texts/1,
    Snails = unicode:characters_to_binary(lists:duplicate(255, 16#1F40C)),
    [?_assertEqual({ok, []}, Check([])),
     ?_assertEqual({ok, [Snails]}, Check([Snails])),
     ?_assertEqual(Snails, atom_to_binary(binary_to_atom(Snails, utf8), utf8)),
     ?_assertEqual({ok, [binary:copy(<<"a">>, 255)]}, Check([binary:copy(<<"a">>, 255)])),
     ?_assertMatch({error, _}, Check([binary:copy(<<"a">>, 256)])),
     ?_assertMatch({error, _}, Check([<<Snails/binary, "a">>])),
     ?_assertMatch({error, _}, Check([<<16#C0, 16#80>>])),  % an overlong encoding
     ?_assertMatch({error, _}, Check(["abc"])),
     ?_assertMatch({error, _}, Check(atoms))].

decode_erl_call_test_() ->
    Decode = fun(Term) -> ocaml_port_protocol:decode_erl_call(term_to_binary(Term)) end,
    [?_assertEqual({ok, {lists, reverse, [[1, 2]]}}, Decode({lists, reverse, [[1, 2]]})),
     ?_assertMatch({error, _}, Decode({lists, reverse, [a | b]})),
     ?_assertMatch({error, _}, Decode({"lists", reverse, []})),
     ?_assertMatch({error, _}, Decode({lists, reverse})),
     %% A fun would run whatever it names through an allowed higher-order function.
     ?_assertMatch({error, <<"the arguments hold a fun", _/binary>>},
                   Decode({lists, map, [fun erlang:halt/1, [7]]})),
     ?_assertMatch({error, <<"the arguments hold a fun", _/binary>>},
                   Decode({lists, foldl, [x, 0, [{a, #{k => [1 | fun() -> ok end]}}]]}))].

%% A request as the worker reads it: the length, then the term.
unframe(Request) ->
    <<Size:32, Bin:Size/binary>> = iolist_to_binary(Request),
    binary_to_term(Bin).

requests_test_() ->
    Ref = make_ref(),
    Self = self(),
    [?_assertEqual({hello, Ref, #{worker_id => 3, worker_pid => Self, protocol => 2}},
                   unframe(ocaml_port_protocol:hello(Ref, 3, Self))),
     ?_assertEqual({call, Ref, fib, [30], 5000},
                   unframe(ocaml_port_protocol:call(Ref, fib, [30], 5000))),
     ?_assertEqual({call, Ref, fib, [30], infinity},
                   unframe(ocaml_port_protocol:call(Ref, fib, [30], infinity))),
     ?_assertEqual({load, Ref, "p.cmxs", 10}, unframe(ocaml_port_protocol:load(Ref, "p.cmxs", 10))),
     ?_assertEqual({cancel, Ref}, unframe(ocaml_port_protocol:cancel(Ref))),
     ?_assertEqual({erl_reply, 5, {ok, 1}}, unframe(ocaml_port_protocol:erl_reply(5, {ok, 1})))].
