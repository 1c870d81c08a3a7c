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
          "Erl.No_transport: no camlbeam transport is installed (Erl.send, \
           Erl.call_erlang and Erl.worker only work in a camlbeam worker)"
    | Cancelled -> Some "Erl.Cancelled: the deadline of the call passed; its caller has given up"
    | _ -> None)

type worker = { transport : string; id : int; pid : Term.pid }

type transport = {
  worker : worker;
  send : Term.pid -> Term.t -> unit;
  call_erlang : string -> string -> Term.t list -> Term.t;
}

let current : transport option ref = ref None
let transport () = match !current with Some t -> t | None -> raise No_transport
let send pid msg = (transport ()).send pid msg
let call_erlang m f args = (transport ()).call_erlang m f args
let worker () = (transport ()).worker
let self () = (worker ()).pid

(* For the hosts *)

module Private = struct
  type nonrec transport = transport = {
    worker : worker;
    send : Term.pid -> Term.t -> unit;
    call_erlang : string -> string -> Term.t list -> Term.t;
  }

  let set_transport t = current := Some t
  let clear_transport () = current := None
  let take_new_atoms = take_new_atoms
  let discard_new_atoms = discard_new_atoms
  let dispatch = dispatch
end

let () =
  Printexc.record_backtrace true;
  (* The one callback the C++ converters look up: they build big integers with zarith's
     C interface, and the hosts reach dispatch through Erl_host. *)
  Callback.register "camlbeam.map_of_array" Term.map_of_array;
  Callback.register_exception "camlbeam.cancelled" Cancelled
