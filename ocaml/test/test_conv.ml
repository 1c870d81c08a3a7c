open Erl

let term = Alcotest.testable Term.pp Term.equal
let big s = Term.integer_of_z (Z.of_string s)
let ok_tuple v = Term.Tuple [| Atom "ok"; v |]
let error_tuple v = Term.Tuple [| Atom "error"; v |]
let a_pid = Forge.pid ~node:"a@h" ~id:1 ~serial:2 ~creation:3
let a_port = Forge.port ~node:"a@h" ~id:1L ~creation:3
let a_reference = Forge.reference ~node:"a@h" ~creation:3 [| 1; 2; 3 |]

(* [c] encodes [v] as [t] and decodes [t] back to [v]. *)
let both name c elt v t =
  Alcotest.check term (name ^ ": encode") t (Conv.to_term c v);
  Alcotest.(check (option elt)) (name ^ ": decode") (Some v) (Conv.of_term c t)

(* [c] refuses each of [ts]. *)
let refuses name c ts =
  List.iter
    (fun t ->
      if Conv.of_term c t <> None then Alcotest.failf "%s accepted %s" name (Term.to_string t))
    ts

let test_scalars () =
  both "int" Conv.int Alcotest.int 42 (Int 42);
  both "int max" Conv.int Alcotest.int max_int (Int max_int);
  both "int min" Conv.int Alcotest.int min_int (Int min_int);
  refuses "int" Conv.int [ big "4611686018427387904"; Float 1.0; Atom "1"; Term.binary "1"; Term.nil ];
  both "int64 small" Conv.int64 Alcotest.int64 (-7L) (Int (-7));
  both "int64 max" Conv.int64 Alcotest.int64 Int64.max_int (big "9223372036854775807");
  both "int64 min" Conv.int64 Alcotest.int64 Int64.min_int (big "-9223372036854775808");
  refuses "int64" Conv.int64 [ big "9223372036854775808"; big "-9223372036854775809"; Float 0.0 ];
  both "float" Conv.float (Alcotest.float 0.0) 2.5 (Float 2.5);
  refuses "float" Conv.float [ Int 1; Atom "nan" ];
  both "true" Conv.bool Alcotest.bool true (Atom "true");
  both "false" Conv.bool Alcotest.bool false (Atom "false");
  refuses "bool" Conv.bool [ Atom "yes"; Int 1; Term.binary "true" ];
  both "string" Conv.string Alcotest.string "a\000b" (Term.binary "a\000b");
  refuses "string" Conv.string [ Atom "a"; Term.List [ Int 97 ]; Term.bitstring "a" 3 ];
  both "bytes" Conv.bytes Alcotest.bytes (Bytes.of_string "xy") (Term.binary "xy");
  refuses "bytes" Conv.bytes [ Atom "xy"; Term.nil ];
  let code_points cs = Term.List (List.map (fun c -> Term.Int c) cs) in
  both "charlist" Conv.charlist Alcotest.string "abc" (code_points [ 97; 98; 99 ]);
  both "empty charlist" Conv.charlist Alcotest.string "" Term.nil;
  both "charlist, past Latin-1" Conv.charlist Alcotest.string "h\xc3\xa9 \xe2\x98\x83 \xf0\x9d\x84\x9e"
    (code_points [ 104; 233; 32; 0x2603; 32; 0x1d11e ]);
  refuses "charlist" Conv.charlist
    [
      Term.binary "abc"; code_points [ 0xd800 ]; code_points [ 0x110000 ]; code_points [ -1 ];
      Term.improper [ Int 97 ] (Int 98); List [ Atom "a" ]; Atom "abc";
    ];
  List.iter
    (fun bad ->
      Alcotest.check_raises ("charlist: not UTF-8: " ^ String.escaped bad)
        (Invalid_argument "Erl.Conv.charlist: the string is not UTF-8") (fun () ->
          ignore (Conv.to_term Conv.charlist bad)))
    [ "\xff"; "a\xc0\xaf"; "\xed\xa0\x80"; "\xe2\x98" ];
  let long = String.make 1_000_000 'x' in
  Alcotest.(check (option string)) "long charlist" (Some long)
    (Conv.of_term Conv.charlist (Conv.to_term Conv.charlist long));
  both "atom" Conv.atom Alcotest.string "hello" (Atom "hello");
  refuses "atom" Conv.atom [ Term.binary "hello"; Term.nil ];
  Alcotest.check_raises "atom: too long"
    (Invalid_argument (Printf.sprintf "Erl.Conv.atom: %S cannot be an atom" (String.make 256 'a')))
    (fun () -> ignore (Conv.to_term Conv.atom (String.make 256 'a')));
  both "unit" Conv.unit Alcotest.unit () (Atom "ok");
  refuses "unit" Conv.unit [ Atom "okay"; Term.nil; Term.Tuple [||] ];
  both "term" Conv.term term (Term.bitstring "\xff" 3) (Term.bitstring "\xff" 3);
  both "pid" Conv.pid (Alcotest.testable Term.Pid.pp Term.Pid.equal) a_pid (Pid a_pid);
  refuses "pid" Conv.pid [ Atom "self"; Port a_port ];
  both "port" Conv.port (Alcotest.testable Term.Port.pp Term.Port.equal) a_port (Port a_port);
  refuses "port" Conv.port [ Pid a_pid; Ref a_reference ];
  both "reference" Conv.reference (Alcotest.testable Term.Ref.pp Term.Ref.equal) a_reference (Ref a_reference);
  refuses "reference" Conv.reference [ Atom "make_ref"; Pid a_pid ]

