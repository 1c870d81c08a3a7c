(** The test runner: all the suites of the library. *)
