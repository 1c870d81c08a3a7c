let term = Alcotest.testable Erl.Term.pp Erl.Term.equal

let load () =
  let plugin = Sys.argv.(1) in
  let listed () = List.map (fun (e : Erl.export_info) -> (e.module_, e.name)) (Erl.exports ()) in
  Alcotest.(check bool) "nothing exported before" false (List.mem ("mathlib", "fib") (listed ()));
  (* As Erl_host.load loads it: its exports go to the module named after its file. *)
  Erl.Private.loading ~file:plugin (fun () -> Dynlink.loadfile plugin);
  Alcotest.(check bool) "listed in its module" true (List.mem ("mathlib", "fib") (listed ()));
  Alcotest.check term "the plugin's export answers"
    (Tuple [| Atom "ok"; Int 832040 |])
    (Erl.Private.dispatch "fib" [ Int 30 ]);
  Alcotest.check term "named with its module"
    (Tuple [| Atom "ok"; Int 832040 |])
    (Erl.Private.dispatch_qualified ~module_:"mathlib" "fib" [ Int 30 ])

let () =
  (* Alcotest must not read the plugin's path as its own argument. *)
  Alcotest.run ~argv:[| Sys.argv.(0) |] "camlbeam-plugin"
    [ ("plugin", [ Alcotest.test_case "load a .cmxs" `Quick load ]) ]
