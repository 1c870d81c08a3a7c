open Erl

let term = Alcotest.testable Term.pp Term.equal
let dispatch = Private.dispatch
let ok v = Term.Tuple [| Atom "ok"; v |]
let error v = Term.Tuple [| Atom "error"; v |]

exception Plugin_error of int

let rec fib n = if n < 2 then n else fib (n - 1) + fib (n - 2)

(* Unbounded, non-tail recursion. *)
let rec bottomless n = 1 + bottomless (n + 1)

let () =
  export "test.fib" Conv.(int @-> returning int) fib;
  export "test.scale" Conv.(float @-> list float @-> returning (list float)) (fun k -> List.map (( *. ) k));
  export_raw "test.raw" (fun args -> Term.List (List.rev args));
  export "test.not_found" Conv.(string @-> returning int) (fun _ -> raise Not_found);
  export "test.failure" Conv.(nullary unit) (fun () -> failwith "boom");
  export "test.cancelled" Conv.(nullary unit) (fun () -> raise Erl.Cancelled);
  export "test.plugin_error" Conv.(int @-> returning unit) (fun n -> raise (Plugin_error n));
  export "test.bad_result" Conv.(nullary atom) (fun () -> String.make 300 'a');
  export "test.overflow" Conv.(int @-> returning int) bottomless;
  (* Array.make max_int raises Invalid_argument: it asks for more than
     Max_wosize words. 2^50 words is below Max_wosize, but its 8 PiB cannot be
     mapped, so the major heap cannot grow and the runtime raises
     Out_of_memory, the real thing, without touching any memory. *)
  export "test.oom" Conv.(int @-> returning int) (fun log2 -> Array.length (Array.make (1 lsl log2) 0))

(* The name, message and backtrace of an ocaml_exception error. *)
let ocaml_exception = function
  | Term.Tuple [| Atom "error"; Tuple [| Atom "ocaml_exception"; Binary name; Binary message; Binary backtrace |] |] ->
      let name = Erl.Binary.to_string name and message = Erl.Binary.to_string message
      and backtrace = Erl.Binary.to_string backtrace in
      (name, message, backtrace)
  | t -> Alcotest.failf "not an ocaml_exception error: %s" (Term.to_string t)

let contains s sub =
  let n = String.length sub in
  let rec from i = i + n <= String.length s && (String.sub s i n = sub || from (i + 1)) in
  from 0

let test_calls () =
  Alcotest.check term "fib" (ok (Int 55)) (dispatch "test.fib" [ Int 10 ]);
  Alcotest.check term "scale" (ok (List [ Float 2.0; Float 5.0 ])) (dispatch "test.scale" [ Float 2.0; List [ Float 1.0; Float 2.5 ] ]);
  Alcotest.check term "raw" (ok (List [ Int 2; Atom "a" ])) (dispatch "test.raw" [ Atom "a"; Int 2 ]);
  Alcotest.check term "raw, no argument" (ok Term.nil) (dispatch "test.raw" []);
  Alcotest.check term "undef" (error (Tuple [| Atom "undef"; Atom "test.nosuch" |])) (dispatch "test.nosuch" [ Int 1 ]);
  let long = String.make 256 'f' in
  Alcotest.check term "undef, not an atom" (error (Tuple [| Atom "undef"; Term.binary long |])) (dispatch long []);
  Alcotest.check term "badarity" (error (Tuple [| Atom "badarity"; Int 1; Int 2 |])) (dispatch "test.fib" [ Int 1; Int 2 ]);
  Alcotest.check term "badarg"
    (error
       (Tuple
          [|
            Atom "badarg";
            Term.map_of_list
              [ (Atom "argument", Int 2); (Atom "expected", Term.binary "[float()]"); (Atom "got", List [ Int 1 ]) ];
          |]))
    (dispatch "test.scale" [ Float 2.0; List [ Int 1 ] ])

let test_exceptions () =
  let name, message, backtrace = ocaml_exception (dispatch "test.not_found" [ Term.binary "x" ]) in
  Alcotest.(check string) "Not_found: name" "Not_found" name;
  Alcotest.(check string) "Not_found: message" "Not_found" message;
  Alcotest.(check bool) "Not_found: backtrace" true (contains backtrace "test_dispatch.ml");
  let name, message, _ = ocaml_exception (dispatch "test.failure" []) in
  Alcotest.(check string) "Failure: name" "Failure" name;
  Alcotest.(check string) "Failure: message" "Failure(\"boom\")" message;
  let name, message, _ = ocaml_exception (dispatch "test.plugin_error" [ Int 3 ]) in
  Alcotest.(check bool) "user exception: name" true (contains name "Test_dispatch.Plugin_error");
  Alcotest.(check bool) "user exception: message" true (contains message "Plugin_error(3)");
  let name, _, _ = ocaml_exception (dispatch "test.bad_result" []) in
  Alcotest.(check string) "result that does not encode" "Invalid_argument" name;
  (* The caller of a cancelled call has given up: no exception report for nobody. *)
  Alcotest.check term "Erl.Cancelled" (error (Atom "timeout")) (dispatch "test.cancelled" [])

