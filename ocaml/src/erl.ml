module Binary = Binary
module Term = Term
module Conv = Conv

(* Exports *)

type export_info = { module_ : string; name : string; arity : int option; signature : string }

(* Where the exports of a module came from: the code linked into the program, or the n-th
   plugin loaded. A module's exports all come from one place: exports from another replace
   them wholesale, as loading a new version of an Erlang module replaces all of its
   functions. *)
type origin = Linked | Loaded of int

(* [short]: the plugin declared every call of it short ([Erl.export ~short:true]). *)
type export = { info : export_info; short : bool; call : Term.t list -> (Term.t, Conv.error) result }
type module_exports = { origin : origin; functions : (string, export) Hashtbl.t }

let modules : (string, module_exports) Hashtbl.t = Hashtbl.create 16

(* Every module's export of a name, sorted by module: the index of calls that name only
   the function, which are most calls. *)
let by_name : (string, export list) Hashtbl.t = Hashtbl.create 64

let linked_module = "static"

(* What an export goes to when it does not name its module: while a plugin loads, the
   module named after its file, and the plugin's origin. *)
type loading = { origin : origin; default_module : string }

let loading_now = ref { origin = Linked; default_module = linked_module }
let loads = ref 0

let loading ~file f =
  incr loads;
  let outer = !loading_now in
  loading_now :=
    { origin = Loaded !loads; default_module = Filename.remove_extension (Filename.basename file) };
  Fun.protect ~finally:(fun () -> loading_now := outer) f

(* How many times the export tables changed: a host that keeps exports it found
   (find_export) finds them again when this moves ("camlbeam.exports_generation"). *)
let exports_generation = ref 0

(* The modules whose exports changed since the last answer that carried exports, newest
   first. *)
let touched : string list ref = ref []

let is_atom_text s = Result.is_ok (Term.validate (Term.Atom s))

let forget_names (m : module_exports) =
  Hashtbl.iter
    (fun name (gone : export) ->
      match List.filter (fun (e : export) -> e != gone) (Hashtbl.find by_name name) with
      | [] -> Hashtbl.remove by_name name
      | rest -> Hashtbl.replace by_name name rest)
    m.functions

let index (export : export) =
  let others =
    List.filter
      (fun (e : export) -> e.info.module_ <> export.info.module_)
      (Option.value (Hashtbl.find_opt by_name export.info.name) ~default:[])
  in
  let by_module (a : export) (b : export) = String.compare a.info.module_ b.info.module_ in
  Hashtbl.replace by_name export.info.name (List.merge by_module [ export ] others)

(* Checks everything before it changes anything, as the callers rely on. *)
let register who ?module_ ?(short = false) name ~arity ~signature call =
  let loading = !loading_now in
  let named = Option.is_some module_ in
  let module_ = Option.value module_ ~default:loading.default_module in
  if not (is_atom_text name) then invalid_arg (Printf.sprintf "%s: %S cannot be an atom" who name);
  if not (is_atom_text module_) then
    invalid_arg
      (Printf.sprintf "%s: the module %S cannot be an atom%s" who module_
         (if named then "" else " (it is the plugin's file name: name one with ~module_)"));
  let exports =
    match Hashtbl.find_opt modules module_ with
    | Some m when m.origin = loading.origin -> m
    | replaced ->
        (* A new version of the module: none of the old one's functions stays. The pool logs
           the replacement, once; here it is what a new version is loaded for. *)
        Option.iter forget_names replaced;
        let m = { origin = loading.origin; functions = Hashtbl.create 16 } in
        Hashtbl.replace modules module_ m;
        m
  in
  (match Hashtbl.find_opt exports.functions name with
  | Some _ ->
      (* Within one plugin (or the linked code) this is a mistake rather than an upgrade. *)
      Printf.eprintf "camlbeam: warning: %s:%s exported twice; the later export replaces the earlier\n%!"
        module_ name
  | None -> ());
  let export = { info = { module_; name; arity; signature }; short; call } in
  incr exports_generation;
  Hashtbl.replace exports.functions name export;
  index export;
  if not (List.mem module_ !touched) then touched := module_ :: !touched

let infos_of (m : module_exports) =
  List.sort
    (fun (a : export_info) b -> String.compare a.name b.name)
    (Hashtbl.fold (fun _ (e : export) infos -> e.info :: infos) m.functions [])

let exports () =
  List.concat_map
    (fun name -> infos_of (Hashtbl.find modules name))
    (List.sort String.compare (Hashtbl.fold (fun name _ names -> name :: names) modules []))

let take_new_exports () =
  let fresh = List.rev !touched in
  touched := [];
  List.concat_map (fun name -> Option.fold ~none:[] ~some:infos_of (Hashtbl.find_opt modules name)) fresh

let discard_new_exports () = touched := []

(* The exports declared short, as (module, name); ("", name) too when every module that
   exports [name] declares it short, for the calls that do not name their module. *)
let declared_short () =
  Hashtbl.fold
    (fun name (exports : export list) acc ->
      let qualified = List.filter_map (fun (e : export) -> if e.short then Some (e.info.module_, name) else None) exports in
      if qualified <> [] && List.length qualified = List.length exports then ("", name) :: qualified @ acc
      else qualified @ acc)
    by_name []

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

(* The atoms, the name and the module are checked before any takes effect. *)
let export ?module_ ?(atoms = []) ?short name fn f =
  check_atom_texts "Erl.export" atoms;
  register "Erl.export" ?module_ ?short name ~arity:(Some (Conv.arity fn)) ~signature:(Conv.signature fn)
    (Conv.apply fn f);
  add_atoms atoms

let export_raw ?module_ ?(atoms = []) ?short name f =
  check_atom_texts "Erl.export_raw" atoms;
  register "Erl.export" ?module_ ?short name ~arity:None ~signature:"fun((...) -> term())" (fun args -> Ok (f args));
  add_atoms atoms

exception Cancelled

let error reason = Term.Tuple [| Term.Atom "error"; reason |]

(* A name as the caller gave it, in an error: an atom, or a binary if it cannot be one. *)
let name_term name = if is_atom_text name then Term.Atom name else Term.binary name

(* The frame a backtrace shows between the host and the export. *)
let call_export (export : export) args =
  match export.call args with
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
           |])

