(** Tests of the export registry, [Erl.Private.dispatch] and the transport
    hooks. *)

val tests : unit Alcotest.test list
