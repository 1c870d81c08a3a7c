(* The constructor order of [t] and [fun_] is the memory layout documented in
   term.mli and README.md, which the C++ converters rely on: never reorder.
   The same goes for the fields of [pid], [port] and [reference], which
   term.mli keeps abstract so that OCaml code cannot build them: only the
   converters do, from what Erlang sent. *)

type pid = { node : string; id : int; serial : int; creation : int }
type port = { node : string; id : int64; creation : int }
type reference = { node : string; creation : int; ids : int array }

(* The contents of every kind of handle: each [Handle.kind] adds a constructor
   of its own, so [Handle.get] finds a value of the kind it asks for, and only
   that, without [Obj.magic]. *)
type contents = ..

(* The converters read [id] and [monitor] (term.mli, "Memory layout"): keep
   them first. *)
type handle = {
  id : int;
  monitor : pid option;
  kind : string;
  contents : contents;
  on_down : unit -> unit;
  down : bool Atomic.t;  (* on_down has run, or is running *)
}

type t =
  | Int of int
  | Bigint of Z.t
  | Float of float
  | Atom of string
  | Ref of reference
  | Fun of fun_
  | Port of port
  | Pid of pid
  | Tuple of t array
  | Map of (t * t) array
  | List of t list
  | Improper of t list * t
  | Binary of Binary.t
  | Bitstring of string * int
  | Handle of handle

and fun_ =
  | Local of {
      arity : int;
      uniq : string;
      index : int;
      module_ : string;
      old_index : int;
      old_uniq : int;
      pid : pid;
      free_vars : t list;
    }
  | Export of { module_ : string; function_ : string; arity : int }

let nil = List []

(* Comparison *)

(* The position of a term's type in Erlang's term order. *)
let rank = function
  | Int _ | Bigint _ | Float _ -> 0
  | Atom _ -> 1
  | Ref _ | Handle _ -> 2
  | Fun _ -> 3
  | Port _ -> 4
  | Pid _ -> 5
  | Tuple _ -> 6
  | Map _ -> 7
  | List [] -> 8
  | List (_ :: _) | Improper _ -> 9
  | Binary _ | Bitstring _ -> 10

(* Lexicographic combination of comparison results. Both sides are always
   evaluated: only use it on cheap comparisons. *)
let ( ||| ) c1 c2 = if c1 <> 0 then c1 else c2

let compare_pids (a : pid) (b : pid) =
  Int.compare a.serial b.serial
  ||| Int.compare a.id b.id
  ||| String.compare a.node b.node
  ||| Int.compare a.creation b.creation

let compare_ports (a : port) (b : port) =
  String.compare a.node b.node
  ||| Int.compare a.creation b.creation
  ||| Int64.unsigned_compare a.id b.id

(* Reference numbers compare from the most significant word down; missing
   words count as zero. *)
let compare_refs (a : reference) (b : reference) =
  let word ids i = if i < Array.length ids then ids.(i) else 0 in
  let rec from i =
    if i < 0 then 0
    else
      let c = Int.compare (word a.ids i) (word b.ids i) in
      if c <> 0 then c else from (i - 1)
  in
  String.compare a.node b.node
  ||| Int.compare a.creation b.creation
  ||| from (max (Array.length a.ids) (Array.length b.ids) - 1)

let used_bits = function Bitstring (_, bits) -> bits | _ -> 8

let bitstring_bytes = function
  | Binary b -> b
  | Bitstring (s, _) -> Binary.of_string s
  | _ -> invalid_arg "Erl.Term.bitstring_bytes"

(* Comparisons still to be made, innermost first. Keeping them in a heap
   allocated list instead of the stack lets [compare] handle any depth. *)
type pending =
  | Elements of t array * t array * int  (* tuples, from an index on *)
  | Keys of (t * t) array * (t * t) array * int  (* maps, from an index on *)
  | Values of (t * t) array * (t * t) array * int
  | Cells of t list * t * t list * t  (* what is left of two lists, tails *)

