(* A plugin that needs the library str, which the workers do not carry: load_failed
   incompatible. *)
let () =
  Erl.export "words" Erl.Conv.(string @-> returning (list string)) (Str.split (Str.regexp " +"))
