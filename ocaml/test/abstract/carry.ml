(* What a plugin may do with a pid, a port and a reference: take them from Erlang, compare,
   hash, print and pass them on. Compiles. *)
let () =
  Erl.export "first_pid_of" Erl.Conv.(list pid @-> returning (option pid)) (function
    | [] -> None
    | p :: ps -> Some (List.fold_left (fun a b -> if Erl.Term.Pid.compare a b <= 0 then a else b) p ps));
  Erl.export "describe" Erl.Conv.(term @-> returning string) (function
    | Erl.Term.Pid p -> Erl.Term.Pid.to_string p ^ " " ^ string_of_int (Erl.Term.Pid.hash p)
    | Erl.Term.Port p -> Format.asprintf "%a" Erl.Term.Port.pp p
    | Erl.Term.Ref r -> if Erl.Term.Ref.equal r r then Erl.Term.Ref.to_string r else ""
    | t -> Erl.Term.to_string t)
