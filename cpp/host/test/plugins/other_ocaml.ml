(* Compiled by an OCaml other than the host's (cpp/host/test/CMakeLists.txt): the host
   refuses it before Dynlink sees it. Nothing here may run. *)
let () = prerr_endline "other_ocaml: loaded by a host of another OCaml"
