open Erl

type answer =
  | No_reply
  | Reply of Term.t * Term.t
  | Cast_failed of string
  | Refused of string

(* Short descriptions of terms for error messages. A request can hold a
   gigabyte binary or a list nested a million deep, so nothing here prints or
   even walks a term without a budget. *)

(* An item still to visit: one term, or the rest of a list or of an array. *)
type pending = One of Term.t | Items of Term.t list | Slots of Term.t array * int

(* [fits budget t]: would [Term.to_string t] take about [budget] characters
   or fewer? Visits at most [budget] nodes, with an explicit stack. *)
let fits budget t =
  let rec go budget stack =
    if budget < 0 then false
    else
      match stack with
      | [] -> true
      | Items [] :: rest -> go budget rest
      | Items (t :: ts) :: rest -> go budget (One t :: Items ts :: rest)
      | Slots (a, i) :: rest when i >= Array.length a -> go budget rest
      | Slots (a, i) :: rest -> go budget (One a.(i) :: Slots (a, i + 1) :: rest)
      | One t :: rest -> (
          match (t : Term.t) with
          | Int _ | Float _ | Handle _ -> go (budget - 24) rest
          | Bigint z -> go (budget - (Z.numbits z / 3) - 2) rest
          | Atom s | Bitstring (s, _) -> go (budget - String.length s - 6) rest
          | Binary b -> go (budget - Erl.Binary.length b - 6) rest
          | Ref _ | Port _ | Pid _ | Fun (Export _) -> go (budget - 48) rest
          | Fun (Local { free_vars; _ }) -> go (budget - 48) (Items free_vars :: rest)
          | Tuple a -> go (budget - 2) (Slots (a, 0) :: rest)
          | Map a ->
              let budget = budget - 3 - (4 * Array.length a) in
              (* Checked before [Array.map], whose cost is the map's size. *)
              budget >= 0
              && go budget (Slots (Array.map (fun (k, v) -> Term.Tuple [| k; v |]) a, 0) :: rest)
          | List l -> go (budget - 2) (Items l :: rest)
          | Improper (l, tail) -> go (budget - 3) (Items l :: One tail :: rest))
  in
  go budget [ One t ]

let plural n word = Printf.sprintf "%d %s%s" n word (if n = 1 then "" else "s")

let rec describe_within budget (t : Term.t) =
  if fits budget t then Term.to_string t
  else
    match t with
    | Tuple a when Array.length a > 0 && Array.length a <= 8 && budget / Array.length a > 16 ->
        (* Keep the shape of small tuples, such as error reasons. *)
        let share = (budget / Array.length a) - 4 in
        "{" ^ String.concat "," (Array.to_list (Array.map (describe_within share) a)) ^ "}"
    | Tuple a -> "a tuple of " ^ plural (Array.length a) "element"
    | Map a -> "a map of " ^ plural (Array.length a) "key"
    | List _ | Improper _ -> "a list"
    | Binary b -> "a binary of " ^ plural (Erl.Binary.length b) "byte"
    | Bitstring (s, _) -> "a bitstring of " ^ plural (String.length s) "byte"
    | Atom _ -> "an atom"
    | Bigint z -> "an integer of " ^ plural (Z.numbits z) "bit"
    | Fun _ -> "a fun"
    | Int _ | Float _ | Ref _ | Port _ | Pid _ | Handle _ -> Term.to_string t

let describe t = describe_within 200 t

(* Plugins *)

type load_error = Enoent | Not_a_plugin | Incompatible | Already_loaded | Init_failed

let load_error_atom = function
  | Enoent -> "enoent"
  | Not_a_plugin -> "not_a_plugin"
  | Incompatible -> "incompatible"
  | Already_loaded -> "already_loaded"
  | Init_failed -> "init_failed"

let contains s sub =
  let n = String.length sub in
  let rec from i = i + n <= String.length s && (String.sub s i n = sub || from (i + 1)) in
  from 0

let classify : Dynlink.error -> load_error = function
  | Module_already_loaded _ -> Already_loaded
  | Library's_module_initializers_failed _ -> Init_failed
  | Not_a_bytecode_file _ -> Not_a_plugin
  | Inconsistent_import _ | Inconsistent_implementation _ | Corrupted_interface _
  | Unavailable_unit _ | Linking_error _ | Unsafe_file | Private_library_cannot_implement_interface _ ->
      Incompatible
  | Cannot_open_dynamic_library exn ->
      (* dlopen only says why in words. A shared object that needs a symbol
         the host lacks was built for another host; anything else (not ELF,
         not readable) is not a plugin. *)
      if contains (Printexc.to_string exn) "undefined symbol" then Incompatible else Not_a_plugin

(* The module a plugin uses that the host does not carry, from the error that
   says so: bytecode names the unit, dlopen the first symbol it missed
   (camlStr, camlStr__split_12, camlMylib__Mod__f_3: the unit, or the wrapper of
   its library). OCaml 4.13 compiles a plugin that uses Str or Unix without
   naming their package (their interfaces are in the standard library's
   directory), so the mistake shows only here. *)
let missing_module : Dynlink.error -> string option = function
  | Unavailable_unit name -> Some name
  | Cannot_open_dynamic_library exn -> (
      let text = Printexc.to_string exn and marker = "undefined symbol: caml" in
      let n = String.length marker in
      let rec find i =
        if i + n > String.length text then None
        else if String.sub text i n = marker then Some (i + n)
        else find (i + 1)
      in
      let is_name_char = function 'a' .. 'z' | 'A' .. 'Z' | '0' .. '9' | '_' -> true | _ -> false in
      let at_separator i = i + 1 < String.length text && text.[i] = '_' && text.[i + 1] = '_' in
      let rec name_end i =
        if i < String.length text && is_name_char text.[i] && not (at_separator i) then name_end (i + 1) else i
      in
      match find 0 with
      | Some start when start < String.length text && 'A' <= text.[start] && text.[start] <= 'Z' ->
          Some (String.sub text start (name_end start - start))
      | _ -> None)
  | _ -> None

let load_failure path e =
  let message = path ^ ": " ^ Dynlink.error_message e in
  match missing_module e with
  | None -> message
  | Some name ->
      Printf.sprintf
        "%s. The plugin uses the module %s, which this worker does not carry (it carries the standard \
         library, camlbeam, zarith, dynlink and unix): load the plugin of its library first, or link \
         that library into a worker of your own (docs/plugins.md, \"What a plugin can use\")"
        message name

(* The other kind's extension, caught before Dynlink so that the message
   says what to do. *)
let wrong_flavour path =
  let ext = Filename.extension path in
  if Dynlink.is_native then
    if ext = ".cma" || ext = ".cmo" then
      Some "is a bytecode plugin: a native host loads .cmxs files (ocamlfind ocamlopt -shared)"
    else None
  else if ext = ".cmxs" then
    Some "is a native plugin: a bytecode host loads .cma and .cmo files (ocamlfind ocamlc -a)"
  else None

(* The OCaml that compiled a plugin. Every compiled file carries a magic number, "Caml1999"
   then a letter for its kind and a number for its OCaml release: a .cma or .cmo starts with
   it, a .cmxs holds it in its plugin header (the first occurrence in the file). OCaml checks
   it too, but Dynlink's errors name no version (a .cma: "not a bytecode file"; a .cmxs:
   an undefined symbol, or a crash if the runtime's layout changed), so it is checked here
   first and the error names both OCamls. *)
let magic_prefix = "Caml1999"
let magic_length = String.length magic_prefix + 4

(* The releases of each object format number (utils/config.common.ml of each release). *)
let ocaml_of_format = function
  | "030" -> "4.13"
  | "031" -> "4.14"
  | "032" -> "5.0"
  | "033" -> "5.1"
  | "034" -> "5.2"
  | "035" -> "5.3"
  | n -> "of object format " ^ n

(* The first magic number of kind [kind] in the file, read in chunks. *)
let find_magic path kind =
  let wanted = magic_prefix ^ String.make 1 kind in
  let rec find_in text i =
    match String.index_from_opt text i 'C' with
    | Some j when j + magic_length <= String.length text ->
        if String.sub text j (String.length wanted) = wanted then Some (String.sub text j magic_length)
        else find_in text (j + 1)
    | Some _ | None -> None
  in
  let ic = open_in_bin path in
  Fun.protect
    ~finally:(fun () -> close_in_noerr ic)
    (fun () ->
      let buffer = Bytes.create 65536 in
      (* [carry]: the end of what was read before, where a magic number may begin. *)
      let rec scan carry =
        match input ic buffer 0 (Bytes.length buffer) with
        | 0 -> None
        | got -> (
            let text = carry ^ Bytes.sub_string buffer 0 got in
            match find_in text 0 with
            | Some magic -> Some magic
            | None ->
                let keep = min (String.length text) (magic_length - 1) in
                scan (String.sub text (String.length text - keep) keep))
      in
      scan "")

let compiler_mismatch path =
  let own, kind =
    match Filename.extension path with
    | ".cmxs" -> (Compiler_magic.cmxs, 'D')
    | ".cma" -> (Compiler_magic.cma, 'A')
    | _ -> (Compiler_magic.cmo, 'O')
  in
  match find_magic path kind with
  | Some theirs when theirs <> own ->
      let format m = String.sub m (magic_length - 3) 3 in
      Some
        (Printf.sprintf
           "was compiled by OCaml %s (%s), and this worker runs OCaml %s (%s): compile the plugin with the \
            worker's OCaml, or run it in a pool of workers built for its OCaml (option ocaml, docs/ocaml5.md)"
           (ocaml_of_format (format theirs)) theirs Sys.ocaml_version own)
  | Some _ | None -> None
  | exception Sys_error _ -> None

(* Exceptions that say nothing about the file: the request's deadline passed, or the worker
   ran out of memory or stack while loading. They propagate, so that the request is
   answered as any request they interrupt is. *)
let is_asynchronous = function Erl.Cancelled | Out_of_memory | Stack_overflow -> true | _ -> false

let load path =
  if not (Sys.file_exists path) then Error (Enoent, path ^ ": no such file")
  else
    match wrong_flavour path with
    | Some why -> Error (Not_a_plugin, path ^ " " ^ why)
    | None -> (
        (* The file is read for its magic number only when its extension is right. *)
        match compiler_mismatch path with
        | Some why -> Error (Incompatible, path ^ " " ^ why)
        | None -> (
            match Private.loading ~file:path (fun () -> Dynlink.loadfile path) with
            | () -> Ok ()
            | exception Dynlink.Error (Library's_module_initializers_failed Erl.Cancelled) -> raise Erl.Cancelled
            | exception Dynlink.Error e -> Error (classify e, load_failure path e)
            | exception Sys_error message -> Error (Not_a_plugin, message)
            | exception exn when is_asynchronous exn -> raise exn
            | exception exn -> Error (Not_a_plugin, path ^ ": " ^ Printexc.to_string exn)))

(* Requests *)

let ok = Term.Atom "ok"
let error reason = Term.Tuple [| Atom "error"; reason |]
let bad_request ref_ message = Reply (ref_, error (Tuple [| Atom "bad_request"; Term.binary message |]))

(* A path as Erlang gives it: a binary, or a list of character codes. *)
let path_of_term : Term.t -> string option = function
  | Binary b -> Some (Erl.Binary.to_string b)
  | List codes -> (
      let buffer = Buffer.create 64 in
      let add = function
        | Term.Int c when Uchar.is_valid c && c <> 0 ->
            Buffer.add_utf_8_uchar buffer (Uchar.of_int c);
            true
        | _ -> false
      in
      match List.for_all add codes with true -> Some (Buffer.contents buffer) | false -> None)
  | _ -> None

(* The atoms declared since the last answer that carried atoms, as the answers to a load and
   to hello carry them: a list of binaries, since the VM that reads them may not have them. *)
let new_atoms () = Term.List (List.map Term.binary (Private.take_new_atoms ()))

(* The exports of the modules that changed since the last answer that carried exports, as
   the answers to a load and to hello carry them: {Module, Name, Arity, Signature}, names as
   binaries (the VM may not have them yet: the pool creates them, as declared atoms). *)
let new_exports () =
  let export ({ module_; name; arity; signature } : Erl.export_info) =
    let arity = match arity with Some n -> Term.Int n | None -> Atom "any" in
    Term.Tuple [| Term.binary module_; Term.binary name; arity; Term.binary signature |]
  in
  Term.List (List.map export (Private.take_new_exports ()))

(* [ok] when the plugin declared no atom and exported nothing, as before either was
   reported. *)
let load_answer path =
  match load path with
  | Ok () -> (
      let reported key : Term.t -> (Term.t * Term.t) option = function
        | List [] -> None
        | items -> Some (Atom key, items)
      in
      match List.filter_map Fun.id [ reported "atoms" (new_atoms ()); reported "exports" (new_exports ()) ] with
      | [] -> ok
      | declared -> Tuple [| ok; Term.map_of_list declared |])
  | Error (kind, message) ->
      (* The plugin is not loaded: its atoms and exports are not wanted. *)
      Private.discard_new_atoms ();
      Private.discard_new_exports ();
      error (Tuple [| Atom "load_failed"; Atom (load_error_atom kind); Term.binary message |])
  | exception Erl.Cancelled ->
      Private.discard_new_atoms ();
      Private.discard_new_exports ();
      error (Atom "timeout")

let shapes =
  "a request is {call, Ref, Fun, Args}, {call, Ref, Fun, Args, Timeout}, {cast, Fun, Args}, {load, Ref, Path} or \
   {load, Ref, Path, Timeout}, where Fun is Function or {Module, Function}"

(* Deadlines. The host's request watch starts a request's clock when the request begins;
   set_deadline tells it the request's Timeout. When the deadline passes, the watch sends
   the cancel signal to the thread that runs OCaml, whose handler raises Erl.Cancelled if
   that request is still the one running (cancel_requested), so that a late signal never
   hits the next request. Both externals do nothing in a host without a watch. *)

external set_deadline_at : nativeint -> int -> unit = "camlbeam_request_set_deadline" [@@noalloc]
external cancel_requested_at : nativeint -> bool = "camlbeam_request_cancel_requested" [@@noalloc]

(* The calling domain's watch (Watch_hooks). *)
let set_deadline milliseconds = set_deadline_at (Watch_hooks.current ()) milliseconds
let cancel_requested () = cancel_requested_at (Watch_hooks.current ())

(* The handler asks the context of the request running on the thread it runs on: its
   transport knows whether that request's deadline passed (a port worker: this watch). *)
let watch_requests hooks signal =
  if hooks = 0n then (
    Watch_hooks.uninstall ();
    Sys.set_signal signal Signal_default)
  else (
    Watch_hooks.install hooks;
    Sys.set_signal signal (Signal_handle (fun _ -> if Private.cancel_requested () then raise Erl.Cancelled)))

let deadline_passed () = cancel_requested ()

(* A Timeout: milliseconds (None: infinity), as ocaml:call/4 takes it. *)
let deadline_of : Term.t -> (int option, string) result = function
  | Int ms when ms >= 0 -> Ok (Some ms)
  | Bigint z when Z.sign z > 0 -> Ok None (* past max_int milliseconds: never *)
  | Atom "infinity" -> Ok None
  | t -> Error ("Timeout must be a non-negative integer or infinity, got " ^ describe t)

(* Runs a request whose fields are all right, once its Timeout (if it has one) is. *)
let run_within what ref_ (timeout : Term.t option) run =
  match Option.map deadline_of timeout with
  | None -> run ()
  | Some (Ok deadline) ->
      Option.iter set_deadline deadline;
      run ()
  | Some (Error why) -> bad_request ref_ (what ^ ": " ^ why)

(* The function a call or a cast names: an atom, the export of whichever module has it, or
   {Module, Function}. *)
let target_of : Term.t -> (Term.t list -> Term.t) option = function
  | Atom name -> Some (Private.dispatch name)
  | Tuple [| Atom module_; Atom name |] -> Some (Private.dispatch_qualified ~module_ name)
  | _ -> None

let call ref_ (name : Term.t) (args : Term.t) timeout =
  match (target_of name, args) with
  | Some dispatch, List args -> run_within "call" ref_ timeout (fun () -> Reply (ref_, dispatch args))
  | Some _, _ -> bad_request ref_ ("call: Args must be a proper list, got " ^ describe args)
  | None, _ ->
      bad_request ref_ ("call: Fun must be an atom or a tuple {Module, Function} of two atoms, got " ^ describe name)

let load_request ref_ path timeout =
  match path_of_term path with
  | Some path -> run_within "load" ref_ timeout (fun () -> Reply (ref_, load_answer path))
  | None -> bad_request ref_ ("load: Path must be a binary or a string, got " ^ describe path)

(* Requests a transport adds, by the atom that starts their tuple. *)
let transport_requests : (string, Term.t array -> answer) Hashtbl.t = Hashtbl.create 4

let add_request kind handler =
  match kind with
  | "call" | "cast" | "load" -> invalid_arg ("Erl_host.add_request: " ^ kind ^ " is a request of every host")
  | _ -> Hashtbl.replace transport_requests kind handler

let transport_request : Term.t -> (Term.t array -> answer) option = function
  | Tuple a when Array.length a > 0 -> (
      match a.(0) with Atom kind -> Hashtbl.find_opt transport_requests kind | _ -> None)
  | _ -> None

let cast request (name : Term.t) args =
  match target_of name with
  | None -> Refused (shapes ^ "; got " ^ describe request)
  | Some dispatch -> (
      match dispatch args with
      | Tuple [| Atom "ok"; _ |] -> No_reply
      | answer -> Cast_failed (Printf.sprintf "cast %s: %s" (describe name) (describe_within 1000 answer)))

let run (request : Term.t) =
  match request with
  | Tuple [| Atom "call"; ref_; name; args |] -> call ref_ name args None
  | Tuple [| Atom "call"; ref_; name; args; timeout |] -> call ref_ name args (Some timeout)
  | Tuple [| Atom "cast"; name; List args |] -> cast request name args
  | Tuple [| Atom "load"; ref_; path |] -> load_request ref_ path None
  | Tuple [| Atom "load"; ref_; path; timeout |] -> load_request ref_ path (Some timeout)
  | Tuple a when Array.length a >= 2 && (match a.(0) with Atom ("call" | "load") -> true | _ -> false) ->
      let expected =
        match a.(0) with
        | Atom "call" -> "{call, Ref, Fun, Args} or {call, Ref, Fun, Args, Timeout}"
        | _ -> "{load, Ref, Path} or {load, Ref, Path, Timeout}"
      in
      bad_request a.(1) (Printf.sprintf "expected %s, got a tuple of %d elements" expected (Array.length a))
  | _ -> (
      match transport_request request with
      | Some handler -> (
          match request with Tuple fields -> handler fields | _ -> Refused (shapes ^ "; got " ^ describe request))
      | None -> Refused (shapes ^ "; got " ^ describe request))

let handle context request = Private.with_context context (fun () -> run request)

(* A call of an export the host found once by its names (Host::call): what
   {call, _, {Module, Function}, Args, Timeout} does once that export is found, without
   the request's tuple or the look-up. [timeout]: milliseconds, or -1 for none. *)
let call_export export (args : Term.t) timeout =
  match args with
  | List args ->
      if timeout >= 0 then set_deadline timeout;
      Reply (Int 0, Private.call_export export args)
  | _ -> bad_request (Int 0) ("call: Args must be a proper list, got " ^ describe args)

(* The context of a host that talks to no Erlang (camlbeam-call, the C++ tests): its requests
   are watched, and Erl.send and friends raise No_transport in them as outside a request. *)
let no_transport _ = raise Erl.No_transport

let standalone_context =
  {
    Private.transport = "none";
    worker = no_transport;
    send = (fun _ -> no_transport);
    call_erlang = (fun _ _ -> no_transport);
    cancel_requested = deadline_passed;
  }

(* A worker runs one request after another, and a request's values die when its answer is
   written. An 8 MB minor heap lets a request of up to about a million words live and die
   there without being copied to the major heap; OCaml's 256k-word default promotes a list
   of 100,000 integers, which doubled the cost of converting it. A transient large value
   (a 1 MB binary) leaves the heap mostly free afterwards: at the default max_overhead
   (500%) that triggered a compaction and a new heap chunk on almost every such request,
   three times the cost of the conversion itself (bench/conv_bench). A binary longer than
   Erl.Binary.heap_max lives off the heap in a custom block: custom_minor_max_size counts
   all of its memory (not only the first 8 KB) towards the minor heap's budget, so that it
   brings the next minor collection closer instead of speeding up the major GC, and it is
   freed at that collection if it died with its request. *)
let apply_worker_gc_defaults () =
  match (Sys.getenv_opt "OCAMLRUNPARAM", Sys.getenv_opt "CAMLRUNPARAM") with
  | None, None ->
      Gc.set
        { (Gc.get ()) with minor_heap_size = 1 lsl 20; max_overhead = 5000; custom_minor_max_size = 1 lsl 30 }
  | _ -> ()

let () =
  Callback.register "camlbeam.host.worker_gc_defaults" apply_worker_gc_defaults;
  (* Plugins are code the application chose to load, like the host's own:
     bytecode Dynlink refuses [external]s by default (native has no such
     check). *)
  Dynlink.allow_unsafe_modules true;
  (* The C++ host enters the context itself, before it converts the request. *)
  Callback.register "camlbeam.host.handle" run;
  Callback.register "camlbeam.host.find_export" (fun module_ name -> Private.find_export ~module_ name);
  Callback.register "camlbeam.host.call_export" call_export;
  Callback.register "camlbeam.host.standalone_context" standalone_context;
  Callback.register "camlbeam.host.load" load;
  Callback.register "camlbeam.host.watch_requests" watch_requests;
  Callback.register "camlbeam.host.compact" Gc.compact
