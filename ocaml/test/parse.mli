(** A reader for the Erlang term syntax that [Erl.Term.to_string] prints,
    for round-trip tests: numbers, atoms, strings, binaries and bitstrings,
    lists, tuples and maps (not pids, ports, references or funs). *)

val term : string -> Erl.Term.t
(** @raise Failure on text it does not read, or text left over. *)
