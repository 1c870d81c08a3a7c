(* The kernels of the parallel plugin (parallel.ml), without camlbeam: the plugin exports
   them, bench/domains runs them standalone as the baseline. OCaml 5 only (Domain). *)

let rec fib n = if n < 2 then n else fib (n - 1) + fib (n - 2)

(* [run ~domains f]: f 0 on this domain and f 1 .. f (domains - 1) on domains of their own,
   all joined before it returns. An exception in one (Erl.Cancelled when the call's deadline
   passes: every domain inherits the call's context) reaches the caller once all are
   joined, so no domain outlives the call. *)
let run ~domains f =
  if domains < 1 || domains > 64 then invalid_arg "parallel: Domains must be 1..64";
  let spawned = List.init (domains - 1) (fun d -> Domain.spawn (fun () -> f (d + 1))) in
  let own = match f 0 with () -> Ok () | exception exn -> Error exn in
  let joined = List.map (fun d -> match Domain.join d with () -> Ok () | exception exn -> Error exn) spawned in
  match List.find_opt Result.is_error (own :: joined) with
  | Some (Error exn) -> raise exn
  | Some (Ok ()) | None -> ()

(* Domain d takes the elements d, d + domains, d + 2 * domains...: neighbours cost about
   the same, so the shares do too. Each result cell is written by one domain only. *)
let fibs domains ns =
  let ns = Array.of_list ns in
  let results = Array.make (Array.length ns) 0 in
  run ~domains (fun d ->
      let i = ref d in
      while !i < Array.length ns do
        results.(!i) <- fib ns.(!i);
        i := !i + domains
      done);
  Array.to_list results

let fib_sum domains n count =
  let partial = Array.make domains 0 in
  run ~domains (fun d ->
      let share = (count / domains) + if d < count mod domains then 1 else 0 in
      for _ = 1 to share do
        partial.(d) <- partial.(d) + fib n
      done);
  Array.fold_left ( + ) 0 partial
