(* A second plugin, loaded by a {load, Ref, Path} request. *)
let () = Erl.export "extra.hello" Erl.Conv.(string @-> returning string) (fun name -> "hello, " ^ name)
