(* A pid's fields read: what a NIF representation could not offer. *)
let node_of (p : Erl.Term.pid) = p.node
