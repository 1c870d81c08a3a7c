%% @doc How a pool reaches its workers: the behaviour every coupling
%% implements, and the in-flight counters the callers route by.
%%
%% A pool's option `transport' names the coupling; {@link callback_module/1}
%% gives the module implementing it. The pool and the API ({@link ocaml},
%% {@link ocaml_pool}, {@link ocaml_worker_sup}, {@link ocaml_pool_manager})
%% reach workers only through these callbacks, so a coupling is one module
%% (and the processes it starts):
%%
%% <ul>
%% <li>`port' ({@link ocaml_port_transport}): an OS process per worker, pipes;
%%     the default.</li>
%% <li>`nif' ({@link ocaml_nif_transport}): OCaml inside this VM, one runtime
%%     for every pool; answers by `enif_send'.</li>
%% <li>`node' ({@link ocaml_node_transport}): each worker an OCaml node of
%%     the cluster (`camlbeam-node'), started by the pool on this host or
%%     given by name; reached over distribution.</li>
%% </ul>
%%
%% <h3>A worker</h3>
%%
%% Each worker of a pool is an Erlang process ({@link start_link/2}, under the
%% pool's worker supervisor) that publishes itself in the registry
%% (`camlbeam_registry') while it takes calls, with:
%% <ul>
%% <li>its pid: callers monitor it with an alias, so that its death answers
%%     their calls `{worker_crashed, Reason}';</li>
%% <li>the callback module, and a handle (any term) that the module's caller-side
%%     callbacks ({@link send_call/5}, {@link send_cast/3}, {@link cancel/2},
%%     {@link describe/1}) get back: what a caller needs to send to that
%%     worker without going through its process (the port of a port worker,
%%     say);</li>
%% <li>its in-flight counter ({@link new_counter/0}).</li>
%% </ul>
%%
%% <h3>A call</h3>
%%
%% The caller ({@link ocaml:call/4}) picks the worker with the lowest counter
%% (`overloaded' when it is at `max_queue'), monitors the worker's process
%% with an alias, and calls `send_call(Handle, Alias, Fun, Args, Deadline)'
%% in its own process. Whatever the worker has to say comes to the alias as
%% `{Alias, Answer}', which the caller gives to {@link decode_answer/2}: the
%% worker's process may forward it (port), or the worker may send it straight
%% to the alias (a C-node answering `{'$gen_call', ...}', a NIF's `enif_send').
%% When the caller's timeout passes first, it deactivates the alias (the VM
%% drops a late answer: it never reaches a later call) and calls
%% {@link cancel/2}. `unsent' from `send_call' means the worker turned out to
%% be gone before anything was sent: the caller tries another one.
%%
%% <h3>Counting calls in flight</h3>
%%
%% Routing and `max_queue' read each worker's counter in the caller, with no
%% message to any process; the transport keeps it, in the caller and in its
%% worker: +1 ({@link count_in/1}) when `send_call' or `send_cast' takes a
%% request (before sending it, so that callers racing each other see it), -1
%% ({@link count_out/1}) exactly once when that request is over for the worker:
%% answered, cancelled, or lost with the worker. A request `send_call'
%% refuses is counted out before it returns. The one rule a coupling must keep:
%% a caller killed while it waits (`exit(Caller, kill)' runs no code in the
%% caller) must not leave its call counted; so the count is taken back where
%% the end of the call is seen, not only in the caller. The port's worker
%% process counts a request out when it takes the request's row (at its
%% answer, or when its OS process ends), and corrects the counter against its
%% table of requests when they disagree for a whole check (a caller killed
%% between two of its own steps). A coupling whose answers bypass the worker's
%% process (node, nif) counts out in `decode_answer' and `cancel', in the
%% caller, and must correct for killed callers in a similar way; in every
%% coupling a worker starts each connection or OS process with a new counter.
-module(ocaml_transport).

-export([callback_module/1, names/0]).
-export([new_counter/0, in_flight/1, count_in/1, count_out/1, correct/2, recount/3]).
-export_type([name/0, tag/0, handle/0, counter/0, send_refusal/0, unexported/0, answer_kind/0, worker_description/0,
              count_seen/0]).

-type name() :: port | node | nif.
%% A coupling's name, as the pool option `transport' gives it.

