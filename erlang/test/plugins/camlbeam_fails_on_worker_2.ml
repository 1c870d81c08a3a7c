(* A plugin that loads on worker 1 and fails on every other: loading is all or none, so a
   pool of two must end up without it on both. *)
let () =
  Erl.export "loaded_on_worker_1" (Erl.Conv.nullary Erl.Conv.int) (fun () -> (Erl.worker ()).id);
  if (Erl.worker ()).id <> 1 then failwith "camlbeam_fails_on_worker_2: not on this worker"
