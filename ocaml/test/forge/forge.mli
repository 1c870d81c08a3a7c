(** Pids, ports and references made from their fields, for the tests.

    {!Erl.Term.pid}, {!Erl.Term.port} and {!Erl.Term.reference} are abstract
    so that a plugin only ever holds the ones Erlang gave it. The tests need
    any value, out-of-range ones included (the orders taken from OTP, what
    [Erl.Term.validate] refuses), without an Erlang node at hand: these
    functions build the blocks the C++ converters build ("Memory layout" in
    [ocaml/src/term.mli], [cpp/conv/src/ocaml_builder.cpp]). This library is
    not installed, so plugins cannot reach it. *)

val pid : node:string -> id:int -> serial:int -> creation:int -> Erl.Term.pid
(** [#Pid<'node'.Id.Serial.Creation>]. The numbers are not checked. *)

val port : node:string -> id:int64 -> creation:int -> Erl.Term.port
(** [#Port<'node'.Id.Creation>], [id] read as unsigned. *)

val reference : node:string -> creation:int -> int array -> Erl.Term.reference
(** [reference ~node ~creation words]: the words least significant first, as
    on the wire. Neither their number nor their values are checked. *)

val reference_fields : Erl.Term.reference -> string * int * int array
(** The node, creation and words (a fresh array) of a reference. *)
