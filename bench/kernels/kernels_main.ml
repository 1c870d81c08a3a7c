(* The kernels as a standalone program, timing the same calls the plugin serves:

     kernels_standalone KERNEL SIZE REPS INNER

   runs one untimed call, then REPS times INNER calls, and prints for each rep
   "ns <wall-clock nanoseconds per call>", then "result <digest of the last result>":
   the float's IEEE bits in hex for nbody and spectral_norm, the MD5 of the bitmap for
   mandelbrot (what the benchmark driver compares with the plugin's and Erlang's). *)

let kernel = function
  | "nbody" -> fun n -> `Float (Nbody.run n)
  | "spectral_norm" -> fun n -> `Float (Spectral_norm.run n)
  | "mandelbrot" -> fun n -> `Bytes (Mandelbrot.run n)
  | k -> failwith ("unknown kernel " ^ k)

let digest = function
  | `Float f -> Printf.sprintf "%Lx" (Int64.bits_of_float f)
  | `Bytes s -> Digest.to_hex (Digest.string s)

let () =
  match Sys.argv with
  | [| _; name; size; reps; inner |] ->
      let f = kernel name and size = int_of_string size in
      let inner = int_of_string inner in
      let last = ref (f size) in
      for _ = 1 to int_of_string reps do
        let t0 = Unix.gettimeofday () in
        for _ = 1 to inner do
          last := f size
        done;
        let t1 = Unix.gettimeofday () in
        Printf.printf "ns %.0f\n%!" ((t1 -. t0) *. 1e9 /. float_of_int inner)
      done;
      Printf.printf "result %s\n%!" (digest !last)
  | _ ->
      prerr_endline "usage: kernels_standalone nbody|spectral_norm|mandelbrot SIZE REPS INNER";
      exit 2
