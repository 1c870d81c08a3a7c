(* A reference from fields. *)
let forged = Erl.Term.Ref { node = "erl@host"; creation = 1; ids = [| 1; 2; 3 |] }
