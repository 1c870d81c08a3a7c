%% @doc The wire protocol of the port worker, version 2 (`cpp/port/README.md'):
%% the frames Erlang writes, and the reading of what the worker writes back.
%% Pure functions; whoever owns or writes to the port uses them.
%%
%% Nothing the worker writes is trusted. Its output is read as a byte stream
%% (the port is opened in `stream' mode) and cut into frames here, against
%% this side's own size limit: the VM's `{packet, 4}' would allocate whatever
%% length a worker announces (`7F FF FF FF' costs 2 GB). A frame is two
%% external terms back to back, an envelope then a payload; the envelope is
%% parsed by hand, byte by byte, and only the small terms it names (a
%% reference, a pid) are given to `binary_to_term'. The payload stays a
%% sub-binary of the frame until whoever it is for decodes it, through
%% {@link ocaml_etf_guard}.
-module(ocaml_port_protocol).

-export([hello/3, call/4, load/3, cancel/1, erl_reply/2]).
-export([new_framer/0, frames/3, parse_frame/1]).
-export([decode_answer/1, decode_hello/1, decode_load/1, load_answer/1, decode_erl_call/1,
         erl_call_request/1, decode_payload/1]).
-export([is_ok_answer/1, atom_texts/1, export_texts/1]).
-export_type([envelope/0, malformed/0, hello/0, erl_call_request/0, framer/0, deadline_ms/0,
              atom_text/0, export_text/0, declared/0]).

%% Version of the protocol this module speaks; the worker's hello must say the same.
-define(PROTOCOL, 2).
%% How much of an undecodable frame a diagnostic keeps.
-define(HEAD_BYTES, 32).

-type envelope() :: {reply, reference()}
                  | {send, pid()}
                  | {erl_call, Id :: integer()}
                  | {log, logger:level()}
                  | {heartbeat, ElapsedMs :: non_neg_integer()}.

%% Why the worker's output is not the protocol's.
-type malformed() :: {frame_too_large, Size :: non_neg_integer(), Limit :: pos_integer()}
                   | empty_frame
                   | {bad_envelope, Head :: binary()}
                   | {no_payload, Head :: binary()}.

-type hello() :: #{flavour := ocaml_options:flavour(), ocaml_version := binary(),
                   os_pid := pos_integer(), atoms := [atom_text()], exports := [export_text()]}.

%% The text of an atom a worker declared (`Erl.declare_atoms'): a binary of at
%% most 255 UTF-8 characters, checked, not yet an atom.
-type atom_text() :: binary().

%% An export a worker reported (`Erl.export'): its module and name, checked
%% atom texts, not yet atoms; its arity (`any' for `Erl.export_raw'); its
%% type in Erlang type syntax, as its converters describe it.
-type export_text() :: {Module :: atom_text(), Function :: atom_text(), Arity :: arity() | any,
                        Signature :: binary()}.

%% What the code a step of a worker's start-up ran declared: the code linked
%% into the worker (hello), or a plugin (its load). `exports' lists every
%% export of each module whose exports that code made or replaced.
-type declared() :: #{atoms := [atom_text()], exports := [export_text()]}.

-type erl_call_request() :: {module(), atom(), [term()]}.

%% A request's time limit as the worker gets it.
-type deadline_ms() :: non_neg_integer() | infinity.

%% What is left of the stream between two reads: the start of a header, or
%% the part of a frame's body read so far (in pieces, joined once whole).
-opaque framer() :: {head, binary()}
                  | {body, Size :: pos_integer(), Got :: non_neg_integer(), Pieces :: [binary()]}.

%%% Frames to the worker
%%
%% Each is one external term behind its 4-byte length (the port is in stream mode
%% both ways), as iodata: the header and the term are not copied together.

%% A request as written to the port.
-type request() :: [binary(), ...].
-export_type([request/0]).

%% @doc The first frame a worker gets: who it is, and the protocol spoken.
-spec hello(reference(), pos_integer(), pid()) -> request().
hello(Ref, WorkerId, WorkerPid) ->
    framed({hello, Ref, #{worker_id => WorkerId, worker_pid => WorkerPid, protocol => ?PROTOCOL}}).

%% @doc A call; the worker answers with a `{reply, Ref}' frame. Past `Timeout'
%% milliseconds of running it, the worker interrupts it.
-spec call(reference(), ocaml:fun_name(), [term()], deadline_ms()) -> request().
call(Ref, Fun, Args, Timeout) ->
    framed({call, Ref, Fun, Args, Timeout}).

%% @doc Loading a plugin; the worker answers with a `{reply, Ref}' frame.
-spec load(reference(), file:filename_all(), deadline_ms()) -> request().
load(Ref, Path, Timeout) ->
    framed({load, Ref, Path, Timeout}).

%% @doc The caller of the request `Ref' gave up: the worker answers it without
%% running it, if it has not started it yet.
-spec cancel(reference()) -> request().
cancel(Ref) ->
    framed({cancel, Ref}).

%% @doc The answer to the worker's `{erl_call, Id}' frame.
-spec erl_reply(integer(), {ok, term()} | {error, {atom(), term()}}) -> request().
erl_reply(Id, Result) ->
    framed({erl_reply, Id, Result}).

-spec framed(term()) -> request().
framed(Term) ->
    Bin = term_to_binary(Term),
    [<<(byte_size(Bin)):32>>, Bin].

%%% The worker's output: frames

-spec new_framer() -> framer().
new_framer() ->
    {head, <<>>}.

%% @doc Cuts what the port delivered into whole frames (`{packet, 4}':
%% a 4-byte big-endian length, then the frame), keeping the rest for the next
%% call. A frame announced longer than `Limit', or empty, is a protocol error:
%% nothing after it can be trusted.
-spec frames(binary(), framer(), pos_integer()) ->
    {ok, [binary()], framer()} | {error, malformed()}.
frames(Data, {head, <<>>}, Limit) ->
    split(Data, Limit, []);
frames(Data, {head, Head}, Limit) ->
    split(<<Head/binary, Data/binary>>, Limit, []);
frames(Data, {body, Size, Got, Pieces}, _Limit) when Got + byte_size(Data) < Size ->
    {ok, [], {body, Size, Got + byte_size(Data), [Data | Pieces]}};
frames(Data, {body, Size, Got, Pieces}, Limit) ->
    Missing = Size - Got,
    <<Last:Missing/binary, Rest/binary>> = Data,
    Frame = iolist_to_binary(lists:reverse(Pieces, [Last])),
    split(Rest, Limit, [Frame]).

-spec split(binary(), pos_integer(), [binary()]) -> {ok, [binary()], framer()} | {error, malformed()}.
split(<<Size:32, Frame:Size/binary, Rest/binary>>, Limit, Frames) when Size > 0, Size =< Limit ->
    split(Rest, Limit, [Frame | Frames]);
split(<<0:32, _/binary>>, _Limit, _Frames) ->
    {error, empty_frame};
split(<<Size:32, _/binary>>, Limit, _Frames) when Size > Limit ->
    {error, {frame_too_large, Size, Limit}};
split(<<Size:32, Part/binary>>, _Limit, Frames) ->
    {ok, lists:reverse(Frames), {body, Size, byte_size(Part), [Part]}};
split(Head, _Limit, Frames) ->
    {ok, lists:reverse(Frames), {head, Head}}.

%% @doc Splits a frame into its envelope and its still-encoded payload. The
%% envelope is checked byte by byte to be one of the protocol's (a tuple of an
%% atom and a reference, a pid, a small integer or an atom), so the
%% `binary_to_term' that then reads it meets nothing but those: no map, no
%% atom it may not create.
-spec parse_frame(binary()) -> {ok, envelope(), Payload :: binary()} | {error, malformed()}.
parse_frame(<<131, 104, 2, 100, 5:16, "reply", 90, Words:16, 100, NodeLength:16, _:NodeLength/binary,
               _Creation:32, _:Words/binary-unit:32, 131, _/binary>> = Frame)
  when Words >= 1, Words =< 5 ->
    %% The answer to a call as camlbeam-port writes it (ATOM_EXT names, a
    %% NEWER_REFERENCE_EXT): checked by this one match, without the steps below.
    %% binary_to_term may still refuse the reference (an unknown node, a local
    %% one this node never made).
    Used = 3 + 8 + 3 + 3 + NodeLength + 4 + 4 * Words,
    try binary_to_term(Frame, [safe, used]) of
        {{reply, Ref}, Used} when is_reference(Ref) ->
            <<_:Used/binary, Payload/binary>> = Frame,
            {ok, {reply, Ref}, Payload};
        _ ->
            {error, {bad_envelope, head(Frame)}}
    catch
        error:badarg -> {error, {bad_envelope, head(Frame)}}
    end;
parse_frame(<<131, 104, 2, Rest/binary>> = Frame) ->
    try
        Size = envelope_size(Rest),
        <<_:Size/binary, Payload/binary>> = Rest,
        {Envelope, Used} = binary_to_term(Frame, [safe, used]),
        Used = 3 + Size,
        {classify(Envelope), Payload}
    of
        {Classified, <<131, _/binary>> = Payload2} -> {ok, Classified, Payload2};
        {_, _} -> {error, {no_payload, head(Frame)}}
    catch
        error:_ -> {error, {bad_envelope, head(Frame)}}
    end;
parse_frame(Frame) ->
    {error, {bad_envelope, head(Frame)}}.

%% The bytes of an envelope after its tuple header: its atom's, and those of the
%% one term that follows, of the kind the atom calls for.
-spec envelope_size(binary()) -> pos_integer().
envelope_size(Envelope) ->
    {Name, After} = atom_text(Envelope),
    atom_size(Envelope) + case {Name, After} of
                              {<<"reply">>, <<Tag, _/binary>>} when Tag =:= 90; Tag =:= 114 -> reference_size(After);
                              {<<"send">>, <<Tag, _/binary>>} when Tag =:= 88; Tag =:= 103 -> pid_size(After);
                              {<<"erl_call">>, _} -> integer_size(After);
                              {<<"heartbeat">>, _} -> integer_size(After);
                              {<<"log">>, _} -> atom_size(After)
                          end.

-spec classify(term()) -> envelope().
classify({reply, Ref}) when is_reference(Ref) -> {reply, Ref};
classify({send, Pid}) when is_pid(Pid) -> {send, Pid};
classify({erl_call, Id}) when is_integer(Id) -> {erl_call, Id};
classify({heartbeat, Ms}) when is_integer(Ms), Ms >= 0 -> {heartbeat, Ms};
classify({log, Level}) when is_atom(Level) -> {log, log_level(atom_to_binary(Level))}.

%% An atom's text (either encoding), and what follows it. Never an atom.
-spec atom_text(binary()) -> {binary(), binary()}.
atom_text(<<100, Len:16, Text:Len/binary, Rest/binary>>) -> {Text, Rest};
atom_text(<<115, Len, Text:Len/binary, Rest/binary>>) -> {Text, Rest};
atom_text(<<118, Len:16, Text:Len/binary, Rest/binary>>) -> {Text, Rest};
atom_text(<<119, Len, Text:Len/binary, Rest/binary>>) -> {Text, Rest}.

%% A small integer of the envelope (an erl_call id, a duration): its size.
-spec integer_size(binary()) -> pos_integer().
integer_size(<<97, _, _/binary>>) -> 2;
integer_size(<<98, _:32, _/binary>>) -> 5;
integer_size(<<110, Len, Sign, _:Len/binary, _/binary>>) when Len =< 8, Sign =< 1 -> 3 + Len.

%% NEWER_REFERENCE_EXT and NEW_REFERENCE_EXT: tag, word count, node, creation, words.
-spec reference_size(binary()) -> pos_integer().
reference_size(<<90, Words:16, Node/binary>>) when Words >= 1, Words =< 5 ->
    3 + atom_size(Node) + 4 + 4 * Words;
reference_size(<<114, Words:16, Node/binary>>) when Words >= 1, Words =< 5 ->
    3 + atom_size(Node) + 1 + 4 * Words.

%% NEW_PID_EXT and PID_EXT: tag, node, id, serial, creation.
-spec pid_size(binary()) -> pos_integer().
pid_size(<<88, Node/binary>>) -> 1 + atom_size(Node) + 12;
pid_size(<<103, Node/binary>>) -> 1 + atom_size(Node) + 9.

-spec atom_size(binary()) -> pos_integer().
atom_size(<<Tag, Len:16, _:Len/binary, _/binary>>) when Tag =:= 100; Tag =:= 118 -> 3 + Len;
atom_size(<<Tag, Len, _:Len/binary, _/binary>>) when Tag =:= 115; Tag =:= 119 -> 2 + Len.

%% A worker's log line is worth keeping even at a level logger does not know.
-spec log_level(binary()) -> logger:level().
log_level(<<"emergency">>) -> emergency;
log_level(<<"alert">>) -> alert;
log_level(<<"critical">>) -> critical;
log_level(<<"error">>) -> error;
log_level(<<"warning">>) -> warning;
log_level(<<"notice">>) -> notice;
log_level(<<"info">>) -> info;
log_level(<<"debug">>) -> debug;
log_level(_) -> warning.

%%% Payloads

%% @doc The answer to a call: what {@link ocaml:call/4} returns.
-spec decode_answer(binary()) -> {ok, term()} | {error, term()}.
decode_answer(Payload) ->
    case decode_payload(Payload) of
        {ok, {ok, _} = Ok} -> Ok;
        {ok, {error, _} = Error} -> Error;
        {ok, Other} -> {error, {bad_reply, not_an_answer(Other)}};
        {error, Why} -> {error, {bad_reply, Why}}
    end.

%% @doc Whether an answer is `{ok, _}', read from its first bytes (the
%% answer to a cast is only looked at when it is not).
-spec is_ok_answer(binary()) -> boolean().
is_ok_answer(<<131, 104, 2, 100, 2:16, "ok", _/binary>>) -> true;
is_ok_answer(<<131, 104, 2, 115, 2, "ok", _/binary>>) -> true;
is_ok_answer(<<131, 104, 2, 118, 2:16, "ok", _/binary>>) -> true;
is_ok_answer(<<131, 104, 2, 119, 2, "ok", _/binary>>) -> true;
is_ok_answer(_) -> false.

