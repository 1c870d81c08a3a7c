open Erl.Term

let term = Alcotest.testable pp equal
let z s = Z.of_string s
let big s = integer_of_z (z s)
let atom a = Atom a
let tuple xs = Tuple (Array.of_list xs)
let ints = List.map (fun i -> Int i)
let pid node id serial creation = Pid (Forge.pid ~node ~id ~serial ~creation)
let port node id creation = Port (Forge.port ~node ~id ~creation)
let ref_ node creation ids = Ref (Forge.reference ~node ~creation (Array.of_list ids))

let local ?(free = []) ?(uniq = String.make 16 'u') ?(arity = 0) ?(old_index = 0) m index old_uniq =
  Fun
    (Local
       {
         arity;
         uniq;
         index;
         module_ = m;
         old_index;
         old_uniq;
         pid = Forge.pid ~node:"a@h" ~id:1 ~serial:0 ~creation:1;
         free_vars = free;
       })

let export m f a = Fun (Export { module_ = m; function_ = f; arity = a })
let bits s n = bitstring s n

(* Strictly increasing in Erlang's exact term order. The orders of pids,
   ports, references, funs and bitstrings were taken from OTP 25
   (erts 13.1.5) by sorting terms made with binary_to_term/1. *)
let ascending =
  [
    big "-1180591620717411303424";
    Int min_int;
    Int (-1);
    Int 0;
    Int 1;
    Int 2;
    Int max_int;
    big "4611686018427387904";
    big "1180591620717411303424";
    Float (-1e300);
    Float (-1.0);
    Float 0.0;
    Float 0.5;
    Float 1.0;
    Float 1e300;
    atom "";
    atom "a";
    atom "aa";
    atom "b";
    atom "\xc3\xa9";
    ref_ "a@h" 1 [ 5 ];
    ref_ "a@h" 1 [ 1; 2 ];
    ref_ "a@h" 1 [ 2; 1; 3 ];
    ref_ "a@h" 1 [ 1; 2; 3 ];
    ref_ "a@h" 1 [ 1; 2; 4 ];
    ref_ "a@h" 1 [ 1; 2; 3; 1 ];
    ref_ "a@h" 2 [ 5 ];
    ref_ "b@h" 1 [ 5 ];
    local "a" 0 1;
    local "a" 0 1 ~free:[ atom "a" ];
    local "a" 0 1 ~free:[ atom "x" ];
    local "a" 0 1 ~free:[ atom "a"; atom "b" ];
    local "a" 0 2;
    local "a" 1 1;
    local "b" 0 1;
    export "erlang" "abs" 1;
    export "lists" "foldl" 3;
    export "lists" "map" 1;
    export "lists" "map" 2;
    port "a@h" 1L 1;
    port "a@h" 2L 1;
    port "a@h" 0x100_0000_0000L 1;
    port "a@h" (-1L) 1;
    port "a@h" 1L 2;
    port "b@h" 1L 1;
    pid "a@h" 1 1 1;
    pid "a@h" 1 1 2;
    pid "aa@h" 1 1 1;
    pid "b@h" 1 1 1;
    pid "a@h" 2 1 1;
    pid "a@h" 1 2 1;
    tuple [];
    tuple [ Int 1 ];
    tuple [ Int 2 ];
    tuple [ Float 1.0 ];
    tuple [ Int 1; Int 1 ];
    tuple [ atom "a"; Int 1 ];
    tuple [ Int 1; Int 1; Int 1 ];
    map_of_list [];
    map_of_list [ (Int 1, atom "a") ];
    map_of_list [ (Int 1, atom "b") ];
    map_of_list [ (Int 2, atom "a") ];
    map_of_list [ (Float 1.0, atom "a") ];
    map_of_list [ (atom "a", Int 1) ];
    map_of_list [ (Int 1, atom "b"); (Int 2, atom "a") ];
    map_of_list [ (Int 1, atom "a"); (Float 1.0, atom "a") ];
    map_of_list [ (atom "a", Int 2); (atom "b", Int 2) ];
    map_of_list [ (atom "a", Int 1); (atom "c", Int 0) ];
    nil;
    improper [ Int 1 ] (Int 2);
    improper [ Int 1 ] (atom "a");
    List [ Int 1 ];
    improper [ Int 1; Int 2 ] (Int 3);
    List [ Int 1; Int 2 ];
    List [ Int 2 ];
    List [ nil ];
    List [ List [ Int 1 ] ];
    binary "";
    binary "\000";
    bits "\x10" 4;
    bits "\x10" 5;
    bits "\x80" 1;
    binary "\x80";
    binary "\x80\000";
    binary "\xff";
  ]

