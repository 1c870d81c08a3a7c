(* The smallest OCaml program: blocks on a read of stdin. The port benchmark reads its
   resident memory as the floor of what an idle OCaml process costs. *)
let () = try ignore (input_line stdin) with End_of_file -> ()
