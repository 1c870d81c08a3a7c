(** Random Erlang terms for property tests, drawn from small pools of leaves
    so that equal and nearly equal terms are frequent. *)

val term : ?depth:int -> Random.State.t -> Erl.Term.t
(** A canonical term with nesting at most [depth] (default 4). *)

val printable_term : ?depth:int -> Random.State.t -> Erl.Term.t
(** As {!term}, without pids, ports, references and funs: a term that has an
    Erlang literal syntax. *)

val bigstring : string -> Erl.Binary.bigstring
(** A fresh bigstring holding these bytes. *)

val float : Random.State.t -> float
(** A finite float, from every range of magnitudes. *)

val copy : Erl.Term.t -> Erl.Term.t
(** A physically distinct term, equal to the original, with [0.0] and
    [-0.0] swapped, integers rebuilt through [Z], long binaries in the other
    representation, a zero word added to references, and for local funs the
    fields Erlang ignores when comparing changed. *)

val seed : unit -> int
(** The seed of the property tests: [$CAMLBEAM_SEED] if set, else fixed. *)