let dispatch name args =
  match Hashtbl.find_opt by_name name with
  | Some [ export ] -> call_export export args
  | None | Some [] -> error (Term.Tuple [| Term.Atom "undef"; name_term name |])
  | Some exports ->
      (* The module names are atoms of the VM: the pool created them when the exports
         were reported. *)
      let modules = List.map (fun (e : export) -> Term.Atom e.info.module_) exports in
      error (Term.Tuple [| Term.Atom "ambiguous"; name_term name; Term.List modules |])

let find_export ~module_ name = Option.bind (Hashtbl.find_opt modules module_) (fun m -> Hashtbl.find_opt m.functions name)

let dispatch_qualified ~module_ name args =
  match find_export ~module_ name with
  | Some export -> call_export export args
  | None -> error (Term.Tuple [| Term.Atom "undef"; Term.Tuple [| name_term module_; name_term name |] |])

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

(* The context the thread had before. *)
let enter_context context =
  let i = thread_slot true in
  if i >= max_request_threads then
    failwith (Printf.sprintf "Erl.Private.with_context: more than %d threads have run requests" max_request_threads);
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

(* The context of the request running on the calling thread, if it runs one. *)
let own_context () =
  let i = thread_slot false in
  if i < 0 || i >= max_request_threads then no_context else Array.unsafe_get slots i

(* OCaml 5: a domain a plugin spawns inherits the context of the request that spawned it
   (or the one its parent inherited), so that the request's cancel signal, which any domain
   may handle, cancels the work of that domain too, and Erl.send reaches the request's
   transport, which says whether it can take messages from there. *)
let inherited_context =
  Spawned.inherited no_context ~at_spawn:(fun inherited ->
      let own = own_context () in
      if own == no_context then inherited else own)

(* The calling thread's context, or [no_context], whose functions raise No_transport. *)
let context () =
  let own = own_context () in
  if own == no_context then inherited_context () else own

let current_context () =
  let c = context () in
  if c == no_context then None else Some c

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
  let loading = loading
  let take_new_exports = take_new_exports
  let discard_new_exports = discard_new_exports
  let declared_short = declared_short
  let dispatch = dispatch
  let dispatch_qualified = dispatch_qualified

  type nonrec export = export

  let find_export = find_export
  let call_export = call_export
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
  (* The nif transport runs a handle's on_down through it (cpp/nif/src/handles.cpp). *)
  Callback.register "camlbeam.handle_down" Term.Handle.monitor_down;
  (* The nif transport reads it after each load: the calls it may run on the calling
     scheduler from the first (cpp/nif/src/service.cpp). *)
  Callback.register "camlbeam.declared_short" declared_short;
  (* The hosts that keep exports found by find_export read it before each call of one. *)
  Callback.register "camlbeam.exports_generation" exports_generation;
  Callback.register_exception "camlbeam.cancelled" Cancelled