let test_containers () =
  let il = Conv.list Conv.int in
  both "list" il Alcotest.(list int) [ 1; 2; 3 ] (List [ Int 1; Int 2; Int 3 ]);
  both "empty list" il Alcotest.(list int) [] Term.nil;
  Alcotest.(check (option (list int))) "a string is a list" (Some [ 97; 98 ]) (Conv.of_term il (List [ Int 97; Int 98 ]));
  refuses "list int" il
    [ Term.improper [ Int 1 ] (Int 2); List [ Int 1; Float 2.0 ]; Term.binary "ab"; Tuple [| Int 1 |] ];
  let long = List.init 1_000_000 Fun.id in
  Alcotest.(check (option (list int))) "long list" (Some long) (Conv.of_term il (Conv.to_term il long));
  both "array" (Conv.array Conv.float) Alcotest.(array (float 0.0)) [| 1.0; 2.0 |] (List [ Float 1.0; Float 2.0 ]);
  both "empty array" (Conv.array Conv.float) Alcotest.(array (float 0.0)) [||] Term.nil;
  refuses "array" (Conv.array Conv.float) [ List [ Int 1 ]; Tuple [| Float 1.0 |] ];
  let m = Conv.map Conv.atom Conv.int in
  let am = Alcotest.(list (pair string int)) in
  both "map" m am [ ("a", 1); ("b", 2) ] (Map [| (Atom "a", Int 1); (Atom "b", Int 2) |]);
  both "empty map" m am [] (Map [||]);
  Alcotest.check term "map: encoded in key order" (Map [| (Atom "a", Int 1); (Atom "b", Int 2) |])
    (Conv.to_term m [ ("b", 2); ("a", 1) ]);
  Alcotest.check term "map: the later binding wins" (Map [| (Atom "a", Int 3) |])
    (Conv.to_term m [ ("a", 1); ("a", 3) ]);
  refuses "map" m
    [
      Map [| (Term.binary "a", Int 1) |]; Map [| (Atom "a", Float 1.0) |];
      List [ Tuple [| Atom "a"; Int 1 |] ]; Tuple [| Atom "a"; Int 1 |];
    ];
  let wide = List.init 1000 (fun i -> (i, string_of_int i)) in
  Alcotest.(check (option (list (pair int string))))
    "map: over 32 keys" (Some wide)
    (Conv.of_term (Conv.map Conv.int Conv.string) (Conv.to_term (Conv.map Conv.int Conv.string) (List.rev wide)));
  let o = Conv.option Conv.int in
  both "None" o Alcotest.(option int) None (Atom "undefined");
  both "Some" o Alcotest.(option int) (Some 3) (Int 3);
  refuses "option" o [ Atom "none"; Atom "nil"; Term.nil ];
  Alcotest.(check (option (option string))) "undefined is None even for atoms" (Some None)
    (Conv.of_term (Conv.option Conv.atom) (Atom "undefined"));
  let r = Conv.result Conv.int Conv.string in
  both "Ok" r Alcotest.(result int string) (Ok 1) (ok_tuple (Int 1));
  both "Error" r Alcotest.(result int string) (Error "no") (error_tuple (Term.binary "no"));
  refuses "result" r
    [
      Tuple [| Atom "ok" |]; Tuple [| Atom "ok"; Int 1; Int 2 |]; error_tuple (Atom "no");
      ok_tuple (Float 1.0); Atom "ok"; List [ Atom "ok"; Int 1 ];
    ];
  let t2 = Conv.tuple2 Conv.int Conv.bool in
  both "tuple2" t2 Alcotest.(pair int bool) (1, true) (Tuple [| Int 1; Atom "true" |]);
  refuses "tuple2" t2 [ Tuple [| Int 1 |]; Tuple [| Int 1; Atom "true"; Int 3 |]; Tuple [| Atom "true"; Int 1 |]; List [ Int 1; Atom "true" ] ];
  let t3 = Conv.tuple3 Conv.int Conv.int Conv.int in
  both "tuple3" t3 Alcotest.(triple int int int) (1, 2, 3) (Tuple [| Int 1; Int 2; Int 3 |]);
  refuses "tuple3" t3 [ Tuple [| Int 1; Int 2 |]; Tuple [| Int 1; Int 2; Float 3.0 |] ];
  let t4 = Conv.tuple4 Conv.int Conv.int Conv.int Conv.atom in
  Alcotest.check term "tuple4: encode" (Tuple [| Int 1; Int 2; Int 3; Atom "x" |]) (Conv.to_term t4 (1, 2, 3, "x"));
  Alcotest.(check bool) "tuple4: decode" true (Conv.of_term t4 (Tuple [| Int 1; Int 2; Int 3; Atom "x" |]) = Some (1, 2, 3, "x"));
  refuses "tuple4" t4 [ Tuple [| Int 1; Int 2; Int 3; Int 4 |]; Tuple [| Int 1; Int 2; Int 3 |] ]

