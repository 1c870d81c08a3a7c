(* The blocks the C++ converters build, made by forge_stubs.c. *)

external pid : node:string -> id:int -> serial:int -> creation:int -> Erl.Term.pid
  = "camlbeam_forge_pid"

external port : node:string -> id:int64 -> creation:int -> Erl.Term.port = "camlbeam_forge_port"

external reference : node:string -> creation:int -> int array -> Erl.Term.reference
  = "camlbeam_forge_reference"

external reference_fields : Erl.Term.reference -> string * int * int array
  = "camlbeam_forge_reference_fields"