-type tag() :: reference() | nonempty_improper_list(alias, reference()).
%% What the answer to a call sent comes tagged with: `{Tag, Answer}'.

-type handle() :: term().
%% What a worker's callback module needs to reach it from a caller, as the
%% worker published it; only that module looks into it.

-opaque counter() :: counters:counters_ref().
%% A worker's count of requests in flight ({@link new_counter/0}).

-type send_refusal() :: overloaded
                      | {request_too_large, Size :: pos_integer(), Limit :: pos_integer()}
                      | unexported().
%% Why a worker did not take a request, which the caller answers at once.

-type unexported() :: {undef, ocaml:fun_name()}
                    | {ambiguous, Function :: atom(), Modules :: [module(), ...]}.
%% A name no function of the pool has, as the OCaml side answers it: what a
%% coupling that looks names up in the caller (the nif's shared runtime holds
%% every pool's plugins, {@link ocaml_nif_transport:qualify/2}) answers at once.

-type answer_kind() :: call | load.
%% What an answer arriving at an alias is the answer to: a call
%% ({@link send_call/5}) or a plugin's load ({@link load/3}).

-type worker_description() :: #{os_pid := non_neg_integer(), flavour := ocaml_options:flavour(),
                                ocaml_version := binary()}.
%% What {@link ocaml:workers/1} shows of a worker besides its id, pid and
%% calls in flight: the OS process running its OCaml runtime (the VM's own
%% for a NIF), that runtime's flavour and its OCaml release (`<<"5.3.0">>').

%%% The callbacks

-callback prepare(Config :: ocaml_options:config()) ->
    {ok, ocaml_options:config()} | {error, ocaml:start_error()}.
%% Checks and completes a pool's options before any process of the pool
%% starts (the port: finds the worker executable), for {@link ocaml:start/1}
%% and {@link ocaml:child_spec/1}. The options are valid already.

-callback start_link(Pool :: pid(), Id :: pos_integer()) ->
    {ok, pid()} | ignore | {error, term()}.
%% Starts worker Id of a pool, linked to the caller (the pool's worker
%% supervisor). The process joins the pool's manager
%% ({@link ocaml_pool_manager:join/2}) for its set-up, reports its start
%% ({@link ocaml_pool_manager:started/3}), and publishes itself in the
%% registry while it takes calls.

-callback send_call(handle(), Worker :: pid(), Fun :: ocaml:fun_name(), Args :: [term()],
                    Deadline :: timeout()) ->
    {sent, Tag :: tag(), Monitor :: reference()} | {answered, Answer :: term()} | unsent
    | {error, send_refusal()}.
%% Sends a call, in the caller's process, without ever waiting for the
%% worker. `{sent, Tag, Monitor}': its one answer will come to the caller as
%% `{Tag, Answer}', and `Monitor' watches the worker's process (`port': both
%% are an alias monitor of it, so that the VM drops an answer that comes after
%% the caller gave up; `nif': a plain reference, whose answer cancel/2 keeps
%% out of the mailbox, and a monitor; `node': gen's `[alias | Alias]' of a
%% one-reply alias, and a plain monitor of the node's process). `{answered, Answer}': the call ran as
%% it was sent (`nif': a short export, on the calling scheduler), and that is
%% its answer. `unsent': nothing was sent because the worker is gone (the
%% caller tries another). Deadline: how long the worker may run it. A request
%% sent is counted in, one refused is not (module doc); one answered at once
%% is counted out with `answered/1', as any.

-callback send_cast(handle(), Fun :: ocaml:fun_name(), Args :: [term()]) ->
    ok | unsent | {error, send_refusal()}.
%% Sends a cast: a call nobody awaits, which the worker runs for at most the
%% pool's `cast_timeout' and logs if it fails. A cast sent counts in flight
%% until the worker is done with it.

