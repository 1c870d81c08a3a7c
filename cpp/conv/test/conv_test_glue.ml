(* OCaml side of the conv tests: what the C++ test asks of the OCaml runtime. *)

let validate t =
  match Erl.Term.validate t with Ok () -> "" | Error why -> why

let () =
  Callback.register "test.validate" validate;
  Callback.register "test.to_string" Erl.Term.to_string;
  Callback.register "test.full_major" Gc.full_major
