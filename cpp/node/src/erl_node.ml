(* The OCaml half of camlbeam-node's transport: the context its requests run in, so that
   Erl.send and Erl.call_erlang reach the cluster (cpp/node/src/ocaml_transport.cpp
   implements the externals; node.hpp says how they are routed). *)
open Erl

(* "" when sent, or dropped as the policy or the network wants (logged by the node, as
   the port coupling's worker process logs it); otherwise why it cannot be sent at all,
   raised as the port raises it. *)
external send : Term.t -> Term.t -> string = "camlbeam_node_send"

(* What a signal handler raises while the call waits (Erl.Cancelled when the request's
   deadline passes) comes back as [Raised]. *)
type awaited = Reply of Term.t | Raised of exn | Refused of string [@@warning "-37"] (* built by the external only *)

external call_erlang : string -> string -> Term.t -> awaited = "camlbeam_node_call_erlang"

(* [id]: the worker's number in the pool that started the node (--worker-id), 0 for a
   node no pool started. *)
let make_context (self : Term.t) (id : int) =
  let worker =
    match self with Term.Pid pid -> { transport = "node"; id; pid } | _ -> invalid_arg "camlbeam.node.context"
  in
  {
    Private.transport = "node";
    worker = (fun () -> worker);
    send = (fun to_ msg -> match send (Term.Pid to_) msg with "" -> () | why -> failwith ("Erl.send: " ^ why));
    call_erlang =
      (fun m f args ->
        match call_erlang m f (List args) with
        | Reply result -> result
        | Raised exn -> raise exn
        | Refused why -> failwith ("Erl.call_erlang: " ^ why));
    cancel_requested = Erl_host.deadline_passed;
  }

(* A node's requests run under the GC policy of every other worker (cpp/port/README.md, "GC
   defaults"): under OCaml's own, a list of 100,000 integers was promoted to the major heap
   on every call, and its heap compacted again and again. *)
let () =
  Erl_host.apply_worker_gc_defaults ();
  Callback.register "camlbeam.node.context" make_context
