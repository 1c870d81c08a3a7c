(* OCaml 5: what the domains a request spawns may do in a port worker (port_test.cpp,
   PortWorkerDomains). Built only by a build for OCaml 5 (Domain). *)

let in_domain f = Domain.join (Domain.spawn f)

(* A loop with no allocation: OCaml 5 polls at its back edge, where the cancel signal's
   handler runs. *)
let spin () =
  let n = ref 0 in
  while Sys.opaque_identity true do
    incr n
  done;
  !n

let () =
  (* The request's context reaches the domains it spawns: the worker, and the cancel. *)
  Erl.export "worker_id_in_domain" Erl.Conv.(nullary (tuple2 int int)) (fun () ->
      ((Erl.worker ()).id, in_domain (fun () -> (Erl.worker ()).id)));
  Erl.export "send_from_domain" Erl.Conv.(pid @-> returning string) (fun pid ->
      in_domain (fun () ->
          match Erl.send pid (Erl.Term.Atom "from_domain") with
          | () -> "sent"
          | exception Failure why -> why));
  Erl.export "call_erlang_from_domain" Erl.Conv.(nullary string) (fun () ->
      in_domain (fun () ->
          match Erl.call_erlang "erlang" "node" [] with
          | _ -> "called"
          | exception Failure why -> why));
  (* Recursion with no bound, in a domain: its Stack_overflow reaches the request through
     Domain.join. *)
  Erl.export "overflow_in_domain" Erl.Conv.(nullary int) (fun () ->
      let rec depth n = if Sys.opaque_identity n < 0 then 0 else 1 + depth (n + 1) in
      in_domain (fun () -> depth 0));
  Erl.export "spin_in_domain" Erl.Conv.(nullary int) (fun () -> in_domain spin);
  (* Both domains spin: the first cancel ends one, the next ones the other. *)
  Erl.export "spin_in_two_domains" Erl.Conv.(nullary int) (fun () ->
      let other = Domain.spawn spin in
      let own = match spin () with n -> Ok n | exception exn -> Error exn in
      let joined = match Domain.join other with n -> Ok n | exception exn -> Error exn in
      match (own, joined) with
      | Ok a, Ok b -> a + b
      | Error exn, _ | _, Error exn -> raise exn)
