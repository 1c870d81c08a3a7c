(** The port transport's OCaml half (findlib: [camlbeam.port]), linked only
    into the port worker executables, which implement its externals
    ([cpp/port]).

    It answers the first request of a port worker,
    [{hello, Ref, #{worker_id := Id, worker_pid := Pid}}], by installing the
    transport behind {!Erl.send}, {!Erl.call_erlang} and {!Erl.worker}, and
    replies [{ok, #{protocol => 1, flavour => native | bytecode,
    ocaml_version => Binary}}]. Frames to Erlang are two terms, an envelope
    and a payload ([cpp/port/README.md]):
    {v
    {send, Pid}     Msg                    Erl.send
    {erl_call, Id}  {Module, Function, Args}   Erl.call_erlang, answered by
                                           {erl_reply, Id, Result}
    v}
    Plugins have no reason to use this module.

    When it is initialised it applies {!Erl_host.apply_worker_gc_defaults}. *)

val protocol : int
(** The version of the protocol, [1]. A [hello] whose [Info] has a [protocol]
    key with another value is answered [{error, {bad_request, Message}}]. *)

val hello : Erl.Term.t array -> Erl_host.answer
(** The handler of [{hello, Ref, Info}], registered with
    {!Erl_host.add_request}. *)
