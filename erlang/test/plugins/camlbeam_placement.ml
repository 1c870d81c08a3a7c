(* The nif runtime suite's: exports whose names no other suite calls, so that where their
   calls run depends on this suite's calls alone (cpp/nif/README.md, "Where a call runs"). *)
open Erl.Conv

let rec depth n = if n = 0 then 0 else 1 + depth (n - 1)

let busy_ms ms =
  let until = Unix.gettimeofday () +. (float_of_int ms /. 1000.) in
  while Unix.gettimeofday () < until do () done

let () =
  Erl.export "placed_echo" (term @-> returning term) Fun.id;
  Erl.export "placed_busy" (int @-> returning int) (fun ms -> busy_ms ms; ms);
  Erl.export "placed_depth" (int @-> returning int) depth;
  Erl.export "placed_send" (pid @-> term @-> returning unit) Erl.send;
  Erl.export "placed_ask_erlang" (int @-> returning term) (fun n ->
      if n = 0 then Erl.Term.Int 0 else Erl.call_erlang "erlang" "abs" [ Erl.Term.Int n ])
