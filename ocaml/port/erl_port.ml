open Erl

let protocol = 1

(* Implemented in cpp/port/src/transport.cpp. [emit] writes one frame of two
   terms and answers "" or why it could not (a term Erlang cannot hold, a
   frame over the size limit, the pipe closed). [await_erl_reply] reads
   frames until an {erl_reply, _, _} arrives, keeping the requests it reads
   meanwhile for later; None when Erlang closed the port first. *)
external emit : Term.t -> Term.t -> string = "camlbeam_port_emit"
external await_erl_reply : unit -> Term.t option = "camlbeam_port_await_erl_reply"

let emit_or_fail what envelope payload =
  match emit envelope payload with "" -> () | why -> failwith (what ^ ": " ^ why)

let send pid msg = emit_or_fail "Erl.send" (Tuple [| Atom "send"; Pid pid |]) msg

(* Erl.call_erlang blocks the worker until its answer, so one is awaited at a
   time; the id only guards against a stray answer. *)
let next_call_id = ref 0

let rec await id =
  match await_erl_reply () with
  | Some (Tuple [| Atom "erl_reply"; Int id'; result |]) when id' = id -> result
  | Some _ -> await id
  | None -> failwith "Erl.call_erlang: the Erlang side closed the port"

let call_erlang m f args =
  incr next_call_id;
  let id = !next_call_id in
  emit_or_fail "Erl.call_erlang" (Tuple [| Atom "erl_call"; Int id |]) (Tuple [| Atom m; Atom f; List args |]);
  await id

let flavour = if Dynlink.is_native then "native" else "bytecode"

let info_field (info : (Term.t * Term.t) array) key =
  Array.fold_left (fun found (k, v) -> match k with Term.Atom k when k = key -> Some v | _ -> found) None info

let bad_hello ref_ message =
  Erl_host.Reply (ref_, Tuple [| Atom "error"; Tuple [| Atom "bad_request"; Term.binary ("hello: " ^ message) |] |])

let hello (fields : Term.t array) =
  match fields with
  | [| _; ref_; Map info |] -> (
      match (info_field info "worker_id", info_field info "worker_pid", info_field info "protocol") with
      | _, _, Some version when not (Term.equal version (Int protocol)) ->
          bad_hello ref_ (Printf.sprintf "this worker speaks protocol %d, not %s" protocol (Term.to_string version))
      | Some (Int id), Some (Pid pid), _ ->
          Private.set_transport { worker = { transport = "port"; id; pid }; send; call_erlang };
          Reply
            ( ref_,
              Tuple
                [|
                  Atom "ok";
                  Term.map_of_list
                    [
                      (Atom "protocol", Int protocol);
                      (Atom "flavour", Atom flavour);
                      (Atom "ocaml_version", Term.binary Sys.ocaml_version);
                    ];
                |] )
      | _ -> bad_hello ref_ "Info must hold worker_id (an integer) and worker_pid (a pid)")
  | [| _; ref_; _ |] -> bad_hello ref_ "expected {hello, Ref, #{worker_id := Id, worker_pid := Pid}}"
  | _ -> Refused "hello: expected {hello, Ref, Info}"

let () =
  Erl_host.apply_worker_gc_defaults ();
  Erl_host.add_request "hello" hello
