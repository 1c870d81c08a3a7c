(* Compiled against other_erl/erl.ml, not the host's camlbeam. *)
let () = Erl.export_raw "stale" 0
