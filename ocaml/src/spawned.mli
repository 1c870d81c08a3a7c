(** What a domain inherits from the domain that spawned it (OCaml 5's Domain.DLS; under
    OCaml 4, which has no domains, always the initial value). *)

val inherited : at_spawn:('a -> 'a) -> 'a -> unit -> 'a
(** [inherited ~at_spawn initial] is a getter: in the first domain it answers [initial]; in a
    domain spawned by [Domain.spawn] it answers what [at_spawn v] returned in the spawning
    domain when it spawned it, [v] being what the getter answered there. *)