let test_order () =
  List.iteri
    (fun i a ->
      List.iteri
        (fun j b ->
          let expected = Int.compare i j and got = compare a b in
          if Int.compare got 0 <> expected then
            Alcotest.failf "compare %s %s = %d, expected the sign of %d" (to_string a) (to_string b) got
              expected)
        ascending)
    ascending

let test_numbers () =
  Alcotest.(check bool) "1 =/= 1.0" false (equal (Int 1) (Float 1.0));
  Alcotest.(check bool) "0.0 =:= -0.0" true (equal (Float 0.0) (Float (-0.0)));
  Alcotest.(check bool) "2 < 1.0" true (compare (Int 2) (Float 1.0) < 0);
  Alcotest.(check bool) "2^70 < 0.5" true (compare (big "1180591620717411303424") (Float 0.5) < 0);
  Alcotest.(check term) "map keys: integers before floats"
    (Map [| (Int 2, atom "b"); (Float 1.0, atom "a") |])
    (map_of_list [ (Float 1.0, atom "a"); (Int 2, atom "b") ]);
  Alcotest.(check term) "#{0.0 => a} =:= #{-0.0 => a}"
    (map_of_list [ (Float 0.0, atom "a") ])
    (map_of_list [ (Float (-0.0), atom "a") ]);
  Alcotest.(check int) "0.0 and -0.0 are one key" 1
    (match map_of_list [ (Float 0.0, atom "a"); (Float (-0.0), atom "b") ] with
    | Map kvs -> Array.length kvs
    | _ -> -1);
  (* Not canonical, but still compared by value. *)
  Alcotest.(check bool) "Int 5 =:= Bigint 5" true (equal (Int 5) (Bigint (Z.of_int 5)))

let test_integer_of_z () =
  let check name expected z = Alcotest.(check term) name expected (integer_of_z z) in
  check "0" (Int 0) Z.zero;
  check "max_int" (Int max_int) (Z.of_int max_int);
  check "min_int" (Int min_int) (Z.of_int min_int);
  (match integer_of_z (Z.succ (Z.of_int max_int)) with
  | Bigint b -> Alcotest.(check string) "max_int + 1" "4611686018427387904" (Z.to_string b)
  | t -> Alcotest.failf "max_int + 1 became %s" (to_string t));
  match integer_of_z (Z.pred (Z.of_int min_int)) with
  | Bigint _ -> ()
  | t -> Alcotest.failf "min_int - 1 became %s" (to_string t)

let test_equal_ignores () =
  Alcotest.(check term) "funs: arity, uniq, old_index and pid are not compared"
    (local "m" 1 2 ~free:[ Int 1 ])
    (local "m" 1 2 ~free:[ Int 1 ] ~arity:3 ~uniq:(String.make 16 'x') ~old_index:9);
  Alcotest.(check term) "references: trailing zero words" (ref_ "a@h" 1 [ 1; 2 ]) (ref_ "a@h" 1 [ 1; 2; 0 ]);
  Alcotest.(check bool) "references: other words count" false
    (equal (ref_ "a@h" 1 [ 1; 2 ]) (ref_ "a@h" 1 [ 1; 2; 1 ]))

