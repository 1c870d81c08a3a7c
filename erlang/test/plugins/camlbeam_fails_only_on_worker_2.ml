(* A plugin that loads on every worker but worker 2: a rolling upgrade to it moves its
   temporary worker and worker 1, stops at worker 2, and moves worker 1 back. *)
let () =
  Erl.export "upgraded_worker" (Erl.Conv.nullary Erl.Conv.int) (fun () -> (Erl.worker ()).id);
  if (Erl.worker ()).id = 2 then failwith "camlbeam_fails_only_on_worker_2: not on worker 2"
