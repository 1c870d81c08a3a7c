(* The plugin of the port benchmark: an identity export for the round trips, and fib for
   the pool's CPU-bound throughput. *)

let rec fib n = if n < 2 then n else fib (n - 1) + fib (n - 2)

let () =
  Erl.export "id" Erl.Conv.(term @-> returning term) Fun.id;
  Erl.export "fib" Erl.Conv.(int @-> returning int) fib