(* The soft stack limit in bytes from /proc/self/limits, [None] if unlimited. *)
let stack_limit () =
  let ic = open_in "/proc/self/limits" in
  let rec find () =
    match input_line ic with
    | line when String.length line > 14 && String.sub line 0 14 = "Max stack size" ->
        Scanf.sscanf (String.sub line 14 (String.length line - 14)) " %s" int_of_string_opt
    | _ -> find ()
  in
  Fun.protect ~finally:(fun () -> close_in ic) find

let test_stack_overflow () =
  (* With an unlimited stack the recursion would eat all memory instead. *)
  (match stack_limit () with
  | Some bytes when bytes <= 1 lsl 30 -> ()
  | _ -> Alcotest.fail "run the tests with a bounded stack (ulimit -s 8192)");
  for _ = 1 to 3 do
    let name, _, _ = ocaml_exception (dispatch "test.overflow" [ Int 0 ]) in
    Alcotest.(check string) "Stack_overflow" "Stack_overflow" name;
    Alcotest.check term "and the next call works" (ok (Int 55)) (dispatch "test.fib" [ Int 10 ])
  done

let test_out_of_memory () =
  for _ = 1 to 3 do
    let name, _, _ = ocaml_exception (dispatch "test.oom" [ Int 50 ]) in
    Alcotest.(check string) "Out_of_memory" "Out_of_memory" name;
    Alcotest.check term "and the next call works" (ok (Int 1024)) (dispatch "test.oom" [ Int 10 ])
  done

let names () = List.map (fun (e : export_info) -> e.name) (exports ())

let test_registry () =
  export "test.dup" Conv.(nullary int) (fun () -> 1);
  export "test.dup" Conv.(nullary string) (fun () -> "two");
  Alcotest.check term "the later export replaces the earlier" (ok (Term.binary "two")) (dispatch "test.dup" []);
  let names = names () in
  Alcotest.(check bool) "exports are listed" true (List.mem "test.dup" names && List.mem "test.fib" names);
  let listed = List.map (fun (e : export_info) -> (e.module_, e.name)) (exports ()) in
  Alcotest.(check (list (pair string string))) "exports are sorted by module, then name" (List.sort compare listed) listed;
  Alcotest.check_raises "a name that cannot be an atom"
    (Invalid_argument (Printf.sprintf "Erl.export: %S cannot be an atom" "\xff"))
    (fun () -> export_raw "\xff" (fun _ -> Term.nil));
  Alcotest.check_raises "a module that cannot be an atom"
    (Invalid_argument (Printf.sprintf "Erl.export: the module %S cannot be an atom" "\xff"))
    (fun () -> export ~module_:"\xff" "test.never" Conv.(nullary int) (fun () -> 1));
  Alcotest.check_raises "a plugin file name that cannot be an atom"
    (Invalid_argument
       (Printf.sprintf "Erl.export: the module %S cannot be an atom (it is the plugin's file name: name one with ~module_)"
          "\xff"))
    (fun () -> Private.loading ~file:"/plugins/\xff.cmxs" (fun () -> export "test.never" Conv.(nullary int) (fun () -> 1)));
  Alcotest.(check bool) "and exports nothing" false (List.mem "test.never" (List.map fst listed @ names))

let info = Alcotest.testable (fun ppf (e : export_info) -> Format.fprintf ppf "%s:%s/%s %s" e.module_ e.name
    (match e.arity with Some n -> string_of_int n | None -> "any") e.signature) ( = )

let qualified m f = Term.Tuple [| Atom m; Atom f |]

