(* What conv_conformance_test asks of the OCaml runtime beyond conv_test_glue.ml (linked
   with it): proof that the small minor heap it runs with really made the GC work. *)

let gc_summary () =
  let stat = Gc.quick_stat () in
  Printf.sprintf "minor heap %d words, %d minor and %d major collections, %d compactions"
    (Gc.get ()).Gc.minor_heap_size stat.Gc.minor_collections stat.Gc.major_collections
    stat.Gc.compactions

let () = Callback.register "test.gc_summary" gc_summary