type color = Red | Green

let test_custom () =
  let color =
    Conv.make ~expected:"red | green"
      (function Term.Atom "red" -> Some Red | Atom "green" -> Some Green | _ -> None)
      (function Red -> Atom "red" | Green -> Atom "green")
  in
  Alcotest.(check bool) "make: decode" true (Conv.of_term (Conv.list color) (List [ Atom "green"; Atom "red" ]) = Some [ Green; Red ]);
  Alcotest.check term "make: encode" (Atom "green") (Conv.to_term color Green);
  refuses "make" color [ Atom "blue" ];
  Alcotest.(check string) "make: expected" "[red | green]" (Conv.expected (Conv.list color));
  let celsius = Conv.view ~read:(fun f -> f -. 273.15) ~write:(fun c -> c +. 273.15) Conv.float in
  Alcotest.(check (option (float 1e-9))) "view: decode" (Some 0.0) (Conv.of_term celsius (Float 273.15));
  Alcotest.check term "view: encode" (Float 273.15) (Conv.to_term celsius 0.0);
  Alcotest.(check string) "view: expected" "float()" (Conv.expected celsius)

let test_expected () =
  let check name expected c = Alcotest.(check string) name expected (Conv.expected c) in
  check "int" "ocaml:int63()" Conv.int;
  check "int64" "ocaml:int64()" Conv.int64;
  check "float" "float()" Conv.float;
  check "bool" "boolean()" Conv.bool;
  check "string" "binary()" Conv.string;
  check "bytes" "binary()" Conv.bytes;
  check "atom" "atom()" Conv.atom;
  check "charlist" "string()" Conv.charlist;
  check "unit" "ok" Conv.unit;
  check "term" "term()" Conv.term;
  check "pid" "pid()" Conv.pid;
  check "port" "port()" Conv.port;
  check "reference" "reference()" Conv.reference;
  check "list" "[float()]" (Conv.list Conv.float);
  check "array" "[atom()]" (Conv.array Conv.atom);
  check "option" "undefined | binary()" (Conv.option Conv.string);
  check "map" "#{atom() => [float()]}" (Conv.map Conv.atom (Conv.list Conv.float));
  check "result" "{ok, float()} | {error, atom()}" (Conv.result Conv.float Conv.atom);
  check "tuple2" "{float(), ok}" (Conv.tuple2 Conv.float Conv.unit);
  check "tuple3" "{ok, ok, ok}" (Conv.tuple3 Conv.unit Conv.unit Conv.unit);
  check "tuple4" "{ok, ok, ok, term()}" (Conv.tuple4 Conv.unit Conv.unit Conv.unit Conv.term)