let test_constructors () =
  Alcotest.(check term) "improper [] t" (Int 1) (improper [] (Int 1));
  Alcotest.(check term) "improper onto a list" (List (ints [ 1; 2; 3 ])) (improper (ints [ 1 ]) (List (ints [ 2; 3 ])));
  Alcotest.(check term) "improper onto []" (List (ints [ 1 ])) (improper (ints [ 1 ]) nil);
  Alcotest.(check term) "improper onto an improper list"
    (Improper (ints [ 1; 2 ], Int 3))
    (improper (ints [ 1 ]) (Improper (ints [ 2 ], Int 3)));
  Alcotest.(check term) "bitstring: whole bytes" (binary "ab") (bitstring "abc" 16);
  Alcotest.(check term) "bitstring: unused bits cleared" (Bitstring ("a\xe0", 3)) (bitstring "a\xff" 11);
  Alcotest.(check term) "bitstring: empty" (binary "") (bitstring "xyz" 0);
  Alcotest.check_raises "bitstring: too long" (Invalid_argument "Erl.Term.bitstring") (fun () ->
      ignore (bitstring "a" 9));
  Alcotest.check_raises "bitstring: negative" (Invalid_argument "Erl.Term.bitstring") (fun () ->
      ignore (bitstring "a" (-1)));
  Alcotest.(check term) "map: later binding wins"
    (Map [| (atom "a", Int 3); (atom "b", Int 2) |])
    (map_of_list [ (atom "b", Int 2); (atom "a", Int 1); (atom "a", Int 3) ]);
  let unsorted = [| (atom "b", Int 2); (atom "a", Int 1) |] in
  ignore (map_of_array unsorted);
  Alcotest.(check term) "map_of_array leaves its argument alone" (atom "b") (fst unsorted.(0));
  let kvs = Array.init 100 (fun i -> (Int (i * 2), Int i)) in
  Alcotest.(check (option term)) "map_find: present" (Some (Int 21)) (map_find (Int 42) kvs);
  Alcotest.(check (option term)) "map_find: absent" None (map_find (Int 43) kvs);
  Alcotest.(check (option term)) "map_find: exact" None (map_find (Float 42.0) kvs);
  Alcotest.(check (option term)) "map_find: empty" None (map_find (Int 0) [||])

let test_validate () =
  let ok t =
    match validate t with
    | Ok () -> ()
    | Error e -> Alcotest.failf "%s: %s" (to_string t) e
  in
  let bad name t = Alcotest.(check bool) name true (Result.is_error (validate t)) in
  List.iter ok ascending;
  bad "Bigint that fits" (Tuple [| Bigint Z.one |]);
  bad "NaN" (List [ Float Float.nan ]);
  bad "atom of 256 characters" (Atom (String.make 256 'a'));
  ok (Atom (String.concat "" (List.init 255 (fun _ -> "\xc3\xa9"))));
  bad "atom not UTF-8" (Atom "\xff");
  bad "empty reference" (ref_ "a@h" 0 []);
  bad "reference of 6 words" (ref_ "a@h" 0 (List.init 6 (fun _ -> 0)));
  bad "pid out of range" (pid "a@h" (1 lsl 32) 0 0);
  bad "fun uniq" (local "m" 0 0 ~uniq:"short");
  bad "improper without elements" (Improper ([], Int 1));
  bad "improper onto a list" (Improper ([ Int 1 ], List [ Int 2 ]));
  bad "improper onto []" (Improper ([ Int 1 ], nil));
  bad "map not sorted" (Map [| (atom "b", Int 1); (atom "a", Int 1) |]);
  bad "map duplicate" (Map [| (atom "a", Int 1); (atom "a", Int 2) |]);
  bad "bitstring of 8 bits" (Bitstring ("a", 8));
  bad "empty bitstring" (Bitstring ("", 3));
  bad "bitstring unused bits" (Bitstring ("\x01", 3));
  bad "deep in a map value" (map_of_list [ (Int 1, List [ Improper ([], nil) ]) ])

let pids_etc =
  [
    ( "#Pid<a@h.1.2.3>", pid "a@h" 1 2 3 );
    ( "#Port<a@h.18446744073709551615.3>", port "a@h" (-1L) 3 );
    ( "#Ref<a@h.3.3.2.1>", ref_ "a@h" 3 [ 1; 2; 3 ] );
    ( "#Fun<t.1.60080467>", local "t" 0 60080467 ~old_index:1 );
    ( "fun lists:map/2", export "lists" "map" 2 );
    ( "fun 'A':'b c'/0", export "A" "b c" 0 );
  ]

(* Expected strings are io_lib:format("~tp", [T]) of OTP 25, except for
   pids, ports, references and funs. *)
