(** A plugin: loading it exports ["mathlib.fib"]. *)

val fib : int -> int
