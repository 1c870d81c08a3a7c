(* A port from fields. *)
let forged = Erl.Term.Port { node = "erl@host"; id = 1L; creation = 1 }
