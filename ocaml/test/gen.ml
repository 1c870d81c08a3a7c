open Erl.Term

let pick st a = a.(Random.State.int st (Array.length a))

let float st =
  match Random.State.int st 4 with
  | 0 -> pick st [| 0.0; -0.0; 1.0; -1.5; 0.1; 2.0; 1e300; 5e-324; 0x1p53 |]
  | 1 -> Random.State.float st 2000.0 -. 1000.0
  | _ ->
      let f = Int64.float_of_bits (Random.State.int64 st Int64.max_int) in
      let f = if Random.State.bool st then f else -.f in
      if Float.is_finite f then f else 1.0

let integer st =
  match Random.State.int st 4 with
  | 0 -> Int (pick st [| 0; 1; -1; 2; 255; 256; max_int; min_int |])
  | 1 -> Int (Random.State.bits st - (1 lsl 29))
  | 2 -> integer_of_z (Z.of_int64 (Random.State.int64 st Int64.max_int))
  | _ ->
      let z = Z.shift_left (Z.of_int (1 + Random.State.int st 3)) (62 + Random.State.int st 70) in
      integer_of_z (if Random.State.bool st then z else Z.neg z)

let bytes st =
  String.init (Random.State.int st 4) (fun _ -> pick st [| 'a'; 'b'; '\000'; '\255'; '\n' |])

let bigstring s =
  let b = Bigarray.Array1.create Bigarray.char Bigarray.c_layout (String.length s) in
  String.iteri (Bigarray.Array1.set b) s;
  b

(* Now and then a binary past Erl.Binary.heap_max, in either representation
   (the converters put it off the heap, OCaml code may hold it as a string),
   sharing a long prefix with the others so that equal ones are frequent. *)
let binary_term st =
  if Random.State.int st 8 <> 0 then binary (bytes st)
  else
    let s = String.make Erl.Binary.heap_max 'a' ^ bytes st in
    if Random.State.bool st then binary s
    else Binary (Erl.Binary.of_bigstring (bigstring s))

let atom st = pick st [| "a"; "b"; "ok"; "undefined"; "Caps"; "é"; ""; "it's" |]
let node st = pick st [| "a@h"; "b@h"; "nonode@nohost" |]
let u32 st = pick st [| 0; 1; 2; 0xffff_ffff |]

let pid st = Forge.pid ~node:(node st) ~id:(u32 st) ~serial:(u32 st) ~creation:(u32 st)

let special st =
  match Random.State.int st 5 with
  | 0 -> Pid (pid st)
  | 1 -> Port (Forge.port ~node:(node st) ~id:(pick st [| 0L; 1L; -1L |]) ~creation:(u32 st))
  | 2 ->
      Ref
        (Forge.reference ~node:(node st) ~creation:(u32 st)
           (Array.init (1 + Random.State.int st 4) (fun _ -> u32 st)))
  | 3 -> Fun (Export { module_ = atom st; function_ = atom st; arity = Random.State.int st 3 })
  | _ ->
      Fun
        (Local
           {
             arity = 0;
             uniq = String.make 16 'u';
             index = u32 st;
             module_ = atom st;
             old_index = 0;
             old_uniq = u32 st;
             pid = pid st;
             free_vars = List.init (Random.State.int st 3) (fun _ -> Int (Random.State.int st 2));
           })

let rec any ~specials depth st =
  let leaf () =
    match Random.State.int st (if specials then 7 else 6) with
    | 0 -> integer st
    | 1 -> Float (float st)
    | 2 -> Atom (atom st)
    | 3 -> binary_term st
    | 4 -> let s = bytes st in bitstring s (Random.State.int st (8 * String.length s + 1))
    | 5 -> nil
    | _ -> special st
  in
  if depth <= 0 || Random.State.int st 3 = 0 then leaf ()
  else
    let sub () = any ~specials (depth - 1) st in
    let some () = List.init (Random.State.int st 4) (fun _ -> sub ()) in
    match Random.State.int st 5 with
    | 0 -> Tuple (Array.of_list (some ()))
    | 1 -> map_of_list (List.map (fun k -> (k, sub ())) (some ()))
    | 2 -> List (some ())
    | 3 -> improper (some ()) (sub ())
    | _ -> List (List.init (Random.State.int st 4) (fun _ -> Int (pick st [| 97; 10; 233; 7 |])))

let term ?(depth = 4) st = any ~specials:true depth st
let printable_term ?(depth = 4) st = any ~specials:false depth st

(* A pid no term of [term] holds: the creator [copy] gives local funs. *)
let other_creator = Forge.pid ~node:"copy@h" ~id:7 ~serial:7 ~creation:7

let rec copy = function
  | Int i -> integer_of_z (Z.of_int i)
  | Bigint z -> Bigint (Z.neg (Z.neg z))
  | Float f -> Float (if f = 0.0 then -.f else f)
  | Atom a -> Atom (String.init (String.length a) (String.get a))
  | Tuple xs -> Tuple (Array.map copy xs)
  | Map kvs -> Map (Array.map (fun (k, v) -> (copy k, copy v)) kvs)
  | List xs -> List (List.map copy xs)
  | Improper (xs, t) -> Improper (List.map copy xs, copy t)
  | Fun (Local f) ->
      Fun
        (Local
           { f with arity = f.arity + 1; uniq = String.make 16 'v'; old_index = f.old_index + 1;
             pid = other_creator; free_vars = List.map copy f.free_vars })
  | Ref r ->
      let node, creation, words = Forge.reference_fields r in
      Ref (Forge.reference ~node ~creation (Array.append words [| 0 |]))
  | Binary b -> Binary (other_form b)
  | (Port _ | Pid _ | Fun (Export _) | Bitstring _ | Handle _) as t -> t

(* The same bytes in the other representation, or in a fresh string when they
   are short enough for the heap. *)
and other_form b =
  let s = Erl.Binary.to_string b in
  if Erl.Binary.is_off_heap b then Erl.Binary.of_string s
  else if String.length s > Erl.Binary.heap_max then Erl.Binary.of_bigstring (bigstring s)
  else Erl.Binary.of_string (String.init (String.length s) (String.get s))

let seed () =
  match Sys.getenv_opt "CAMLBEAM_SEED" with
  | Some s -> int_of_string s
  | None -> 20240601
