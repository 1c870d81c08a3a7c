(* The plugin of the Erlang suites (erlang/test): one export per behaviour they check. Built
   as camlbeam_test.cmxs and camlbeam_test.cma, and linked into a static worker. *)

(* Unbounded recursion that is not a tail call: the stack overflows in OCaml code, where
   OCaml turns it into Stack_overflow. *)
let rec depth n = if n < 0 then 0 else 1 + depth (n + 1)

(* Atoms for the answers of the worker this is linked into (camlbeam-test-worker): those
   named, comma separated, in CAMLBEAM_TEST_STATIC_ATOMS. Its hello carries them. *)
let () =
  match Sys.getenv_opt "CAMLBEAM_TEST_STATIC_ATOMS" with
  | None | Some "" -> ()
  | Some names -> Erl.declare_atoms (String.split_on_char ',' names)

let sleep_ms ms = Unix.sleepf (float_of_int ms /. 1000.)

(* The worker's own frame pipe (fd 4, cpp/port/README.md), to break the protocol on purpose. *)
let write_raw_frame_bytes bytes =
  let oc = open_out_bin "/proc/self/fd/4" in
  output_string oc bytes;
  close_out oc

(* Pids, ports and references through their own modules (Erl.Term.Pid, Port, Ref), for the
   suites to hold against Erlang: for each pair (A, B) of a list of one kind, the sign of
   compare A B, equal A B, and whether A and B hash alike. *)
let pairs_through (type a) (module Kind : Erl.Term.Identifier with type t = a) (xs : a list) =
  List.concat_map
    (fun a -> List.map (fun b -> (Int.compare (Kind.compare a b) 0, Kind.equal a b, Kind.hash a = Kind.hash b)) xs)
    xs

let identifier_pairs terms =
  let all_of_kind take =
    List.map (fun t -> match take t with Some x -> x | None -> invalid_arg "identifier_pairs: mixed kinds") terms
  in
  match terms with
  | Erl.Term.Pid _ :: _ -> pairs_through (module Erl.Term.Pid) (all_of_kind (function Erl.Term.Pid p -> Some p | _ -> None))
  | Erl.Term.Port _ :: _ ->
      pairs_through (module Erl.Term.Port) (all_of_kind (function Erl.Term.Port p -> Some p | _ -> None))
  | Erl.Term.Ref _ :: _ -> pairs_through (module Erl.Term.Ref) (all_of_kind (function Erl.Term.Ref r -> Some r | _ -> None))
  | _ -> invalid_arg "identifier_pairs: not a list of pids, ports or references"

let identifier_string = function
  | Erl.Term.Pid p -> Erl.Term.Pid.to_string p
  | Erl.Term.Port p -> Erl.Term.Port.to_string p
  | Erl.Term.Ref r -> Erl.Term.Ref.to_string r
  | t -> invalid_arg ("identifier_string: " ^ Erl.Term.to_string t)

let () =
  let open Erl.Conv in
  Erl.export "identity" (term @-> returning term) Fun.id;
  Erl.export "add" (int @-> int @-> returning int) ( + );
  Erl.export "raise_not_found" (nullary int) (fun () -> raise Not_found);
  Erl.export "fail" (string @-> returning unit) failwith;
  Erl.export "overflow" (int @-> returning int) depth;
  Erl.export "sleep" (int @-> returning int) (fun ms -> sleep_ms ms; ms);
  Erl.export "sleep_echo" (int @-> term @-> returning term) (fun ms t -> sleep_ms ms; t);
  Erl.export "worker_id" (nullary int) (fun () -> (Erl.worker ()).id);
  Erl.export "sleep_worker_id" (int @-> returning int) (fun ms ->
      sleep_ms ms;
      (Erl.worker ()).id);
  Erl.export "os_pid" (nullary int) Unix.getpid;
  (* An Erlang string and an options map: "hello, Name!" as many times as times says. *)
  Erl.export "greet" (charlist @-> map atom int @-> returning charlist) (fun name options ->
      let times = Option.value (List.assoc_opt "times" options) ~default:0 in
      String.concat " " (List.init times (fun _ -> "hello, " ^ name ^ "!")));
  (* An atom named by the caller: one the VM does not know makes the answer undecodable. *)
  Erl.export "make_atom" (string @-> returning term) (fun text -> Erl.Term.Atom text);
  (* A float no Erlang term matches: the worker answers bad_reply itself. *)
  Erl.export_raw "nan" (fun _ -> Erl.Term.Float Float.nan);
  (* A map OTP 25's binary_to_term crashes the VM on (two references of a node that differ
     only in their fourth word, among 33 keys): the worker must refuse to send it. The
     caller gives the two references: OCaml cannot make one. *)
  Erl.export "otp_unsafe_map" (reference @-> reference @-> returning term) (fun a b ->
      Erl.Term.(map_of_list ((Ref a, Atom "a") :: (Ref b, Atom "b") :: List.init 31 (fun i -> (Int i, Int i)))));
  Erl.export "identifier_pairs" (list term @-> returning (list (tuple3 int bool bool))) identifier_pairs;
  Erl.export "identifier_strings" (list term @-> returning (list string)) (List.map identifier_string);
  Erl.export "send" (pid @-> term @-> returning unit) Erl.send;
  (* To the first of a list of pids: a pid the call holds, not one it was given as an
     argument (the pool's policy tells the two apart). *)
  Erl.export "send_to_first" (list pid @-> term @-> returning unit) (fun pids msg -> Erl.send (List.hd pids) msg);
  (* The streaming example of docs/term-mapping.md, as it is written there. *)
  Erl.export "countdown" Erl.Conv.(pid @-> reference @-> int @-> returning unit) (fun caller tag n ->
      for i = n downto 1 do
        Erl.send caller Erl.Term.(Tuple [| Ref tag; Int i |])
      done);
  Erl.export "call_erlang" (atom @-> atom @-> list term @-> returning term) Erl.call_erlang;
  Erl.export "malformed_frame" (nullary unit) (fun () ->
      write_raw_frame_bytes "\000\000\000\005junk!");
  (* A header announcing 100 bytes, 3 of them, and the process is gone. *)
  Erl.export "exit_mid_frame" (nullary unit) (fun () ->
      write_raw_frame_bytes "\000\000\000\100abc";
      exit 3)