let printed =
  [
    ("a", atom "a");
    ("'A'", atom "A");
    ("'hello world'", atom "hello world");
    ("'[]'", atom "[]");
    ("true", atom "true");
    ("'case'", atom "case");
    ("foo@bar", atom "foo@bar");
    ("'a.b'", atom "a.b");
    ("'_x'", atom "_x");
    ("x_Y", atom "x_Y");
    ("'O\\'k'", atom "O'k");
    ("'\\n'", atom "\n");
    ("''", atom "");
    ("'a\\\\b'", atom "a\\b");
    ("'\\001'", atom "\001");
    ("\xc3\xa9", atom "\xc3\xa9");
    ("a\xc3\xbc\xc3\x9f", atom "a\xc3\xbc\xc3\x9f");
    ("'\xc3\x9c'", atom "\xc3\x9c");
    ("'\xc3\xb7'", atom "\xc3\xb7");
    ("'a\xc3\xb7'", atom "a\xc3\xb7");
    ("'\xc4\x80'", atom "\xc4\x80");
    ("'a\xc4\x80'", atom "a\xc4\x80");
    ("'\xff'", atom "\xff");
    ("<<\"abc\">>", binary "abc");
    ("<<1,2>>", binary "\001\002");
    ("<<\"a\\nb\">>", binary "a\nb");
    ("<<\"\xc3\xa9\"/utf8>>", binary "\xc3\xa9");
    ("<<\"\xc3\xa9\">>", binary "\xe9");
    ("<<\"\xc3\xa9\\n\">>", binary "\xe9\n");
    ("<<195,169,0>>", binary "\xc3\xa9\000");
    ("<<>>", binary "");
    ("<<\"a\\\"b\\\\c\">>", binary "a\"b\\c");
    ("<<\"\\e\">>", binary "\027");
    ("<<8,9,11,12,13,127>>", binary "\b\t\011\012\r\127");
    ("<<0>>", binary "\000");
    ("<<1:3>>", bits "\x20" 3);
    ("<<97,98,3:2>>", bits "ab\xc0" 18);
    ("\"abc\"", List (ints [ 97; 98; 99 ]));
    ("[1,2]", List (ints [ 1; 2 ]));
    ("[]", nil);
    ("\"a\\n\"", List (ints [ 97; 10 ]));
    ("\"\xc3\xa9\"", List (ints [ 233 ]));
    ("[256]", List (ints [ 256 ]));
    ("[7]", List (ints [ 7 ]));
    ("\"\\e\"", List (ints [ 27 ]));
    ("[127]", List (ints [ 127 ]));
    ("\"\\b\\t\\v\\f\\r\"", List (ints [ 8; 9; 11; 12; 13 ]));
    ("[1|2]", improper (ints [ 1 ]) (Int 2));
    ("[[],\"a\"|b]", improper [ nil; List (ints [ 97 ]) ] (atom "b"));
    ("123456789012345678901234567890", big "123456789012345678901234567890");
    ("-4611686018427387905", big "-4611686018427387905");
    ("-5", Int (-5));
    ("{}", tuple []);
    ("{a,{1,2.5},<<>>}", tuple [ atom "a"; tuple [ Int 1; Float 2.5 ]; binary "" ]);
    ("#{}", map_of_list []);
    ("#{1 => x,a => 1}", map_of_list [ (atom "a", Int 1); (Int 1, atom "x") ]);
    ("#{#{} => []}", map_of_list [ (map_of_list [], nil) ]);
  ]
  @ pids_etc

let floats =
  [
    (0.0, "0.0"); (-0.0, "-0.0"); (1.0, "1.0"); (0.1, "0.1"); (1.5, "1.5"); (100.0, "100.0");
    (123456.0, "123456.0"); (1234567.0, "1234567.0"); (1.0e15, "1.0e15"); (1.0e16, "1.0e16");
    (12345678901234567890.0, "1.2345678901234567e19"); (9007199254740992.0, "9.007199254740992e15");
    (9007199254740994.0, "9.007199254740994e15"); (9007199254740991.0, "9007199254740991.0");
    (4503599627370496.0, "4503599627370496.0"); (0.001, "0.001"); (0.0001, "0.0001"); (1.0e-5, "1.0e-5");
    (1.2345e-7, "1.2345e-7"); (5.0e-324, "5.0e-324"); (1.7976931348623157e308, "1.7976931348623157e308");
    (2.5e22, "2.5e22"); (123.456, "123.456"); (-2.5, "-2.5"); (1.0e-10, "1.0e-10"); (0.0005, "0.0005");
    (1.5e-4, "1.5e-4"); (1.2345e-4, "1.2345e-4"); (0.012345, "0.012345"); (1000.0, "1.0e3");
    (10000.0, "1.0e4"); (1.25e8, "1.25e8"); (123456789.0, "123456789.0"); (1.2345e10, "1.2345e10");
    (12.0, "12.0"); (120.0, "120.0"); (1200.0, "1.2e3"); (123450000.0, "1.2345e8"); (-1.0e-4, "-0.0001");
    (2.0e-4, "0.0002"); (1.0e-6, "1.0e-6"); (1.0e7, "1.0e7");
  ]