let compare a b =
  let rec next = function
    | [] -> 0
    | Elements (xs, ys, i) :: rest ->
        if i = Array.length xs then next rest
        else terms xs.(i) ys.(i) (Elements (xs, ys, i + 1) :: rest)
    | Keys (xs, ys, i) :: rest ->
        if i = Array.length xs then next rest
        else terms (fst xs.(i)) (fst ys.(i)) (Keys (xs, ys, i + 1) :: rest)
    | Values (xs, ys, i) :: rest ->
        if i = Array.length xs then next rest
        else terms (snd xs.(i)) (snd ys.(i)) (Values (xs, ys, i + 1) :: rest)
    | Cells (x :: xs, tx, y :: ys, ty) :: rest ->
        terms x y (Cells (xs, tx, ys, ty) :: rest)
    | Cells ([], tx, [], ty) :: rest -> terms tx ty rest
    (* One list has run out: compare its tail with the rest of the other,
       a non-empty list ([Improper (ys, [])] is not canonical, but compares
       as the list it stands for). *)
    | Cells ([], tx, ys, ty) :: rest -> terms tx (Improper (ys, ty)) rest
    | Cells (xs, tx, [], ty) :: rest -> terms (Improper (xs, tx)) ty rest
  and terms a b rest =
    if a == b then next rest
    else
      match (a, b) with
      | Int x, Int y -> decided (Int.compare x y) rest
      | Int x, Bigint y -> decided (Z.compare (Z.of_int x) y) rest
      | Bigint x, Int y -> decided (Z.compare x (Z.of_int y)) rest
      | Bigint x, Bigint y -> decided (Z.compare x y) rest
      | Float x, Float y -> decided (Float.compare x y) rest
      | (Int _ | Bigint _), Float _ -> -1
      | Float _, (Int _ | Bigint _) -> 1
      | Atom x, Atom y -> decided (String.compare x y) rest
      | Ref x, Ref y -> decided (compare_refs x y) rest
      (* Erlang orders a resource among references: after every reference
         here, by the number each handle got when it was made. *)
      | Ref _, Handle _ -> -1
      | Handle _, Ref _ -> 1
      | Handle x, Handle y -> decided (Int.compare x.id y.id) rest
      | Fun x, Fun y -> funs x y rest
      | Port x, Port y -> decided (compare_ports x y) rest
      | Pid x, Pid y -> decided (compare_pids x y) rest
      | Tuple xs, Tuple ys ->
          decided
            (Int.compare (Array.length xs) (Array.length ys))
            (Elements (xs, ys, 0) :: rest)
      | Map xs, Map ys ->
          decided
            (Int.compare (Array.length xs) (Array.length ys))
            (Keys (xs, ys, 0) :: Values (xs, ys, 0) :: rest)
      | List [], List [] -> next rest
      | List (_ :: _ as xs), List (_ :: _ as ys) -> next (Cells (xs, nil, ys, nil) :: rest)
      | List (_ :: _ as xs), Improper (ys, ty) -> next (Cells (xs, nil, ys, ty) :: rest)
      | Improper (xs, tx), List (_ :: _ as ys) -> next (Cells (xs, tx, ys, nil) :: rest)
      | Improper (xs, tx), Improper (ys, ty) ->
          next (Cells (xs, tx, ys, ty) :: rest)
      | (Binary _ | Bitstring _), (Binary _ | Bitstring _) ->
          (* With the unused bits zero, bytewise order then length is the
             bitwise order. *)
          decided
            (Binary.compare (bitstring_bytes a) (bitstring_bytes b)
            ||| Int.compare (used_bits a) (used_bits b))
            rest
      | _ ->
          (* All pairs of the same rank are matched above. *)
          Int.compare (rank a) (rank b)
  and funs f g rest =
    match (f, g) with
    | Local f, Local g ->
        decided
          (String.compare f.module_ g.module_
          ||| Int.compare f.index g.index
          ||| Int.compare f.old_uniq g.old_uniq
          ||| Int.compare (List.length f.free_vars) (List.length g.free_vars))
          (Cells (f.free_vars, nil, g.free_vars, nil) :: rest)
    | Local _, Export _ -> -1
    | Export _, Local _ -> 1
    | Export f, Export g ->
        decided
          (String.compare f.module_ g.module_
          ||| String.compare f.function_ g.function_
          ||| Int.compare f.arity g.arity)
          rest
  and decided c rest = if c <> 0 then c else next rest in
  terms a b []