%% @doc The answer to hello: the worker's flavour and OS pid, once its
%% protocol is checked, and the atoms the code linked into it declared and
%% its exports (none from a worker that does not say).
-spec decode_hello(binary()) ->
    {ok, hello()} | {error, {protocol_mismatch, term()} | {bad_hello, term()}}.
decode_hello(Payload) ->
    case decode_payload(Payload) of
        {ok, {ok, #{protocol := ?PROTOCOL, flavour := Flavour, ocaml_version := Version,
                    os_pid := OsPid} = Hello}}
          when (Flavour =:= native orelse Flavour =:= bytecode), is_binary(Version),
               is_integer(OsPid), OsPid > 0 ->
            case declared(Hello) of
                {ok, #{atoms := Atoms, exports := Exports}} ->
                    {ok, #{flavour => Flavour, ocaml_version => Version, os_pid => OsPid, atoms => Atoms,
                           exports => Exports}};
                {error, Why} ->
                    {error, {bad_hello, Why}}
            end;
        {ok, {ok, #{protocol := Protocol}}} when Protocol =/= ?PROTOCOL ->
            {error, {protocol_mismatch, Protocol}};
        {ok, {error, {bad_request, Message}}} ->
            %% An older worker refuses protocol 2 in these words.
            {error, {protocol_mismatch, Message}};
        {ok, Other} ->
            {error, {bad_hello, Other}};
        {error, Why} ->
            {error, {bad_hello, Why}}
    end.

%% @doc The answer to a load: once loaded, the atoms the plugin declared and
%% its exports (`ok' is a plugin that declared and exported nothing).
-spec decode_load(binary()) -> {ok, declared()}
                             | {error, {load_failed, atom(), binary()} | {bad_reply, binary()}
                                       | timeout | {request_failed, binary()}}.
decode_load(Payload) ->
    case decode_payload(Payload) of
        {ok, Answer} -> load_answer(Answer);
        {error, Why} -> {error, {bad_reply, Why}}
    end.

%% @doc The answer to a load, decoded already (the NIF builds it as a term):
%% what {@link decode_load/1} makes of it.
-spec load_answer(term()) -> {ok, declared()}
                             | {error, {load_failed, atom(), binary()} | {bad_reply, binary()}
                                       | timeout | {request_failed, binary()}}.
load_answer(ok) ->
    {ok, #{atoms => [], exports => []}};
load_answer({ok, Declared}) when is_map_key(atoms, Declared); is_map_key(exports, Declared) ->
    case declared(Declared) of
        {ok, _} = Ok -> Ok;
        {error, Why} -> {error, {bad_reply, Why}}
    end;
load_answer({error, {load_failed, Kind, Message}} = Error) when is_atom(Kind), is_binary(Message) ->
    Error;
load_answer({error, timeout} = Error) ->
    Error;
load_answer({error, {request_failed, Message}} = Error) when is_binary(Message) ->
    Error;
load_answer(Other) ->
    {error, {bad_reply, not_an_answer(Other)}}.

%% @doc The payload of an `erl_call' frame: `{Module, Function, Args}'.
-spec decode_erl_call(binary()) -> {ok, erl_call_request()} | {error, binary()}.
decode_erl_call(Payload) ->
    case decode_payload(Payload) of
        {ok, Request} -> erl_call_request(Request);
        {error, _} = Error -> Error
    end.

%% @doc An `Erl.call_erlang' request, decoded already (the NIF builds it as a
%% term): `{Module, Function, Args}' with a proper list of arguments that holds
%% no fun.
-spec erl_call_request(term()) -> {ok, erl_call_request()} | {error, binary()}.
erl_call_request({M, F, A} = Request) when is_atom(M), is_atom(F), is_list(A) ->
    case {is_proper_list(A), holds_fun([A])} of
        {false, _} -> {error, <<"the arguments are not a proper list">>};
        {true, true} -> {error, <<"the arguments hold a fun (the policy names what may run)">>};
        {true, false} -> {ok, Request}
    end;
erl_call_request(_) ->
    {error, <<"not {Module, Function, Args} with two atoms and a list">>}.

%% @doc Decodes a payload as untrusted data ({@link ocaml_etf_guard:decode/1}).
-spec decode_payload(binary()) -> {ok, term()} | {error, binary()}.
decode_payload(Payload) ->
    ocaml_etf_guard:decode(Payload).

%% The atoms and exports an answer reports, each key optional.
-spec declared(map()) -> {ok, declared()} | {error, binary()}.
declared(Answer) ->
    case {atom_texts(maps:get(atoms, Answer, [])), export_texts(maps:get(exports, Answer, []))} of
        {{ok, Atoms}, {ok, Exports}} -> {ok, #{atoms => Atoms, exports => Exports}};
        {{error, _} = Error, _} -> Error;
        {_, {error, _} = Error} -> Error
    end.

%% @doc Checks the exports a worker reported: a proper list of
%% `{Module, Function, Arity, Signature}', the names atom texts (what
%% `binary_to_atom/2' takes; none becomes an atom here), `Arity' a
%% non-negative integer or `any', `Signature' a binary.
-spec export_texts(term()) -> {ok, [export_text()]} | {error, binary()}.
export_texts(Exports) ->
    checked_list("exports", fun export_problem/2, Exports).

-spec export_problem(term(), pos_integer()) -> ok | {error, binary()}.
export_problem({Module, Function, Arity, Signature} = Export, Index)
  when (is_integer(Arity) andalso Arity >= 0) orelse Arity =:= any, is_binary(Signature) ->
    case is_atom_text(Module) andalso is_atom_text(Function) of
        true -> ok;
        false -> {error, text("export ~b names a module or function that cannot be an atom: ~tP",
                              [Index, Export, 8])}
    end;
export_problem(Other, Index) ->
    {error, text("export ~b is not {Module, Function, Arity, Signature}: ~tP", [Index, Other, 8])}.

%% @doc Checks the atoms a worker declared: a proper list of binaries, each
%% the UTF-8 text of at most 255 characters (what `binary_to_atom/2' takes).
%% They come from a worker, so nothing is assumed; none becomes an atom here.
-spec atom_texts(term()) -> {ok, [atom_text()]} | {error, binary()}.
atom_texts(Texts) ->
    checked_list("declared atoms", fun atom_text_problem/2, Texts).

-spec atom_text_problem(term(), pos_integer()) -> ok | {error, binary()}.
atom_text_problem(Text, Index) ->
    case is_atom_text(Text) of
        true -> ok;
        false -> {error, text("declared atom ~b cannot be an atom (a binary of at most 255 UTF-8 "
                              "characters): ~tP", [Index, Text, 8])}
    end.

%% A list a worker sent, as it came if it is a proper list whose every item
%% Check (given the item and its position, from 1) accepts; else the first
%% problem. What names the list in the errors.
-spec checked_list(string(), fun((term(), pos_integer()) -> ok | {error, binary()}), term()) ->
    {ok, list()} | {error, binary()}.
checked_list(What, Check, Items) when is_list(Items) ->
    case first_problem(Check, Items, 1) of
        none -> {ok, Items};
        improper -> {error, text("the ~ts are not a proper list", [What])};
        {error, _} = Error -> Error
    end;
checked_list(What, _Check, Other) ->
    {error, text("the ~ts are not a list: ~tP", [What, Other, 8])}.

-spec first_problem(fun((term(), pos_integer()) -> ok | {error, binary()}), term(), pos_integer()) ->
    none | improper | {error, binary()}.
first_problem(_Check, [], _Index) ->
    none;
first_problem(Check, [Item | Rest], Index) ->
    case Check(Item, Index) of
        ok -> first_problem(Check, Rest, Index + 1);
        {error, _} = Error -> Error
    end;
first_problem(_Check, _Improper, _Index) ->
    improper.

-spec is_atom_text(term()) -> boolean().
is_atom_text(Text) when is_binary(Text), byte_size(Text) =< 255 * 4 ->
    case unicode:characters_to_list(Text, utf8) of
        Chars when is_list(Chars) -> length(Chars) =< 255;
        _ -> false
    end;
is_atom_text(_) ->
    false.

%%% Internals

-spec head(binary()) -> binary().
head(Frame) ->
    binary:part(Frame, 0, min(byte_size(Frame), ?HEAD_BYTES)).

-spec not_an_answer(term()) -> binary().
not_an_answer(Term) ->
    text("not an answer of the protocol: ~tP", [Term, 8]).

-spec text(io:format(), [term()]) -> binary().
text(Format, Args) ->
    case unicode:characters_to_binary(io_lib:format(Format, Args)) of
        Text when is_binary(Text) -> Text
    end.

%% Whether a fun is among the terms, at any depth (a stack of terms still to look at).
-spec holds_fun([term()]) -> boolean().
holds_fun([]) -> false;
holds_fun([T | _]) when is_function(T) -> true;
holds_fun([[H | T] | Ts]) -> holds_fun([H, T | Ts]);
holds_fun([T | Ts]) when is_tuple(T) -> holds_fun(tuple_to_list(T) ++ Ts);
holds_fun([T | Ts]) when is_map(T) -> holds_fun(maps:keys(T) ++ maps:values(T) ++ Ts);
holds_fun([_ | Ts]) -> holds_fun(Ts).

-spec is_proper_list(maybe_improper_list()) -> boolean().
is_proper_list([]) -> true;
is_proper_list([_ | Tail]) -> is_proper_list(Tail);
is_proper_list(_) -> false.
