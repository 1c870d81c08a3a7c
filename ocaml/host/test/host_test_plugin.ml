(* Declares atoms, one of them twice: its load answers carry each once, in declaration order. *)
let () =
  Erl.declare_atoms [ "host_test_tag" ];
  Erl.export ~atoms:[ "host_test_declared"; "host_test_tag" ] "host_test.double"
    Erl.Conv.(int @-> returning int)
    (fun n -> 2 * n)
