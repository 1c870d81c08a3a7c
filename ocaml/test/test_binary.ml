open Erl

let off_heap s = Binary.of_bigstring (Gen.bigstring s)

let pattern n = String.init n (fun i -> Char.chr (i * 7 mod 251))
let long = pattern (Binary.heap_max + 100)

let raises name f =
  match f () with
  | _ -> Alcotest.failf "%s: no Invalid_argument" name
  | exception Invalid_argument _ -> ()

let test_representations () =
  Alcotest.(check int) "heap_max: Max_young_wosize words less a byte" ((256 * (Sys.word_size / 8)) - 1) Binary.heap_max;
  Alcotest.(check bool) "of_string stays on the heap" false (Binary.is_off_heap (Binary.of_string long));
  Alcotest.(check bool) "a long bigstring is copied off the heap" true (Binary.is_off_heap (off_heap long));
  Alcotest.(check bool) "a short one onto the heap" false (Binary.is_off_heap (off_heap "abc"));
  let source = Gen.bigstring long in
  let b = Binary.of_bigstring source in
  Bigarray.Array1.set source 0 'X';
  Alcotest.(check char) "of_bigstring copies" long.[0] (Binary.get b 0)

let test_accessors () =
  List.iter
    (fun (name, b, s) ->
      Alcotest.(check int) (name ^ ": length") (String.length s) (Binary.length b);
      Alcotest.(check string) (name ^ ": to_string") s (Binary.to_string b);
      Alcotest.(check char) (name ^ ": get") s.[String.length s - 1] (Binary.get b (String.length s - 1));
      Alcotest.(check string) (name ^ ": sub") (String.sub s 3 40) (Binary.sub b ~pos:3 ~len:40);
      let dst = Bytes.make 50 '.' in
      Binary.blit_to_bytes b 5 dst 2 45;
      Alcotest.(check string) (name ^ ": blit") (".." ^ String.sub s 5 45 ^ "...") (Bytes.to_string dst);
      raises (name ^ ": get -1") (fun () -> Binary.get b (-1));
      raises (name ^ ": get length") (fun () -> Binary.get b (String.length s));
      raises (name ^ ": sub past the end") (fun () -> Binary.sub b ~pos:(String.length s - 1) ~len:2);
      raises (name ^ ": sub negative") (fun () -> Binary.sub b ~pos:0 ~len:(-1));
      raises (name ^ ": blit past dst") (fun () -> Binary.blit_to_bytes b 0 dst 10 45))
    [ ("heap", Binary.of_string long, long); ("off heap", off_heap long, long) ]

let test_order () =
  let prefix = String.sub long 0 (String.length long - 1) in
  let raised = prefix ^ "\255" in
  let forms s = [ Binary.of_string s; off_heap s ] in
  List.iter
    (fun a ->
      List.iter
        (fun b ->
          Alcotest.(check bool) "equal across forms" true (Binary.equal a b);
          Alcotest.(check int) "compare across forms" 0 (Binary.compare a b))
        (forms long);
      List.iter (fun p -> Alcotest.(check int) "a prefix first" 1 (Binary.compare a p)) (forms prefix);
      List.iter (fun r -> Alcotest.(check int) "bytewise, unsigned" (-1) (Binary.compare a r)) (forms raised);
      List.iter (fun r -> Alcotest.(check int) "and the other way" 1 (Binary.compare r a)) (forms raised))
    (forms long);
  (* In terms: a Bitstring against an off-heap Binary compares bit by bit. *)
  let bits = Term.bitstring (long ^ "\128") ((8 * String.length long) + 1) in
  Alcotest.(check int) "binary before a longer bitstring" (-1) (Term.compare (Term.Binary (off_heap long)) bits)

let test_hash () =
  (* Every length up to past heap_max, so the four-byte steps end every way. *)
  for n = 0 to Binary.heap_max + 9 do
    let s = pattern n in
    if n > Binary.heap_max - 5 || n < 70 then
      Alcotest.(check int) (Printf.sprintf "%d bytes: both forms hash alike" n)
        (Binary.hash (Binary.of_string s)) (Binary.hash (off_heap s))
  done;
  let s = pattern 4099 in
  let h = Binary.hash (Binary.of_string s) in
  Alcotest.(check bool) "non-negative" true (h >= 0);
  (* Changing any one byte, the last ones included, changes the hash. *)
  for i = 0 to String.length s - 1 do
    let changed = Bytes.of_string s in
    Bytes.set changed i (Char.chr ((Char.code s.[i] + 1) land 255));
    let changed = Bytes.to_string changed in
    if Binary.hash (off_heap changed) = h then Alcotest.failf "byte %d is not hashed" i
  done;
  Alcotest.(check bool) "the length counts" true
    (Binary.hash (Binary.of_string "a") <> Binary.hash (Binary.of_string "a\000"))

let test_converters () =
  let b = off_heap long in
  Alcotest.(check string) "Conv.string copies out" long (Conv.of_term Conv.string (Term.Binary b) |> Option.get);
  Alcotest.(check bool)
    "Conv.binary takes it as it is" true
    (Conv.of_term Conv.binary (Term.Binary b) |> Option.get == b);
  Alcotest.(check bytes) "Conv.bytes" (Bytes.of_string long) (Conv.of_term Conv.bytes (Term.Binary b) |> Option.get);
  Alcotest.(check string) "printing" (Term.to_string (Term.binary "ab")) (Term.to_string (Term.Binary (off_heap "ab")))

let tests =
  [
    ( "binary",
      [
        Alcotest.test_case "representations" `Quick test_representations;
        Alcotest.test_case "accessors" `Quick test_accessors;
        Alcotest.test_case "order" `Quick test_order;
        Alcotest.test_case "hash" `Quick test_hash;
        Alcotest.test_case "converters" `Quick test_converters;
      ] );
  ]
