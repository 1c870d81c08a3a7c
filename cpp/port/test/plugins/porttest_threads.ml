(* Linked into a static worker with systhreads: Erl.send from an OCaml thread other than
   the one that runs the worker's requests must be refused, with nothing written. Such a
   thread runs no request, so it has no context: Erl.No_transport. *)
let () =
  Erl.export "send_from_thread" Erl.Conv.(pid @-> returning string) (fun pid ->
      let outcome = ref "the thread did not run" in
      let thread =
        Thread.create
          (fun () ->
            outcome :=
              match Erl.send pid (Erl.Term.Atom "from_another_thread") with
              | () -> "sent"
              | exception (Erl.No_transport as e) -> Printexc.to_string e)
          ()
      in
      Thread.join thread;
      !outcome);
  Erl.export "send" Erl.Conv.(pid @-> term @-> returning unit) Erl.send
