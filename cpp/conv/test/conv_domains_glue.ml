(* OCaml 5: the conversions of conv_domains_test.cpp run in several domains at once. *)

external round_trip : string -> string = "conv_domains_test_round_trip"

(* Each of [domains] domains converts every sample [rounds] times, allocating garbage of its
   own in between so that the collections (stop-the-world, every domain's roots scanned)
   fall at different points of the conversions; the first sample that came back changed in
   each domain, "" when none did. *)
let run (samples : string array) domains rounds =
  let work d () =
    let failure = ref "" in
    for r = 1 to rounds do
      Array.iteri
        (fun i s ->
          if !failure = "" && round_trip s <> s then
            failure := Printf.sprintf "domain %d, round %d: sample %d came back changed" d r i)
        samples;
      ignore (Sys.opaque_identity (List.init ((d * 37) + (r mod 11)) Fun.id))
    done;
    !failure
  in
  let failures = List.init domains (fun d -> Domain.spawn (work d)) |> List.map Domain.join in
  (* What the domains left (off-heap binaries, the ended domains' own mutexes and
     conditions) is freed by finalisers: run them, so that LeakSanitizer sees nothing left
     at exit. *)
  Gc.full_major ();
  Gc.full_major ();
  List.filter (fun f -> f <> "") failures |> String.concat "; "

let () = Callback.register "conv_domains.run" run
