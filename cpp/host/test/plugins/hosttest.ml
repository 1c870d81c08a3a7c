(* The plugin of the host tests: one export per behaviour the host must survive. *)

let rec fib n = if n < 2 then n else fib (n - 1) + fib (n - 2)

(* Unbounded recursion that is not a tail call and allocates nothing: the stack overflows
   in OCaml code, which is where OCaml 4.13 turns the fault into Stack_overflow. *)
let rec depth n = if n < 0 then 0 else 1 + depth (n + 1)

let notes = ref []

(* Loops for [ms] milliseconds of CPU time, the first allocating nothing (Sys.time is an
   unboxed noalloc external), the second at every turn. Both poll: the OCaml 4.13.1
   compiler puts a poll point at every loop's back edge and in recursive functions. *)
let spin ms =
  let until = Sys.time () +. (float_of_int ms /. 1000.) in
  while Sys.time () < until do
    ()
  done

let spin_alloc ms =
  let until = Sys.time () +. (float_of_int ms /. 1000.) in
  while Sys.time () < until do
    ignore (Sys.opaque_identity (ref ms))
  done

(* A transport's context, for the tests that run requests in one (host_test.cpp): its
   call_erlang answers {answered_by, test_transport, Module, Function}. *)
let test_context =
  {
    Erl.Private.transport = "test";
    worker = (fun () -> raise Erl.No_transport);
    send = (fun _ _ -> ());
    call_erlang =
      (fun m f _ -> Erl.Term.Tuple [| Atom "answered_by"; Atom "test_transport"; Atom m; Atom f |]);
    cancel_requested = (fun () -> false);
  }

let () =
  Callback.register "hosttest.context" test_context;
  Erl.export "ask_erlang" Erl.Conv.(nullary term) (fun () -> Erl.call_erlang "erlang" "node" []);
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
  Erl.export "notes" Erl.Conv.(nullary (list string)) (fun () -> List.rev !notes);
  Erl.export "spin" Erl.Conv.(int @-> returning int) (fun ms -> spin ms; ms);
  Erl.export "spin_alloc" Erl.Conv.(int @-> returning int) (fun ms -> spin_alloc ms; ms);
  (* Catches the first Erl.Cancelled (what a catch-all handler does by mistake), then
     returns at once. *)
  Erl.export "survive_cancel" Erl.Conv.(int @-> returning atom) (fun ms ->
      match spin_alloc ms with () -> "finished" | exception Erl.Cancelled -> "survived");
  (* Catches every Erl.Cancelled and goes on until [ms] of CPU time have passed: a request
     that cannot be stopped. *)
  Erl.export "stubborn" Erl.Conv.(int @-> returning int) (fun ms ->
      let until = Sys.time () +. (float_of_int ms /. 1000.) in
      let rec go () = match spin_alloc (int_of_float ((until -. Sys.time ()) *. 1000.)) with
        | () -> ()
        | exception Erl.Cancelled -> go ()
      in
      go ();
      ms)
