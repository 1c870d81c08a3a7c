open Erl

let protocol = 2

(* Implemented in cpp/port/src/port_worker.cpp. [emit] writes one frame of two
   terms and answers "" or why it could not (a term Erlang cannot hold, a
   frame over the size limit, the pipe closed, a thread other than the
   worker's). [await_erl_reply] reads frames until an {erl_reply, _, _}
   arrives, keeping the requests it reads meanwhile for later; what a signal
   handler raises while it waits (Erl.Cancelled when the request's deadline
   passes) comes back as [Raised]. *)
type awaited = Closed | Reply of Term.t | Raised of exn [@@warning "-37"] (* built by the external only *)

external emit : Term.t -> Term.t -> string = "camlbeam_port_emit"
external await_erl_reply : unit -> awaited = "camlbeam_port_await_erl_reply"
external os_pid : unit -> int = "camlbeam_port_os_pid"

(* Why the calling thread may not talk to Erlang, "" when it may: checked before anything
   of a call_erlang is recorded, so that a thread or domain of the plugin's touches none of
   the state of the worker's own calls. *)
external refusal : unit -> string = "camlbeam_port_refusal"

let emit_or_fail what envelope payload =
  match emit envelope payload with "" -> () | why -> failwith (what ^ ": " ^ why)

let send pid msg = emit_or_fail "Erl.send" (Tuple [| Atom "send"; Pid pid |]) msg

(* Erl.call_erlang blocks the worker until its answer, but a signal handler
   that runs while it waits may call Erlang too, and the Erlang side may answer
   the two in either order: an answer is kept here for the call it belongs to
   while that call waits, and dropped when no call waits for it (its call was
   given up). *)
let next_call_id = ref 0
let waiting : (int, Term.t option) Hashtbl.t = Hashtbl.create 4

let rec await id =
  match Hashtbl.find_opt waiting id with
  | Some (Some result) -> result
  | Some None | None -> (
      match await_erl_reply () with
      | Reply (Tuple [| Atom "erl_reply"; Int id'; result |]) ->
          if Hashtbl.mem waiting id' then Hashtbl.replace waiting id' (Some result);
          await id
      | Reply _ -> await id
      | Closed -> failwith "Erl.call_erlang: the Erlang side closed the port"
      | Raised exn -> raise exn)

let call_erlang m f args =
  (match refusal () with "" -> () | why -> failwith ("Erl.call_erlang: " ^ why));
  incr next_call_id;
  let id = !next_call_id in
  Hashtbl.replace waiting id None;
  match
    emit_or_fail "Erl.call_erlang" (Tuple [| Atom "erl_call"; Int id |]) (Tuple [| Atom m; Atom f; List args |]);
    await id
  with
  | result ->
      Hashtbl.remove waiting id;
      result
  | exception exn ->
      Hashtbl.remove waiting id;
      raise exn

let flavour = if Dynlink.is_native then "native" else "bytecode"

(* A port worker is one OS process serving one worker of one pool: every request it runs
   has this context, which knows the worker once hello has told it. *)
let hello_worker : worker option ref = ref None

let context =
  {
    Private.transport = "port";
    worker = (fun () -> match !hello_worker with Some w -> w | None -> raise No_transport);
    send;
    call_erlang;
    cancel_requested = Erl_host.deadline_passed;
  }

let info_field (info : (Term.t * Term.t) array) key =
  Array.fold_left (fun found (k, v) -> match k with Term.Atom k when k = key -> Some v | _ -> found) None info

let bad_hello ref_ message =
  Erl_host.Reply (ref_, Tuple [| Atom "error"; Tuple [| Atom "bad_request"; Term.binary ("hello: " ^ message) |] |])

let hello (fields : Term.t array) =
  match fields with
  | [| _; ref_; Map info |] -> (
      match (info_field info "worker_id", info_field info "worker_pid", info_field info "protocol") with
      | _, _, None -> bad_hello ref_ (Printf.sprintf "Info must say which protocol the Erlang side speaks (protocol => %d)" protocol)
      | _, _, Some version when not (Term.equal version (Int protocol)) ->
          bad_hello ref_ (Printf.sprintf "this worker speaks protocol %d, not %s" protocol (Term.to_string version))
      | Some (Int id), Some (Pid pid), Some _ ->
          hello_worker := Some { transport = "port"; id; pid };
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
                      (Atom "os_pid", Int (os_pid ()));
                      (* Those of the code linked into this worker (a static worker's). *)
                      (Atom "atoms", Erl_host.new_atoms ());
                      (Atom "exports", Erl_host.new_exports ());
                    ];
                |] )
      | _ -> bad_hello ref_ "Info must hold worker_id (an integer) and worker_pid (a pid)")
  | [| _; ref_; _ |] -> bad_hello ref_ "expected {hello, Ref, #{worker_id := Id, worker_pid := Pid, protocol := 2}}"
  | _ -> Refused "hello: expected {hello, Ref, Info}"

let () =
  Erl_host.apply_worker_gc_defaults ();
  Erl_host.add_request "hello" hello;
  (* The context the C++ side runs every request with (cpp/port/src/port_worker.cpp). *)
  Callback.register "camlbeam.port.context" context
