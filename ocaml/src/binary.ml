type bigstring =
  (char, Bigarray.int8_unsigned_elt, Bigarray.c_layout) Bigarray.Array1.t

(* The constructor order is the memory layout the C++ converters rely on
   (term.mli, "Memory layout"): never reorder. *)
type t = Heap of string | Off_heap of bigstring

(* 256 is the runtime's Max_young_wosize; cpp/conv/test checks that the
   converters switch representation exactly here. *)
let heap_max = (256 * (Sys.word_size / 8)) - 1

external blit_bigstring_to_bytes : bigstring -> int -> bytes -> int -> int -> unit
  = "camlbeam_blit_bigstring_to_bytes"
  [@@noalloc]

external compare_bigstrings : bigstring -> bigstring -> int
  = "camlbeam_compare_bigstrings"
  [@@noalloc]

external compare_string_bigstring : string -> bigstring -> int
  = "camlbeam_compare_string_bigstring"
  [@@noalloc]

external hash_string : string -> int = "camlbeam_hash_string" [@@noalloc]
external hash_bigstring : bigstring -> int = "camlbeam_hash_bigstring" [@@noalloc]

let of_string s = Heap s

let length = function
  | Heap s -> String.length s
  | Off_heap b -> Bigarray.Array1.dim b

let is_off_heap = function Heap _ -> false | Off_heap _ -> true

let get t i =
  if i < 0 || i >= length t then invalid_arg "Erl.Binary.get";
  match t with
  | Heap s -> String.unsafe_get s i
  | Off_heap b -> Bigarray.Array1.unsafe_get b i

let blit_to_bytes src src_pos dst dst_pos len =
  if len < 0 || src_pos < 0 || src_pos > length src - len || dst_pos < 0
     || dst_pos > Bytes.length dst - len
  then invalid_arg "Erl.Binary.blit_to_bytes";
  match src with
  | Heap s -> Bytes.blit_string s src_pos dst dst_pos len
  | Off_heap b -> blit_bigstring_to_bytes b src_pos dst dst_pos len

let sub t ~pos ~len =
  if len < 0 || pos < 0 || pos > length t - len then invalid_arg "Erl.Binary.sub";
  match t with
  | Heap s -> String.sub s pos len
  | Off_heap _ ->
      let out = Bytes.create len in
      blit_to_bytes t pos out 0 len;
      Bytes.unsafe_to_string out

let to_string = function
  | Heap s -> s
  | Off_heap _ as t -> sub t ~pos:0 ~len:(length t)

let of_bigstring b =
  let n = Bigarray.Array1.dim b in
  if n <= heap_max then begin
    let out = Bytes.create n in
    blit_bigstring_to_bytes b 0 out 0 n;
    Heap (Bytes.unsafe_to_string out)
  end
  else begin
    let copy = Bigarray.Array1.create Bigarray.char Bigarray.c_layout n in
    Bigarray.Array1.blit b copy;
    Off_heap copy
  end

let compare a b =
  match (a, b) with
  | Heap x, Heap y -> String.compare x y
  | Off_heap x, Off_heap y -> compare_bigstrings x y
  | Heap x, Off_heap y -> compare_string_bigstring x y
  | Off_heap x, Heap y -> - compare_string_bigstring y x

let equal a b = length a = length b && compare a b = 0

let hash = function Heap s -> hash_string s | Off_heap b -> hash_bigstring b
