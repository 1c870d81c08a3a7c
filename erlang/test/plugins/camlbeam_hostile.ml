(* A plugin that misbehaves on request, for the hostile suite (erlang/test): each export
   does one thing no plugin should, against the worker, its pipes, its memory or its
   processes. Built as camlbeam_hostile.cmxs and camlbeam_hostile.cma. *)

(* A descriptor by number: Unix.file_descr is the fd itself on Unix, and the point here is
   to reach the protocol's own descriptors (3 and 4) behind the worker's back. *)
external fd_of_int : int -> Unix.file_descr = "%identity"

let rec write_all fd bytes offset =
  if offset < String.length bytes then
    let n = Unix.write_substring fd bytes offset (String.length bytes - offset) in
    write_all fd bytes (offset + n)

(* Every signal this process can block, as OCaml numbers them (positive: the system's). *)
let block_every_signal () =
  for signal = 1 to 64 do
    try ignore (Unix.sigprocmask Unix.SIG_BLOCK [ signal ]) with Unix.Unix_error _ | Invalid_argument _ -> ()
  done

let megabytes mb = Bytes.make (mb lsl 20) 'x'

(* A child that holds every descriptor of the worker, the protocol's pipes included, and
   sleeps [ms]; [detach]: in a session of its own first. *)
let fork_holding ms ~detach =
  match Unix.fork () with
  | 0 ->
      if detach then ignore (Unix.setsid ());
      Unix.sleepf (float_of_int ms /. 1000.);
      Unix._exit 0
  | pid -> pid

let signal_handler_calls = ref 0

let () =
  let open Erl.Conv in
  Erl.export "write_fd" (int @-> string @-> returning unit) (fun fd bytes -> write_all (fd_of_int fd) bytes 0);
  (* [bytes] written to [fd] again and again for [ms]: a flood of frames, to the end or
     until the pipe is gone (the worker replaced meanwhile). *)
  Erl.export "flood_fd" (int @-> string @-> int @-> returning unit) (fun fd bytes ms ->
      let until = Unix.gettimeofday () +. (float_of_int ms /. 1000.) in
      try
        while Unix.gettimeofday () < until do
          write_all (fd_of_int fd) bytes 0
        done
      with Unix.Unix_error (Unix.EPIPE, _, _) -> ());
  Erl.export "close_fd" (int @-> returning unit) (fun fd -> Unix.close (fd_of_int fd));
  Erl.export "exit" (int @-> returning unit) exit;
  (* A read 2^62 bytes past a string: a non-canonical address, so a real SIGSEGV (no
     mapping can be there), which is no stack overflow, so the runtime lets it kill the
     process. unsafe_get skips the bounds check; no Obj.magic needed. *)
  Erl.export "segfault" (nullary int) (fun () -> Char.code (String.unsafe_get (Sys.opaque_identity "") (1 lsl 62)));
  Erl.export "abort" (nullary unit) (fun () -> Unix.kill (Unix.getpid ()) Sys.sigabrt);
  (* OCaml 4.13.1 polls at every loop's back edge, so a plain loop is interrupted by the
     cancel signal; one that blocks every signal first cannot be: only the worker's exit
     (status 124, or its replacement) ends it. *)
  Erl.export "spin" (nullary unit) (fun () ->
      block_every_signal ();
      while true do
        ()
      done);
  Erl.export "spin_alloc" (nullary unit) (fun () ->
      let last = ref [] in
      while true do
        last := [ Sys.opaque_identity 0 ]
      done);
  (* Grows by Mb MB at a time, forever: Out_of_memory under --max-memory, or the worker's end. *)
  Erl.export "hog" (int @-> returning unit) (fun mb ->
      let rec grow kept = grow (megabytes mb :: kept) in
      grow []);
  Erl.export "transient" (int @-> returning unit) (fun mb ->
      ignore (Sys.opaque_identity (List.init mb (fun _ -> megabytes 1))));
  Erl.export "big" (int @-> returning string) (fun n -> String.make n 'x');
  (* [[[...]]], N lists deep around []. *)
  Erl.export_raw "deep" (function
    | [ Erl.Term.Int n ] ->
        let rec wrap term n = if n <= 0 then term else wrap (Erl.Term.List [ term ]) (n - 1) in
        wrap (Erl.Term.List []) n
    | _ -> invalid_arg "deep(N)");
  (* Both processes go on serving the same pipes: the parent answers the child's pid, the
     child 0. *)
  Erl.export "fork_both" (nullary int) Unix.fork;
  Erl.export "fork_hold" (int @-> bool @-> returning int) (fun ms detach -> fork_holding ms ~detach);
  (* A grandchild in a session of its own whose parent exits at once: an orphan, which the
     worker's keeper adopts while the worker lives. Answers the grandchild's pid. *)
  Erl.export "fork_grandchild_hold" (int @-> returning int) (fun ms ->
      let r, w = Unix.pipe ~cloexec:true () in
      match Unix.fork () with
      | 0 ->
          ignore (Unix.setsid ());
          let pid = string_of_int (fork_holding ms ~detach:false) ^ "\n" in
          write_all w pid 0;
          Unix._exit 0
      | child ->
          Unix.close w;
          ignore (Unix.waitpid [] child);
          let ic = Unix.in_channel_of_descr r in
          let pid = int_of_string (input_line ic) in
          close_in ic;
          pid);
  (* The protocol's pipes are close-on-exec: the program started does not hold them. *)
  Erl.export "fork_exec_hold" (int @-> returning int) (fun ms ->
      Unix.create_process "sleep" [| "sleep"; Printf.sprintf "%.3f" (float_of_int ms /. 1000.) |] Unix.stdin Unix.stdout
        Unix.stderr);
  Erl.export "stop_self" (nullary unit) (fun () -> Unix.kill (Unix.getpid ()) Sys.sigstop);
  Erl.export "children" (nullary (list int)) (fun () ->
      let pid = Unix.getpid () in
      let ic = open_in (Printf.sprintf "/proc/%d/task/%d/children" pid pid) in
      let line = try input_line ic with End_of_file -> "" in
      close_in ic;
      List.filter_map int_of_string_opt (String.split_on_char ' ' line));
  (* From now on SIGUSR1 calls Erlang (erlang:node/0) from whatever OCaml code runs, the
     decoding of a request too: sent while a large map is decoded, it makes the worker read
     more input while that request's bytes are in use. *)
  Erl.export "signal_handler_call_erlang" (nullary unit) (fun () ->
      Sys.set_signal Sys.sigusr1
        (Sys.Signal_handle
           (fun _ ->
             ignore (Erl.call_erlang "erlang" "node" []);
             incr signal_handler_calls)));
  Erl.export "signal_handler_calls" (nullary int) (fun () -> !signal_handler_calls);
  (* Waits (up to [ms]) for the file [path], then writes its bytes to fd 4 as they are: the
     Erlang test writes there a frame it could only make once this call was running (the
     answer to another caller's call, queued behind this one). *)
  Erl.export "relay_file" (string @-> int @-> returning unit) (fun path ms ->
      let deadline = Unix.gettimeofday () +. (float_of_int ms /. 1000.) in
      let rec wait () =
        if Sys.file_exists path then ()
        else if Unix.gettimeofday () > deadline then failwith ("relay_file: no " ^ path)
        else (
          Unix.sleepf 0.005;
          wait ())
      in
      wait ();
      let ic = open_in_bin path in
      let bytes = really_input_string ic (in_channel_length ic) in
      close_in ic;
      write_all (fd_of_int 4) bytes 0)