(* Exports in modules: a name unique across modules is called alone, a shared one is
   ambiguous unless the call names the module, and a new version of a plugin replaces its
   module's exports whole. *)
(* What the nif transport reads after a load: the exports declared short. *)
let test_declared_short () =
  let declared () =
    List.sort compare (List.filter (fun (m, _) -> m = "quick" || m = "") (Private.declared_short ()))
  in
  export ~module_:"quick" ~short:true "twice" Conv.(nullary int) (fun () -> 1);
  export_raw ~module_:"quick" ~short:true "only_quick" (fun _ -> Term.Int 1);
  export ~module_:"slow" "twice" Conv.(nullary int) (fun () -> 2);
  Alcotest.(check (list (pair string string)))
    "by module, and by name alone where every module declares it"
    [ ("", "only_quick"); ("quick", "only_quick"); ("quick", "twice") ]
    (declared ());
  (* A new version of the module that does not declare them takes them back. *)
  Private.loading ~file:"/plugins/quick.cmxs" (fun () ->
      export ~module_:"quick" "twice" Conv.(nullary int) (fun () -> 3));
  Alcotest.(check (list (pair string string))) "undeclared by the new version" [] (declared ());
  ignore (Private.take_new_exports ())

let test_modules () =
  ignore (Private.take_new_exports ());
  export ~module_:"alpha" "shared" Conv.(int @-> returning int) (fun n -> n + 1);
  export ~module_:"alpha" "only_alpha" Conv.(nullary string) (fun () -> "alpha");
  export_raw ~module_:"beta" "shared" (fun args -> Term.List args);
  Alcotest.check term "unique across modules" (ok (Term.binary "alpha")) (dispatch "only_alpha" []);
  Alcotest.check term "ambiguous" (error (Tuple [| Atom "ambiguous"; Atom "shared"; List [ Atom "alpha"; Atom "beta" ] |]))
    (dispatch "shared" [ Int 1 ]);
  Alcotest.check term "{alpha, shared}" (ok (Int 2)) (Private.dispatch_qualified ~module_:"alpha" "shared" [ Int 1 ]);
  Alcotest.check term "{beta, shared}" (ok (List [ Int 1 ])) (Private.dispatch_qualified ~module_:"beta" "shared" [ Int 1 ]);
  Alcotest.check term "{beta, only_alpha}" (error (Tuple [| Atom "undef"; qualified "beta" "only_alpha" |]))
    (Private.dispatch_qualified ~module_:"beta" "only_alpha" []);
  Alcotest.check term "{gamma, shared}" (error (Tuple [| Atom "undef"; qualified "gamma" "shared" |]))
    (Private.dispatch_qualified ~module_:"gamma" "shared" []);
  Alcotest.check term "the linked code is in static" (ok (Int 55)) (Private.dispatch_qualified ~module_:"static" "test.fib" [ Int 10 ]);
  let alpha_shared = { module_ = "alpha"; name = "shared"; arity = Some 1; signature = "fun((ocaml:int63()) -> ocaml:int63())" } in
  let beta_shared = { module_ = "beta"; name = "shared"; arity = None; signature = "fun((...) -> term())" } in
  let only_alpha = { module_ = "alpha"; name = "only_alpha"; arity = Some 0; signature = "fun(() -> binary())" } in
  Alcotest.(check (list info)) "the changed modules' exports, whole" [ only_alpha; alpha_shared; beta_shared ]
    (Private.take_new_exports ());
  Alcotest.(check (list info)) "taken once" [] (Private.take_new_exports ());
  (* A plugin's exports go to the module named after its file. *)
  Private.loading ~file:"/plugins/gamma.cma" (fun () -> export "in_gamma" Conv.(nullary int) (fun () -> 3));
  Alcotest.check term "{gamma, in_gamma}" (ok (Int 3)) (Private.dispatch_qualified ~module_:"gamma" "in_gamma" []);
  (* A new version, loaded from another file, takes over alpha: the old functions go, the
     ones it does not export too, and only alpha is reported again. *)
  ignore (Private.take_new_exports ());
  Private.loading ~file:"/plugins/alpha_v2.cmxs" (fun () ->
      export ~module_:"alpha" "shared" Conv.(int @-> returning int) (fun n -> n + 2);
      export ~module_:"alpha" "new_in_v2" Conv.(nullary int) (fun () -> 2));
  Alcotest.check term "the new version's function" (ok (Int 3)) (Private.dispatch_qualified ~module_:"alpha" "shared" [ Int 1 ]);
  Alcotest.check term "a function the new version dropped" (error (Tuple [| Atom "undef"; Atom "only_alpha" |]))
    (dispatch "only_alpha" []);
  Alcotest.check term "still ambiguous with beta"
    (error (Tuple [| Atom "ambiguous"; Atom "shared"; List [ Atom "alpha"; Atom "beta" ] |]))
    (dispatch "shared" []);
  Alcotest.check term "beta untouched" (ok (List [])) (Private.dispatch_qualified ~module_:"beta" "shared" []);
  Alcotest.(check (list info)) "alpha reported, whole"
    [ { module_ = "alpha"; name = "new_in_v2"; arity = Some 0; signature = "fun(() -> ocaml:int63())" };
      { alpha_shared with signature = "fun((ocaml:int63()) -> ocaml:int63())" } ]
    (Private.take_new_exports ());
  (* Within one plugin a second export of a name replaces the first, in that module only. *)
  Private.loading ~file:"/plugins/delta.cmxs" (fun () ->
      export "twice" Conv.(nullary int) (fun () -> 1);
      export "twice" Conv.(nullary int) (fun () -> 2));
  Alcotest.check term "twice" (ok (Int 2)) (dispatch "twice" []);
  Private.discard_new_exports ();
  Alcotest.(check (list info)) "discarded" [] (Private.take_new_exports ());
  Alcotest.(check bool) "listed" true
    (List.mem { module_ = "delta"; name = "twice"; arity = Some 0; signature = "fun(() -> ocaml:int63())" } (exports ()))

let raises_no_transport name f =
  Alcotest.check_raises name No_transport (fun () -> ignore (f ()))

let test_transport () =
  let somebody = Forge.pid ~node:"erl@h" ~id:80 ~serial:0 ~creation:1 in
  raises_no_transport "send" (fun () -> send somebody Term.nil);
  raises_no_transport "call_erlang" (fun () -> call_erlang "erlang" "node" []);
  raises_no_transport "worker" worker;
  raises_no_transport "self" self;
  Alcotest.(check bool) "No_transport explains itself" true
    (contains (Printexc.to_string No_transport) "not running a request of a camlbeam worker");
  let sent = ref [] in
  let me = Forge.pid ~node:"erl@h" ~id:81 ~serial:0 ~creation:1 in
  let context =
    {
      Private.transport = "port";
      worker = (fun () -> { transport = "port"; id = 7; pid = me });
      send = (fun pid msg -> sent := (pid, msg) :: !sent);
      call_erlang = (fun m f args -> Term.Tuple [| Atom m; Atom f; List args |]);
      cancel_requested = (fun () -> true);
    }
  in
  Alcotest.(check bool) "no context, no cancellation" false (Private.cancel_requested ());
  Private.with_context context (fun () ->
      Alcotest.(check bool) "the context's cancellation" true (Private.cancel_requested ());
      export "test.notify" Conv.(pid @-> term @-> returning unit) send;
      Alcotest.check term "an export sends" (ok (Atom "ok")) (dispatch "test.notify" [ Pid somebody; Atom "hi" ]);
      (match !sent with
      | [ (pid, msg) ] ->
          Alcotest.check term "to the pid" (Pid somebody) (Pid pid);
          Alcotest.check term "the message" (Atom "hi") msg
      | _ -> Alcotest.fail "one message expected");
      Alcotest.check term "call_erlang" (Tuple [| Atom "erlang"; Atom "node"; List [ Int 1 ] |])
        (call_erlang "erlang" "node" [ Int 1 ]);
      Alcotest.(check string) "worker transport" "port" (worker ()).transport;
      Alcotest.(check int) "worker id" 7 (worker ()).id;
      Alcotest.check term "self" (Pid me) (Pid (self ())));
  raises_no_transport "cleared" (fun () -> send somebody Term.nil)

(* Contexts nest, are restored however a request ends, and belong to one thread: the NIF
   runs requests of several pools on several threads of one runtime. *)
let test_context_per_thread () =
  let context id =
    {
      Private.transport = "nif";
      worker = (fun () -> { transport = "nif"; id; pid = Forge.pid ~node:"erl@h" ~id ~serial:0 ~creation:1 });
      send = (fun _ _ -> ());
      call_erlang = (fun _ _ _ -> Term.nil);
      cancel_requested = (fun () -> false);
    }
  in
  let id () = (worker ()).id in
  Private.with_context (context 1) (fun () ->
      Alcotest.(check int) "outer" 1 (id ());
      Private.with_context (context 2) (fun () -> Alcotest.(check int) "inner" 2 (id ()));
      Alcotest.(check int) "outer again" 1 (id ());
      (try Private.with_context (context 3) (fun () -> failwith "request failed") with Failure _ -> ());
      Alcotest.(check int) "restored after an exception" 1 (id ());
      let before = ref (Ok 0) and inside = ref (Ok 0) in
      let other =
        Thread.create
          (fun () ->
            before := (try Ok (id ()) with No_transport -> Error "none");
            Private.with_context (context 4) (fun () ->
                Thread.yield ();
                inside := Ok (id ())))
          ()
      in
      Thread.yield ();
      Alcotest.(check int) "another thread's context is not this one's" 1 (id ());
      Thread.join other;
      Alcotest.(check (result int string)) "the other thread had none" (Error "none") !before;
      Alcotest.(check (result int string)) "then its own" (Ok 4) !inside);
  raises_no_transport "none after" worker

let test_atoms () =
  ignore (Private.take_new_atoms ());
  declare_atoms [ "bad_header"; "incomplete"; "bad_header" ];
  export ~atoms:[ "test_tag"; "incomplete" ] "test.tagged" Conv.(nullary term) (fun () -> Atom "test_tag");
  export_raw ~atoms:[ "test_raw_tag" ] "test.raw_tagged" (fun _ -> Atom "test_raw_tag");
  Alcotest.(check (list string))
    "new atoms: each once, in the order of their first declaration"
    [ "bad_header"; "incomplete"; "test_tag"; "test_raw_tag" ]
    (Private.take_new_atoms ());
  Alcotest.(check (list string)) "taken once" [] (Private.take_new_atoms ());
  declare_atoms [ "bad_header"; "test_later" ];
  Alcotest.(check (list string)) "an atom declared before is not new" [ "test_later" ] (Private.take_new_atoms ());
  declare_atoms [ "test_discarded" ];
  Private.discard_new_atoms ();
  Alcotest.(check (list string)) "discarded" [] (Private.take_new_atoms ());
  Alcotest.(check bool) "and forgotten" false (List.mem "test_discarded" (declared_atoms ()));
  declare_atoms [ "test_discarded" ];
  Alcotest.(check (list string)) "so it can be declared again" [ "test_discarded" ] (Private.take_new_atoms ());
  Alcotest.(check bool) "declared_atoms lists them all" true
    (List.for_all (fun a -> List.mem a (declared_atoms ())) [ "bad_header"; "test_tag"; "test_later" ]);
  let long = String.make 256 'a' in
  Alcotest.check_raises "longer than 255 characters"
    (Invalid_argument (Printf.sprintf "Erl.declare_atoms: %S cannot be an atom" long))
    (fun () -> declare_atoms [ long ]);
  Alcotest.check_raises "not UTF-8, and nothing of the list is declared"
    (Invalid_argument (Printf.sprintf "Erl.declare_atoms: %S cannot be an atom" "\xff"))
    (fun () -> declare_atoms [ "test_valid_first"; "\xff" ]);
  Alcotest.(check (list string)) "nothing new" [] (Private.take_new_atoms ());
  (* 255 characters of 4 bytes each: an atom. *)
  declare_atoms [ String.concat "" (List.init 255 (fun _ -> "\xf0\x9f\x90\xab")) ];
  Alcotest.(check int) "255 four-byte characters" 1 (List.length (Private.take_new_atoms ()));
  Alcotest.check_raises "export checks its atoms before exporting"
    (Invalid_argument (Printf.sprintf "Erl.export: %S cannot be an atom" "\xff"))
    (fun () -> export ~atoms:[ "\xff" ] "test.never" Conv.(nullary int) (fun () -> 1));
  Alcotest.(check bool) "and exports nothing" false (List.mem "test.never" (names ()));
  Alcotest.check_raises "a bad name declares no atom"
    (Invalid_argument (Printf.sprintf "Erl.export: %S cannot be an atom" "\xff"))
    (fun () -> export ~atoms:[ "test_never" ] "\xff" Conv.(nullary int) (fun () -> 1));
  Alcotest.(check (list string)) "none" [] (Private.take_new_atoms ())

let tests =
  [
    ( "dispatch",
      [
        Alcotest.test_case "calls and refusals" `Quick test_calls;
        Alcotest.test_case "exceptions" `Quick test_exceptions;
        Alcotest.test_case "Stack_overflow" `Quick test_stack_overflow;
        Alcotest.test_case "Out_of_memory" `Quick test_out_of_memory;
        Alcotest.test_case "registry" `Quick test_registry;
        Alcotest.test_case "modules" `Quick test_modules;
        Alcotest.test_case "declared short" `Quick test_declared_short;
        Alcotest.test_case "transport" `Quick test_transport;
        Alcotest.test_case "context per thread" `Quick test_context_per_thread;
        Alcotest.test_case "declared atoms" `Quick test_atoms;
      ] );
  ]
