(* Another library with the module name Erl, standing for a camlbeam other than the host's:
   a plugin compiled against it is incompatible with the host. *)
let export_raw (name : string) (arity : int) = ignore (name, arity)
