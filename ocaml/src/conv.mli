(** Typed converters between OCaml values and Erlang terms, and typed
    descriptions of exported functions, in the style of ocaml-ctypes:

    {[
      let () = Erl.export "scale" Erl.Conv.(float @-> list int @-> returning (list float)) scale
    ]}

    Decoding is strict: a converter accepts exactly the terms listed at it
    ([float] does not accept the integer [1]), so that a call with a wrong
    argument fails with a clear error instead of a guess. *)

type 'a t
(** A converter between OCaml values of type ['a] and Erlang terms. *)

(** {1 Converters}

    Each converter is listed with the Erlang terms it accepts and produces.
    The string in brackets is its {!expected} description, in Erlang type
    syntax, as reported in [badarg] errors. *)

val int : int t
(** Integers in OCaml's [int] range, -2{^62} to 2{^62}-1 (["ocaml:int63()"],
    a type of the Erlang module [ocaml]). *)

val int64 : int64 t
(** Integers in [int64]'s range, -2{^63} to 2{^63}-1 (["ocaml:int64()"]). *)

val float : float t
(** Floats (["float()"]). Integers are not accepted. *)

val bool : bool t
(** The atoms [true] and [false] (["boolean()"]). *)

val string : string t
(** Binaries (["binary()"]); the bytes are not interpreted. A binary longer
    than {!Binary.heap_max} that came from Erlang is copied into the string
    (see {!Binary}); {!binary} takes it as it is. *)

val binary : Binary.t t
(** Binaries (["binary()"]) as {!Binary.t}, never copied: the converter for
    large inputs. *)

val bytes : bytes t
(** Binaries (["binary()"]), copied into fresh [bytes]. *)

val charlist : string t
(** Erlang strings, lists of Unicode code points such as ["abc"] in Erlang
    source, as UTF-8 text (["string()"]). A list holding anything but
    Unicode scalar values does not match. Encoding raises [Invalid_argument]
    on a string that is not well-formed UTF-8. For text that travels as a
    binary, use {!string}. *)

val atom : string t
(** Atoms (["atom()"]), as their UTF-8 text. Encoding raises
    [Invalid_argument] on a string that cannot be an atom (not UTF-8, or
    longer than 255 characters). *)

val unit : unit t
(** The atom [ok] (["ok"]). *)

val list : 'a t -> 'a list t
(** Proper lists (["[T]"]). Runs in constant stack space. *)

val array : 'a t -> 'a array t
(** Proper lists (["[T]"]). *)

val map : 'k t -> 'v t -> ('k * 'v) list t
(** Maps (["#{K => V}"]), as association lists in Erlang's order of the
    keys. Encoding builds the map as [maps:from_list/1] does: when two keys
    encode to the same term, the later binding wins. *)

val option : 'a t -> 'a option t
(** [undefined] for [None], the element's term for [Some]
    (["undefined | T"]). With an element converter that accepts the atom
    [undefined] itself, [undefined] decodes as [None]. *)

val result : 'a t -> 'e t -> ('a, 'e) result t
(** [{ok, V}] and [{error, E}] (["{ok, T} | {error, E}"]). *)

val tuple2 : 'a t -> 'b t -> ('a * 'b) t
(** 2-tuples (["{A, B}"]). *)

val tuple3 : 'a t -> 'b t -> 'c t -> ('a * 'b * 'c) t
val tuple4 : 'a t -> 'b t -> 'c t -> 'd t -> ('a * 'b * 'c * 'd) t

val term : Term.t t
(** Any term, unconverted (["term()"]). *)

val pid : Term.pid t
(** Pids (["pid()"]). OCaml cannot make a pid: an export gets one as an
    argument, from [Erl.self ()] or from [Erl.call_erlang]. *)

val port : Term.port t
(** Ports (["port()"]). *)

val reference : Term.reference t
(** References (["reference()"]), e.g. the tag of the messages an export
    sends to its caller. *)

(** {1 Making and using converters} *)

val make : expected:string -> (Term.t -> 'a option) -> ('a -> Term.t) -> 'a t
(** [make ~expected decode encode] is a converter of one's own. [decode]
    returns [None] for a term it does not accept; [expected] describes the
    terms it accepts, for error messages. *)

val view : read:('a -> 'b) -> write:('b -> 'a) -> 'a t -> 'b t
(** [view ~read ~write c] converts through [c] and the functions [read] and
    [write], e.g. [view ~read:Fun.id ~write:Fun.id]. The description stays
    [c]'s. *)

val expected : 'a t -> string
(** The description of the terms a converter accepts. *)

val of_term : 'a t -> Term.t -> 'a option
(** Decodes a term, or [None] if the converter does not accept it. *)

val to_term : 'a t -> 'a -> Term.t
(** Encodes a value. *)

(** {1 Functions} *)

type 'f fn
(** The description of an exported function of type ['f]. *)

val ( @-> ) : 'a t -> 'b fn -> ('a -> 'b) fn
(** [a @-> f] adds a first argument, converted by [a], to [f]. *)

val returning : 'a t -> 'a fn
(** [returning r]: no more arguments; the result is converted by [r]. On its
    own it describes a function of arity 0 whose value is a constant. *)

val nullary : 'a t -> (unit -> 'a) fn
(** [nullary r] describes a function of arity 0 that runs on every call:
    [Erl.export "now" Conv.(nullary float) Unix.gettimeofday]. *)

val arity : 'f fn -> int
(** The number of Erlang arguments. *)

val signature : 'f fn -> string
(** The function's type in Erlang type syntax, from the {!expected}
    descriptions of its converters:
    [signature (int @-> list float @-> returning float)] is
    ["fun((ocaml:int63(), [float()]) -> float())"], and a function of arity
    0 is ["fun(() -> T)"]. *)

(** Why a call was refused before the function ran. *)
type error =
  | Badarity of { expected : int; got : int }
  | Badarg of { position : int; expected : string; got : Term.t }
      (** Argument [position] (1-based), the term [got], is not accepted by
          its converter, which [expected] describes. *)

val apply : 'f fn -> 'f -> Term.t list -> (Term.t, error) result
(** [apply fn f args] checks the number of arguments, decodes them left to
    right, applies [f] and encodes its result. It stops at the first
    argument that does not decode; [f] only runs if all do (unless [f]
    itself computes between its arguments). Exceptions raised by [f] and by
    the result's encoding are not caught. *)

val error_to_term : error -> Term.t
(** The Erlang reason for an error:
    [{badarity, Expected, Got}] or
    [{badarg, #{argument => Position, expected => <<"Description">>, got => Term}}]. *)
