(** Tests of [Erl.Conv]: every converter both ways, every refusal, function
    descriptions and their errors. *)

val tests : unit Alcotest.test list
