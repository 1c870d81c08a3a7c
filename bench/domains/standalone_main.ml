(* bench/domains' baseline: the parallel plugin's kernel fib_sum (examples/parallel/
   parallel_kernels.ml, the same file the plugin is built from) as a plain ocamlopt program,
   no camlbeam. One untimed call, then one timed call, on the same Domains as the timed one:

     domains_standalone Domains N Count    prints "Result Nanoseconds"

   The driver (domains_bench.erl) runs it between the port's calls and checks Result. *)

let () =
  match Array.map int_of_string (Array.sub Sys.argv 1 (Array.length Sys.argv - 1)) with
  | [| domains; n; count |] ->
      ignore (Parallel_kernels.fib_sum domains n count);
      let t0 = Unix.gettimeofday () in
      let result = Parallel_kernels.fib_sum domains n count in
      let t1 = Unix.gettimeofday () in
      Printf.printf "%d %.0f\n" result ((t1 -. t0) *. 1e9)
  | _ | (exception _) ->
      prerr_endline "usage: domains_standalone Domains N Count";
      exit 2
