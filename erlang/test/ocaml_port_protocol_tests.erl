%% EUnit tests of the wire protocol's pure parts: frames built as cpp/port/README.md
%% describes them, parsed, and the answers decoded.
-module(ocaml_port_protocol_tests).

-include_lib("eunit/include/eunit.hrl").

%% A frame as the worker writes it: envelope, then payload, each a whole external term.
frame(Envelope, Payload) ->
    <<(term_to_binary(Envelope))/binary, (term_to_binary(Payload))/binary>>.

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
     ?_assertMatch({ok, {log, warning}, _},
                   ocaml_port_protocol:parse_frame(frame({log, warning}, <<"careful">>))),
     %% A level logger does not know is still worth a line.
     ?_assertMatch({ok, {log, warning}, _},
                   ocaml_port_protocol:parse_frame(frame({log, shouting}, <<"!">>)))].

compressed_terms_test() ->
    Ref = make_ref(),
    Long = lists:duplicate(1000, 0),
    Frame = <<(term_to_binary({reply, Ref}, [compressed]))/binary,
              (term_to_binary({ok, Long}, [compressed]))/binary>>,
    {ok, {reply, Ref}, Payload} = ocaml_port_protocol:parse_frame(Frame),
    ?assertEqual({ok, Long}, ocaml_port_protocol:decode_answer(Payload)).

malformed_frames_test_() ->
    Parse = fun ocaml_port_protocol:parse_frame/1,
    [?_assertEqual({error, {not_etf, <<"junk!">>}}, Parse(<<"junk!">>)),
     ?_assertEqual({error, {not_etf, <<>>}}, Parse(<<>>)),
     %% Only the head of a large junk frame is kept for the report.
     ?_assertEqual({error, {not_etf, binary:copy(<<0>>, 32)}}, Parse(binary:copy(<<0>>, 1000))),
     ?_assertEqual({error, {no_payload, {reply, ref}}}, Parse(term_to_binary({reply, ref}))),
     ?_assertMatch({error, {no_payload, _}},
                   Parse(<<(term_to_binary({reply, make_ref()}))/binary, "trailing">>)),
     ?_assertEqual({error, {unknown_envelope, {reply, not_a_ref}}},
                   Parse(frame({reply, not_a_ref}, ok))),
     ?_assertEqual({error, {unknown_envelope, {send, not_a_pid}}}, Parse(frame({send, not_a_pid}, ok))),
     ?_assertEqual({error, {unknown_envelope, hello}}, Parse(frame(hello, ok))),
     ?_assertEqual({error, {unknown_envelope, {log, 1}}}, Parse(frame({log, 1}, <<>>)))].

%% An envelope naming an atom this VM does not know: refused without creating it.
unknown_atom_in_envelope_test() ->
    Name = "camlbeam_unit_test_never_an_atom",
    Envelope = <<131, 104, 2, 119, (length(Name)), (list_to_binary(Name))/binary, 97, 1>>,
    ?assertMatch({error, {not_etf, _}},
                 ocaml_port_protocol:parse_frame(<<Envelope/binary, (term_to_binary(ok))/binary>>)),
    ?assertError(badarg, list_to_existing_atom(Name)).

decode_answer_test_() ->
    Decode = fun(Term) -> ocaml_port_protocol:decode_answer(term_to_binary(Term)) end,
    UnknownAtom = <<131, 104, 2, 119, 2, "ok", 119, 21, "camlbeam_unit_unknown">>,
    [?_assertEqual({ok, 1}, Decode({ok, 1})),
     ?_assertEqual({error, {undef, f}}, Decode({error, {undef, f}})),
     ?_assertMatch({error, {bad_reply, <<"not an answer", _/binary>>}}, Decode(ok)),
     ?_assertMatch({error, {bad_reply, <<"an answer of 30 bytes", _/binary>>}},
                   ocaml_port_protocol:decode_answer(UnknownAtom)),
     ?_assertError(badarg, list_to_existing_atom("camlbeam_unit_unknown")),
     ?_assertMatch({error, {bad_reply, _}}, ocaml_port_protocol:decode_answer(<<131, 255>>))].

decode_hello_test_() ->
    Decode = fun(Term) -> ocaml_port_protocol:decode_hello(term_to_binary(Term)) end,
    [?_assertEqual({ok, #{flavour => native, ocaml_version => <<"4.13.1">>}},
                   Decode({ok, #{protocol => 1, flavour => native, ocaml_version => <<"4.13.1">>}})),
     ?_assertEqual({error, {protocol_mismatch, 2}},
                   Decode({ok, #{protocol => 2, flavour => native, ocaml_version => <<"5.1">>}})),
     ?_assertMatch({error, {bad_hello, _}}, Decode({ok, #{protocol => 1, flavour => jit,
                                                          ocaml_version => <<>>}})),
     ?_assertMatch({error, {bad_hello, _}}, Decode({error, nope}))].

decode_load_test_() ->
    Decode = fun(Term) -> ocaml_port_protocol:decode_load(term_to_binary(Term)) end,
    [?_assertEqual(ok, Decode(ok)),
     ?_assertEqual({error, {load_failed, enoent, <<"x: no such file">>}},
                   Decode({error, {load_failed, enoent, <<"x: no such file">>}})),
     ?_assertMatch({error, {bad_reply, _}}, Decode({ok, loaded}))].

decode_erl_call_test_() ->
    Decode = fun(Term) -> ocaml_port_protocol:decode_erl_call(term_to_binary(Term)) end,
    [?_assertEqual({ok, {lists, reverse, [[1, 2]]}}, Decode({lists, reverse, [[1, 2]]})),
     ?_assertMatch({error, _}, Decode({lists, reverse, [a | b]})),
     ?_assertMatch({error, _}, Decode({"lists", reverse, []})),
     ?_assertMatch({error, _}, Decode({lists, reverse}))].

requests_test_() ->
    Ref = make_ref(),
    Self = self(),
    [?_assertEqual({hello, Ref, #{worker_id => 3, worker_pid => Self}},
                   binary_to_term(ocaml_port_protocol:hello(Ref, 3, Self))),
     ?_assertEqual({call, Ref, fib, [30]}, binary_to_term(ocaml_port_protocol:call(Ref, fib, [30]))),
     ?_assertEqual({cast, log, [<<"hi">>]}, binary_to_term(ocaml_port_protocol:cast(log, [<<"hi">>]))),
     ?_assertEqual({load, Ref, "p.cmxs"}, binary_to_term(ocaml_port_protocol:load(Ref, "p.cmxs"))),
     ?_assertEqual({erl_reply, 5, {ok, 1}}, binary_to_term(ocaml_port_protocol:erl_reply(5, {ok, 1})))].
