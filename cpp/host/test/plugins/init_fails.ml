(* A plugin whose initialisation raises after it exported a function. *)
let () = Erl.export "init_fails.before" Erl.Conv.(nullary int) (fun () -> 1)
let () = failwith "init_fails: refusing to start"
