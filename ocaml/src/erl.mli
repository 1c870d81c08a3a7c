(** camlbeam's OCaml side: Erlang terms, converters, and the functions OCaml
    exports to Erlang.

    A plugin registers its functions when it is loaded:
    {[
      let rec fib n = if n < 2 then n else fib (n - 1) + fib (n - 2)
      let () = Erl.export "fib" Erl.Conv.(int @-> returning int) fib
    ]}
    and Erlang calls them with [ocaml:call(Pool, fib, [30])], or
    [ocaml:call(Pool, {mathlib, fib}, [30])] naming the module (below). *)

module Binary = Binary
module Term = Term
module Conv = Conv

(** {1 Exports}

    Exports live in modules, as Erlang functions do. A plugin's exports go
    to the module named after its file, without directory and extension:
    [mathlib] for [mathlib.cmxs], [mathlib.cma] or [mathlib.cmo] (for a
    plugin of one OCaml module, its compilation unit uncapitalised). Code
    linked into the worker executable itself (a static worker, or a test
    program) has no file: its exports go to the module [static]. Either can
    name another module with [~module_].

    Erlang calls [{Module, Function}], or [Function] alone when no other
    module exports that name ({!Private.dispatch}).

    OCaml cannot load a compilation unit twice, so a new version of a
    plugin is compiled under another name ([mathlib_v2.ml]); to take over
    the old one's module it names it: [~module_:"mathlib"] on its exports
    (do so in the first version too, and any file name will do). The first
    export into a module that another plugin (or the linked code) filled
    replaces that module's exports, all of them: a function the new version
    does not export is gone, as in Erlang. The pool logs each such
    replacement once ([docs/plugins.md]). Exporting a name twice into a
    module from the same plugin replaces the earlier function and prints a
    warning on stderr (most likely a mistake). *)

