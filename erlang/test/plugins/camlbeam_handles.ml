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

(* The counters made, held weakly: those whose slot is empty the OCaml GC has collected
   (their handles were released). Not Gc.finalise: OCaml 5 runs a finaliser on the domain
   that registered it, at that domain's next poll, where a full major collection empties
   the weak slots of every domain at once. *)
let made : int ref Weak.t = Weak.create 100_000
let next_slot = Atomic.make 0

let new_counter n =
  let r = ref n in
  let slot = Atomic.fetch_and_add next_slot 1 in
  if slot < Weak.length made then Weak.set made slot (Some r);
  r

let collected () =
  Gc.full_major ();
  Gc.full_major ();
  let filled = min (Atomic.get next_slot) (Weak.length made) in
  let gone = ref 0 in
  for slot = 0 to filled - 1 do
    if not (Weak.check made slot) then incr gone
  done;
  !gone

let () =
  Erl.export "handle_counter" (int @-> returning counter_t) new_counter;
  Erl.export "handle_finalised" (nullary int) collected;
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
