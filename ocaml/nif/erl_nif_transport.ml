open Erl

(* Implemented in cpp/nif/src/service.cpp: sends [msg] to [pid] (a [Term.Pid]) for the
   worker numbered [key] under its pool's policy, answering "" or why it did not. *)
external send : int -> Term.t -> Term.t -> string = "camlbeam_nif_send"

let context key id pid =
  let worker = { transport = "nif"; id; pid } in
  {
    Private.transport = "nif";
    worker = (fun () -> worker);
    send = (fun to_ msg -> match send key (Term.Pid to_) msg with "" -> () | why -> failwith ("Erl.send: " ^ why));
    call_erlang =
      (fun m f _ ->
        failwith
          (Printf.sprintf "Erl.call_erlang %s:%s: not available under the nif transport yet (cpp/nif/README.md)" m f));
    cancel_requested = Erl_host.deadline_passed;
  }

let () =
  Erl_host.apply_worker_gc_defaults ();
  Callback.register "camlbeam.nif.context" context