val export : ?module_:string -> ?atoms:string list -> ?short:bool -> string -> 'f Conv.fn -> 'f -> unit
(** [export name fn f] makes [f], whose arguments and result [fn]
    describes, callable from Erlang as [name], in the module [module_]
    (by default the plugin's, above). To give every export of a plugin the
    same module, eta-expand (the type of [f] varies):
    {[
      let export name fn f = Erl.export ~module_:"mathlib" name fn f
    ]}

    [atoms] are the atoms [f]'s answers may hold that Erlang code need not
    know of, as {!declare_atoms} declares them: [~atoms:["bad_header"]] for
    an export answering [{error, {bad_header, Line}}]. The export's name
    and module become atoms too, created by the pool like declared ones.
    @raise Invalid_argument if [name], the module or one of [atoms] cannot
    be an atom (not UTF-8, or longer than 255 characters); nothing is
    exported or declared then.

    [~short:true] declares that every call of [f] is short: well under a
    millisecond, with no {!call_erlang}. Under OCaml 5 the [nif] transport
    then runs its calls with small arguments on the Erlang scheduler that
    makes them from the first call, rather than only once it has measured
    them short ([docs/plugins.md]); a call there that takes over a millisecond
    sends the export's calls back to the OCaml threads, and is logged once.
    The other transports, and the [nif] under OCaml 4.13, ignore it. Default
    [false]. *)

val export_raw :
  ?module_:string -> ?atoms:string list -> ?short:bool -> string -> (Term.t list -> Term.t) -> unit
(** [export_raw name f] exports [f], which gets the argument terms as they
    are and returns the result term, whatever their number: its arity is
    not checked, and is listed as any. Otherwise as {!export}. *)

(** An export, as {!exports} lists it and as the pool's [ocaml:exports/1]
    shows it. *)
type export_info = {
  module_ : string;
  name : string;
  arity : int option;  (** [None] for {!export_raw}: any number of arguments. *)
  signature : string;
      (** Its type in Erlang type syntax ({!Conv.signature}), such as
          ["fun((ocaml:int63()) -> ocaml:int63())"];
          ["fun((...) -> term())"] for {!export_raw}. *)
}

val exports : unit -> export_info list
(** Every export, sorted by module, then by name. *)

(** {1 Atoms}

    An answer can only hold atoms the Erlang VM already has: decoding an
    answer never creates one (atoms are never freed, and a worker is not
    trusted to fill the VM's atom table). The atoms a plugin's answers hold,
    such as the tags of its errors, are declared instead; the pool creates
    them when the plugin loads, at most [max_atoms] of them per pool
    ([docs/api.md]).

    The converters of {!Conv} name only atoms every VM has ([true],
    [false], [ok], [error], [undefined]); a converter of one's own
    ({!Conv.make}) that names others declares them. *)

val declare_atoms : string list -> unit
(** [declare_atoms names] declares atoms for the answers of this plugin
    (or of the code linked into a worker). Call it while the plugin
    initialises (at its top level, as {!export}): atoms declared while a
    plugin loads are created by its pool when the load is reported done;
    those declared by code linked into a worker, when the worker starts.
    Declaring an atom twice is harmless.
    @raise Invalid_argument naming the first of [names] that cannot be an
    atom (not UTF-8, or longer than 255 characters); none is declared
    then. *)

val declared_atoms : unit -> string list
(** Every atom declared so far in this process, in the order of their first
    declaration. *)

(** {1 Deadlines} *)

exception Cancelled
(** Raised at the next poll point of an export whose call's deadline passed:
    its caller has given up, and the call's answer, [{error, timeout}], is
    read by nobody. Let it propagate (a handler that catches every exception
    should re-raise it): a worker whose request still runs
    [--cancel-grace] milliseconds (1000 by default) after its deadline is
    ended and restarted by its pool.

    Poll points are where OCaml runs signal handlers: in native code (OCaml
    4.13.1) allocations and loop back edges, in bytecode also every call; a
    blocking system call ([Unix.sleepf], [Unix.read]) is interrupted, and so
    is {!call_erlang} waiting for its answer. A native recursion that
    allocates nothing (a naive [fib]) cannot be interrupted: such an export
    ends its worker when it overruns its deadline by the grace period.
    Raising [Cancelled] yourself answers [{error, timeout}] too. *)

(** {1 Talking to Erlang}

    These are answered by the transport of the request running on the
    calling thread (port, node or NIF): the host runs each request in its
    transport's context ({!Private.with_context}), so that pools that share
    one OCaml runtime (the NIF coupling) each answer for their own requests.
    A plugin's initialiser runs inside the load request, so it may call
    them too. *)

exception No_transport
(** Raised by the functions below on a thread that is not running a request
    of a camlbeam host: in a unit test, in code linked into a worker while
    the worker starts, or on a thread the plugin started itself. *)

val send : Term.pid -> Term.t -> unit
(** [send pid msg] delivers [msg] to the Erlang process [pid], like
    [pid ! msg]: asynchronously, and silently dropped if [pid] is dead.
    OCaml code cannot make a pid ({!Term.pid}), only pass on one it got from
    Erlang; of those, the pool's [send] policy decides which it may send to
    (by default, a pid the running call was given as an argument). *)

val call_erlang : string -> string -> Term.t list -> Term.t
(** [call_erlang m f args] runs [apply(m, f, args)] on the Erlang side and
    returns what the Erlang side answers. It blocks the calling worker until
    then. *)

(** The worker the code runs in. *)
type worker = {
  transport : string;  (** ["port"], ["node"] or ["nif"]. *)
  id : int;  (** The worker's number in its pool. *)
  pid : Term.pid;
      (** The Erlang process that stands for the worker: for a port worker,
          the [ocaml_worker] process that owns its port. *)
}

val worker : unit -> worker
(** @raise No_transport outside a worker. *)

val self : unit -> Term.pid
(** [(worker ()).pid], for Erlang code to know which worker it deals with
    (in a message the export sends, say). OCaml has no mailbox: messages
    sent to that pid do not reach OCaml code (the port worker's process
    drops them).
    @raise No_transport outside a worker. *)

(** {1 For the hosts}

    The C++ hosts use these; plugins have no reason to. *)
module Private : sig
  (** What a transport provides to {!send}, {!call_erlang}, {!worker} and the
      cancellation of the requests it runs. *)
  type context = {
    transport : string;  (** ["port"], ["node"] or ["nif"]. *)
    worker : unit -> worker;
        (** The worker the request runs in; raises {!No_transport} while the
            transport does not know it yet (the port: before its hello). *)
    send : Term.pid -> Term.t -> unit;
    call_erlang : string -> string -> Term.t list -> Term.t;
    cancel_requested : unit -> bool;
        (** Whether the deadline of the request running on this thread has
            passed: the host's cancel signal handler raises {!Cancelled}
            only then. *)
  }

  val with_context : context -> (unit -> 'a) -> 'a
  (** [with_context c f] runs [f] (one request) with [c] as the calling
      thread's context, and restores the thread's previous context when [f]
      returns or raises. Each thread has a context of its own, for up to
      1024 threads that run requests in one process. Contexts are meant to
      live as long as their transport or pool (made once, at top level or
      when the pool starts), not to be made per request.
      @raise Failure on the 1025th such thread. *)

  val current_context : unit -> context option
  (** The calling thread's context: [None] outside {!with_context}. *)

  val cancel_requested : unit -> bool
  (** [cancel_requested] of the calling thread's context; [false] without
      one. *)

  val take_new_atoms : unit -> string list
  (** The atoms declared since the last call, in the order of their first
      declaration, each once: what the answer to a load (or to a static
      worker's hello) carries to the pool. *)

  val discard_new_atoms : unit -> unit
  (** Forgets the atoms declared since the last {!take_new_atoms}, as if
      they had not been: those of a plugin whose initialiser failed. *)

  val loading : file:string -> (unit -> 'a) -> 'a
  (** [loading ~file load] runs [load], which loads the plugin [file]: the
      exports its initialisation makes without naming their module go to
      the module named after [file], and replace those of another plugin or
      of the linked code. [Erl_host.load] uses it. *)

  val take_new_exports : unit -> export_info list
  (** Every export of each module whose exports changed since the last
      call (all of the module's, so that the pool replaces its list of that
      module whole): what the answer to a load (or to a static worker's
      hello) carries to the pool, as {!take_new_atoms} does the atoms. *)

  val declared_short : unit -> (string * string) list
  (** The exports declared short ([export ~short:true]) as [(module, name)],
      and [("", name)] when every module that exports [name] declares it
      short (for calls that do not name their module), in no order. The [nif]
      transport reads it after each load, through the callback
      ["camlbeam.declared_short"]. *)

  val discard_new_exports : unit -> unit
  (** Forgets which modules changed since the last {!take_new_exports}:
      those of a plugin that failed to load, whose pool does not keep it
      (its workers start again without it). *)

  val dispatch : string -> Term.t list -> Term.t
  (** [dispatch name args] calls the export [name] of whichever module
      exports it, if only one does, and returns
      - [{ok, Result}];
      - [{error, {undef, Name}}] if nothing is exported as [name] ([Name] is
        an atom, or a binary if [name] cannot be an atom);
      - [{error, {ambiguous, Name, Modules}}] if several modules export
        [name]: [Modules], their names (atoms, sorted), for the caller to
        pick one with {!dispatch_qualified};
      - [{error, {badarity, Expected, Got}}] or
        [{error, {badarg, #{argument => N, expected => <<"Type">>, got => Term}}}]
        if the arguments do not fit the export's {!Conv.fn};
      - [{error, timeout}] if the export raised {!Cancelled};
      - [{error, {ocaml_exception, Name, Message, Backtrace}}] if the export
        raised another exception, [Stack_overflow] and [Out_of_memory] included:
        three binaries, the exception's constructor name
        ([Printexc.exn_slot_name]), [Printexc.to_string] of it, and the
        backtrace, empty unless backtraces are recorded (this library turns
        recording on when it is initialised).

      It never raises. The request handler of [camlbeam.host] ([Erl_host])
      calls it; hosts reach it through that handler. *)

  val dispatch_qualified : module_:string -> string -> Term.t list -> Term.t
  (** [dispatch_qualified ~module_ name args] calls the export [name] of
      the module [module_]: the lookup of [ocaml:call(Pool, {Module, Fun},
      Args)], and of an [rpc:call(Node, Module, Fun, Args)]. It answers as
      {!dispatch}, and [{error, {undef, {Module, Name}}}] if that module does
      not export [name]. It never raises. *)

  type export
  (** One export of one module, as the last load of its module made it. *)

  val find_export : module_:string -> string -> export option
  (** [find_export ~module_ name] is the export [name] of [module_], for a
      host that calls it many times without looking it up each time
      ({!call_export}). A later load of [module_], or an export made at any
      time, may replace it: a counter of those changes is registered as
      ["camlbeam.exports_generation"] (an [int ref]), and a host finds its
      exports again when it moves. *)

  val call_export : export -> Term.t list -> Term.t
  (** [call_export export args] answers as {!dispatch_qualified} does once
      it has found [export]. It never raises. *)

  (** [Term.map_of_array] is registered as ["camlbeam.map_of_array"], for
      converters that read maps in an order other than the term order, and
      [Term.Handle]'s monitor entry as ["camlbeam.handle_down"], and
      {!Cancelled} as the exception ["camlbeam.cancelled"]
      ([Callback.register_exception]), for hosts to recognise it. *)
end
