open Erl

(* Implemented in cpp/nif/src/service.cpp: sends [msg] to [pid] (a [Term.Pid]) for the
   worker numbered [key] under its pool's policy, answering "" or why it did not. *)
external send : int -> Term.t -> Term.t -> string = "camlbeam_nif_send"

(* Implemented in cpp/nif/src/service.cpp: asks the worker's process to run {M, F, A}
   and waits for its answer; what a signal handler raises meanwhile (Erl.Cancelled when
   the request's deadline passes) comes back as [Raised]. *)
type awaited = Reply of Term.t | Raised of exn | Refused of string [@@warning "-37"] (* built by the external only *)

external call_erlang : int -> Term.t -> awaited = "camlbeam_nif_call_erlang"

let context key id pid =
  let worker = { transport = "nif"; id; pid } in
  {
    Private.transport = "nif";
    worker = (fun () -> worker);
    send = (fun to_ msg -> match send key (Term.Pid to_) msg with "" -> () | why -> failwith ("Erl.send: " ^ why));
    call_erlang =
      (fun m f args ->
        match call_erlang key (Tuple [| Atom m; Atom f; List args |]) with
        | Reply result -> result
        | Raised exn -> raise exn
        | Refused why -> failwith ("Erl.call_erlang: " ^ why));
    cancel_requested = Erl_host.deadline_passed;
  }

let () =
  Erl_host.apply_worker_gc_defaults ();
  Callback.register "camlbeam.nif.context" context
