(* The kernels as a camlbeam plugin: what the port benchmark calls through ocaml:call.
   Compiled with the same flags as the standalone program (kernels_main.ml). *)

let () =
  Erl.export "nbody" Erl.Conv.(int @-> returning float) Nbody.run;
  Erl.export "spectral_norm" Erl.Conv.(int @-> returning float) Spectral_norm.run;
  Erl.export "mandelbrot" Erl.Conv.(int @-> returning string) Mandelbrot.run
