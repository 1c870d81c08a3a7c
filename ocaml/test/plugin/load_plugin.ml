let term = Alcotest.testable Erl.Term.pp Erl.Term.equal

let load () =
  let plugin = Sys.argv.(1) in
  Alcotest.(check bool) "nothing exported before" false (List.mem "mathlib.fib" (Erl.exports ()));
  Dynlink.loadfile plugin;
  Alcotest.check term "the plugin's export answers"
    (Tuple [| Atom "ok"; Int 832040 |])
    (Erl.Private.dispatch "mathlib.fib" [ Int 30 ])

let () =
  (* Alcotest must not read the plugin's path as its own argument. *)
  Alcotest.run ~argv:[| Sys.argv.(0) |] "camlbeam-plugin"
    [ ("plugin", [ Alcotest.test_case "load a .cmxs" `Quick load ]) ]
