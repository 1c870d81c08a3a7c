open Erl
open Erl.Term

let term = Alcotest.testable pp equal
let sign c = Int.compare c 0
let seed = Gen.seed ()
let state () = Random.State.make [| seed |]
let terms n = let st = state () in List.init n (fun _ -> Gen.term st)

let fail fmt = Alcotest.failf ("(CAMLBEAM_SEED=%d) " ^^ fmt) seed

let test_valid () =
  List.iter
    (fun t -> match validate t with Ok () -> () | Error e -> fail "%s: %s" (to_string t) e)
    (terms 2000)

let test_reflexive () =
  List.iter
    (fun t ->
      let c = Gen.copy t in
      if compare t t <> 0 then fail "compare %s itself" (to_string t);
      if not (equal t c && equal c t) then fail "%s and its copy %s differ" (to_string t) (to_string c))
    (terms 2000)

let test_antisymmetric () =
  let ts = Array.of_list (terms 300) in
  Array.iter
    (fun a ->
      Array.iter
        (fun b ->
          if sign (compare a b) <> - sign (compare b a) then
            fail "compare %s %s is not antisymmetric" (to_string a) (to_string b))
        ts)
    ts

(* A sort with a non-transitive order leaves some pair out of order. *)
let test_transitive () =
  let sorted = Array.of_list (List.sort compare (terms 400)) in
  let n = Array.length sorted in
  for i = 0 to n - 1 do
    for j = i + 1 to n - 1 do
      if compare sorted.(i) sorted.(j) > 0 then
        fail "%s sorted before %s" (to_string sorted.(i)) (to_string sorted.(j))
    done
  done

(* Equal terms are interchangeable: they compare alike with any third. *)
let test_substitutive () =
  let ts = terms 300 in
  List.iter
    (fun a ->
      let a' = Gen.copy a in
      List.iter
        (fun c ->
          if sign (compare a c) <> sign (compare a' c) then
            fail "%s and its copy compare differently with %s" (to_string a) (to_string c))
        ts)
    ts

(* [hash] agrees with [equal]: on copies, and on the many equal pairs that the
   generator's small pools of leaves make. And it tells most distinct terms
   apart. *)
let test_hash () =
  let ts = terms 2000 in
  List.iter
    (fun t ->
      if hash t <> hash (Gen.copy t) then fail "%s and its copy hash apart" (to_string t))
    ts;
  let module Terms = Map.Make (Erl.Term) in
  let by_term = List.fold_left (fun m t -> Terms.add t (hash t) m) Terms.empty ts in
  List.iter
    (fun t -> if Terms.find t by_term <> hash t then fail "%s hashes unlike an equal term" (to_string t))
    ts;
  let distinct = Terms.cardinal by_term in
  let hashes = List.sort_uniq Int.compare (List.map snd (Terms.bindings by_term)) in
  if List.length hashes * 100 < distinct * 98 then
    fail "%d distinct terms, only %d distinct hashes" distinct (List.length hashes)

let test_print_read () =
  let st = state () in
  for _ = 1 to 2000 do
    let t = Gen.printable_term st in
    let printed = to_string t in
    match Parse.term printed with
    | read -> if not (equal read t) then fail "%s read back as %s" printed (to_string read)
    | exception Failure e -> fail "%s" e
  done

let test_floats () =
  let st = state () in
  for _ = 1 to 100_000 do
    let f = Gen.float st in
    let s = float_to_string f in
    if Float.of_string s <> f then fail "%h printed as %s" f s;
    match Parse.term s with
    | Float g when Float.equal g f || (f = 0.0 && g = 0.0) -> ()
    | _ -> fail "%h printed as %s, not an Erlang float" f s
  done

let test_maps () =
  let st = state () in
  for _ = 1 to 500 do
    let keys = List.init (Random.State.int st 20) (fun _ -> Gen.term ~depth:2 st) in
    let bindings = List.mapi (fun i k -> (k, Int i)) keys in
    match map_of_list bindings with
    | Map kvs as m ->
        List.iter
          (fun k ->
            (* The last binding of a key wins. *)
            let expected = List.fold_left (fun acc (k', v) -> if equal k k' then Some v else acc) None bindings in
            Alcotest.(check (option term)) "map_find" expected (map_find k kvs))
          keys;
        let shuffled = List.map snd (List.sort Stdlib.compare (List.map (fun b -> (Random.State.bits st, b)) (Array.to_list kvs))) in
        Alcotest.check term "the order of bindings does not matter" m (map_of_list shuffled)
    | _ -> fail "map_of_list made no map"
  done

let round_trip name c gen =
  let st = state () in
  for _ = 1 to 1000 do
    let v = gen st in
    match Conv.of_term c (Conv.to_term c v) with
    | Some v' when v' = v -> ()
    | _ -> fail "%s: %s does not round-trip" name (to_string (Conv.to_term c v))
  done

let test_conv () =
  round_trip "int" Conv.int (fun st -> Random.State.bits st - (1 lsl 29));
  round_trip "int64" Conv.int64 (fun st -> Random.State.int64 st Int64.max_int);
  round_trip "float" Conv.float Gen.float;
  round_trip "string" Conv.string (fun st -> String.init (Random.State.int st 10) (fun _ -> Char.chr (Random.State.int st 256)));
  round_trip "list of options" Conv.(list (option (tuple2 int bool)))
    (fun st -> List.init (Random.State.int st 5) (fun i -> if Random.State.bool st then Some (i, Random.State.bool st) else None));
  round_trip "result" Conv.(result (array float) atom)
    (fun st -> if Random.State.bool st then Ok (Array.init 3 (fun _ -> Gen.float st)) else Error "no");
  let st = state () in
  for _ = 1 to 1000 do
    let t = Gen.term st in
    match Conv.of_term Conv.term t with
    | Some t' when t' == t -> ()
    | _ -> fail "term is not the identity"
  done

let tests =
  [
    ( "properties",
      [
        Alcotest.test_case "generated terms are canonical" `Quick test_valid;
        Alcotest.test_case "reflexive, equal to copies" `Quick test_reflexive;
        Alcotest.test_case "antisymmetric" `Quick test_antisymmetric;
        Alcotest.test_case "transitive" `Quick test_transitive;
        Alcotest.test_case "equal terms are interchangeable" `Quick test_substitutive;
        Alcotest.test_case "equal terms hash alike" `Quick test_hash;
        Alcotest.test_case "printed terms read back" `Quick test_print_read;
        Alcotest.test_case "printed floats read back" `Quick test_floats;
        Alcotest.test_case "maps" `Quick test_maps;
        Alcotest.test_case "converters round-trip" `Quick test_conv;
      ] );
  ]
