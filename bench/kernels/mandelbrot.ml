(* mandelbrot (the Computer Language Benchmarks Game): the n x n bitmap of the Mandelbrot
   set over [-1.5, 0.5] x [-1, 1], 50 iterations, escape at |z|^2 > 4; one bit per pixel,
   most significant first, rows padded to a byte: the body of the game's PBM output.
   [run n] is those (n + 7) / 8 * n bytes. Single-threaded. *)

let niter = 50
let limit = 4.

let run n =
  let row = (n + 7) / 8 in
  let out = Bytes.make (row * n) '\000' in
  let fn = float_of_int n in
  for y = 0 to n - 1 do
    let ci = (2. *. float_of_int y /. fn) -. 1. in
    let bits = ref 0 in
    for x = 0 to n - 1 do
      let cr = (2. *. float_of_int x /. fn) -. 1.5 in
      let zr = ref 0. and zi = ref 0. and tr = ref 0. and ti = ref 0. in
      let i = ref 0 in
      while !i < niter && !tr +. !ti <= limit do
        zi := (2. *. !zr *. !zi) +. ci;
        zr := !tr -. !ti +. cr;
        tr := !zr *. !zr;
        ti := !zi *. !zi;
        incr i
      done;
      bits := (!bits lsl 1) lor (if !tr +. !ti <= limit then 1 else 0);
      if x land 7 = 7 then begin
        Bytes.unsafe_set out ((y * row) + (x lsr 3)) (Char.unsafe_chr !bits);
        bits := 0
      end
    done;
    if n land 7 <> 0 then
      Bytes.unsafe_set out ((y * row) + (n lsr 3)) (Char.unsafe_chr (!bits lsl (8 - (n land 7))))
  done;
  Bytes.unsafe_to_string out
