(* The handles suite's (camlbeam_handles_SUITE): OCaml values Erlang holds as ocaml:ref()
   terms, a counter to change through them, and one that monitors a process. *)
open Erl.Conv
module Handle = Erl.Term.Handle

let counter : int ref Handle.kind = Handle.kind "counter"

(* Another kind of the same type: its handles are not counters. *)
let gauge : int ref Handle.kind = Handle.kind "gauge"

let counter_t =
  make ~expected:"an ocaml:ref() of a counter" (Handle.get counter) (Handle.make counter)

(* on_down runs of every monitoring handle, in this runtime. *)
let downs = Atomic.make 0

(* Counters the OCaml GC has collected: those whose handles Erlang released. *)
let finalised = Atomic.make 0

let new_counter n =
  let r = ref n in
  Gc.finalise (fun _ -> Atomic.incr finalised) r;
  r

let () =
  Erl.export "handle_counter" (int @-> returning counter_t) new_counter;
  Erl.export "handle_finalised" (nullary int) (fun () ->
      Gc.full_major ();
      Gc.full_major ();
      Atomic.get finalised);
  Erl.export "handle_gauge" (int @-> returning term) (fun n -> Handle.make gauge (ref n));
  Erl.export "handle_incr" (counter_t @-> returning int) (fun r -> incr r; !r);
  Erl.export "handle_read" (counter_t @-> returning int) (fun r -> !r);
  (* The same handle twice, and whether two arguments are the same handle. *)
  Erl.export "handle_twice" (term @-> returning (tuple2 term term)) (fun h -> (h, h));
  Erl.export "handle_same" (term @-> term @-> returning bool) Erl.Term.equal;
  Erl.export "handle_name" (term @-> returning (option string)) Handle.name;
  Erl.export "handle_in_answer" (int @-> returning term) (fun n ->
      Erl.Term.Tuple [| Erl.Term.Atom "ok"; Handle.make counter (ref n) |]);
  Erl.export "handle_send" (pid @-> int @-> returning unit) (fun p n -> Erl.send p (Handle.make counter (ref n)));
  (* A map of n counter handles as keys. *)
  Erl.export "handle_keys" (int @-> returning term) (fun n ->
      Erl.Term.map_of_list (List.init n (fun i -> (Handle.make counter (new_counter i), Erl.Term.Int i))));
  Erl.export "handle_monitor" (pid @-> returning term) (fun p ->
      Handle.make ~monitor:(p, fun () -> Atomic.incr downs) counter (ref 0));
  Erl.export "handle_down" (term @-> returning bool) Handle.down;
  Erl.export "handle_downs" (nullary int) (fun () -> Atomic.get downs)
