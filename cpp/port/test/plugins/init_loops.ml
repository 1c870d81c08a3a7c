(* A plugin whose initialiser never ends: only a load's deadline stops it. *)
let () =
  let last = ref [] in
  while true do
    last := [ Sys.opaque_identity 0 ]
  done
