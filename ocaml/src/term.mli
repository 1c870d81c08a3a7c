(** Erlang terms as OCaml values.

    Every Erlang term has exactly one {e canonical} representation as a value
    of type {!t}; the invariants that make it unique are listed at each
    constructor. The camlbeam hosts only ever build canonical terms, the smart
    constructors below ({!integer_of_z}, {!improper}, {!bitstring},
    {!map_of_list}) produce them, and {!validate} checks them. {!compare} and
    {!equal} are Erlang's exact term order and [=:=] on canonical terms.

    Do not use the polymorphic [compare], [=] or [Hashtbl.hash] on terms:
    they disagree with Erlang on [0.0] and [-0.0], on funs, on the order of
    mixed types and on binaries (which have two representations), and they
    recurse on the C stack. Use {!compare}, {!equal} and {!hash}.

    {1 Memory layout}

    The C++ converters allocate these values directly, so the layout is part
    of the interface. There is no constant constructor; every constructor of
    {!t} is a block whose tag is its position below:

    {v
    tag  constructor  size  fields
     0   Int          1     immediate int
     1   Bigint       1     Z.t, never one that fits an int (built with zarith's C interface)
     2   Float        1     boxed float (Double_tag block), not unboxed
     3   Atom         1     string (UTF-8)
     4   Ref          1     reference record
     5   Fun          1     fun_ block
     6   Port         1     port record
     7   Pid          1     pid record
     8   Tuple        1     array of t: tag 0, one field per element; {} is Atom(0)
     9   Map          1     array of (t * t) pairs (tag 0, size 2); #{} is Atom(0)
    10   List         1     OCaml list: Val_emptylist or cons blocks (tag 0, size 2)
    11   Improper     2     OCaml list (non-empty), tail
    12   Binary       1     Binary.t: Heap (tag 0) of string, or Off_heap
                              (tag 1) of a managed Bigarray of char
    13   Bitstring    2     string, immediate int
    14   Handle       1     handle record (below)
    v}

    {!pid}, {!port} and {!reference} are abstract to OCaml code (below), but
    the converters build and read them as blocks of tag 0 with these fields:
    [pid] = (node : string, id, serial, creation : immediate ints, each
    unsigned 32-bit); [port] = (node : string, id : int64 custom block, the
    unsigned 64-bit id's bit pattern, creation : int, unsigned 32-bit);
    [reference] = (node : string, creation : int, ids : array of 1 to 5
    immediate ints, unsigned 32-bit words, least significant first as on the
    wire). [fun_] has no constant constructor either: [Local] is tag 0 with
    its 8 fields in declaration order, [Export] tag 1 with 3 fields.
    No array of this module is ever a flat float array. A [handle] is a
    block of tag 0 whose first fields are [id] (immediate int, unique in the
    process) and [monitor] ([pid option]: [Val_none] or a block of tag 0
    holding a [pid]); its other fields are OCaml's own.

    New constructors will only ever be added at the end. *)

(** {1 Pids, ports and references}

    Abstract: OCaml code can compare, hash, print and carry them (in terms,
    to [Erl.send]), and gets them only from terms that came from Erlang (a
    request's arguments, [Erl.self ()], the answers of [Erl.call_erlang]),
    never by building one from its fields. A plugin can thus only address
    the processes it was shown; the pool's [send] policy (docs/api.md) is
    what enforces it, since code that breaks the type system ([Obj.magic],
    [Marshal.from_string], its own C stubs) can forge anything. Their fields
    are the converters' business ("Memory layout" above), and may have
    another representation under the NIF coupling. *)

type pid
(** A process identifier (ETF's NEW_PID_EXT); see {!Pid}. *)

type port
(** A port identifier (ETF's V4_PORT_EXT); see {!Port}. *)

type reference
(** A reference (ETF's NEWER_REFERENCE_EXT); see {!Ref}. *)

type handle
(** An OCaml value Erlang holds as an opaque term ([ocaml:ref()]); see
    {!Handle}. *)

(** {1 Terms} *)

type t =
  | Int of int  (** An integer that fits OCaml's [int] (63-bit). *)
  | Bigint of Z.t
      (** Any other integer. Invariant: never a value that fits [int]. *)
  | Float of float  (** Invariant: finite (Erlang has no NaN or infinity). *)
  | Atom of string  (** Invariant: valid UTF-8, at most 255 characters. *)
  | Ref of reference
  | Fun of fun_
  | Port of port
  | Pid of pid
  | Tuple of t array
  | Map of (t * t) array
      (** Invariant: sorted by key in {!compare} order, keys unique. *)
  | List of t list  (** A proper list; [List []] is Erlang's [[]]. *)
  | Improper of t list * t
      (** [Improper (xs, tail)] is [[x1, ..., xn | tail]]. Invariant: [xs] is
          not empty and [tail] is not a [List] nor an [Improper]. *)
  | Binary of Binary.t
      (** See {!Binary}: short binaries are OCaml strings, long ones that
          came from Erlang live off the OCaml heap. *)
  | Bitstring of string * int
      (** [Bitstring (bytes, bits)]: a bitstring whose length is not a
          multiple of 8. [bits] (1 to 7) is the number of bits used in the
          last byte, which holds them in its high-order bits. Invariant:
          [bytes] is not empty and the unused low-order bits are zero. *)
  | Handle of handle
      (** An OCaml value that crosses to Erlang as an opaque term and back as
          the same value; made by {!Handle.make}, read by {!Handle.get}.
          Only the [nif] transport carries handles: under [port] an answer
          holding one is [{error, {bad_reply, _}}] and [Erl.send] of one
          raises [Failure]. No ETF reader produces one. *)

(** A fun. Funs are opaque to OCaml code: they can only be passed back to
    Erlang, which is why every field of the wire format is kept. *)
and fun_ =
  | Local of {
      arity : int;
      uniq : string;  (** 16 bytes: MD5 of the defining module. *)
      index : int;
      module_ : string;
      old_index : int;
      old_uniq : int;
      pid : pid;  (** The creator (ignored by OTP 24 and later). *)
      free_vars : t list;
    }  (** A local fun, as in ETF's NEW_FUN_EXT. *)
  | Export of { module_ : string; function_ : string; arity : int }
      (** [fun M:F/A], as in ETF's EXPORT_EXT. *)

(** {1 Construction} *)

val nil : t
(** [List []]. *)

val binary : string -> t
(** [binary s] is [Binary (Binary.of_string s)]. *)

val integer_of_z : Z.t -> t
(** [Int] if the value fits [int], [Bigint] otherwise. *)

val improper : t list -> t -> t
(** [improper xs tail] is the list [[x1, ..., xn | tail]] in canonical form,
    whatever [xs] and [tail] are: [tail] if [xs] is empty, a [List] if [tail]
    is a proper list, an [Improper] otherwise. *)

val bitstring : string -> int -> t
(** [bitstring bytes n] is the bitstring of the first [n] bits of [bytes]: a
    [Binary] if [n] is a multiple of 8, a [Bitstring] otherwise.
    @raise Invalid_argument if [n] is negative or [bytes] holds fewer than [n]
    bits. *)

val map_of_list : (t * t) list -> t
(** The map of these bindings, in canonical form. When a key occurs twice,
    the later binding wins, as in [maps:from_list/1]. *)

val map_of_array : (t * t) array -> t
(** [map_of_array bindings] is [map_of_list (Array.to_list bindings)]; the
    array is not modified. *)

val map_find : t -> (t * t) array -> t option
(** [map_find key bindings] is the value bound to [key] in the canonical
    bindings of a [Map], found by binary search. *)

(** {1 Comparison} *)

val compare : t -> t -> int
(** Erlang's exact term order, the order of map keys (OTP 25):
    number < atom < reference < fun < port < pid < tuple < map < [[]] <
    non-empty list < bitstring. A [Handle] sorts as Erlang sorts resource
    terms, among references: after every [Ref], handles in the order they
    were made ({!Handle.make} numbers them). Two handles are equal only if
    they are the same handle. Integers come before all floats, whatever
    their values; [0.0] and [-0.0] are equal. Tuples compare by size, then
    element by element; maps by size, then keys, then values in key order;
    lists cell by cell; bitstrings bit by bit, a prefix first. Pids, ports,
    references and funs compare on the fields Erlang compares and in its
    order, so two funs that differ only in [arity], [uniq], [old_index] or
    [pid] are equal.

    Runs in constant stack space: terms of any depth can be compared. *)

val equal : t -> t -> bool
(** Erlang's [=:=]: [equal a b] is [compare a b = 0]. *)

val hash : t -> int
(** A hash that agrees with {!equal} on canonical terms: [equal a b]
    implies [hash a = hash b], whatever the representation of their
    binaries. It reads a bounded part of the term, breadth first, so it
    takes constant time on any term and does not recurse: terms that differ
    only deep inside hash alike. Non-negative, as {!Hashtbl.hash}. With
    {!compare}, {!equal} and this, [Map.Make (Erl.Term)] and
    [Hashtbl.Make (Erl.Term)] work as they are. *)

(** {1 Checking} *)

val validate : t -> (unit, string) result
(** [Ok ()] if the term and all its subterms are canonical and within the
    ranges of the wire format, [Error why] naming the first violation found
    otherwise. Meant for tests of code that builds terms without the smart
    constructors, such as the C++ converters. Constant stack space. *)

(** {1 Printing} *)

val to_string : t -> string
(** The term in Erlang syntax, like [io_lib:format("~tp", [T])] without line
    breaks: atoms quoted when needed, [<<"text">>] for printable binaries,
    [<<"text"/utf8>>] for printable UTF-8 ones, ["text"] for lists of
    printable Latin-1 characters, floats in the shortest form that reads back
    to the same value. Pids, ports, references and funs, which have no
    literal syntax, print as [#Pid<'node'.Id.Serial.Creation>],
    [#Port<'node'.Id.Creation>], [#Ref<'node'.Creation.W2.W1.W0>] (most
    significant word first, as Erlang prints them), [#Fun<Module.OldIndex.OldUniq>] and [fun M:F/A]. The output is
    UTF-8. Constant stack space. *)

val pp : Format.formatter -> t -> unit
(** [pp ppf t] prints [to_string t]. *)

val float_to_string : float -> string
(** A finite float as Erlang prints it ([float_to_list(F, [short])]): the
    fewest digits that read back to [f], in fixed notation unless the
    exponent form is shorter (or the value is an integer of magnitude 2^53
    or more). *)

(** {1 Pids, ports and references on their own} *)

(** What OCaml code can do with a pid, a port or a reference. [compare],
    [equal], [hash] and [to_string] are those of the term that holds it:
    [Pid.compare p q = compare (Pid p) (Pid q)], [Pid.hash p = hash (Pid p)],
    [Pid.to_string p = to_string (Pid p)] (and the same for [Port] and
    [Ref]), so [Map.Make (Erl.Term.Pid)] and [Hashtbl.Make (Erl.Term.Pid)]
    work as they are. *)
module type Identifier = sig
  type t

  val compare : t -> t -> int
  (** Erlang's order. *)

  val equal : t -> t -> bool
  (** Erlang's [=:=]. *)

  val hash : t -> int
  (** Agrees with [equal]. *)

  val to_string : t -> string
  (** In the syntax of {!to_string}, node included:
      [#Pid<'node'.Id.Serial.Creation>], [#Port<'node'.Id.Creation>],
      [#Ref<'node'.Creation.W2.W1.W0>]. *)

  val pp : Format.formatter -> t -> unit
end

module Pid : Identifier with type t = pid
module Port : Identifier with type t = port
module Ref : Identifier with type t = reference

(** {1 Handles}

    An export can give Erlang an OCaml value it cannot read (a counter, a
    table, a connection) as an opaque handle, and take it back as an argument
    of a later call, from any Erlang process:

    {[
      let counter : int ref Erl.Term.Handle.kind = Erl.Term.Handle.kind "counter"

      let () =
        Erl.export "new" (fun _ -> Erl.Term.Handle.make counter (ref 0));
        Erl.export "incr" (function
          | [ h ] -> (
              match Erl.Term.Handle.get counter h with
              | Some r -> incr r; Erl.Term.Int !r
              | None -> Erl.Term.Atom "badarg")
          | _ -> Erl.Term.Atom "badarg")
    ]}

    Under the [nif] transport each crossing to Erlang makes a new resource
    term (a reference to [is_reference/1]); the OCaml value lives while any
    of them does, and is released once the Erlang garbage collector has
    freed them all (the release runs on the thread that holds the OCaml
    runtime, soon after). The same handle answered twice gives two Erlang
    terms that are not [=:=]; both come back as the same handle. The [port]
    transport cannot carry handles (a pipe carries bytes). *)

module Handle : sig
  type 'a kind
  (** What a handle holds: [get] with another kind finds nothing, even one
      of the same type and name. *)

  val kind : string -> 'a kind
  (** A new kind; the name is for printing ([#Handle<name.Id>]) and {!name}. *)

  val make : ?monitor:pid * (unit -> unit) -> 'a kind -> 'a -> t
  (** [make kind x] is a new handle holding [x]. [~monitor:(pid, on_down)]:
      every Erlang term made from the handle monitors [pid]
      ([enif_monitor_process]); when it exits (or had exited when the handle
      crossed), [on_down ()] runs once for the handle, on the thread that
      holds the runtime, outside any request ([Erl.send] fails there), its
      exceptions dropped. A pid of another node is refused when the handle
      crosses ([{error, {bad_reply, _}}]). *)

  val get : 'a kind -> t -> 'a option
  (** The value of a handle of this kind; [None] for any other term. *)

  val name : t -> string option
  (** The name of a handle's kind. *)

  val id : t -> int option
  (** A handle's number, unique in the process, increasing with [make]. *)

  val down : t -> bool
  (** Whether the handle's monitored process was seen to exit. *)

  (**/**)

  val monitor_down : handle -> unit
end
