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
