(** The port transport's OCaml half (findlib: [camlbeam.port]), linked only
    into the port worker executables, which implement its externals
    ([cpp/port]).

    It answers the first request of a port worker,
    [{hello, Ref, #{worker_id := Id, worker_pid := Pid, protocol := 2}}], by
    telling its context (the one every request of the worker runs with,
    {!Erl.Private.context}, registered as ["camlbeam.port.context"] for the
    C++ side) which worker it is, and replies [{ok, #{protocol => 2, flavour => native |
    bytecode, ocaml_version => Binary, os_pid => Integer, atoms => [Binary]}}]
    ([os_pid]: the process that runs OCaml, not the keeper Erlang started,
    [cpp/port]; [atoms]: those declared by the code linked into the worker,
    {!Erl.declare_atoms}, for the pool to create).
    Frames to Erlang are two terms, an envelope and a payload
    ([cpp/port/README.md]):
    {v
    {send, Pid}     Msg                    Erl.send
    {erl_call, Id}  {Module, Function, Args}   Erl.call_erlang, answered by
                                           {erl_reply, Id, Result}
    v}
    {!Erl.call_erlang} waits for its answer; a signal that interrupts the wait
    runs its OCaml handler, and what the handler raises ({!Erl.Cancelled} when
    the request's deadline passed) is raised by [call_erlang]. A handler may
    call Erlang itself: each answer goes to the call it belongs to, in
    whatever order they come.

    Plugins have no reason to use this module.

    When it is initialised it applies {!Erl_host.apply_worker_gc_defaults}. *)

val protocol : int
(** The version of the protocol, [2]. A [hello] whose [Info] has no
    [protocol] key, or another value, is answered
    [{error, {bad_request, Message}}]. *)

val hello : Erl.Term.t array -> Erl_host.answer
(** The handler of [{hello, Ref, Info}], registered with
    {!Erl_host.add_request}. *)
