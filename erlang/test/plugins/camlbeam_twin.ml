(* Exports a name camlbeam_test exports too (add), so that a pool with both has a name in
   two modules: ambiguous alone, called as {camlbeam_twin, add} or {camlbeam_test, add}. Its
   module is named after its file: camlbeam_twin. *)
let () =
  Erl.export "add" Erl.Conv.(int @-> int @-> returning int) (fun a b -> a + b + 1000);
  Erl.export "twin_only" Erl.Conv.(nullary string) (fun () -> "v1")