let test_printing () =
  List.iter (fun (expected, t) -> Alcotest.(check string) expected expected (to_string t)) printed;
  List.iter (fun (f, expected) -> Alcotest.(check string) expected expected (float_to_string f)) floats;
  Alcotest.(check string) "pp" "{ok,[]}" (Format.asprintf "%a" pp (tuple [ atom "ok"; nil ]))

(* Deep and long terms: everything must run in constant stack space. *)
let depth = 1_000_000

let nest wrap leaf =
  let rec go n acc = if n = 0 then acc else go (n - 1) (wrap acc) in
  go depth leaf

let test_deep () =
  let shapes =
    [
      ("tuple", fun t -> Tuple [| t |]);
      ("list", fun t -> List [ t ]);
      ("improper tail", fun t -> Improper ([ Int 0 ], Tuple [| t |]));
      ("map key", fun t -> Map [| (t, nil) |]);
      ("map value", fun t -> Map [| (nil, t) |]);
    ]
  in
  List.iter
    (fun (name, wrap) ->
      let a = nest wrap (Int 1) and a' = nest wrap (Int 1) and b = nest wrap (Int 2) in
      Alcotest.(check int) (name ^ ": equal") 0 (compare a a');
      Alcotest.(check bool) (name ^ ": less") true (compare a b < 0);
      Alcotest.(check bool) (name ^ ": greater") true (compare b a > 0);
      Alcotest.(check bool) (name ^ ": valid") true (Result.is_ok (validate a));
      Alcotest.(check bool) (name ^ ": printed") true (String.length (to_string a) > depth))
    shapes;
  let long = List (List.init depth (fun i -> Int i)) in
  let long' = List (List.init depth (fun i -> Int i)) in
  Alcotest.(check int) "long list: equal" 0 (compare long long');
  Alcotest.(check bool) "long list: printed" true (String.length (to_string long) > depth);
  Alcotest.(check bool) "long list: valid" true (Result.is_ok (validate long));
  let wide = Tuple (Array.init depth (fun i -> Int i)) in
  Alcotest.(check bool) "wide tuple: printed" true (String.length (to_string wide) > depth)

let test_hash () =
  let alike name a b =
    Alcotest.(check bool) (name ^ ": equal") true (equal a b);
    Alcotest.(check int) (name ^ ": same hash") (hash a) (hash b)
  in
  alike "0.0 and -0.0" (Float 0.0) (Float (-0.0));
  alike "an Int and the same Bigint" (Int 5) (Bigint (Z.of_int 5));
  alike "references: trailing zero words" (ref_ "a@h" 1 [ 1; 2 ]) (ref_ "a@h" 1 [ 1; 2; 0 ]);
  alike "funs: what =:= ignores" (local "m" 1 2 ~free:[ Int 1 ])
    (local "m" 1 2 ~free:[ Int 1 ] ~arity:3 ~uniq:(String.make 16 'x') ~old_index:9);
  let long = String.make (Erl.Binary.heap_max + 1) 'z' in
  alike "a binary in either form"
    (Tuple [| Binary (Erl.Binary.of_string long) |])
    (Tuple [| Binary (Erl.Binary.of_bigstring (Gen.bigstring long)) |]);
  let distinct =
    [ Int 1; Float 1.0; atom "a"; binary "a"; bitstring "a" 7; List [ Int 1 ]; Tuple [| Int 1 |];
      Map [| (Int 1, Int 1) |]; nil; Tuple [||]; Improper ([ Int 1 ], Int 2); List [ Int 1; Int 2 ] ]
  in
  let hashes = List.sort_uniq Int.compare (List.map hash distinct) in
  Alcotest.(check int) "small distinct terms hash apart" (List.length distinct) (List.length hashes);
  (* Constant time and no recursion, on the deep and long terms of test_deep. *)
  List.iter
    (fun wrap -> ignore (hash (nest wrap (Int 1))))
    [ (fun t -> Tuple [| t |]); (fun t -> List [ t ]); (fun t -> Map [| (t, nil) |]) ];
  Alcotest.(check bool) "a long list" true (hash (List (List.init depth (fun i -> Int i))) >= 0);
  (* Hashtbl.Make and Map.Make take the module as it is. *)
  let module Table = Hashtbl.Make (Erl.Term) in
  let module Terms = Map.Make (Erl.Term) in
  let keys = List.init 5000 (fun i -> if i mod 2 = 0 then Int i else binary (string_of_int i)) in
  let table = Table.create 16 and map = ref Terms.empty in
  List.iteri
    (fun i k ->
      Table.replace table k i;
      map := Terms.add k i !map)
    keys;
  List.iteri
    (fun i k ->
      let k' = Gen.copy k in
      Alcotest.(check (option int)) "Hashtbl.Make (Erl.Term): found by an equal key" (Some i) (Table.find_opt table k');
      Alcotest.(check (option int)) "Map.Make (Erl.Term)" (Some i) (Terms.find_opt k' !map))
    keys

(* Pids, ports and references through their own modules, which agree with the
   terms that hold them: against every pair of [ascending] of one kind, and
   with the trailing zero words [equal] ignores. *)
let test_identifiers () =
  let check_kind (type a) name (module I : Erl.Term.Identifier with type t = a) (wrap : a -> Erl.Term.t)
      (values : a list) =
    List.iter
      (fun a ->
        Alcotest.(check string) (name ^ ": to_string") (to_string (wrap a)) (I.to_string a);
        Alcotest.(check string) (name ^ ": pp") (to_string (wrap a)) (Format.asprintf "%a" I.pp a);
        Alcotest.(check int) (name ^ ": hash") (hash (wrap a)) (I.hash a);
        List.iter
          (fun b ->
            let what = Printf.sprintf "%s: %s against %s" name (I.to_string a) (I.to_string b) in
            Alcotest.(check int) (what ^ ", compare") (Int.compare (compare (wrap a) (wrap b)) 0)
              (Int.compare (I.compare a b) 0);
            Alcotest.(check bool) (what ^ ", equal") (equal (wrap a) (wrap b)) (I.equal a b))
          values)
      values
  in
  let pids = List.filter_map (function Pid p -> Some p | _ -> None) ascending in
  let ports = List.filter_map (function Port p -> Some p | _ -> None) ascending in
  let refs = List.filter_map (function Ref r -> Some r | _ -> None) ascending in
  Alcotest.(check bool) "ascending has some of each" true (pids <> [] && ports <> [] && refs <> []);
  check_kind "pids" (module Erl.Term.Pid) (fun p -> Pid p) pids;
  check_kind "ports" (module Erl.Term.Port) (fun p -> Port p) ports;
  check_kind "references" (module Erl.Term.Ref) (fun r -> Ref r) refs;
  let short = Forge.reference ~node:"a@h" ~creation:1 [| 1; 2 |] in
  let padded = Forge.reference ~node:"a@h" ~creation:1 [| 1; 2; 0 |] in
  Alcotest.(check bool) "Ref.equal ignores trailing zero words" true (Erl.Term.Ref.equal short padded);
  Alcotest.(check int) "and so does Ref.hash" (Erl.Term.Ref.hash short) (Erl.Term.Ref.hash padded);
  let module Refs = Hashtbl.Make (Erl.Term.Ref) in
  let module Pids = Map.Make (Erl.Term.Pid) in
  let table = Refs.create 4 in
  Refs.replace table short "short";
  Alcotest.(check (option string)) "Hashtbl.Make (Erl.Term.Ref)" (Some "short") (Refs.find_opt table padded);
  let by_pid = List.fold_left (fun m p -> Pids.add p (Erl.Term.Pid.to_string p) m) Pids.empty pids in
  Alcotest.(check (list string)) "Map.Make (Erl.Term.Pid) in Erlang's order"
    (List.map Erl.Term.Pid.to_string pids) (List.map snd (Pids.bindings by_pid));
  (* The forge builds what the converters build: its fields read back. *)
  Alcotest.(check string) "a forged pid" "#Pid<'a.b@h'.1.2.3>"
    (Erl.Term.Pid.to_string (Forge.pid ~node:"a.b@h" ~id:1 ~serial:2 ~creation:3));
  Alcotest.(check string) "a forged port" "#Port<a@h.4294967296.3>"
    (Erl.Term.Port.to_string (Forge.port ~node:"a@h" ~id:0x1_0000_0000L ~creation:3));
  let node, creation, words = Forge.reference_fields padded in
  Alcotest.(check (triple string int (array int))) "a forged reference's fields" ("a@h", 1, [| 1; 2; 0 |])
    (node, creation, words)

(* Handles: typed kinds, identity, their place in the term order. *)
let test_handles () =
  let counter : int ref Handle.kind = Handle.kind "counter" in
  let gauge : int ref Handle.kind = Handle.kind "counter" in
  let r = ref 1 in
  let h = Handle.make counter r in
  Alcotest.(check bool) "get, its kind" true
    (match Handle.get counter h with Some r' -> r' == r | None -> false);
  Alcotest.(check bool) "get, another kind of the same type and name" true (Handle.get gauge h = None);
  Alcotest.(check bool) "get, not a handle" true (Handle.get counter (Int 1) = None);
  Alcotest.(check (option string)) "name" (Some "counter") (Handle.name h);
  Alcotest.(check (option string)) "name, not a handle" None (Handle.name (atom "counter"));
  let h2 = Handle.make counter r in
  (match (Handle.id h, Handle.id h2) with
   | Some a, Some b -> Alcotest.(check bool) "ids increase" true (a < b)
   | _ -> Alcotest.fail "a handle without an id");
  Alcotest.(check term) "equal to itself" h h;
  Alcotest.(check bool) "two handles of one value differ" false (equal h h2);
  Alcotest.(check int) "ordered by id" (-1) (compare h h2);
  Alcotest.(check int) "hash agrees with equal" (hash h) (hash h);
  Alcotest.(check bool) "hashes differ" true (hash h <> hash h2);
  (* Among references, after all of them; before funs. *)
  let big_ref = ref_ "zzz@h" 0xffff_ffff [ 0xffff_ffff; 0xffff_ffff; 0xffff_ffff ] in
  let ordered = [ atom "zzz"; ref_ "a@h" 1 [ 1 ]; big_ref; h; h2; export "a" "b" 0 ] in
  List.iteri
    (fun i a ->
      List.iteri
        (fun j b -> Alcotest.(check int) (Printf.sprintf "order %d %d" i j) (Int.compare i j) (compare a b))
        ordered)
    ordered;
  let m = map_of_list [ (h2, Int 2); (h, Int 1); (big_ref, Int 0) ] in
  Alcotest.(check (result unit string)) "validate, as map keys" (Ok ()) (validate m);
  Alcotest.(check (option term)) "found as a key" (Some (Int 1))
    (match m with Map kvs -> map_find h kvs | _ -> None);
  Alcotest.(check (result unit string)) "validate" (Ok ()) (validate (Tuple [| h; List [ h2 ] |]));
  (match Handle.id h with
   | Some id -> Alcotest.(check string) "printed" (Printf.sprintf "{#Handle<counter.%d>}" id) (to_string (Tuple [| h |]))
   | None -> ());
  (* on_down runs once, its exception dropped. *)
  let runs = ref 0 in
  let p = Forge.pid ~node:"a@h" ~id:1 ~serial:0 ~creation:1 in
  let m = Handle.make ~monitor:(p, fun () -> incr runs; failwith "on_down") counter r in
  Alcotest.(check bool) "not down" false (Handle.down m);
  (match m with
   | Handle raw ->
       Handle.monitor_down raw;
       Handle.monitor_down raw
   | _ -> Alcotest.fail "make is not a Handle");
  Alcotest.(check int) "on_down once" 1 !runs;
  Alcotest.(check bool) "down" true (Handle.down m)

let tests =
  [
    ( "term",
      [
        Alcotest.test_case "exact term order" `Quick test_order;
        Alcotest.test_case "numbers" `Quick test_numbers;
        Alcotest.test_case "integer_of_z" `Quick test_integer_of_z;
        Alcotest.test_case "what =:= ignores" `Quick test_equal_ignores;
        Alcotest.test_case "smart constructors" `Quick test_constructors;
        Alcotest.test_case "validate" `Quick test_validate;
        Alcotest.test_case "printing" `Quick test_printing;
        Alcotest.test_case "deep and long terms" `Quick test_deep;
        Alcotest.test_case "hash" `Quick test_hash;
        Alcotest.test_case "pids, ports and references" `Quick test_identifiers;
        Alcotest.test_case "handles" `Quick test_handles;
      ] );
  ]
