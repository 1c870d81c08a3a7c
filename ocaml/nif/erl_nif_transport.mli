(** The OCaml half of the [nif] transport: the context of each worker's requests.

    Every pool of the [nif] transport in a VM shares the one OCaml runtime of
    [camlbeam_nif.so]; a worker is a handle on it ([cpp/nif/README.md]). Its
    requests run with a context made here, registered as ["camlbeam.nif.context"]:
    [context key id pid] for the worker whose handle the C++ side numbers [key],
    worker [id] of its pool, standing for the Erlang process [pid]. *)

val context : int -> int -> Erl.Term.pid -> Erl.Private.context
