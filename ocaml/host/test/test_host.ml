open Erl

let term = Alcotest.testable Term.pp Term.equal
let ref_ = Term.Ref (Forge.reference ~node:"a@h" ~creation:1 [| 7; 8; 9 |])
let ok v = Term.Tuple [| Atom "ok"; v |]
let error v = Term.Tuple [| Atom "error"; v |]
let call name args = Term.Tuple [| Atom "call"; ref_; Atom name; List args |]
let call_within timeout name args = Term.Tuple [| Atom "call"; ref_; Atom name; List args; timeout |]

(* The context of the requests these tests run, as a transport's: it knows its worker. *)
let test_worker = { transport = "test"; id = 3; pid = Forge.pid ~node:"a@h" ~id:9 ~serial:0 ~creation:1 }

let context =
  {
    Erl.Private.transport = "test";
    worker = (fun () -> test_worker);
    send = (fun _ _ -> ());
    call_erlang = (fun _ _ _ -> Term.nil);
    cancel_requested = (fun () -> false);
  }

let handle = Erl_host.handle context

let () =
  Erl.export "host_test.worker_id" Conv.(nullary int) (fun () -> (Erl.worker ()).id);
  Erl.export "host_test.add" Conv.(int @-> int @-> returning int) ( + );
  Erl.export "host_test.boom" Conv.(nullary unit) (fun () -> failwith "boom");
  Erl.export "host_test.cancelled" Conv.(nullary unit) (fun () -> raise Erl.Cancelled)

let contains s sub =
  let n = String.length sub in
  let rec from i = i + n <= String.length s && (String.sub s i n = sub || from (i + 1)) in
  from 0

let reply = function
  | Erl_host.Reply (r, answer) ->
      Alcotest.check term "the reference comes back" ref_ r;
      answer
  | No_reply -> Alcotest.fail "no reply"
  | Cast_failed s -> Alcotest.failf "cast failed: %s" s
  | Refused s -> Alcotest.failf "refused: %s" s

let bad_request answer =
  match answer with
  | Term.Tuple [| Atom "error"; Tuple [| Atom "bad_request"; Binary message |] |] -> Erl.Binary.to_string message
  | t -> Alcotest.failf "not a bad_request: %s" (Term.to_string t)

let check_contains what s sub =
  if not (contains s sub) then Alcotest.failf "%s: %S does not contain %S" what s sub

let test_call () =
  Alcotest.check term "an export runs in the request's context" (ok (Int 3))
    (reply (handle (call "host_test.worker_id" [])));
  Alcotest.check_raises "and only while it runs" No_transport (fun () -> ignore (Erl.worker ()));
  Alcotest.check term "call" (ok (Int 5)) (reply (handle (call "host_test.add" [ Int 2; Int 3 ])));
  Alcotest.check term "undef" (error (Tuple [| Atom "undef"; Atom "nosuch" |]))
    (reply (handle (call "nosuch" [])));
  (match reply (handle (call "host_test.boom" [])) with
  | Tuple [| Atom "error"; Tuple [| Atom "ocaml_exception"; Binary name; _; _ |] |] when Erl.Binary.to_string name = "Failure" -> ()
  | t -> Alcotest.failf "not an exception: %s" (Term.to_string t));
  (* {Module, Function}: the test program's own exports are in the module static. *)
  let qualified m f = Term.Tuple [| Atom m; Atom f |] in
  Alcotest.check term "{Module, Function}" (ok (Int 5))
    (reply (handle (Tuple [| Atom "call"; ref_; qualified "static" "host_test.add"; List [ Int 2; Int 3 ] |])));
  Alcotest.check term "{Module, Function}, with a Timeout" (ok (Int 5))
    (reply
       (handle
          (Tuple [| Atom "call"; ref_; qualified "static" "host_test.add"; List [ Int 2; Int 3 ]; Int 100 |])));
  Alcotest.check term "undef {Module, Function}" (error (Tuple [| Atom "undef"; qualified "nomodule" "host_test.add" |]))
    (reply (handle (Tuple [| Atom "call"; ref_; qualified "nomodule" "host_test.add"; List [] |])));
  (* Any term is a reference. *)
  match handle (Tuple [| Atom "call"; Int 42; Atom "host_test.add"; List [ Int 1; Int 1 ] |]) with
  | Reply (Int 42, answer) -> Alcotest.check term "integer Ref" (ok (Int 2)) answer
  | _ -> Alcotest.fail "integer Ref"

(* Without a host's request watch a Timeout is checked and otherwise changes nothing; an
   export that raises Erl.Cancelled is answered as a cancelled call. *)
let test_call_with_timeout () =
  let add timeout = reply (handle (call_within timeout "host_test.add" [ Int 2; Int 3 ])) in
  Alcotest.check term "milliseconds" (ok (Int 5)) (add (Int 100));
  Alcotest.check term "zero" (ok (Int 5)) (add (Int 0));
  Alcotest.check term "infinity" (ok (Int 5)) (add (Atom "infinity"));
  Alcotest.check term "past max_int" (ok (Int 5)) (add (Bigint (Z.shift_left Z.one 70)));
  Alcotest.check term "cancelled" (error (Atom "timeout"))
    (reply (handle (call_within (Int 10) "host_test.cancelled" [])))

let test_cast () =
  (match handle (Tuple [| Atom "cast"; Atom "host_test.add"; List [ Int 1; Int 2 ] |]) with
  | No_reply -> ()
  | _ -> Alcotest.fail "a cast has no reply");
  (match handle (Tuple [| Atom "cast"; Tuple [| Atom "static"; Atom "host_test.add" |]; List [ Int 1; Int 2 ] |]) with
  | No_reply -> ()
  | _ -> Alcotest.fail "a cast to {Module, Function} has no reply");
  (match handle (Tuple [| Atom "cast"; Tuple [| Atom "static"; Atom "nosuch" |]; List [] |]) with
  | Cast_failed s -> check_contains "cast failure" s "cast {static,nosuch}: {error,{undef,{static,nosuch}}}"
  | _ -> Alcotest.fail "a failed cast to {Module, Function} is reported");
  match handle (Tuple [| Atom "cast"; Atom "host_test.add"; List [ Atom "x"; Int 2 ] |]) with
  | Cast_failed s -> check_contains "cast failure" s "cast 'host_test.add': {error,{badarg"
  | _ -> Alcotest.fail "a failed cast is reported"

let test_bad_requests () =
  let bad r = bad_request (reply (handle r)) in
  check_contains "Fun" (bad (Tuple [| Atom "call"; ref_; Int 1; List [] |]))
    "Fun must be an atom or a tuple {Module, Function} of two atoms, got 1";
  check_contains "{Module, Function} of atoms"
    (bad (Tuple [| Atom "call"; ref_; Tuple [| Atom "m"; Term.binary "f" |]; List [] |]))
    "Fun must be an atom or a tuple {Module, Function} of two atoms, got {m,<<\"f\">>}";
  check_contains "{Module, Function} and no more"
    (bad (Tuple [| Atom "call"; ref_; Tuple [| Atom "m"; Atom "f"; Int 1 |]; List [] |]))
    "Fun must be an atom or a tuple {Module, Function} of two atoms, got {m,f,1}";
  check_contains "Args" (bad (Tuple [| Atom "call"; ref_; Atom "f"; Improper ([ Int 1 ], Int 2) |]))
    "Args must be a proper list, got [1|2]";
  check_contains "size" (bad (Tuple [| Atom "call"; ref_ |]))
    "expected {call, Ref, Fun, Args} or {call, Ref, Fun, Args, Timeout}, got a tuple of 2";
  check_contains "load size"
    (bad (Tuple [| Atom "load"; ref_; Term.binary "a"; Int 1; Int 2 |]))
    "{load, Ref, Path} or {load, Ref, Path, Timeout}";
  check_contains "Path" (bad (Tuple [| Atom "load"; ref_; Int 3 |])) "Path must be a binary or a string, got 3";
  check_contains "Timeout" (bad (call_within (Int (-1)) "host_test.add" [ Int 1; Int 2 ]))
    "call: Timeout must be a non-negative integer or infinity, got -1";
  check_contains "load Timeout" (bad (Tuple [| Atom "load"; ref_; Term.binary "p"; Atom "soon" |]))
    "load: Timeout must be a non-negative integer or infinity, got soon";
  (* The other fields are checked first: a call is never half-checked. *)
  check_contains "Fun before Timeout" (bad (Tuple [| Atom "call"; ref_; Int 1; List []; Atom "never" |]))
    "Fun must be an atom";
  let refused r = match handle r with Refused s -> s | _ -> Alcotest.failf "not refused: %s" (Term.to_string r) in
  check_contains "no Ref" (refused (Atom "call")) "got call";
  check_contains "cast" (refused (Tuple [| Atom "cast"; Int 1; List [] |])) "{cast, Fun, Args}";
  check_contains "cast to a bad {Module, Function}"
    (refused (Tuple [| Atom "cast"; Tuple [| Int 1; Atom "f" |]; List [] |]))
    "where Fun is Function or {Module, Function}";
  check_contains "big" (refused (Term.binary (String.make 1_000_000 'x'))) "got a binary of 1000000 bytes"

let test_transport_requests () =
  let seen = ref [||] in
  Erl_host.add_request "ping" (fun fields ->
      seen := fields;
      Erl_host.Reply (fields.(1), Atom "pong"));
  let ping = Term.Tuple [| Atom "ping"; ref_; Int 1 |] in
  Alcotest.check term "answered by the handler" (Atom "pong") (reply (handle ping));
  Alcotest.(check int) "the whole tuple" 3 (Array.length !seen);
  (match handle (Term.Tuple [| Atom "pong"; ref_ |]) with
  | Refused _ -> ()
  | _ -> Alcotest.fail "an unregistered kind is refused");
  Alcotest.check_raises "call is every host's" (Invalid_argument "Erl_host.add_request: call is a request of every host")
    (fun () -> Erl_host.add_request "call" (fun _ -> No_reply))

let test_describe () =
  Alcotest.(check string) "small" "{a,<<\"b\">>,[1,2]}"
    (Erl_host.describe (Tuple [| Atom "a"; Term.binary "b"; List [ Int 1; Int 2 ] |]));
  Alcotest.(check string) "large tuple of small parts" "{a,a list}"
    (Erl_host.describe (Tuple [| Atom "a"; List (List.init 100_000 (fun i -> Term.Int i)) |]));
  (* A million nested 1-tuples: bounded work, bounded recursion. *)
  let deep = ref (Term.Atom "x") in
  for _ = 1 to 1_000_000 do deep := Tuple [| !deep |] done;
  check_contains "deep" (Erl_host.describe !deep) "a tuple of 1 element";
  let big_map = Term.map_of_list (List.init 100_000 (fun i -> (Term.Int i, Term.Int i))) in
  Alcotest.(check string) "map" "a map of 100000 keys" (Erl_host.describe big_map)

let load_failure path =
  match Erl_host.load path with
  | Ok () -> Alcotest.failf "%s loaded" path
  | Error (kind, message) -> (Erl_host.load_error_atom kind, message)

let test_load () =
  let plugin = Sys.argv.(1) in
  (* The test program's own exports are reported once, by a transport's hello. *)
  (match Erl_host.new_exports () with
  | List exports ->
      Alcotest.(check bool) "the linked code's exports, in the module static" true
        (List.exists
           (Term.equal
              (Tuple
                 [|
                   Term.binary "static";
                   Term.binary "host_test.add";
                   Int 2;
                   Term.binary "fun((ocaml:int63(), ocaml:int63()) -> ocaml:int63())";
                 |]))
           exports)
  | t -> Alcotest.failf "not a list of exports: %s" (Term.to_string t));
  let kind, message = load_failure "/nonexistent/plugin.cmxs" in
  Alcotest.(check string) "missing: kind" "enoent" kind;
  check_contains "missing: message" message "/nonexistent/plugin.cmxs";
  let kind, message = load_failure Sys.argv.(0) in
  Alcotest.(check string) "not a plugin" "not_a_plugin" kind;
  check_contains "not a plugin: message" message Sys.argv.(0);
  let cma = Filename.temp_file "plugin" ".cma" in
  let kind, message = load_failure cma in
  Sys.remove cma;
  Alcotest.(check string) "bytecode in a native host" "not_a_plugin" kind;
  check_contains "bytecode: message" message "a native host loads .cmxs files";
  (* A load that fails forgets the atoms declared meanwhile: they are no plugin's. *)
  Erl.declare_atoms [ "host_test_stray" ];
  (match reply (handle (Tuple [| Atom "load"; ref_; Term.binary "/nonexistent/p.cmxs" |])) with
  | Tuple [| Atom "error"; Tuple [| Atom "load_failed"; Atom "enoent"; _ |] |] -> ()
  | t -> Alcotest.failf "a missing plugin: %s" (Term.to_string t));
  Alcotest.(check (list string)) "a failed load's atoms are forgotten" [] (Erl.Private.take_new_atoms ());
  (* Through a request, with the path as a string. The plugin declares atoms: its answer
     carries them, each once, in the order they were declared, and its exports, in the
     module named after its file. *)
  let path = Term.List (List.init (String.length plugin) (fun i -> Term.Int (Char.code plugin.[i]))) in
  Alcotest.check term "load"
    (ok
       (Term.map_of_list
          [
            (Atom "atoms", List [ Term.binary "host_test_tag"; Term.binary "host_test_declared" ]);
            ( Atom "exports",
              List
                [
                  Tuple
                    [|
                      Term.binary "host_test_plugin";
                      Term.binary "host_test.double";
                      Int 1;
                      Term.binary "fun((ocaml:int63()) -> ocaml:int63())";
                    |];
                ] );
          ]))
    (reply (handle (Tuple [| Atom "load"; ref_; path; Atom "infinity" |])));
  Alcotest.(check (list string)) "carried once" [] (Erl.Private.take_new_atoms ());
  Alcotest.check term "exports carried once" (List []) (Erl_host.new_exports ());
  Alcotest.check term "the plugin's export" (ok (Int 42)) (reply (handle (call "host_test.double" [ Int 21 ])));
  Alcotest.check term "in its module" (ok (Int 42))
    (reply
       (handle
          (Tuple [| Atom "call"; ref_; Tuple [| Atom "host_test_plugin"; Atom "host_test.double" |]; List [ Int 21 ] |])));
  (match reply (handle (Tuple [| Atom "load"; ref_; Term.binary plugin |])) with
  | Tuple [| Atom "error"; Tuple [| Atom "load_failed"; Atom "already_loaded"; Binary message |] |] ->
      check_contains "twice: message" (Erl.Binary.to_string message) "Host_test_plugin"
  | t -> Alcotest.failf "loaded twice: %s" (Term.to_string t));
  Alcotest.check term "still there" (ok (Int 4)) (reply (handle (call "host_test.double" [ Int 2 ])))

let () =
  Alcotest.run ~argv:[| Sys.argv.(0) |] "camlbeam.host"
    [
      ( "handle",
        [
          Alcotest.test_case "call" `Quick test_call;
          Alcotest.test_case "call with a Timeout" `Quick test_call_with_timeout;
          Alcotest.test_case "cast" `Quick test_cast;
          Alcotest.test_case "bad requests" `Quick test_bad_requests;
          Alcotest.test_case "transport requests" `Quick test_transport_requests;
          Alcotest.test_case "describe" `Quick test_describe;
        ] );
      ("load", [ Alcotest.test_case "plugins" `Quick test_load ]);
    ]
