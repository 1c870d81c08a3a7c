(* A pid from fields: the record Erl.Term.pid was. *)
let forged : Erl.Term.pid = { node = "erl@host"; id = 80; serial = 0; creation = 1 }
