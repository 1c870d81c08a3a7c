(* Decoders raise [Mismatch] rather than return options: no allocation per
   element, and a nested mismatch unwinds in one step. It never escapes this
   module. *)
exception Mismatch

type 'a t = { expected : string; decode : Term.t -> 'a; encode : 'a -> Term.t }

let int =
  {
    expected = "ocaml:int63()";
    decode = (function Term.Int i -> i | _ -> raise Mismatch);
    encode = (fun i -> Term.Int i);
  }

let int64 =
  {
    expected = "ocaml:int64()";
    decode =
      (function
      | Term.Int i -> Int64.of_int i
      | Term.Bigint z when Z.fits_int64 z -> Z.to_int64 z
      | _ -> raise Mismatch);
    encode = (fun i -> Term.integer_of_z (Z.of_int64 i));
  }

let float =
  {
    expected = "float()";
    decode = (function Term.Float f -> f | _ -> raise Mismatch);
    encode = (fun f -> Term.Float f);
  }

let bool =
  {
    expected = "boolean()";
    decode = (function Term.Atom "true" -> true | Term.Atom "false" -> false | _ -> raise Mismatch);
    encode = (fun b -> Term.Atom (if b then "true" else "false"));
  }

let string =
  {
    expected = "binary()";
    decode = (function Term.Binary b -> Binary.to_string b | _ -> raise Mismatch);
    encode = Term.binary;
  }

let binary =
  {
    expected = "binary()";
    decode = (function Term.Binary b -> b | _ -> raise Mismatch);
    encode = (fun b -> Term.Binary b);
  }

let bytes =
  {
    expected = "binary()";
    decode =
      (function
      | Term.Binary b ->
          let out = Bytes.create (Binary.length b) in
          Binary.blit_to_bytes b 0 out 0 (Binary.length b);
          out
      | _ -> raise Mismatch);
    encode = (fun b -> Term.binary (Bytes.to_string b));
  }

let charlist =
  {
    expected = "string()";
    decode =
      (function
      | Term.List code_points ->
          let text = Buffer.create 16 in
          List.iter
            (function
              | Term.Int c when Uchar.is_valid c -> Buffer.add_utf_8_uchar text (Uchar.of_int c)
              | _ -> raise Mismatch)
            code_points;
          Buffer.contents text
      | _ -> raise Mismatch);
    encode =
      (fun s ->
        let code_points = ref [] in
        if Utf8.for_all (fun c -> code_points := Term.Int c :: !code_points; true) s then
          Term.List (List.rev !code_points)
        else invalid_arg "Erl.Conv.charlist: the string is not UTF-8");
  }

let atom =
  {
    expected = "atom()";
    decode = (function Term.Atom a -> a | _ -> raise Mismatch);
    encode =
      (fun a ->
        let t = Term.Atom a in
        match Term.validate t with
        | Ok () -> t
        | Error _ -> invalid_arg (Printf.sprintf "Erl.Conv.atom: %S cannot be an atom" a));
  }

let unit =
  {
    expected = "ok";
    decode = (function Term.Atom "ok" -> () | _ -> raise Mismatch);
    encode = (fun () -> Term.Atom "ok");
  }

