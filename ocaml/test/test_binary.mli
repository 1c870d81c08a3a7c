(** Tests of [Erl.Binary]: both representations, their accessors and their
    order, and the converters on them. *)

val tests : unit Alcotest.test list
