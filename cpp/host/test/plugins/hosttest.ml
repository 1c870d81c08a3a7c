(* The plugin of the host tests: one export per behaviour the host must survive. *)

let rec fib n = if n < 2 then n else fib (n - 1) + fib (n - 2)

(* Unbounded recursion that is not a tail call and allocates nothing: the stack overflows
   in OCaml code, which is where OCaml 4.13 turns the fault into Stack_overflow. *)
let rec depth n = if n < 0 then 0 else 1 + depth (n + 1)

let notes = ref []

let () =
  Erl.export "fib" Erl.Conv.(int @-> returning int) fib;
  Erl.export "sum" Erl.Conv.(list float @-> returning float) (List.fold_left ( +. ) 0.);
  Erl.export "identity" Erl.Conv.(term @-> returning term) Fun.id;
  Erl.export "lookup" Erl.Conv.(string @-> returning int) (fun key ->
      match List.assoc_opt key [ ("one", 1) ] with Some v -> v | None -> raise Not_found);
  Erl.export "overflow" Erl.Conv.(int @-> returning int) depth;
  Erl.export "big_binary" Erl.Conv.(int @-> returning string) (fun n -> String.make n 'x');
  (* A term no Erlang term matches: the host answers bad_reply. *)
  Erl.export_raw "nan" (fun _ -> Erl.Term.Float Float.nan);
  Erl.export "note" Erl.Conv.(string @-> returning unit) (fun s -> notes := s :: !notes);
  Erl.export "notes" Erl.Conv.(nullary (list string)) (fun () -> List.rev !notes)
