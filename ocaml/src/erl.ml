module Binary = Binary
module Term = Term
module Conv = Conv

(* Exports *)

let registry : (string, Term.t list -> (Term.t, Conv.error) result) Hashtbl.t =
  Hashtbl.create 64

let is_atom_text s = Result.is_ok (Term.validate (Term.Atom s))

let register name call =
  if not (is_atom_text name) then
    invalid_arg (Printf.sprintf "Erl.export: %S cannot be an atom" name);
  if Hashtbl.mem registry name then
    Printf.eprintf "camlbeam: warning: export %S replaced\n%!" name;
  Hashtbl.replace registry name call

(* Atoms. Every atom declared in this process, and how many of them (in declaration order)
   have been handed to a load or hello answer already: the rest are new. *)

let declared : (string, unit) Hashtbl.t = Hashtbl.create 16
let declaration_order : string list ref = ref [] (* newest first *)
let new_count = ref 0

(* All are checked before any is declared: a bad list declares nothing. *)
let check_atom_texts who names =
  List.iter
    (fun name -> if not (is_atom_text name) then invalid_arg (Printf.sprintf "%s: %S cannot be an atom" who name))
    names

let add_atoms names =
  List.iter
    (fun name ->
      if not (Hashtbl.mem declared name) then begin
        Hashtbl.replace declared name ();
        declaration_order := name :: !declaration_order;
        incr new_count
      end)
    names

let declare_atoms names =
  check_atom_texts "Erl.declare_atoms" names;
  add_atoms names

let declared_atoms () = List.rev !declaration_order

let rec first n l = if n = 0 then [] else match l with [] -> [] | x :: rest -> x :: first (n - 1) rest

let take_new_atoms () =
  let fresh = List.rev (first !new_count !declaration_order) in
  new_count := 0;
  fresh

let discard_new_atoms () =
  let rec drop n l =
    if n = 0 then l
    else
      match l with
      | [] -> []
      | name :: rest ->
          Hashtbl.remove declared name;
          drop (n - 1) rest
  in
  declaration_order := drop !new_count !declaration_order;
  new_count := 0

(* The atoms and the name are checked before either takes effect. *)
let export ?(atoms = []) name fn f =
  check_atom_texts "Erl.export" atoms;
  register name (Conv.apply fn f);
  add_atoms atoms

let export_raw ?(atoms = []) name f =
  check_atom_texts "Erl.export_raw" atoms;
  register name (fun args -> Ok (f args));
  add_atoms atoms

let exports () =
  List.sort String.compare (Hashtbl.fold (fun name _ names -> name :: names) registry [])

exception Cancelled

let dispatch name args =
  let error reason = Term.Tuple [| Term.Atom "error"; reason |] in
  match Hashtbl.find_opt registry name with
  | None ->
      let name = if is_atom_text name then Term.Atom name else Term.binary name in
      error (Term.Tuple [| Term.Atom "undef"; name |])
  | Some call -> (
      match call args with
      | Ok result -> Term.Tuple [| Term.Atom "ok"; result |]
      | Error e -> error (Conv.error_to_term e)
      (* The caller gave up: this answer only frees its slot on the Erlang side. *)
      | exception Cancelled -> error (Term.Atom "timeout")
      | exception exn ->
          let backtrace = Printexc.get_backtrace () in
          error
            (Term.Tuple
               [|
                 Term.Atom "ocaml_exception";
                 Term.binary (Printexc.exn_slot_name exn);
                 Term.binary (Printexc.to_string exn);
                 Term.binary backtrace;
               |]))

(* Talking to Erlang *)

exception No_transport

let () =
  Printexc.register_printer (function
    | No_transport ->
        Some
          "Erl.No_transport: this thread is not running a request of a camlbeam worker (Erl.send, \
           Erl.call_erlang and Erl.worker answer for the request the calling thread runs: not in \
           a unit test, while a worker starts, or on a thread of the plugin's own)"
    | Cancelled -> Some "Erl.Cancelled: the deadline of the call passed; its caller has given up"
    | _ -> None)

