(** Property tests over random terms: [compare] is a total order and agrees
    with [equal], printing reads back, converters round-trip. *)

val tests : unit Alcotest.test list