-callback cancel(handle(), Tag :: tag()) -> ok.
%% The caller of the call sent with Tag gave up (its timeout passed, or the
%% worker's process went down; its monitor is gone already): best effort, the
%% worker skips the call if it has not started it, and interrupts it
%% otherwise. Once this returns the answer is in the caller's mailbox or never
%% comes there (`port': the VM drops it at the deactivated alias; `nif': the
%% library withdraws the call).

-callback answered(handle()) -> ok.
%% The caller got the answer of a call it sent: a transport whose answers
%% come straight to the caller (`nif') counts the call out here; one whose
%% worker's process forwards them (`port') counted it out there.

-callback decode_answer(answer_kind(), Answer :: term()) -> {ok, term()} | {error, term()}.
%% What an `{Alias, Answer}' message says, in the process that got it: for a
%% call `{ok, Value}' or `{error, ocaml:call_error()}', for a load
%% `{ok, #{atoms := AtomTexts, exports := Exports}}' (the atoms the plugin
%% declares, which the pool creates, and the exports of the modules it
%% loaded, which the pool lists: as texts, since the VM may not have them yet)
%% or `{error, ocaml:load_error()}'. A worker that crashed with the request in
%% flight answers `{error, {worker_crashed, Reason}}' through here too.

-callback load(Worker :: pid(), Alias :: reference(), Path :: file:filename_all()) -> ok.
%% Asks a worker to load a plugin; the answer comes to Alias, for
%% `decode_answer(load, Answer)'. A worker that cannot load now (it is
%% starting again) loads the plugin at its next start and answers then.

-callback recycle(Worker :: pid()) -> ok.
%% Restarts a worker's OCaml side with the pool's current set-up (from
%% {@link ocaml_pool_manager:join/2}) once the calls in flight are answered: a
%% rolling upgrade's step, and the way back from a plugin that failed to load.
%% The worker leaves the registry meanwhile.

-callback stop(Worker :: pid()) -> ok.
%% Stops a worker once its calls in flight are answered (at once if it has
%% none); it exits `normal' and is not restarted: the temporary worker of a
%% rolling upgrade. A pool stopping stops its workers through their
%% supervisor instead, calls in flight answering `{worker_crashed, shutdown}'.

-callback describe(handle()) -> worker_description().
%% What {@link ocaml:workers/1} shows of a published worker.

%%% Transports

%% @doc The module implementing a coupling.
-spec callback_module(name()) -> {ok, module()}.
callback_module(port) -> {ok, ocaml_port_transport};
callback_module(node) -> {ok, ocaml_node_transport};
callback_module(nif) -> {ok, ocaml_nif_transport}.

%% @doc The names the option `transport' accepts.
-spec names() -> [name(), ...].
names() ->
    [port, node, nif].

%%% In-flight counters

%% @doc A new counter, at 0, for one worker's connection or OS process.
%% One atomic cell: every caller of the pool reads it when it routes, so a
%% read must cost one load, not a sum over schedulers (what `write_concurrency'
%% would make it).
-spec new_counter() -> counter().
new_counter() ->
    counters:new(1, []).

%% @doc The requests a worker has in flight, as the callers route by it.
-spec in_flight(counter()) -> integer().
in_flight(Counter) ->
    counters:get(Counter, 1).

%% @doc One more request in flight.
-spec count_in(counter()) -> ok.
count_in(Counter) ->
    counters:add(Counter, 1, 1).

%% @doc One request less in flight.
-spec count_out(counter()) -> ok.
count_out(Counter) ->
    counters:add(Counter, 1, -1).

%% @doc Adds Delta to the counter: a worker setting it right against what it
%% knows is in flight. An addition, not a write: the callers' own additions
%% meanwhile are kept.
-spec correct(counter(), integer()) -> ok.
correct(Counter, Delta) ->
    counters:add(Counter, 1, Delta).

-type count_seen() :: {Exact :: non_neg_integer(), Counted :: integer()} | none.
%% What a worker's last recount saw, when its counter and its own count differed.

%% @doc A worker's recount: sets its counter right against `Exact', the
%% requests it knows are in flight (a port worker's table, a nif worker's
%% queue), when the two have differed the same way at two recounts in a row
%% (`Seen', what the last one returned); returns what the next one takes. A
%% difference that lasts one recount is a request on its way (counted in and
%% not sent yet, answered and its answer not taken yet); one that lasts is a
%% caller killed between two of its steps.
-spec recount(counter(), non_neg_integer(), count_seen()) -> count_seen().
recount(Counter, Exact, Seen) ->
    case {Exact, in_flight(Counter)} of
        {Exact, Exact} ->
            none;
        {Exact, Counted} when Seen =:= {Exact, Counted} ->
            ok = correct(Counter, Exact - Counted),
            none;
        Differing ->
            Differing
    end.
