(* A plugin whose initialisation raises: load_failed init_failed. *)
let () = failwith "camlbeam_init_fails: refusing to start"
