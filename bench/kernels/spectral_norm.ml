(* spectral-norm (the Computer Language Benchmarks Game): the largest singular value of
   the infinite matrix A(i,j) = 1/((i+j)(i+j+1)/2+i+1) truncated to n x n, by 10 rounds of
   the power method on AtA; [run n] is that value. Float arrays, loops, refs unboxed by
   ocamlopt: the idiomatic fast OCaml of the game (single-threaded). *)

let eval_a i j = 1. /. float_of_int ((((i + j) * (i + j + 1)) / 2) + i + 1)

let a_times_u u v =
  let n = Array.length v - 1 in
  for i = 0 to n do
    let vi = ref 0. in
    for j = 0 to n do
      vi := !vi +. (eval_a i j *. u.(j))
    done;
    v.(i) <- !vi
  done

let at_times_u u v =
  let n = Array.length v - 1 in
  for i = 0 to n do
    let vi = ref 0. in
    for j = 0 to n do
      vi := !vi +. (eval_a j i *. u.(j))
    done;
    v.(i) <- !vi
  done

let ata_times_u u v w =
  a_times_u u w;
  at_times_u w v

let run n =
  let u = Array.make n 1. and v = Array.make n 0. and w = Array.make n 0. in
  for _ = 1 to 10 do
    ata_times_u u v w;
    ata_times_u v u w
  done;
  let vbv = ref 0. and vv = ref 0. in
  for i = 0 to n - 1 do
    vbv := !vbv +. (u.(i) *. v.(i));
    vv := !vv +. (v.(i) *. v.(i))
  done;
  sqrt (!vbv /. !vv)
