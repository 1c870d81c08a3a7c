(* Declares atoms for its answers, one of them twice: the answer to its load carries each
   once, in the order of their first declaration. *)
let () =
  Erl.declare_atoms [ "porttest_bad_header"; "porttest_incomplete" ];
  Erl.export ~atoms:[ "porttest_incomplete"; "porttest_tag" ] "tagged"
    Erl.Conv.(int @-> returning (tuple2 atom int))
    (fun line -> ("porttest_bad_header", line))
