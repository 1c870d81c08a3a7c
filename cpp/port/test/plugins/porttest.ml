(* Atoms named, comma separated, in PORTTEST_ATOMS: declared when this loads, so that the
   answer to its load carries them, or, linked into a worker, the answer to its hello. *)
let () =
  match Sys.getenv_opt "PORTTEST_ATOMS" with
  | None | Some "" -> ()
  | Some names -> Erl.declare_atoms (String.split_on_char ',' names)

(* The plugin of the port worker's tests: one export per thing the transport does. *)
let () =
  Erl.export "identity" Erl.Conv.(term @-> returning term) Fun.id;
  Erl.export "whoami" Erl.Conv.(nullary term) (fun () ->
      let w = Erl.worker () in
      Erl.Term.Tuple [| Atom w.transport; Int w.id; Pid w.pid |]);
  Erl.export "send" Erl.Conv.(term @-> term @-> returning unit) (fun pid msg ->
      match pid with
      | Erl.Term.Pid pid -> Erl.send pid msg
      | _ -> invalid_arg "send: not a pid");
  Erl.export "call_erlang" Erl.Conv.(atom @-> atom @-> list term @-> returning term) Erl.call_erlang;
  (* Whatever a plugin prints goes to stderr, not into the protocol. *)
  Erl.export "chatty" Erl.Conv.(string @-> returning string) (fun s ->
      print_string s;
      print_newline ();
      s);
  Erl.export "gc_settings" Erl.Conv.(nullary (tuple3 int int int)) (fun () ->
      let gc = Gc.get () in
      (gc.minor_heap_size, gc.max_overhead, gc.custom_minor_max_size));
  Erl.export "gc_counts" Erl.Conv.(nullary (tuple2 int int)) (fun () ->
      let stat = Gc.quick_stat () in
      (stat.minor_collections, int_of_float stat.promoted_words));
  (* A map OTP 25 cannot decode (cpp/etf/src/map_order.cpp): two references of another
     node that differ only in their fourth word, among 33 keys. The test gives the two
     references: OCaml cannot make one. *)
  Erl.export "otp_unsafe_map" Erl.Conv.(reference @-> reference @-> returning term) (fun a b ->
      Erl.Term.(map_of_list ((Ref a, Atom "a") :: (Ref b, Atom "b") :: List.init 31 (fun i -> (Int i, Int i)))))

(* Deadlines, cancels, refusals, memory. What a hostile plugin does (exits, forks, stops,
   loops, hogs memory) is erlang/test/plugins/camlbeam_hostile.ml's, which these tests load
   too. *)

let bumps = ref 0

let () =
  Erl.export "sleep" Erl.Conv.(int @-> returning int) (fun ms ->
      Unix.sleepf (float_of_int ms /. 1000.);
      ms);
  Erl.export "bump" Erl.Conv.(nullary int) (fun () ->
      incr bumps;
      !bumps);
  Erl.export "bumps" Erl.Conv.(nullary int) (fun () -> !bumps);
  (* From now on SIGUSR2 raises (Erl.Cancelled, or a Failure) in whatever OCaml code runs:
     the request path's own code when no export runs. *)
  Erl.export "raise_on_sigusr2" Erl.Conv.(bool @-> returning unit) (fun cancelled ->
      Sys.set_signal Sys.sigusr2
        (Sys.Signal_handle (fun _ -> if cancelled then raise Erl.Cancelled else failwith "raised by a SIGUSR2 handler")));
  Erl.export "alloc_string" Erl.Conv.(int @-> returning int) (fun mb -> Bytes.length (Bytes.create (mb lsl 20)));
  Erl.export "os_pid" Erl.Conv.(nullary int) Unix.getpid
