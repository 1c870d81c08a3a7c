(** The request path of the camlbeam hosts (findlib: [camlbeam.host]).

    Every host (port, node, NIF) turns a request frame into an {!Erl.Term.t}
    and hands it to {!handle}, registered as the callback
    ["camlbeam.host.handle"]; it writes back the reply that {!handle}
    describes. The C++ side is [cpp/host]; this module is the only place
    that knows the shapes of requests and replies, so that a new transport
    only moves bytes.

    Requests and their replies ([Ref] is any term, echoed as it came):
    {v
    {call, Ref, Fun, Args}           ->  {Ref, {ok, Result}} | {Ref, {error, Reason}}
    {call, Ref, Fun, Args, Timeout}  ->  the same, or {Ref, {error, timeout}}
    {cast, Fun, Args}                ->  nothing
    {load, Ref, Path}                ->  {Ref, ok} | {Ref, {ok, #{atoms => Atoms, exports => Exports}}}
                                         | {Ref, {error, {load_failed, Kind, Message}}}
    {load, Ref, Path, Timeout}       ->  the same, or {Ref, {error, timeout}}
    v}
    [Fun] is an atom [Function], the export of that name of whichever
    module has one ({!Erl.Private.dispatch}), or a tuple
    [{Module, Function}] of two atoms ({!Erl.Private.dispatch_qualified});
    [Args] a proper list, [Path] a binary or a string
    (a list of character codes, taken as UTF-8), [Timeout] a non-negative
    integer (milliseconds) or [infinity]. A load answers
    [{ok, Map}] instead of [ok] when atoms were declared
    ({!Erl.declare_atoms}) or exports made since the last answer that
    carried them (while the plugin initialised, as a rule); the map has a
    key only for what there is. [Atoms] is a list of binaries, their texts,
    each once, for the pool to create. [Exports] ({!new_exports}) lists
    every export of each module that changed. A load that fails forgets the
    atoms declared and the modules changed meanwhile. [Reason] is what
    {!Erl.Private.dispatch} answers. A request of one of these shapes whose
    fields are wrong, or a tuple [{call, Ref, ...}] / [{load, Ref, ...}] of
    the wrong size, is answered [{Ref, {error, {bad_request, Message}}}];
    anything else has no [Ref] to answer and is {!Refused}.

    A [Timeout] is the request's deadline, counted from when the host began
    running it: the host's request watch ([cpp/host], [host::RequestWatch])
    then sends its cancel signal to the thread that runs OCaml, whose
    handler raises {!Erl.Cancelled} at the
    next poll point if that request is still the one running
    ({!watch_requests}). An export
    interrupted so answers [{error, timeout}] ({!Erl.Private.dispatch}), and
    so does a plugin initialiser of a [load]. In a host without a request
    watch (this library's own tests) a [Timeout] is checked and ignored.

    Linking this library (it carries [-linkall]) registers the callbacks;
    it also allows bytecode plugins to declare [external]s (see {!load}). *)

(** What to do with a request. The C++ host reads this value, so its
    layout is an interface: [No_reply] is the immediate 0; [Reply] a block
    of tag 0 with the two terms; [Cast_failed] and [Refused] blocks of tags
    1 and 2 holding one string. Constructors are only ever added at the
    end. *)
type answer =
  | No_reply  (** A cast ran and its export answered [{ok, _}]. *)
  | Reply of Erl.Term.t * Erl.Term.t
      (** [Reply (ref, answer)]: send [{Ref, Answer}]. The host encodes the
          pair itself, so that it can replace [Answer] when it cannot be
          sent ([reply_too_large], [bad_reply]: [cpp/host/README.md]). *)
  | Cast_failed of string
      (** A cast whose export answered [{error, Reason}]: nobody waits for
          an answer, so the host only logs this description (the term in
          Erlang syntax, shortened). *)
  | Refused of string
      (** Not a request, and no [Ref] to answer: why, for the log. *)

val handle : Erl.Private.context -> Erl.Term.t -> answer
(** [handle context request] runs a request in its transport's [context]
    ({!Erl.Private.with_context}: what {!Erl.send}, {!Erl.call_erlang},
    {!Erl.worker} and cancellation answer while it runs). The C++ host sets
    the thread's context itself before it converts the request (so that a
    signal handler that runs meanwhile has it: the slots of
    {!Erl.Private.with_context}, registered as ["camlbeam.context_slots"]),
    then calls [handle] without the context, registered as
    ["camlbeam.host.handle"]. It never raises, short of an
    asynchronous exception in its own code: a signal handler's
    ({!Erl.Cancelled} when the deadline passes outside the export), or
    [Out_of_memory] or [Stack_overflow] in the handler itself or in a
    plugin loader. The host then answers the request's [Ref], if it can find
    one in the frame: [{error, timeout}] for {!Erl.Cancelled},
    [{error, {request_failed, Message}}] otherwise ([cpp/host/README.md]).
    *)

val standalone_context : Erl.Private.context
(** The context of a host that talks to no Erlang ([camlbeam-call], tests):
    {!Erl.send}, {!Erl.call_erlang} and {!Erl.worker} raise
    {!Erl.No_transport} in its requests, which its watch cancels
    ({!deadline_passed}). Registered as ["camlbeam.host.standalone_context"]:
    the C++ host runs a request with it when its transport gives none. *)

val watch_requests : nativeint -> int -> unit
(** [watch_requests hooks signal] is how a host's request watch ([cpp/host],
    [host::RequestWatch]) attaches itself: [hooks] is the address of its
    [struct camlbeam_request_hooks] ([camlbeam_request_hooks.h]), which the
    deadlines of the calling domain's requests go to (each domain has its own
    hooks, and its own watch and signal), and [signal] (a system signal number, a
    real-time signal) its cancel signal, whose OCaml handler this installs:
    it raises {!Erl.Cancelled} when the context of the request running on its
    thread says that the request's deadline passed
    ({!Erl.Private.cancel_requested}; a transport that has this watch answers
    with {!deadline_passed}), and does nothing otherwise (a signal that
    arrives late, after its request ended). [watch_requests 0n signal] detaches the watch
    and restores the signal's default action. Registered as
    ["camlbeam.host.watch_requests"]; only a host calls it. *)

