(** Well-formed UTF-8 (RFC 3629), for atoms, Erlang strings and printing.
    Internal to the library: [Erl] does not export it. *)

val for_all : (int -> bool) -> string -> bool
(** [for_all p s]: [s] is well-formed UTF-8 (no overlong forms, no
    surrogates, nothing past U+10FFFF) and [p] holds for each of its code
    points, in order. Stops at the first failure. *)
