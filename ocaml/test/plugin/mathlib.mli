(** A plugin: loading it exports [fib], in its module [mathlib]. *)

val fib : int -> int