val deadline_passed : unit -> bool
(** Whether the watch says that the deadline of the request it watches has
    passed: the [cancel_requested] of the contexts of a transport that runs
    its requests under the host's watch. [false] without a watch. *)

val add_request : string -> (Erl.Term.t array -> answer) -> unit
(** [add_request kind handler] makes {!handle} pass a tuple request whose
    first element is the atom [kind] to [handler], with the tuple's elements
    ([kind] included). For a transport's own requests, such as the port
    worker's [{hello, Ref, Info}]; registering a kind again replaces its
    handler. [handler] must not raise.
    @raise Invalid_argument for ["call"], ["cast"] and ["load"]. *)

(** {1 Plugins} *)

(** Why a plugin did not load. The C++ host maps the constructors, in this
    order, to its error codes; they are only ever added at the end. *)
type load_error =
  | Enoent  (** No such file. *)
  | Not_a_plugin
      (** Not a plugin of this host's kind: not a shared object or a
          bytecode file, or a [.cma]/[.cmo] given to a native host or a
          [.cmxs] to a bytecode host. *)
  | Incompatible
      (** Compiled against other versions of the units it uses (another
          camlbeam, another compiler), or needs a unit the host does not
          have. *)
  | Already_loaded
      (** A unit of the same name is already in the program: the plugin, a
          plugin with the same module name, or a module of the host. OCaml
          cannot unload or replace a unit; to load a new version, compile
          it under another name and have it name the old one's module
          ([Erl.export ~module_]), whose exports it then replaces. *)
  | Init_failed
      (** The plugin's initialisation raised. What it exported before
          raising stays exported; its units count as loaded. *)

val new_atoms : unit -> Erl.Term.t
(** The atoms declared since the last answer that carried atoms
    ({!Erl.Private.take_new_atoms}), as a list of binaries: what a
    transport's [hello] carries for the code linked into its worker. *)

val new_exports : unit -> Erl.Term.t
(** Every export of each module whose exports changed since the last
    answer that carried exports ({!Erl.Private.take_new_exports}), as a
    list of [{Module, Name, Arity, Signature}]: [Module], [Name] and
    [Signature] binaries (the pool makes atoms of the names, counted like
    declared atoms), [Arity] an integer or [any] ({!Erl.export_raw}). What
    the answer to a load carries, and a transport's [hello] for the code
    linked into its worker. *)

val load : string -> (unit, load_error * string) result
(** [load path] loads a plugin with [Dynlink.loadfile] (so later plugins can
    use its modules); the plugin exports its functions while it
    initialises, by default into the module named after [path]'s file
    ({!Erl.Private.loading}). The message names the file and says what went wrong.
    Registered as ["camlbeam.host.load"]; the C++ host calls it for
    [Host::load].
    @raise Erl.Cancelled, Out_of_memory, Stack_overflow when they interrupt
    the loading (in the plugin's initialiser or in Dynlink): they say
    nothing about the file. *)

val load_error_atom : load_error -> string
(** The [Kind] atom of a [load_failed] error: [enoent], [not_a_plugin],
    [incompatible], [already_loaded] or [init_failed]. *)

(** {1 Memory} *)

val apply_worker_gc_defaults : unit -> unit
(** Sets the GC for a worker that runs one request after another: a minor
    heap of 1M words (8 MB), so that a request's values die young, and
    [max_overhead = 5000], so that a large transient value does not cause a
    compaction per request. Does nothing when [OCAMLRUNPARAM] or
    [CAMLRUNPARAM] is set: they decide. Registered as
    ["camlbeam.host.worker_gc_defaults"]; transports apply it at start-up,
    and the C++ side pairs it with [Host::between_requests].

    [Gc.compact] is registered as ["camlbeam.host.compact"]: the C++ host
    calls it between requests when the major heap has grown well past its
    usual size ([Host::give_back_memory]). *)

(** {1 For messages} *)

val describe : Erl.Term.t -> string
(** A short description of a term for an error message: small terms in
    Erlang syntax, larger ones by kind and size (["a tuple of 5
    elements"]). Its cost does not depend on the size of the term. *)