let error =
  Alcotest.testable
    (fun ppf e -> Term.pp ppf (Conv.error_to_term e))
    (fun a b -> Term.equal (Conv.error_to_term a) (Conv.error_to_term b))

let test_apply () =
  let fn = Conv.(int @-> float @-> returning (list float)) in
  let f n x = List.init n (fun i -> float_of_int i *. x) in
  Alcotest.(check int) "arity" 2 (Conv.arity fn);
  Alcotest.(check string) "signature" "fun((ocaml:int63(), float()) -> [float()])" (Conv.signature fn);
  Alcotest.(check string) "nullary signature" "fun(() -> ocaml:int63())" Conv.(signature (nullary int));
  Alcotest.(check string) "constant signature" "fun(() -> binary())" Conv.(signature (returning string));
  Alcotest.(check string) "signature of containers"
    "fun((#{atom() => undefined | float()}) -> {ok, [boolean()]} | {error, atom()})"
    Conv.(signature (map atom (option float) @-> returning (result (list bool) atom)));
  Alcotest.(check (result term error)) "call" (Ok (List [ Float 0.0; Float 0.5 ])) (Conv.apply fn f [ Int 2; Float 0.5 ]);
  Alcotest.(check (result term error)) "badarg 2"
    (Error (Badarg { position = 2; expected = "float()"; got = Int 1 }))
    (Conv.apply fn f [ Int 2; Int 1 ]);
  Alcotest.(check (result term error)) "badarg 1 first"
    (Error (Badarg { position = 1; expected = Conv.expected Conv.int; got = Atom "x" }))
    (Conv.apply fn f [ Atom "x"; Int 1 ]);
  Alcotest.(check (result term error)) "too few" (Error (Badarity { expected = 2; got = 1 })) (Conv.apply fn f [ Int 2 ]);
  let options = Term.Map [| (Atom "scale", Float 2.0); (Atom "steps", Atom "many") |] in
  Alcotest.(check (result term error)) "badarg: a map with a bad value"
    (Error (Badarg { position = 1; expected = "#{atom() => float()}"; got = options }))
    (Conv.apply Conv.(map atom float @-> returning int) List.length [ options ]);
  Alcotest.(check (result term error)) "too many, bad arguments"
    (Error (Badarity { expected = 2; got = 3 }))
    (Conv.apply fn f [ Atom "x"; Atom "y"; Atom "z" ]);
  let ran = ref false in
  ignore (Conv.apply Conv.(int @-> int @-> returning unit) (fun _ _ -> ran := true) [ Int 1; Atom "x" ]);
  Alcotest.(check bool) "the function does not run on badarg" false !ran;
  let calls = ref 0 in
  let next () = incr calls; !calls in
  Alcotest.(check int) "nullary arity" 0 (Conv.arity Conv.(nullary int));
  Alcotest.(check (result term error)) "nullary 1" (Ok (Int 1)) (Conv.apply Conv.(nullary int) next []);
  Alcotest.(check (result term error)) "nullary 2" (Ok (Int 2)) (Conv.apply Conv.(nullary int) next []);
  Alcotest.(check (result term error)) "nullary with an argument"
    (Error (Badarity { expected = 0; got = 1 }))
    (Conv.apply Conv.(nullary int) next [ Int 1 ]);
  Alcotest.(check (result term error)) "constant" (Ok (Term.binary "1.0")) (Conv.apply Conv.(returning string) "1.0" []);
  Alcotest.check term "badarity term"
    (Tuple [| Atom "badarity"; Int 2; Int 3 |])
    (Conv.error_to_term (Badarity { expected = 2; got = 3 }));
  Alcotest.check term "badarg term"
    (Tuple
       [|
         Atom "badarg";
         Term.map_of_list [ (Atom "argument", Int 2); (Atom "expected", Term.binary "float()"); (Atom "got", Int 1) ];
       |])
    (Conv.error_to_term (Badarg { position = 2; expected = "float()"; got = Int 1 }))

let tests =
  [
    ( "conv",
      [
        Alcotest.test_case "scalars" `Quick test_scalars;
        Alcotest.test_case "containers" `Quick test_containers;
        Alcotest.test_case "make and view" `Quick test_custom;
        Alcotest.test_case "expected descriptions" `Quick test_expected;
        Alcotest.test_case "apply" `Quick test_apply;
      ] );
  ]
