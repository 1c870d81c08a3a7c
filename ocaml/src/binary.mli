(** Erlang binaries: immutable sequences of bytes.

    A binary of at most {!heap_max} bytes is an OCaml string in the OCaml
    heap. A longer one that arrives from Erlang lives outside it, in memory
    that is freed when the value is collected, like Erlang's
    reference-counted binaries. OCaml would put a string that long straight
    into the major heap, which only a major cycle reclaims: a worker that
    receives large binaries would keep growing its heap with them, and each
    new one would land in memory the cache had long forgotten. Off the heap,
    a binary that dies with its request is freed at the next minor
    collection, and its memory is there, still cached, for the next one.

    Which representation a binary has never changes its value: {!equal},
    {!compare}, {!hash} and every function below only see the bytes. The
    polymorphic [=], [compare] and [Hashtbl.hash] see the representation:
    do not use them on binaries. *)

type t

type bigstring =
  (char, Bigarray.int8_unsigned_elt, Bigarray.c_layout) Bigarray.Array1.t

val heap_max : int
(** The longest binary kept in the OCaml heap when it arrives from Erlang
    ([Max_young_wosize] words minus one byte: 2047 bytes on 64-bit
    systems). *)

val of_string : string -> t
(** The binary of these bytes, without copying them. *)

val of_bigstring : bigstring -> t
(** A binary holding a copy of the bytes (off the OCaml heap if there are
    more than {!heap_max}): binaries are immutable, a bigstring is not. *)

val to_string : t -> string
(** The bytes as a string: the string itself for a binary in the OCaml heap,
    a copy (one [memcpy]) otherwise. *)

val length : t -> int

val get : t -> int -> char
(** [get b i] is byte [i].
    @raise Invalid_argument if [i] is not in [0, length b). *)

val sub : t -> pos:int -> len:int -> string
(** [sub b ~pos ~len] is a copy of [len] bytes from [pos].
    @raise Invalid_argument if they are not within [b]. *)

val blit_to_bytes : t -> int -> bytes -> int -> int -> unit
(** [blit_to_bytes src src_pos dst dst_pos len], as {!Bytes.blit_string}. *)

val is_off_heap : t -> bool
(** Whether the bytes live outside the OCaml heap. *)

val equal : t -> t -> bool

val compare : t -> t -> int
(** Erlang's order of binaries: bytewise, a prefix first. *)

val hash : t -> int
(** A hash of every byte, the same for both representations, so that
    [equal a b] implies [hash a = hash b]. Non-negative, as {!Hashtbl.hash}. *)
