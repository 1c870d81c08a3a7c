(* A plugin whose initialiser exits: a worker that dies at every start that loads it. *)
let () = exit 3
