open Erl.Term

(* A recursive-descent reader over [s], [pos] being the next character. *)
type reader = { s : string; mutable pos : int }

let fail r what = failwith (Printf.sprintf "Parse: %s at %d in %S" what r.pos r.s)
let peek r = if r.pos < String.length r.s then r.s.[r.pos] else '\000'
let advance r = r.pos <- r.pos + 1

let expect r c =
  if peek r = c then advance r else fail r (Printf.sprintf "%C expected" c)

let literal r word =
  String.iter (expect r) word

let take_while r p =
  let start = r.pos in
  while r.pos < String.length r.s && p r.s.[r.pos] do advance r done;
  String.sub r.s start (r.pos - start)

let digits r = take_while r (function '0' .. '9' -> true | _ -> false)

(* One character of a quoted atom or string, escapes decoded, as a byte
   string (UTF-8 sequences are kept whole by the caller). *)
let quoted_char r =
  match peek r with
  | '\\' -> (
      advance r;
      let c = peek r in
      advance r;
      match c with
      | 'n' -> "\n" | 'r' -> "\r" | 't' -> "\t" | 'v' -> "\011" | 'b' -> "\b" | 'f' -> "\012"
      | 'e' -> "\027"
      | '0' .. '7' ->
          let rest = take_while r (function '0' .. '7' -> true | _ -> false) in
          String.make 1 (Char.chr (int_of_string ("0o" ^ String.make 1 c ^ rest)))
      | c -> String.make 1 c)
  | c -> advance r; String.make 1 c

let quoted r q =
  expect r q;
  let b = Buffer.create 16 in
  while peek r <> q do
    if r.pos >= String.length r.s then fail r "unterminated quote";
    Buffer.add_string b (quoted_char r)
  done;
  advance r;
  Buffer.contents b

(* The code points of a UTF-8 string. *)
let code_points s =
  let d = String.to_seq s |> List.of_seq in
  let rec go = function
    | [] -> []
    | c :: rest when Char.code c < 0x80 -> Char.code c :: go rest
    | c :: c1 :: rest when Char.code c land 0xe0 = 0xc0 ->
        (((Char.code c land 0x1f) lsl 6) lor (Char.code c1 land 0x3f)) :: go rest
    | _ -> failwith "Parse: only 1- and 2-byte UTF-8 in strings"
  in
  go d

let number r =
  let sign = if peek r = '-' then (advance r; "-") else "" in
  let whole = digits r in
  if peek r = '.' then begin
    advance r;
    let frac = digits r in
    let exp =
      if peek r <> 'e' then ""
      else begin
        advance r;
        let sign = if peek r = '-' then (advance r; "-") else "" in
        "e" ^ sign ^ digits r
      end
    in
    Float (float_of_string (sign ^ whole ^ "." ^ frac ^ exp))
  end
  else integer_of_z (Z.of_string (sign ^ whole))

let rec value r =
  match peek r with
  | '-' | '0' .. '9' -> number r
  | 'a' .. 'z' | '\128' .. '\255' ->
      (* UTF-8 bytes: Latin-1 letters, the only ones in unquoted atoms. *)
      Atom (take_while r (function 'a' .. 'z' | 'A' .. 'Z' | '0' .. '9' | '_' | '@' | '\128' .. '\255' -> true | _ -> false))
  | '\'' -> Atom (quoted r '\'')
  | '"' -> List (List.map (fun c -> Int c) (code_points (quoted r '"')))
  | '{' -> advance r; Tuple (Array.of_list (elements r '}'))
  | '[' ->
      advance r;
      if peek r = ']' then (advance r; nil)
      else
        let xs = sequence r in
        let tail = if peek r = '|' then (advance r; value r) else nil in
        expect r ']';
        improper xs tail
  | '#' ->
      literal r "#{";
      if peek r = '}' then (advance r; map_of_list [])
      else
        let rec bindings acc =
          let k = value r in
          literal r " => ";
          let v = value r in
          match peek r with
          | ',' -> advance r; bindings ((k, v) :: acc)
          | _ -> expect r '}'; map_of_list (List.rev ((k, v) :: acc))
        in
        bindings []
  | '<' -> literal r "<<"; binary r
  | _ -> fail r "term expected"

and sequence r =
  let x = value r in
  if peek r = ',' then (advance r; x :: sequence r) else [ x ]

and elements r close =
  if peek r = close then (advance r; [])
  else
    let xs = sequence r in
    expect r close;
    xs

(* The segments of a binary after "<<": a string, or integers the last of
   which may have a size. *)
and binary r =
  let bytes = Buffer.create 16 in
  let finish bits = literal r ">>"; bitstring (Buffer.contents bytes) bits in
  if peek r = '>' then finish 0
  else if peek r = '"' then begin
    let text = quoted r '"' in
    if peek r = '/' then (literal r "/utf8"; Buffer.add_string bytes text)
    else List.iter (fun c -> Buffer.add_char bytes (Char.chr c)) (code_points text);
    finish (8 * Buffer.length bytes)
  end
  else
    let rec segments () =
      let n = int_of_string (digits r) in
      match peek r with
      | ',' -> Buffer.add_char bytes (Char.chr n); advance r; segments ()
      | ':' ->
          advance r;
          let size = int_of_string (digits r) in
          let total = (8 * Buffer.length bytes) + size in
          Buffer.add_char bytes (Char.chr (n lsl (8 - size)));
          finish total
      | _ -> Buffer.add_char bytes (Char.chr n); finish (8 * Buffer.length bytes)
    in
    segments ()

let term s =
  let r = { s; pos = 0 } in
  let t = value r in
  if r.pos <> String.length s then fail r "end expected";
  t