let equal a b = compare a b = 0

(* Hashing *)

(* [hash] takes at most this many steps (a term, or the next element of a
   container), breadth first: constant time on any term, and the top of a
   term weighs most, as in [Hashtbl.hash]. *)
let hash_steps = 64

(* One step of FNV-1a, on OCaml's 63-bit ints. *)
let mix h x = (h lxor x) * 0x100000001b3

(* What is left to hash of a container, or a whole term. *)
type hash_step =
  | Whole of t
  | Elements of t array * int
  | Bindings of (t * t) array * int
  | Cells of t list * t

(* Reference numbers without their high zero words, which [compare_refs]
   counts as missing. *)
let significant_words ids =
  let n = ref (Array.length ids) in
  while !n > 0 && ids.(!n - 1) = 0 do decr n done;
  Array.sub ids 0 !n

(* Every field [compare] reads, and only those: equal terms mix the same
   values in the same order. *)
let hash term =
  let h = ref 0 in
  let add x = h := mix !h x in
  let queue = Queue.create () in
  let later step = Queue.add step queue in
  later (Whole term);
  let steps = ref hash_steps in
  while !steps > 0 && not (Queue.is_empty queue) do
    decr steps;
    match Queue.take queue with
    | Whole t -> (
        add (rank t);
        match t with
        | Int i -> add (Hashtbl.hash i)
        | Bigint z -> add (if Z.fits_int z then Hashtbl.hash (Z.to_int z) else Z.hash z)
        | Float f -> add (Hashtbl.hash (f +. 0.0)) (* -0.0 +. 0.0 is 0.0 *)
        | Atom a -> add (Hashtbl.hash a)
        | Ref r ->
            add (Hashtbl.hash r.node);
            add r.creation;
            add (Hashtbl.hash (significant_words r.ids))
        | Fun (Local f) ->
            add (Hashtbl.hash f.module_);
            add f.index;
            add f.old_uniq;
            later (Cells (f.free_vars, nil))
        | Fun (Export f) ->
            add (Hashtbl.hash f.module_);
            add (Hashtbl.hash f.function_);
            add f.arity
        | Port p ->
            add (Hashtbl.hash p.node);
            add p.creation;
            add (Hashtbl.hash p.id)
        | Pid p ->
            add p.serial;
            add p.id;
            add (Hashtbl.hash p.node);
            add p.creation
        | Tuple xs ->
            add (Array.length xs);
            later (Elements (xs, 0))
        | Map kvs ->
            add (Array.length kvs);
            later (Bindings (kvs, 0))
        | List xs -> later (Cells (xs, nil))
        | Improper (xs, tail) -> later (Cells (xs, tail))
        | Binary _ | Bitstring _ ->
            add (Binary.hash (bitstring_bytes t));
            add (used_bits t)
        | Handle h -> add h.id)
    | Elements (xs, i) ->
        if i < Array.length xs then begin
          later (Whole xs.(i));
          later (Elements (xs, i + 1))
        end
    | Bindings (kvs, i) ->
        if i < Array.length kvs then begin
          let k, v = kvs.(i) in
          later (Whole k);
          later (Whole v);
          later (Bindings (kvs, i + 1))
        end
    | Cells (x :: xs, tail) ->
        later (Whole x);
        later (Cells (xs, tail))
    | Cells ([], List []) -> add 1 (* [1, 2] is not [1 | 2] *)
    | Cells ([], tail) ->
        add 2;
        later (Whole tail)
  done;
  !h land max_int

(* Construction *)

let binary s = Binary (Binary.of_string s)

let integer_of_z z = if Z.fits_int z then Int (Z.to_int z) else Bigint z

(* [xs @ ys] without using stack in proportion to [xs]. *)
let append xs ys = List.rev_append (List.rev xs) ys

let improper xs tail =
  match (xs, tail) with
  | [], _ -> tail
  | _, List ys -> List (append xs ys)
  | _, Improper (ys, tail) -> Improper (append xs ys, tail)
  | _ -> Improper (xs, tail)

let bitstring bytes n =
  if n < 0 || n > 8 * String.length bytes then invalid_arg "Erl.Term.bitstring";
  let len = (n + 7) / 8 and bits = n land 7 in
  if bits = 0 then Binary (Binary.of_string (String.sub bytes 0 len))
  else
    let mask = (0xff lsl (8 - bits)) land 0xff in
    let byte i =
      if i < len - 1 then bytes.[i] else Char.chr (Char.code bytes.[i] land mask)
    in
    Bitstring (String.init len byte, bits)

let compare_keys (k1, _) (k2, _) = compare k1 k2

let map_of_array bindings =
  let n = Array.length bindings in
  let rec strictly_sorted i =
    i >= n - 1 || (compare_keys bindings.(i) bindings.(i + 1) < 0 && strictly_sorted (i + 1))
  in
  if strictly_sorted 0 then Map (Array.copy bindings)
  else begin
    let sorted = Array.copy bindings in
    (* Stable: of equal keys, the later binding stays last. *)
    Array.stable_sort compare_keys sorted;
    let kept = ref [] in
    for i = n - 1 downto 0 do
      if i = n - 1 || compare_keys sorted.(i) sorted.(i + 1) <> 0 then
        kept := sorted.(i) :: !kept
    done;
    Map (Array.of_list !kept)
  end

let map_of_list bindings = map_of_array (Array.of_list bindings)

let map_find key bindings =
  let rec search lo hi =
    if lo >= hi then None
    else
      let mid = lo + ((hi - lo) / 2) in
      let k, v = bindings.(mid) in
      let c = compare key k in
      if c = 0 then Some v else if c < 0 then search lo mid else search (mid + 1) hi
  in
  search 0 (Array.length bindings)

let valid_atom_text s =
  let count = ref 0 in
  Utf8.for_all (fun _ -> incr count; !count <= 255) s

(* Checking *)

let is_u32 n = n >= 0 && n <= 0xffff_ffff

let check_node node =
  if valid_atom_text node then None else Some "node name is not a valid atom"

let validate t =
  let rec check = function
    | [] -> Ok ()
    | t :: rest -> (
        match problem t with
        | Some why -> Error (why ^ " in " ^ shape t)
        | None -> check (children t rest))
  and problem = function
    | Int _ | Binary _ -> None
    | Bigint z -> if Z.fits_int z then Some "Bigint that fits int" else None
    | Float f -> if Float.is_finite f then None else Some "non-finite float"
    | Atom a -> if valid_atom_text a then None else Some "invalid atom text"
    | Ref r ->
        let n = Array.length r.ids in
        if n < 1 || n > 5 then Some "reference with other than 1 to 5 words"
        else if not (Array.for_all is_u32 r.ids && is_u32 r.creation) then
          Some "reference number out of range"
        else check_node r.node
    | Fun (Local f) ->
        if String.length f.uniq <> 16 then Some "fun uniq is not 16 bytes"
        else if not (valid_atom_text f.module_) then Some "invalid module name"
        else problem (Pid f.pid)
    | Fun (Export f) ->
        if not (valid_atom_text f.module_ && valid_atom_text f.function_) then
          Some "invalid module or function name"
        else if f.arity < 0 || f.arity > 255 then Some "arity out of range"
        else None
    | Port p -> if is_u32 p.creation then check_node p.node else Some "port creation out of range"
    | Pid p ->
        if is_u32 p.id && is_u32 p.serial && is_u32 p.creation then check_node p.node
        else Some "pid number out of range"
    | Tuple _ -> None
    | Map kvs ->
        let rec sorted i =
          i >= Array.length kvs - 1
          || (compare_keys kvs.(i) kvs.(i + 1) < 0 && sorted (i + 1))
        in
        if sorted 0 then None else Some "map keys not strictly increasing"
    | List _ -> None
    | Improper ([], _) -> Some "improper list without elements"
    | Improper (_, (List _ | Improper _)) -> Some "improper list whose tail is a list"
    | Improper _ -> None
    | Bitstring (s, bits) ->
        let n = String.length s in
        if n = 0 then Some "empty Bitstring"
        else if bits < 1 || bits > 7 then Some "Bitstring with other than 1 to 7 bits"
        else if Char.code s.[n - 1] land ((1 lsl (8 - bits)) - 1) <> 0 then
          Some "Bitstring with unused bits set"
        else None
    | Handle _ -> None
  and children t rest =
    match t with
    | Fun (Local f) -> List.rev_append f.free_vars rest
    | Tuple xs -> Array.fold_left (fun acc x -> x :: acc) rest xs
    | Map kvs -> Array.fold_left (fun acc (k, v) -> k :: v :: acc) rest kvs
    | List xs -> List.rev_append xs rest
    | Improper (xs, tail) -> List.rev_append xs (tail :: rest)
    | _ -> rest
  (* A short description of a term, for error messages. *)
  and shape = function
    | Int _ -> "Int"
    | Bigint z -> "Bigint " ^ Z.to_string z
    | Float f -> "Float " ^ Float.to_string f
    | Atom a -> Printf.sprintf "Atom %S" a
    | Ref _ -> "Ref"
    | Fun _ -> "Fun"
    | Port _ -> "Port"
    | Pid _ -> "Pid"
    | Tuple xs -> Printf.sprintf "Tuple of size %d" (Array.length xs)
    | Map kvs -> Printf.sprintf "Map of size %d" (Array.length kvs)
    | List _ -> "List"
    | Improper _ -> "Improper"
    | Binary _ -> "Binary"
    | Bitstring (s, bits) -> Printf.sprintf "Bitstring (%S, %d)" s bits
    | Handle h -> Printf.sprintf "Handle %S" h.kind
  in
  check [ t ]

(* Printing *)

let float_to_string f =
  if f = 0.0 then if Float.sign_bit f then "-0.0" else "0.0"
  else if not (Float.is_finite f) then Float.to_string f
  else
    (* The fewest significant digits that read back to [f]. *)
    let rec shortest precision =
      let s = Printf.sprintf "%.*e" precision (Float.abs f) in
      if precision >= 16 || Float.of_string s = Float.abs f then s
      else shortest (precision + 1)
    in
    let s = shortest 0 in
    let e = String.index s 'e' in
    let exponent = int_of_string (String.sub s (e + 1) (String.length s - e - 1)) in
    let digits =
      let all = String.concat "" (String.split_on_char '.' (String.sub s 0 e)) in
      let last = ref (String.length all - 1) in
      while !last > 0 && all.[!last] = '0' do decr last done;
      String.sub all 0 (!last + 1)
    in
    (* [digits] × 10^[place] is the value; its first digit is at 10^exponent. *)
    let l = String.length digits in
    let place = exponent - (l - 1) in
    let exp = string_of_int exponent in
    let scientific_length = l + 2 + String.length exp + if l = 1 then 1 else 0 in
    let scientific () =
      if l = 1 then digits ^ ".0e" ^ exp
      else String.sub digits 0 1 ^ "." ^ String.sub digits 1 (l - 1) ^ "e" ^ exp
    in
    let body =
      if place >= 0 then
        (* Erlang prints integral floats of 2^53 or more in scientific form to
           show that they may have lost precision. *)
        if l + place + 2 <= scientific_length && Float.abs f < 0x1p53 then
          digits ^ String.make place '0' ^ ".0"
        else scientific ()
      else if exponent >= 0 then
        String.sub digits 0 (exponent + 1) ^ "." ^ String.sub digits (exponent + 1) (l - exponent - 1)
      else if 1 - exponent + l <= scientific_length then
        "0." ^ String.make (-exponent - 1) '0' ^ digits
      else scientific ()
    in
    if f < 0.0 then "-" ^ body else body

let reserved_words =
  [ "after"; "and"; "andalso"; "band"; "begin"; "bnot"; "bor"; "bsl"; "bsr"; "bxor";
    "case"; "catch"; "cond"; "div"; "else"; "end"; "fun"; "if"; "let"; "maybe";
    "not"; "of"; "or"; "orelse"; "receive"; "rem"; "try"; "when"; "xor" ]

(* Erlang's unquoted atoms: a lowercase letter, then letters, digits, _ and @,
   all from Latin-1; and not a reserved word. *)
let atom_needs_quotes a =
  let lower c = (c >= 0x61 && c <= 0x7a) || (c >= 0xdf && c <= 0xff && c <> 0xf7) in
  let upper c = (c >= 0x41 && c <= 0x5a) || (c >= 0xc0 && c <= 0xde && c <> 0xd7) in
  let name_char c = lower c || upper c || (c >= 0x30 && c <= 0x39) || c = 0x5f || c = 0x40 in
  let first = ref true in
  let plain c =
    let ok = if !first then lower c else name_char c in
    first := false;
    ok
  in
  a = "" || (not (Utf8.for_all plain a)) || List.mem a reserved_words

(* The escape sequence of a character in a quoted atom or a string, if it
   needs one. *)
let escape = function
  | '\\' -> Some "\\\\"
  | '\n' -> Some "\\n"
  | '\r' -> Some "\\r"
  | '\t' -> Some "\\t"
  | '\011' -> Some "\\v"
  | '\b' -> Some "\\b"
  | '\012' -> Some "\\f"
  | '\027' -> Some "\\e"
  | _ -> None

(* Adds [s] between [quote] characters, escaping what needs it; the other
   bytes, UTF-8 included, are added as they are. *)
let add_quoted b quote s =
  Buffer.add_char b quote;
  String.iter
    (fun c ->
      match escape c with
      | Some e -> Buffer.add_string b e
      | None when c = quote -> Buffer.add_char b '\\'; Buffer.add_char b c
      | None when c < ' ' || c = '\127' -> Printf.bprintf b "\\%03o" (Char.code c)
      | None -> Buffer.add_char b c)
    s;
  Buffer.add_char b quote

let add_atom b a = if atom_needs_quotes a then add_quoted b '\'' a else Buffer.add_string b a

(* Printable in io_lib's sense: the characters ~p prints in a string. *)
let printable_ascii c = (c >= 32 && c < 127) || (c >= 8 && c <= 13) || c = 27
let printable_latin1 c = printable_ascii c || (c >= 160 && c <= 255)

let printable_unicode c =
  printable_ascii c
  || (c >= 160 && c < 0xd800)
  || (c >= 0xe000 && c <= 0xfffd)
  || (c >= 0x10000 && c <= 0x10ffff)

let string_for_all_codes p s = String.for_all (fun c -> p (Char.code c)) s

(* Adds Latin-1 character codes as a double-quoted UTF-8 string. *)
let add_latin1_string b iter chars =
  let s = Buffer.create 16 in
  iter (fun c -> Buffer.add_utf_8_uchar s (Uchar.of_int c)) chars;
  add_quoted b '"' (Buffer.contents s)

let add_binary b s =
  if s = "" then Buffer.add_string b "<<>>"
  else if string_for_all_codes printable_ascii s then begin
    Buffer.add_string b "<<";
    add_quoted b '"' s;
    Buffer.add_string b ">>"
  end
  else if Utf8.for_all printable_unicode s then begin
    Buffer.add_string b "<<";
    add_quoted b '"' s;
    Buffer.add_string b "/utf8>>"
  end
  else if string_for_all_codes printable_latin1 s then begin
    Buffer.add_string b "<<";
    add_latin1_string b (fun f -> String.iter (fun c -> f (Char.code c))) s;
    Buffer.add_string b ">>"
  end
  else begin
    Buffer.add_string b "<<";
    String.iteri (fun i c -> Printf.bprintf b (if i = 0 then "%d" else ",%d") (Char.code c)) s;
    Buffer.add_string b ">>"
  end

let add_bitstring b s bits =
  let n = String.length s in
  Buffer.add_string b "<<";
  for i = 0 to n - 2 do
    Printf.bprintf b "%d," (Char.code s.[i])
  done;
  Printf.bprintf b "%d:%d>>" (Char.code s.[n - 1] lsr (8 - bits)) bits

(* Node names quote only when they must, like any atom (a@h, 'a@h.example'). *)
let add_node = add_atom

let printable_char = function Int c -> printable_latin1 c | _ -> false

(* Text still to be printed, in order. *)
type chunk = Text of string | Term of t

(* [Term x1; Text sep; Term x2; ...; rest] *)
let separated sep xs rest =
  match List.rev xs with
  | [] -> rest
  | last :: others ->
      List.fold_left (fun acc x -> Term x :: Text sep :: acc) (Term last :: rest) others

let to_string t =
  let b = Buffer.create 64 in
  (* Leaves are added at once; compound terms add their opening bracket and
     push their elements, so that the stack does not grow with depth. *)
  let rec print = function
    | [] -> ()
    | Text s :: rest -> Buffer.add_string b s; print rest
    | Term t :: rest -> print (term t rest)
  and term t rest =
    match t with
    | Int i -> Buffer.add_string b (string_of_int i); rest
    | Bigint z -> Buffer.add_string b (Z.to_string z); rest
    | Float f -> Buffer.add_string b (float_to_string f); rest
    | Atom a -> add_atom b a; rest
    | Ref r ->
        Buffer.add_string b "#Ref<";
        add_node b r.node;
        Printf.bprintf b ".%d" r.creation;
        (* Most significant word first, as Erlang prints #Ref<0.W2.W1.W0>. *)
        for i = Array.length r.ids - 1 downto 0 do
          Printf.bprintf b ".%d" r.ids.(i)
        done;
        Buffer.add_char b '>';
        rest
    | Fun (Local f) ->
        Printf.bprintf b "#Fun<%s.%d.%d>" f.module_ f.old_index f.old_uniq;
        rest
    | Fun (Export f) ->
        Buffer.add_string b "fun ";
        add_atom b f.module_;
        Buffer.add_char b ':';
        add_atom b f.function_;
        Printf.bprintf b "/%d" f.arity;
        rest
    | Port p ->
        Buffer.add_string b "#Port<";
        add_node b p.node;
        Printf.bprintf b ".%Lu.%d>" p.id p.creation;
        rest
    | Pid p ->
        Buffer.add_string b "#Pid<";
        add_node b p.node;
        Printf.bprintf b ".%d.%d.%d>" p.id p.serial p.creation;
        rest
    | Tuple xs ->
        Buffer.add_char b '{';
        separated "," (Array.to_list xs) (Text "}" :: rest)
    | Map kvs ->
        Buffer.add_string b "#{";
        let pending = ref (Text "}" :: rest) in
        for i = Array.length kvs - 1 downto 0 do
          let k, v = kvs.(i) in
          let after = if i = Array.length kvs - 1 then !pending else Text "," :: !pending in
          pending := Term k :: Text " => " :: Term v :: after
        done;
        !pending
    | List [] -> Buffer.add_string b "[]"; rest
    | List xs when List.for_all printable_char xs ->
        add_latin1_string b (fun f -> List.iter (function Int c -> f c | _ -> ())) xs;
        rest
    | List xs ->
        Buffer.add_char b '[';
        separated "," xs (Text "]" :: rest)
    | Improper (xs, tail) ->
        Buffer.add_char b '[';
        separated "," xs (Text "|" :: Term tail :: Text "]" :: rest)
    | Binary s -> add_binary b (Binary.to_string s); rest
    | Bitstring (s, bits) -> add_bitstring b s bits; rest
    | Handle h ->
        (* Not Erlang's text of the resource term, which the VM makes when
           the handle crosses, one per crossing. *)
        Buffer.add_string b "#Handle<";
        add_atom b h.kind;
        Printf.bprintf b ".%d>" h.id;
        rest
  in
  print [ Term t ];
  Buffer.contents b

let pp ppf t = Format.pp_print_string ppf (to_string t)

(* Pids, ports and references on their own *)

module type Identifier = sig
  type t

  val compare : t -> t -> int
  val equal : t -> t -> bool
  val hash : t -> int
  val to_string : t -> string
  val pp : Format.formatter -> t -> unit
end

type term = t

(* [compare] is the one [compare] on terms uses for the kind; the rest goes
   through the term that holds the identifier, so that the two never
   disagree. *)
module Make_identifier (Kind : sig
  type t

  val compare : t -> t -> int
  val term : t -> term
end) : Identifier with type t = Kind.t = struct
  type t = Kind.t

  let compare = Kind.compare
  let equal a b = compare a b = 0
  let hash x = hash (Kind.term x)
  let to_string x = to_string (Kind.term x)
  let pp ppf x = Format.pp_print_string ppf (to_string x)
end

module Pid = Make_identifier (struct
  type t = pid

  let compare = compare_pids
  let term p = Pid p
end)

module Port = Make_identifier (struct
  type t = port

  let compare = compare_ports
  let term p = Port p
end)

module Ref = Make_identifier (struct
  type t = reference

  let compare = compare_refs
  let term r = Ref r
end)

(* Handles *)

module Handle = struct
  type 'a kind = { name : string; inject : 'a -> contents; project : contents -> 'a option }

  let kind (type a) name : a kind =
    let module K = struct
      type contents += K of a
    end in
    { name; inject = (fun x -> K.K x); project = (function K.K x -> Some x | _ -> None) }

  (* Atomic: OCaml 5 may run exports on several domains at once. *)
  let last_id = Atomic.make 0

  let make ?monitor kind x =
    let monitor, on_down =
      match monitor with Some (pid, f) -> (Some pid, f) | None -> (None, ignore)
    in
    Handle
      {
        id = Atomic.fetch_and_add last_id 1 + 1;
        monitor;
        kind = kind.name;
        contents = kind.inject x;
        on_down;
        down = Atomic.make false;
      }

  let get kind = function Handle h -> kind.project h.contents | _ -> None
  let name = function Handle h -> Some h.kind | _ -> None
  let id = function Handle h -> Some h.id | _ -> None
  let down = function Handle h -> Atomic.get h.down | _ -> false

  (* The converters' entry (registered by Erl as "camlbeam.handle_down"):
     the monitored process is gone, as one of the handle's Erlang terms saw
     it. Runs [on_down] once per handle, whatever the number of its terms. *)
  let monitor_down h =
    if Atomic.compare_and_set h.down false true then try h.on_down () with _ -> ()
end
