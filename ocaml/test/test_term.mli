(** Tests of [Erl.Term]: order, equality, construction, checking, printing,
    deep terms. *)

val tests : unit Alcotest.test list
