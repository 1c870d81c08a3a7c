(* OCaml side of the conv tests: what the C++ test asks of the OCaml runtime. *)

let validate t =
  match Erl.Term.validate t with Ok () -> "" | Error why -> why

let () =
  Callback.register "test.validate" validate;
  Callback.register "test.to_string" Erl.Term.to_string;
  Callback.register "test.full_major" Gc.full_major

(* What the OCaml side sees of a Binary the converters built: whether it is off
   the heap, Erl.Binary.heap_max, whether it equals a heap copy of itself,
   hashes like one and orders like one (against the same bytes with the last
   one raised), and whether the runtime sees the binary Erl.Binary.of_bigstring
   makes of the same bytes: the same Bigarray kind, so that marshalling,
   Bigarray.Array1.kind and the runtime's own compare and hash agree. *)
let binary_info t =
  match t with
  | Erl.Term.Binary b ->
      let s = Erl.Binary.to_string b in
      let heap = Erl.Term.binary s in
      let above =
        if s = "" then Erl.Term.binary "\000"
        else Erl.Term.binary (String.sub s 0 (String.length s - 1) ^ "\255")
      in
      let bigstring = Bigarray.Array1.create Bigarray.char Bigarray.c_layout (String.length s) in
      String.iteri (Bigarray.Array1.set bigstring) s;
      let from_ocaml = Erl.Binary.of_bigstring bigstring in
      ( Erl.Binary.is_off_heap b,
        Erl.Binary.heap_max,
        Erl.Term.equal t heap && Erl.Term.equal heap t
        && Erl.Term.hash t = Erl.Term.hash heap
        && Erl.Term.compare t above < 0 && Erl.Term.compare above t > 0,
        Stdlib.compare b from_ocaml = 0 && Hashtbl.hash b = Hashtbl.hash from_ocaml )
  | _ -> invalid_arg "binary_info: not a Binary"

let () = Callback.register "test.binary_info" binary_info

(* Replaces the map callback the converters make by one that raises, as an asynchronous
   exception (a signal handler's, Out_of_memory) would in its code, and puts it back. *)
exception Asynchronous

let () =
  Callback.register_exception "test.asynchronous" Asynchronous;
  Callback.register "test.break_map_of_array" (fun () ->
      Callback.register "camlbeam.map_of_array" (fun (_ : (Erl.Term.t * Erl.Term.t) array) : Erl.Term.t ->
          raise Asynchronous));
  Callback.register "test.mend_map_of_array" (fun () -> Callback.register "camlbeam.map_of_array" Erl.Term.map_of_array)

(* Pids, ports and references decoded from ETF, through their own modules (Erl.Term.Pid,
   Port, Ref), which the OCaml tests only see on values made from fields. For a list, one
   row per element: its relation to each element by the module's compare, '<', '=' or '>',
   or '.' for another kind; rows joined by spaces. On the way it checks that equal, hash
   and to_string agree with compare and with the terms that hold the values, and answers
   why if not. *)
exception Disagree of string

let relation_through (type a) (module Kind : Erl.Term.Identifier with type t = a) (wrap : a -> Erl.Term.t) a b =
  let c = Kind.compare a b in
  let check ok what = if not ok then raise (Disagree (what ^ " of " ^ Kind.to_string a ^ ", " ^ Kind.to_string b)) in
  check (Int.compare c 0 = Int.compare (Erl.Term.compare (wrap a) (wrap b)) 0) "compare";
  check (Kind.equal a b = (c = 0)) "equal";
  check ((not (Kind.equal a b)) || Kind.hash a = Kind.hash b) "hash";
  check (Kind.hash a = Erl.Term.hash (wrap a)) "hash of the term";
  check (Kind.to_string a = Erl.Term.to_string (wrap a)) "to_string";
  check (Format.asprintf "%a" Kind.pp a = Kind.to_string a) "pp";
  if c < 0 then '<' else if c > 0 then '>' else '='

let relation x y =
  match (x, y) with
  | Erl.Term.Pid a, Erl.Term.Pid b -> relation_through (module Erl.Term.Pid) (fun p -> Erl.Term.Pid p) a b
  | Erl.Term.Port a, Erl.Term.Port b -> relation_through (module Erl.Term.Port) (fun p -> Erl.Term.Port p) a b
  | Erl.Term.Ref a, Erl.Term.Ref b -> relation_through (module Erl.Term.Ref) (fun r -> Erl.Term.Ref r) a b
  | _ -> '.'

let identifier_relations = function
  | Erl.Term.List xs -> (
      let row x = String.of_seq (Seq.map (relation x) (List.to_seq xs)) in
      try String.concat " " (List.map row xs) with Disagree why -> "disagree: " ^ why)
  | t -> "not a list: " ^ Erl.Term.to_string t

let () = Callback.register "test.identifier_relations" identifier_relations

(* Handles: a handle of an int, inside a tuple ({n, Handle}), and whether a term a
   converter built holds the same handle in the same place. *)
let int_kind : int Erl.Term.Handle.kind = Erl.Term.Handle.kind "int"

let () =
  Callback.register "test.handle" (fun n -> Erl.Term.Tuple [| Int n; Erl.Term.Handle.make int_kind n |]);
  Callback.register "test.same_handle" (fun (a, b) ->
      match (a, b) with
      | Erl.Term.Tuple [| _; (Handle _ as x) |], Erl.Term.Tuple [| (Handle _ as y) |] ->
          Erl.Term.equal x y && Erl.Term.Handle.get int_kind y <> None
      | _ -> false)
