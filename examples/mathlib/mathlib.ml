(* mathlib: a camlbeam plugin to copy from. Loading it registers five functions
   that Erlang calls as ocaml:call(Pool, Name, Args):

     fib(N)                       -> integer()
     stats([float()])             -> {ok, #{count, mean, variance, min, max}} | {error, empty}
     moving_average(K, [float()]) -> [float()]
     parse_request(binary())      -> {ok, Request} | {error, Reason}
     parse_request_exn(binary())  -> Request, or an {ocaml_exception, ...} error

   README.md shows the calls and their answers. *)

open Erl

(* {1 fib} *)

(* Exponential on purpose: a CPU-bound call that shows a pool's workers running in
   parallel. A negative argument is a programming error on the caller's side, so it
   raises: Erlang gets {error, {ocaml_exception, <<"Invalid_argument">>, ...}}. *)
let rec fib n =
  if n < 0 then invalid_arg "fib: negative argument"
  else if n < 2 then n
  else fib (n - 1) + fib (n - 2)

(* {1 Numeric kernels over float lists} *)

type summary = { count : int; mean : float; variance : float; min : float; max : float }

(* A record travels as a map with atom keys, Erlang's usual shape for one. An answer
   never creates an atom in the VM that receives it, so every converter that names atoms
   declares them: the pool creates them when it loads the plugin (docs/term-mapping.md). *)
let () = declare_atoms [ "count"; "mean"; "variance"; "min"; "max" ]

let summary : summary Conv.t =
  let decode = function
    | Term.Map bindings -> (
        let field name conv =
          Option.bind (Term.map_find (Term.Atom name) bindings) (Conv.of_term conv)
        in
        match
          (field "count" Conv.int, field "mean" Conv.float, field "variance" Conv.float,
           field "min" Conv.float, field "max" Conv.float)
        with
        | Some count, Some mean, Some variance, Some min, Some max ->
            Some { count; mean; variance; min; max }
        | _ -> None)
    | _ -> None
  in
  let encode s =
    Term.map_of_list
      [ (Atom "count", Int s.count); (Atom "mean", Float s.mean);
        (Atom "variance", Float s.variance); (Atom "min", Float s.min); (Atom "max", Float s.max) ]
  in
  Conv.make
    ~expected:
      "#{count := integer(), mean := float(), variance := float(), min := float(), max := float()}"
    decode encode

type stats_error = Empty

let () = declare_atoms [ "empty" ]

let stats_error : stats_error Conv.t =
  Conv.make ~expected:"empty"
    (function Term.Atom "empty" -> Some Empty | _ -> None)
    (fun Empty -> Atom "empty")

(* One pass, Welford's update: no catastrophic cancellation on large, close values, as
   the textbook sum-of-squares formula has. The variance is the population's. *)
let stats xs =
  match xs with
  | [] -> Error Empty
  | x0 :: _ ->
      let step (n, mean, m2, lo, hi) x =
        let n = n + 1 in
        let delta = x -. mean in
        let mean = mean +. (delta /. float_of_int n) in
        (n, mean, m2 +. (delta *. (x -. mean)), Float.min lo x, Float.max hi x)
      in
      let count, mean, m2, min, max = List.fold_left step (0, 0., 0., x0, x0) xs in
      Ok { count; mean; variance = m2 /. float_of_int count; min; max }

(* The means of every window of [k] consecutive values: [n - k + 1] of them, none when
   [k > n]. A running sum, refreshed from scratch every [k] steps so that rounding does
   not accumulate over long series. *)
let moving_average k xs =
  if k <= 0 then invalid_arg "moving_average: the window must be positive";
  let a = Array.of_list xs in
  let n = Array.length a in
  if k > n then []
  else
    let window_sum i = Array.fold_left ( +. ) 0. (Array.sub a i k) in
    let sum = ref (window_sum 0) in
    let out = Array.make (n - k + 1) (!sum /. float_of_int k) in
    for i = 1 to n - k do
      sum := if i mod k = 0 then window_sum i else !sum -. a.(i - 1) +. a.(i + k - 1);
      out.(i) <- !sum /. float_of_int k
    done;
    Array.to_list out

(* {1 A parser: the head of an HTTP/1.1 request} *)

type request = {
  meth : string;
  path : string;
  version : string;
  headers : (string * string) list;  (* in arrival order *)
  body : string;  (* whatever follows the head *)
}

(* Why a request head is refused. Erlang sees {bad_request_line, Line},
   {bad_header, Line} or incomplete. *)
type parse_error = Bad_request_line of string | Bad_header of string | Incomplete

let () = declare_atoms [ "bad_request_line"; "bad_header"; "incomplete" ]

let parse_error : parse_error Conv.t =
  Conv.make ~expected:"{bad_request_line | bad_header, binary()} | incomplete"
    (function
      | Term.Tuple [| Atom "bad_request_line"; Binary line |] -> Some (Bad_request_line (Erl.Binary.to_string line))
      | Term.Tuple [| Atom "bad_header"; Binary line |] -> Some (Bad_header (Erl.Binary.to_string line))
      | Term.Atom "incomplete" -> Some Incomplete
      | _ -> None)
    (function
      | Bad_request_line line -> Term.Tuple [| Atom "bad_request_line"; Term.binary line |]
      | Bad_header line -> Term.Tuple [| Atom "bad_header"; Term.binary line |]
      | Incomplete -> Term.Atom "incomplete")

(* #{method => binary(), path => binary(), version => binary(), body => binary(),
     headers => #{binary() => binary()}}: header names are data, so binary keys. *)
let () = declare_atoms [ "method"; "path"; "version"; "headers"; "body" ]

let request : request Conv.t =
  let decode = function
    | Term.Map bindings -> (
        let field name = Term.map_find (Term.Atom name) bindings in
        match (field "method", field "path", field "version", field "headers", field "body") with
        | ( Some (Binary meth), Some (Binary path), Some (Binary version), Some (Map hs),
            Some (Binary body) ) ->
            let str = Erl.Binary.to_string in
            let header = function
              | Term.Binary name, Term.Binary value -> Some (str name, str value)
              | _ -> None
            in
            let headers = List.filter_map header (Array.to_list hs) in
            if List.length headers = Array.length hs then
              Some { meth = str meth; path = str path; version = str version; headers; body = str body }
            else None
        | _ -> None)
    | _ -> None
  in
  let encode r =
    let headers = List.map (fun (name, value) -> (Term.binary name, Term.binary value)) r.headers in
    Term.map_of_list
      [ (Atom "method", Term.binary r.meth); (Atom "path", Term.binary r.path);
        (Atom "version", Term.binary r.version); (Atom "headers", Term.map_of_list headers);
        (Atom "body", Term.binary r.body) ]
  in
  Conv.make
    ~expected:
      "#{method := binary(), path := binary(), version := binary(), \
       headers := #{binary() => binary()}, body := binary()}"
    decode encode

let is_token_char = function
  | 'a' .. 'z' | 'A' .. 'Z' | '0' .. '9' -> true
  | '!' | '#' | '$' | '%' | '&' | '\'' | '*' | '+' | '-' | '.' | '^' | '_' | '`' | '|' | '~' -> true
  | _ -> false

let is_token s = s <> "" && String.for_all is_token_char s

(* The index of the first "\r\n" at or after [from]. *)
let rec find_crlf s from =
  match String.index_from_opt s from '\r' with
  | Some i when i + 1 < String.length s && s.[i + 1] = '\n' -> Some i
  | Some i -> find_crlf s (i + 1)
  | None -> None

let trim_ows s =
  let is_ows c = c = ' ' || c = '\t' in
  let i = ref 0 and j = ref (String.length s) in
  while !i < !j && is_ows s.[!i] do incr i done;
  while !j > !i && is_ows s.[!j - 1] do decr j done;
  String.sub s !i (!j - !i)

(* Header names are case-insensitive: lower-cased. A repeated header keeps every
   value, joined by ", " in arrival order (RFC 9110, 5.3). *)
let add_header headers (name, value) =
  match List.assoc_opt name headers with
  | None -> headers @ [ (name, value) ]
  | Some earlier ->
      List.map (fun (n, v) -> if n = name then (n, earlier ^ ", " ^ value) else (n, v)) headers

let parse_header line =
  match String.index_opt line ':' with
  | Some i when is_token (String.sub line 0 i) ->
      let value = trim_ows (String.sub line (i + 1) (String.length line - i - 1)) in
      if String.exists (fun c -> c = '\r' || c = '\n') value then Error (Bad_header line)
      else Ok (String.lowercase_ascii (String.sub line 0 i), value)
  | _ -> Error (Bad_header line)

let parse_request text =
  (* The lines of the head, up to the empty line that ends it, and where the body starts. *)
  let rec head_lines acc from =
    match find_crlf text from with
    | None -> None
    | Some i when i = from -> Some (List.rev acc, i + 2)
    | Some i -> head_lines (String.sub text from (i - from) :: acc) (i + 2)
  in
  match head_lines [] 0 with
  | None -> Error Incomplete
  | Some ([], _) -> Error (Bad_request_line "")
  | Some (request_line :: header_lines, body_start) -> (
      let body = String.sub text body_start (String.length text - body_start) in
      match String.split_on_char ' ' request_line with
      | [ meth; path; version ]
        when is_token meth && path <> "" && String.length version > 5
             && String.sub version 0 5 = "HTTP/" ->
          let rec headers acc = function
            | [] -> Ok { meth; path; version; headers = acc; body }
            | line :: rest -> (
                match parse_header line with
                | Ok h -> headers (add_header acc h) rest
                | Error e -> Error e)
          in
          headers [] header_lines
      | _ -> Error (Bad_request_line request_line))

(* The same parser, for callers that treat bad input as a bug: an exception, which Erlang
   receives as {error, {ocaml_exception, <<"Mathlib.Bad_request">>, Message, Backtrace}},
   Message being what the printer below makes of it. *)
exception Bad_request of parse_error

let () =
  Printexc.register_printer (function
    | Bad_request (Bad_request_line line) -> Some (Printf.sprintf "bad request line: %S" line)
    | Bad_request (Bad_header line) -> Some (Printf.sprintf "bad header line: %S" line)
    | Bad_request Incomplete -> Some "incomplete request head: no empty line after the headers"
    | _ -> None)

let parse_request_exn text =
  match parse_request text with Ok r -> r | Error e -> raise (Bad_request e)

(* {1 The exports: names, converters, functions} *)

let () =
  export "fib" Conv.(int @-> returning int) fib;
  export "stats" Conv.(list float @-> returning (result summary stats_error)) stats;
  export "moving_average" Conv.(int @-> list float @-> returning (list float)) moving_average;
  export "parse_request" Conv.(string @-> returning (result request parse_error)) parse_request;
  export "parse_request_exn" Conv.(string @-> returning request) parse_request_exn
