(* A second plugin, loaded at run time by ocaml:load/2. *)
let () = Erl.export "extra_hello" Erl.Conv.(string @-> returning string) (fun name -> "hello, " ^ name)