(* [List.map] without using stack in proportion to the list's length. *)
let list_map f xs = List.rev (List.rev_map f xs)

let list c =
  {
    expected = "[" ^ c.expected ^ "]";
    decode = (function Term.List xs -> list_map c.decode xs | _ -> raise Mismatch);
    encode = (fun xs -> Term.List (list_map c.encode xs));
  }

let array c =
  {
    expected = "[" ^ c.expected ^ "]";
    decode = (function Term.List xs -> Array.of_list (list_map c.decode xs) | _ -> raise Mismatch);
    encode = (fun a -> Term.List (Array.fold_right (fun x acc -> c.encode x :: acc) a []));
  }

let map k v =
  {
    expected = Printf.sprintf "#{%s => %s}" k.expected v.expected;
    decode =
      (function
      | Term.Map kvs -> Array.fold_right (fun (x, y) acc -> (k.decode x, v.decode y) :: acc) kvs []
      | _ -> raise Mismatch);
    encode = (fun kvs -> Term.map_of_list (list_map (fun (x, y) -> (k.encode x, v.encode y)) kvs));
  }

let option c =
  {
    expected = "undefined | " ^ c.expected;
    decode = (function Term.Atom "undefined" -> None | t -> Some (c.decode t));
    encode = (function None -> Term.Atom "undefined" | Some v -> c.encode v);
  }

let result ok error =
  {
    expected = Printf.sprintf "{ok, %s} | {error, %s}" ok.expected error.expected;
    decode =
      (function
      | Term.Tuple [| Term.Atom "ok"; v |] -> Ok (ok.decode v)
      | Term.Tuple [| Term.Atom "error"; e |] -> Error (error.decode e)
      | _ -> raise Mismatch);
    encode =
      (function
      | Ok v -> Term.Tuple [| Term.Atom "ok"; ok.encode v |]
      | Error e -> Term.Tuple [| Term.Atom "error"; error.encode e |]);
  }

let tuple2 a b =
  {
    expected = Printf.sprintf "{%s, %s}" a.expected b.expected;
    decode = (function Term.Tuple [| x; y |] -> (a.decode x, b.decode y) | _ -> raise Mismatch);
    encode = (fun (x, y) -> Term.Tuple [| a.encode x; b.encode y |]);
  }

let tuple3 a b c =
  {
    expected = Printf.sprintf "{%s, %s, %s}" a.expected b.expected c.expected;
    decode =
      (function
      | Term.Tuple [| x; y; z |] -> (a.decode x, b.decode y, c.decode z) | _ -> raise Mismatch);
    encode = (fun (x, y, z) -> Term.Tuple [| a.encode x; b.encode y; c.encode z |]);
  }

let tuple4 a b c d =
  {
    expected = Printf.sprintf "{%s, %s, %s, %s}" a.expected b.expected c.expected d.expected;
    decode =
      (function
      | Term.Tuple [| w; x; y; z |] -> (a.decode w, b.decode x, c.decode y, d.decode z)
      | _ -> raise Mismatch);
    encode =
      (fun (w, x, y, z) -> Term.Tuple [| a.encode w; b.encode x; c.encode y; d.encode z |]);
  }

let term = { expected = "term()"; decode = Fun.id; encode = Fun.id }

let pid =
  {
    expected = "pid()";
    decode = (function Term.Pid p -> p | _ -> raise Mismatch);
    encode = (fun p -> Term.Pid p);
  }

let port =
  {
    expected = "port()";
    decode = (function Term.Port p -> p | _ -> raise Mismatch);
    encode = (fun p -> Term.Port p);
  }

let reference =
  {
    expected = "reference()";
    decode = (function Term.Ref r -> r | _ -> raise Mismatch);
    encode = (fun r -> Term.Ref r);
  }

let make ~expected decode encode =
  { expected; decode = (fun t -> match decode t with Some v -> v | None -> raise Mismatch); encode }

let view ~read ~write c =
  { expected = c.expected; decode = (fun t -> read (c.decode t)); encode = (fun v -> c.encode (write v)) }

let expected c = c.expected
let of_term c t = match c.decode t with v -> Some v | exception Mismatch -> None
let to_term c v = c.encode v

type _ fn =
  | Returning : 'a t -> 'a fn
  | Nullary : 'a t -> (unit -> 'a) fn
  | Function : 'a t * 'b fn -> ('a -> 'b) fn

let ( @-> ) a f = Function (a, f)
let returning r = Returning r
let nullary r = Nullary r

let rec arity : type f. f fn -> int = function
  | Returning _ | Nullary _ -> 0
  | Function (_, rest) -> 1 + arity rest

(* Built from the same descriptions as badarg errors, so that what a listing of
   the exports promises is what a refused argument says was expected. *)
let signature fn =
  let described arguments result = Printf.sprintf "fun((%s) -> %s)" (String.concat ", " (List.rev arguments)) result in
  let rec go : type f. string list -> f fn -> string =
   fun arguments -> function
    | Returning r -> described arguments r.expected
    | Nullary r -> described arguments r.expected
    | Function (c, rest) -> go (c.expected :: arguments) rest
  in
  go [] fn

type error =
  | Badarity of { expected : int; got : int }
  | Badarg of { position : int; expected : string; got : Term.t }

let apply fn f args =
  let badarity = Badarity { expected = arity fn; got = List.length args } in
  let rec go : type f. f fn -> f -> int -> Term.t list -> (Term.t, error) result =
   fun fn f position args ->
    match (fn, args) with
    | Returning r, [] -> Ok (r.encode f)
    | Nullary r, [] -> Ok (r.encode (f ()))
    | Function (c, rest), x :: xs -> (
        match c.decode x with
        | v -> go rest (f v) (position + 1) xs
        | exception Mismatch -> Error (Badarg { position; expected = c.expected; got = x }))
    | (Returning _ | Nullary _), _ :: _ | Function _, [] -> Error badarity
  in
  (* Check the count first, so that it is reported before any badarg. *)
  match badarity with
  | Badarity { expected; got } when expected <> got -> Error badarity
  | _ -> go fn f 1 args

let error_to_term = function
  | Badarity { expected; got } -> Term.Tuple [| Term.Atom "badarity"; Term.Int expected; Term.Int got |]
  | Badarg { position; expected; got } ->
      Term.Tuple
        [|
          Term.Atom "badarg";
          Term.map_of_list
            [ (Term.Atom "argument", Term.Int position); (Term.Atom "expected", Term.binary expected); (Term.Atom "got", got) ];
        |]
