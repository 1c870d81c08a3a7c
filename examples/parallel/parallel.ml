(* parallel: one call's work spread over OCaml 5 domains, inside one port worker (or,
   later, one NIF call). Loading it registers:

     fibs(Domains, [N])   -> [fib(N)], computed by Domains domains (1..64)
     fib_sum(Domains, N, Count)
                          -> fib(N) * Count, the Count fibs shared among Domains domains

   A pool's workers already run calls in parallel, one per worker; domains make one call
   faster, for the call a single caller waits on. OCaml 5 only (docs/ocaml5.md). *)

open Erl

let () =
  export "fibs" Conv.(int @-> list int @-> returning (list int)) Parallel_kernels.fibs;
  export "fib_sum" Conv.(int @-> int @-> int @-> returning int) Parallel_kernels.fib_sum