type worker = { transport : string; id : int; pid : Term.pid }

(* What a transport answers for the requests it runs. *)
type context = {
  transport : string;
  worker : unit -> worker;
  send : Term.pid -> Term.t -> unit;
  call_erlang : string -> string -> Term.t list -> Term.t;
  cancel_requested : unit -> bool;
}

(* The context of the request running on each thread. Under the port one thread runs every
   request; under the NIF several threads (OCaml 4: systhreads taking turns on the runtime
   lock; OCaml 5: domains in parallel) each run requests of their own pools, so the current
   context is per thread, not a global. The C stub gives each thread that runs requests a
   number of its own (a thread_local, counted from 0, never reused: such threads are the
   host's, and live as long as it does); [assign = false] answers -1 for a thread without
   one, such as a plugin's own. Each thread reads and writes only its own slot. *)
external thread_slot : bool -> int = "camlbeam_context_thread_slot" [@@noalloc]

let max_request_threads = 1024

(* A thread outside any request holds [no_context]; a slot holds contexts themselves, not
   [Some context]: a transport's context is long-lived, so storing it in this old array
   allocates nothing and does not make the array point into the minor heap (which would
   cost the first request a remembered set sized by the minor heap: 1 MB with a worker's). *)
let no_context =
  {
    transport = "";
    worker = (fun () -> raise No_transport);
    send = (fun _ _ -> raise No_transport);
    call_erlang = (fun _ _ _ -> raise No_transport);
    cancel_requested = (fun () -> false);
  }

let slots : context array = Array.make max_request_threads no_context

let current_context () =
  let i = thread_slot false in
  if i < 0 || i >= max_request_threads then None
  else
    let c = Array.unsafe_get slots i in
    if c == no_context then None else Some c

(* The context the thread had before. *)
let enter_context context =
  let i = thread_slot true in
  if i >= max_request_threads then
    failwith (Printf.sprintf "Erl.Private.enter_context: more than %d threads have run requests" max_request_threads);
  let outer = slots.(i) in
  slots.(i) <- context;
  outer

let leave_context outer =
  let i = thread_slot false in
  if i >= 0 && i < max_request_threads then slots.(i) <- outer

let with_context context f =
  let outer = enter_context context in
  match f () with
  | result ->
      leave_context outer;
      result
  | exception exn ->
      leave_context outer;
      raise exn

(* The calling thread's context, or [no_context], whose functions raise No_transport. *)
let context () =
  let i = thread_slot false in
  if i < 0 || i >= max_request_threads then no_context else Array.unsafe_get slots i

let send pid msg = (context ()).send pid msg
let call_erlang m f args = (context ()).call_erlang m f args
let worker () = (context ()).worker ()
let self () = (worker ()).pid

(* For the hosts *)

module Private = struct
  type nonrec context = context = {
    transport : string;
    worker : unit -> worker;
    send : Term.pid -> Term.t -> unit;
    call_erlang : string -> string -> Term.t list -> Term.t;
    cancel_requested : unit -> bool;
  }

  let with_context = with_context
  let current_context = current_context

  let cancel_requested () = (context ()).cancel_requested ()

  let take_new_atoms = take_new_atoms
  let discard_new_atoms = discard_new_atoms
  let dispatch = dispatch
end

let () =
  Printexc.record_backtrace true;
  (* The one callback the C++ converters look up: they build big integers with zarith's
     C interface, and the hosts reach dispatch through Erl_host. *)
  Callback.register "camlbeam.map_of_array" Term.map_of_array;
  (* The hosts set a thread's slot themselves around a request (cpp/host's ContextScope):
     code that runs OCaml would poll, and a pending signal handler would run before the
     context is set. *)
  Callback.register "camlbeam.context_slots" slots;
  Callback.register_exception "camlbeam.cancelled" Cancelled
