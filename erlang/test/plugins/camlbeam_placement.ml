(* The nif runtime suite's: exports whose names no other suite calls, so that where their
   calls run depends on this suite's calls alone (cpp/nif/README.md, "Where a call runs"). *)
open Erl.Conv

let rec depth n = if n = 0 then 0 else 1 + depth (n - 1)

let busy_ms ms =
  let until = Unix.gettimeofday () +. (float_of_int ms /. 1000.) in
  while Unix.gettimeofday () < until do () done

(* How many calls of placed_meet have arrived since placed_meet_reset. *)
let arrived = Atomic.make 0

(* Waits, at most [ms] milliseconds, until [n] calls have arrived: "met" if they did,
   "alone" if not (they cannot all be running at once). *)
let meet n ms =
  Atomic.incr arrived;
  let until = Unix.gettimeofday () +. (float_of_int ms /. 1000.) in
  let rec wait () =
    if Atomic.get arrived >= n then "met" else if Unix.gettimeofday () >= until then "alone" else wait ()
  in
  wait ()

let () =
  Erl.export "placed_meet" (int @-> int @-> returning atom) meet;
  Erl.export "placed_raise" (nullary unit) (fun () -> failwith "raised where it was placed");
  (* What the runtime sets per domain, after [ms] milliseconds of work. *)
  Erl.export "placed_setup" (int @-> returning (tuple2 int bool)) (fun ms ->
      busy_ms ms;
      ((Gc.get ()).minor_heap_size, Printexc.backtrace_status ()));
  (* The nif runtime suite's meet_in_erlang/2: calls of Erlang made from several domains at
     once, each waiting for the others. *)
  Erl.export "placed_meet_in_erlang" (term @-> int @-> returning term) (fun tag n ->
      Erl.call_erlang "camlbeam_nif_runtime_SUITE" "meet_in_erlang" [ tag; Erl.Term.Int n ]);
  Erl.export "placed_meet_reset" (nullary unit) (fun () -> Atomic.set arrived 0);
  Erl.export "placed_echo" (term @-> returning term) Fun.id;
  Erl.export "placed_busy" (int @-> returning int) (fun ms -> busy_ms ms; ms);
  (* placed_busy's twin, never called short: it stays on the domains' threads. *)
  Erl.export "placed_spin" (int @-> returning int) (fun ms -> busy_ms ms; ms);
  Erl.export "placed_depth" (int @-> returning int) depth;
  Erl.export "placed_send" (pid @-> term @-> returning unit) Erl.send;
  Erl.export "placed_ask_erlang" (int @-> returning term) (fun n ->
      if n = 0 then Erl.Term.Int 0 else Erl.call_erlang "erlang" "abs" [ Erl.Term.Int n ]);
  (* Declared short: run on the calling scheduler from their first call (OCaml 5). *)
  Erl.export ~short:true "placed_declared_echo" (term @-> returning term) Fun.id;
  Erl.export ~short:true "placed_declared_busy" (int @-> returning int) (fun ms -> busy_ms ms; ms);
  Erl.export ~short:true "placed_declared_late" (int @-> returning int) (fun ms -> busy_ms ms; ms);
  Erl.export ~short:true "placed_declared_raise" (nullary unit) (fun () -> failwith "raised on a scheduler");
  (* Normal: over 50 us and under 10 ms, for a dirty CPU scheduler (OCaml 5). *)
  Erl.export "placed_normal" (int @-> returning int) (fun ms ->
      if ms < 0 then failwith "raised on a dirty scheduler";
      busy_ms ms;
      ms);
  Erl.export "placed_normal_asks_erlang" (int @-> returning term) (fun n ->
      busy_ms 2;
      if n = 0 then Erl.Term.Int 0 else Erl.call_erlang "erlang" "abs" [ Erl.Term.Int n ]);
