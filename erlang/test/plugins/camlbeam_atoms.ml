(* A plugin that declares atoms for its answers (Erl.declare_atoms): those named, comma
   separated, in CAMLBEAM_TEST_ATOMS, so that a suite can name atoms its VM has never seen
   (made up for each run) and see them created when the plugin loads. [tagged_error Line]
   answers {error, {Tag, Line}} with the first of them as Tag, as an error value does. *)
let declared =
  match Sys.getenv_opt "CAMLBEAM_TEST_ATOMS" with
  | None | Some "" -> []
  | Some names -> String.split_on_char ',' names

let tag = match declared with first :: _ -> first | [] -> "error"

let () =
  Erl.export ~atoms:declared "tagged_error"
    Erl.Conv.(int @-> returning (result unit (tuple2 atom int)))
    (fun line -> Error (tag, line))
