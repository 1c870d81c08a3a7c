%% @doc The wire protocol of the port worker (`cpp/port/README.md'): the
%% request frames Erlang writes, and the reading of the frames the worker
%% writes back. Pure functions; whoever owns or writes to the port uses them.
%%
%% A frame from the worker is two external terms back to back, an envelope
%% then a payload. Only the small envelope is decoded here; the payload stays
%% a sub-binary of the frame until whoever it is for decodes it. Everything
%% from the worker is decoded with `[safe]': its data never creates an atom.
-module(ocaml_port_protocol).

-export([hello/3, call/3, cast/2, load/2, erl_reply/2]).
-export([parse_frame/1, decode_answer/1, decode_hello/1, decode_load/1,
         decode_erl_call/1, decode_payload/1]).
-export_type([envelope/0, malformed/0, hello/0, erl_call_request/0]).

%% Version of the protocol this module speaks; the worker's hello must say the same.
-define(PROTOCOL, 1).
%% How much of an undecodable frame a diagnostic keeps.
-define(HEAD_BYTES, 32).

-type envelope() :: {reply, reference()}
                  | {send, pid()}
                  | {erl_call, Id :: term()}
                  | {log, logger:level()}.

%% Why a frame from the worker is not one of the protocol's.
-type malformed() :: {not_etf, Head :: binary()}
                   | {no_payload, Envelope :: term()}
                   | {unknown_envelope, term()}.

-type hello() :: #{flavour := ocaml_options:flavour(), ocaml_version := binary()}.

-type erl_call_request() :: {module(), atom(), [term()]}.

%%% Frames to the worker

%% @doc The first frame a worker gets: who it is.
-spec hello(reference(), pos_integer(), pid()) -> binary().
hello(Ref, WorkerId, WorkerPid) ->
    term_to_binary({hello, Ref, #{worker_id => WorkerId, worker_pid => WorkerPid}}).

%% @doc A call; the worker answers with a `{reply, Ref}' frame.
-spec call(reference(), atom(), [term()]) -> binary().
call(Ref, Fun, Args) ->
    term_to_binary({call, Ref, Fun, Args}).

%% @doc A call nobody waits for.
-spec cast(atom(), [term()]) -> binary().
cast(Fun, Args) ->
    term_to_binary({cast, Fun, Args}).

%% @doc Loading a plugin; the worker answers with a `{reply, Ref}' frame.
-spec load(reference(), file:filename_all()) -> binary().
load(Ref, Path) ->
    term_to_binary({load, Ref, Path}).

%% @doc The answer to the worker's `{erl_call, Id}' frame.
-spec erl_reply(term(), {ok, term()} | {error, {atom(), term()}}) -> binary().
erl_reply(Id, Result) ->
    term_to_binary({erl_reply, Id, Result}).

%%% Frames from the worker

%% @doc Splits a frame into its envelope and its still-encoded payload.
-spec parse_frame(binary()) -> {ok, envelope(), Payload :: binary()} | {error, malformed()}.
parse_frame(Frame) ->
    try binary_to_term(Frame, [safe, used]) of
        {Envelope, Used} ->
            <<_:Used/binary, Payload/binary>> = Frame,
            classify(Envelope, Payload)
    catch
        error:badarg -> {error, {not_etf, head(Frame)}}
    end.

%% @doc The answer to a call: what {@link ocaml:call/4} returns.
-spec decode_answer(binary()) -> {ok, term()} | {error, term()}.
decode_answer(Payload) ->
    case decode_payload(Payload) of
        {ok, {ok, _} = Ok} -> Ok;
        {ok, {error, _} = Error} -> Error;
        {ok, Other} -> {error, {bad_reply, not_an_answer(Other)}};
        error -> {error, {bad_reply, undecodable(Payload)}}
    end.

%% @doc The answer to hello: the worker's flavour, once its protocol is checked.
-spec decode_hello(binary()) ->
    {ok, hello()} | {error, {protocol_mismatch, term()} | {bad_hello, term()}}.
decode_hello(Payload) ->
    case decode_payload(Payload) of
        {ok, {ok, #{protocol := ?PROTOCOL, flavour := Flavour, ocaml_version := Version}}}
          when (Flavour =:= native orelse Flavour =:= bytecode), is_binary(Version) ->
            {ok, #{flavour => Flavour, ocaml_version => Version}};
        {ok, {ok, #{protocol := Protocol}}} when Protocol =/= ?PROTOCOL ->
            {error, {protocol_mismatch, Protocol}};
        {ok, Other} ->
            {error, {bad_hello, Other}};
        error ->
            {error, {bad_hello, undecodable(Payload)}}
    end.

%% @doc The answer to a load.
-spec decode_load(binary()) -> ok | {error, {load_failed, atom(), binary()} | {bad_reply, binary()}}.
decode_load(Payload) ->
    case decode_payload(Payload) of
        {ok, ok} -> ok;
        {ok, {error, {load_failed, Kind, Message}} = Error} when is_atom(Kind), is_binary(Message) ->
            Error;
        {ok, Other} -> {error, {bad_reply, not_an_answer(Other)}};
        error -> {error, {bad_reply, undecodable(Payload)}}
    end.

%% @doc The payload of an `erl_call' frame: `{Module, Function, Args}'.
-spec decode_erl_call(binary()) -> {ok, erl_call_request()} | {error, binary()}.
decode_erl_call(Payload) ->
    case decode_payload(Payload) of
        {ok, {M, F, A} = Request} when is_atom(M), is_atom(F), is_list(A) ->
            case is_proper_list(A) of
                true -> {ok, Request};
                false -> {error, <<"the arguments are not a proper list">>}
            end;
        {ok, _} ->
            {error, <<"not {Module, Function, Args} with two atoms and a list">>};
        error ->
            {error, undecodable(Payload)}
    end.

%% @doc Decodes a payload as untrusted data.
-spec decode_payload(binary()) -> {ok, term()} | error.
decode_payload(Payload) ->
    try
        {ok, binary_to_term(Payload, [safe])}
    catch
        error:badarg -> error
    end.

%%% Internals

-spec classify(term(), binary()) -> {ok, envelope(), binary()} | {error, malformed()}.
classify(Envelope, <<131, _/binary>> = Payload) ->
    case Envelope of
        {reply, Ref} when is_reference(Ref) -> {ok, Envelope, Payload};
        {send, Pid} when is_pid(Pid) -> {ok, Envelope, Payload};
        {erl_call, _Id} -> {ok, Envelope, Payload};
        {log, Level} when is_atom(Level) -> {ok, {log, log_level(Level)}, Payload};
        _ -> {error, {unknown_envelope, Envelope}}
    end;
classify(Envelope, _NoPayload) ->
    {error, {no_payload, Envelope}}.

%% A worker's log line is worth keeping even at a level logger does not know.
-spec log_level(atom()) -> logger:level().
log_level(Level) ->
    case lists:member(Level, [emergency, alert, critical, error, warning, notice, info, debug]) of
        true -> Level;
        false -> warning
    end.

-spec head(binary()) -> binary().
head(Frame) ->
    binary:part(Frame, 0, min(byte_size(Frame), ?HEAD_BYTES)).

-spec undecodable(binary()) -> binary().
undecodable(Payload) ->
    text("an answer of ~b bytes that binary_to_term(_, [safe]) refuses: an atom "
         "unknown to this VM, or not external term format", [byte_size(Payload)]).

-spec not_an_answer(term()) -> binary().
not_an_answer(Term) ->
    text("not an answer of the protocol: ~tP", [Term, 8]).

-spec text(io:format(), [term()]) -> binary().
text(Format, Args) ->
    case unicode:characters_to_binary(io_lib:format(Format, Args)) of
        Text when is_binary(Text) -> Text
    end.

-spec is_proper_list(maybe_improper_list()) -> boolean().
is_proper_list([]) -> true;
is_proper_list([_ | Tail]) -> is_proper_list(Tail);
is_proper_list(_) -> false.
