(* A new version of camlbeam_twin: OCaml cannot load a unit twice, so it has another file
   (and unit) name and names the module it replaces. Loaded after camlbeam_twin, it replaces
   that module's exports whole: twin_only is gone. *)
let export name fn f = Erl.export ~module_:"camlbeam_twin" name fn f

let () =
  export "add" Erl.Conv.(int @-> int @-> returning int) (fun a b -> a + b + 2000);
  export "twin_v2_only" Erl.Conv.(nullary string) (fun () -> "v2")
