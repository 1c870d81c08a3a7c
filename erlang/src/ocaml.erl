%% @doc Run OCaml code from Erlang: pools of OCaml workers, and calls to the
%% functions their plugins export.
%%
%% ```
%% {ok, Pool} = ocaml:start_link(#{plugins => ["priv/mathlib.cmxs"], pool_size => 4}),
%% {ok, 832040} = ocaml:call(Pool, fib, [30]),
%% {ok, 832040} = ocaml:call(Pool, {mathlib, fib}, [30]),
%% {error, {ocaml_exception, <<"Not_found">>, _, _}} = ocaml:call(Pool, lookup, [<<"x">>]),
%% ok = ocaml:cast(Pool, log, [<<"hi">>]),
%% ok = ocaml:load(Pool, "priv/other.cmxs").
%% '''
%%
%% Errors are values, and every call gets exactly one answer within its
%% timeout, whatever the OCaml side does: also when its worker dies under
%% it, loops, stops reading, or answers too late (a late answer is dropped
%% by the VM, never delivered to a later call). The only time a call takes
%% past its timeout is the decoding of an answer that arrived in time.
%%
%% A call does not go through any process on its way in: the caller picks
%% the least loaded worker of the pool from the registry's table (each
%% worker's counter of calls in flight, read in the caller), monitors it with
%% an alias (as `gen_server:call' does), and sends the request itself through
%% the pool's coupling ({@link ocaml_transport}; the option `transport'),
%% without ever waiting for the worker (a worker that cannot take more answers
%% `overloaded'). The answer comes to the alias; the caller checks and decodes
%% it ({@link ocaml_etf_guard} for the port). Under the nif transport a call
%% of a short export is first offered to the pool's lane
%% ({@link ocaml_nif_transport:call_in_lane/4}), which runs it at once on the
%% caller's scheduler as the first worker that runs nothing, if it may. A
%% call that times out tells the worker, which then skips it if it has not
%% started it, and interrupts it at its deadline if it has (`Erl.Cancelled'
%% in OCaml); an OS process that cannot be interrupted is replaced.
-module(ocaml).

-include("camlbeam_registry.hrl").

-export([start_link/1, start/1, child_spec/1, stop/1]).
-export([call/3, call/4, cast/3, load/2, upgrade/2, upgrade/3, workers/1, exports/1]).
-export([handles/0]).
-export([format_error/1, format_error/2]).
-export_type([pool/0, options/0, flavour/0, worker_info/0, fun_name/0, export/0]).
-export_type([call_error/0, start_error/0, load_error/0, upgrade_error/0]).
-export_type([int63/0, int64/0, ref/0]).

-define(DEFAULT_TIMEOUT, 5000).

-define(IS_POOL(Pool), (is_pid(Pool) orelse is_atom(Pool))).
-define(IS_FUN_NAME(Fun), (is_atom(Fun) orelse (tuple_size(Fun) =:= 2 andalso is_atom(element(1, Fun))
                                                andalso is_atom(element(2, Fun))))).

%% An argument of the wrong type (an Elixir keyword list for the options, a string
%% for a function name): `badarg', which the shell (`erl_error') and Elixir (an
%% `ArgumentError') explain argument by argument with format_error/2 (EEP 54).
%% Inline, not a function: the stack trace's first frame must be the API function.
-define(BAD_ARGUMENTS(Args), erlang:error(badarg, Args, [{error_info, #{module => ?MODULE}}])).

%% edoc documents a type with the comment right after its definition.

-type pool() :: pid() | atom().
%% A pool's handle: its pid, or its name when started with `name'.

-type ref() :: reference().
%% An OCaml value held by Erlang (`Erl.Term.Handle' in OCaml), answered by an
%% export of a pool of the `nif' transport: an opaque term (a NIF resource,
%% `is_reference/1' is true) to pass back as an argument of later calls, from
%% any process, to any `nif' pool of the VM. The OCaml value lives while the
%% term does, and is released soon after the garbage collector frees the last
%% copy of it ({@link handles/0} counts them). Each answer makes a new term:
%% the same OCaml value answered twice gives two terms that are not `=:=',
%% both of which are the same value to OCaml. Under the `port' transport an
%% answer holding one is `{error, {bad_reply, Why}}'.

-type flavour() :: native | bytecode.
%% Which workers a pool runs: native code (`.cmxs' plugins) or bytecode
%% (`.cma', `.cmo').

-type fun_name() :: atom() | {Module :: atom(), Function :: atom()}.
%% The OCaml function a call or cast runs: `{Module, Function}', or
%% `Function' alone, which names the export of that name of whichever module
%% has one (`{error, {ambiguous, Function, Modules}}' when several do). A
%% plugin's module is named after its file (`mathlib' for
%% `mathlib.cmxs'), unless it names another (`docs/plugins.md').

-type export() :: {Module :: atom(), Function :: atom(), Arity :: arity() | any, Signature :: binary()}.
%% An OCaml function the workers of a pool export ({@link exports/1}): its
%% module, its name, its arity (`any' for a function that takes any number
%% of arguments, `Erl.export_raw'), and its type in Erlang type syntax, as
%% its converters describe it and as `badarg' errors name the arguments:
%% `<<"fun((ocaml:int63()) -> ocaml:int63())">>'.

-type int63() :: -4611686018427387904..4611686018427387903.
%% OCaml's `int' (63 bits): the integers an export's `Conv.int' accepts. A
%% `badarg' error names it: `expected => <<"ocaml:int63()">>'.

-type int64() :: -9223372036854775808..9223372036854775807.
%% OCaml's `int64': the integers an export's `Conv.int64' accepts
%% (`expected => <<"ocaml:int64()">>').

-type options() :: #{
    transport => ocaml_transport:name(),
    nodes => [node()],
    plugins => [file:filename_all()],
    pool_size => pos_integer(),
    flavour => flavour(),
    executable => file:filename_all(),
    ocaml => ocaml_options:ocaml_version(),
    max_queue => pos_integer(),
    max_queue_bytes => pos_integer(),
    start_timeout => timeout(),
    name => atom(),
    policy => #{send => ocaml_policy:send(), erl_call => ocaml_policy:erl_call(),
                max_erl_calls => pos_integer()},
    max_request_size => pos_integer(),
    max_reply_size => pos_integer(),
    max_memory => pos_integer() | infinity,
    restart_backoff => {non_neg_integer(), non_neg_integer()},
    cast_timeout => timeout(),
    cancel_grace => non_neg_integer(),
    stall_timeout => pos_integer(),
    max_atoms => non_neg_integer()
}.
%% The options of a pool; every one has a default.
%% <ul>
%% <li>`transport': how OCaml runs, {@link ocaml_transport}: `port' (an OS
%%     process per worker, the default), `nif' (OCaml inside this VM,
%%     {@link ocaml_nif_transport}) or `node' (each worker an OCaml node of
%%     the cluster, {@link ocaml_node_transport}; this VM must be
%%     distributed, else the pool answers `{error, not_distributed}').</li>
%% <li>`nodes': for `transport => node', OCaml nodes started elsewhere
%%     (`camlbeam-node --allow-load', same cookie), one worker each, in this
%%     order; `pool_size' is then their number. Without it (`[]', the
%%     default) the pool starts `pool_size' nodes on this host. Plugin paths
%%     are then paths on the nodes' hosts.</li>
%% <li>`plugins': loaded in order into every worker, also after restarts;
%%     relative paths are from the VM's current directory at start.</li>
%% <li>`pool_size': the number of workers, default 1.</li>
%% <li>`flavour': default from the plugins' extensions (`.cmxs' native,
%%     `.cma' and `.cmo' bytecode).</li>
%% <li>`executable': a worker executable of one's own (same protocol).</li>
%% <li>`ocaml': the OCaml the workers are built with, `default' (that of
%%     `make build') or a release such as "5.3.0": the workers in the priv
%%     directory's `ocaml-5.3.0'. Plugins must be compiled by the same OCaml
%%     (a worker refuses another's with `{load_failed, incompatible, _}',
%%     naming both); a worker whose hello reports another release ends with
%%     `{ocaml_mismatch, Wanted, Got}'.</li>
%% <li>`max_queue': calls in flight per worker, default 10000; when every
%%     worker has that many, a call answers `{error, overloaded}'. Callers
%%     check it before adding their own call, so callers racing each other
%%     can pass it by their number: it bounds a queue, it is no semaphore.</li>
%% <li>`max_queue_bytes': bytes of requests each of a worker's port's two
%%     queues may hold unread, default 8 MiB; past it (the worker is not
%%     reading) a call answers `{error, overloaded}' at once instead of
%%     waiting.</li>
%% <li>`start_timeout': for a worker's hello and initial loads (and for
%%     each {@link load/2}), default 10000 ms.</li>
%% <li>`name': registers the pool locally under this name.</li>
%% <li>`policy': what OCaml may do to Erlang ({@link ocaml_policy}); by
%%     default `Erl.send' reaches only pids given as arguments of the call
%%     in flight, and `Erl.call_erlang' nothing.</li>
%% <li>`max_request_size': the largest request, default 1 GiB; a larger one
%%     answers `{error, {request_too_large, Size, Limit}}' unsent.</li>
%% <li>`max_reply_size': the largest answer or message a worker may write,
%%     default 64 MiB. The worker replaces a larger answer by
%%     `{error, {reply_too_large, Size, Limit}}'; a frame over it that the
%%     worker writes anyway is a protocol error, and the worker is replaced.
%%     This also bounds the memory a worker's output can take in the VM: an
%%     answer's decoded term is at most about 16 times its size.</li>
%% <li>`max_memory': the memory a worker's OS process may take, in bytes
%%     (its data: OCaml heap, off-heap binaries, C allocations), default
%%     `infinity'. Past it the export raises `Out_of_memory', or the OS
%%     process dies and is replaced.</li>
%% <li>`restart_backoff': `{First, Max}' milliseconds, default
%%     `{100, 30000}'. A worker whose OS process dies after a healthy run
%%     (10 s) starts another at once; one whose OS processes keep dying young
%%     waits First, then twice as long each time, at most Max.</li>
%% <li>`cast_timeout': how long a {@link cast/3} may run before the worker
%%     interrupts it, default 5000 ms.</li>
%% <li>`cancel_grace': how long past a request's deadline an OS process
%%     that cannot interrupt it (a long C call, a plugin that blocked
%%     signals) is given before it is replaced, default 1000 ms.</li>
%% <li>`stall_timeout': an OS process that writes nothing at all (not even
%%     its heartbeat while a request runs long) for this long while requests
%%     wait is replaced, default 5000 ms (a stopped process, say).</li>
%% <li>`max_atoms': how many atoms the pool's plugins may declare
%%     (`Erl.declare_atoms'), the names of the modules and functions they
%%     export included ({@link exports/1}), default 1024. The pool creates them when a
%%     plugin loads, so that answers holding them decode; a load that would
%%     take the pool past it fails with
%%     `{load_failed, too_many_atoms, Message}'. Atoms are never freed: the
%%     bound keeps plugins from filling the VM's atom table.</li>
%% </ul>

-type worker_info() :: #{id := pos_integer(), pid := pid(), os_pid := non_neg_integer(),
                         flavour := flavour(), ocaml_version := binary(),
                         in_flight := non_neg_integer()}.
%% A live worker of a pool ({@link workers/1}): its id (1 to `pool_size'), its
%% Erlang process, the OS pid of its executable, its flavour, the OCaml release
%% it runs (option `ocaml'), and the calls it has in flight.

-type call_error() :: {undef, atom() | binary() | {atom() | binary(), atom() | binary()}}
                    | {ambiguous, Function :: atom(), Modules :: [atom()]}
                    | {badarity, Expected :: non_neg_integer(), Got :: non_neg_integer()}
                    | {badarg, #{argument := pos_integer(), expected := binary(), got := term()}}
                    | {ocaml_exception, Name :: binary(), Message :: binary(), Backtrace :: binary()}
                    | {reply_too_large, Size :: non_neg_integer(), Limit :: non_neg_integer()}
                    | {bad_request, binary()}
                    | {request_failed, binary()}
                    | {request_too_large, Size :: pos_integer(), Limit :: pos_integer()}
                    | {bad_reply, binary()}
                    | timeout
                    | {worker_crashed, Reason :: ocaml_worker:crash_reason() | term()}
                    | overloaded
                    | no_worker
                    | noproc.
%% The answer of a call that did not return a value. The first seven come
%% from the OCaml side (`cpp/host/README.md'; `request_failed' when the
%% worker could not run the request at all); the others from this side:
%% `request_too_large' and `bad_reply' are the pool's limits and the guard
%% ({@link ocaml_etf_guard}), the rest are about workers, not the request
%% (`docs/api.md' has a line for each). Name is an atom, or a binary when
%% the name cannot be an atom.

-type load_error() :: {load_failed, enoent | not_a_plugin | incompatible | already_loaded
                                    | init_failed | too_many_atoms, Message :: binary()}
                    | {worker_crashed, term()}
                    | {bad_reply, binary()}
                    | {request_failed, binary()}
                    | timeout
                    | upgrade_in_progress
                    | noproc.
%% Why {@link load/2} did not load a plugin into every worker
%% (`upgrade_in_progress': an {@link upgrade/3} is rolling; nothing was loaded).

-type upgrade_error() :: {upgrade_failed, WorkerId :: pos_integer(), Reason :: ocaml_worker:crash_reason() | term()}
                       | upgrade_in_progress
                       | load_in_progress
                       | timeout
                       | noproc.
%% Why {@link upgrade/3} did not move the pool to the new plugins; in every
%% case the pool serves on its plugins. `upgrade_failed': the OS process of
%% worker WorkerId (`pool_size + 1' is the upgrade's temporary worker) could
%% not start on the new plugins, for Reason (as a worker's start fails:
%% `{load_failed, Kind, M}', `{start_timeout, Step}', `{exit_status, N}',
%% ...; `timeout' when the upgrade's own timeout passed while moving it).

-type start_error() :: {unknown_option, term()}
                     | {bad_option, atom(), term()}
                     | not_distributed
                     | ocaml_node_worker:crash_reason()
                     | {nif_unavailable, term()}
                     | {mixed_plugin_kinds, #{flavour() => [file:filename_all()]}}
                     | {no_executable, file:filename_all() | no_priv_dir}
                     | {already_started, pid()}
                     | {not_started, camlbeam}
                     | {load_failed, enoent, Message :: binary()}
                     | ocaml_worker:crash_reason()
                     | {start_timeout, pool}
                     | term().
%% Why a pool did not start (`docs/api.md' has a line for each).

%%% Pools

%% @doc Starts a pool under camlbeam's supervisor, stopped when the calling
%% process dies. Returns once every worker has started and loaded the plugins.
-spec start_link(options()) -> {ok, pool()} | {error, start_error()}.
start_link(Options) when is_map(Options) ->
    start_pool(Options, self());
start_link(Options) ->
    ?BAD_ARGUMENTS([Options]).

%% @doc Starts a pool under camlbeam's supervisor, not tied to the caller.
-spec start(options()) -> {ok, pool()} | {error, start_error()}.
start(Options) when is_map(Options) ->
    start_pool(Options, none);
start(Options) ->
    ?BAD_ARGUMENTS([Options]).

%% @doc A child specification that puts a pool under a supervisor of your
%% own: it starts, restarts and shuts the pool down like any other child
%% (the child is the pool's own supervisor, `type => supervisor'). Its `id'
%% is the pool's `name', or `ocaml_pool'; override it with `maps:merge/2'.
%% The options are checked here: a bad one raises
%% `error({bad_pool_options, Reason})', Reason as {@link start/1} returns it.
-spec child_spec(options()) -> supervisor:child_spec().
child_spec(Options) when is_map(Options) ->
    case prepare(Options, none) of
        {ok, #{name := Name} = Config} ->
            #{id => case Name of undefined -> ocaml_pool; _ -> Name end,
              start => {ocaml_pool, start_link, [Config]},
              restart => permanent,
              shutdown => infinity,
              type => supervisor,
              modules => [ocaml_pool]};
        {error, Reason} ->
            erlang:error({bad_pool_options, Reason}, [Options])
    end;
child_spec(Options) ->
    ?BAD_ARGUMENTS([Options]).

%% @doc Stops a pool of {@link start/1} or {@link start_link/1}: its
%% workers' ports are closed, calls in flight answer
%% `{error, {worker_crashed, shutdown}}'. Stopping a pool that is not
%% running is not an error. A pool of {@link child_spec/1} belongs to your
%% supervisor, which stops it (`supervisor:terminate_child/2'): here it is
%% left alone, `{error, not_owned}'.
-spec stop(pool()) -> ok | {error, not_owned}.
stop(Pool) when not ?IS_POOL(Pool) ->
    ?BAD_ARGUMENTS([Pool]);
stop(Pool) ->
    case whereis_pool(Pool) of
        undefined ->
            ok;
        Pid ->
            case ocaml_pool_sup:stop_pool(Pid) of
                ok -> ok;
                {error, not_found} -> stopped_or_not_owned(Pid)
            end
    end.

%% @doc Loads a plugin into every worker of the pool; workers started later,
%% restarted ones included, load it too. `ok' once every worker has, else
%% the first error, and the plugin is not loaded by later workers.
-spec load(pool(), file:filename_all()) -> ok | {error, load_error()}.
load(Pool, Path) when ?IS_POOL(Pool), is_list(Path) orelse is_binary(Path) ->
    case pool_row(Pool) of
        {ok, #camlbeam_pool{manager = Manager}} ->
            try
                ocaml_pool_manager:load(Manager, Path)
            catch
                %% The manager went with its pool, whatever the reason.
                exit:_ -> {error, noproc}
            end;
        error ->
            {error, noproc}
    end;
load(Pool, Path) ->
    ?BAD_ARGUMENTS([Pool, Path]).

%% @doc Moves the pool to a new plugin list, one worker at a time, with no
%% time limit but each worker's: the same as `upgrade(Pool, Plugins, infinity)'.
-spec upgrade(pool(), [file:filename_all()]) -> ok | {error, upgrade_error()}.
upgrade(Pool, Plugins) ->
    upgrade(Pool, Plugins, infinity).

%% @doc Moves the pool to a new plugin list (`Plugins' replaces the plugins
%% of the options and those {@link load/2} added), one worker at a time,
%% serving throughout: a temporary extra worker starts on the new list
%% first; then each worker in turn stops taking calls, answers those in
%% flight, and starts a new OS process on the new list, which serves before
%% the next worker is moved; then the temporary worker goes, once it has
%% answered its calls. No call is dropped or failed on the way. `ok' once
%% every worker runs the new list, which is from then on the pool's (for
%% restarts and {@link load/2}).
%%
%% If an OS process cannot start on the new list (a plugin missing or
%% refused, an initialiser that fails, `start_timeout'), the roll stops:
%% `{error, {upgrade_failed, WorkerId, Reason}}' at once; the failed worker
%% starts again on the old list, and the workers moved already are moved
%% back, one at a time, in the background (an upgrade or load meanwhile
%% answers `upgrade_in_progress'). Each worker takes at most its drain (30 s)
%% and its start (`start_timeout'); `Timeout' (milliseconds or `infinity')
%% bounds the whole roll, and stops it like a failure of the worker being
%% moved, `timeout'. The plugins must be of the pool's flavour.
-spec upgrade(pool(), [file:filename_all()], timeout()) -> ok | {error, upgrade_error()}.
upgrade(Pool, Plugins, Timeout)
  when ?IS_POOL(Pool), is_list(Plugins),
       (Timeout =:= infinity orelse (is_integer(Timeout) andalso Timeout >= 0)) ->
    case lists:all(fun is_path/1, Plugins) of
        true ->
            case pool_row(Pool) of
                {ok, #camlbeam_pool{manager = Manager}} ->
                    try
                        ocaml_pool_manager:upgrade(Manager, Plugins, Timeout)
                    catch
                        exit:_ -> {error, noproc}
                    end;
                error ->
                    {error, noproc}
            end;
        false ->
            ?BAD_ARGUMENTS([Pool, Plugins, Timeout])
    end;
upgrade(Pool, Plugins, Timeout) ->
    ?BAD_ARGUMENTS([Pool, Plugins, Timeout]).

%% @doc The live workers of a pool, by id; `[]' for a pool that is not running.
-spec workers(pool()) -> [worker_info()].
workers(Pool) when not ?IS_POOL(Pool) ->
    ?BAD_ARGUMENTS([Pool]);
workers(Pool) ->
    case pool_row(Pool) of
        error ->
            [];
        {ok, #camlbeam_pool{pool = Pid}} ->
            %% A worker setting its counter right may leave it below 0 for a moment
            %% (ocaml_worker's recount): never shown so.
            [(Transport:describe(Handle))#{id => Id, pid => Worker,
                                           in_flight => max(0, ocaml_transport:in_flight(InFlight))}
             || #camlbeam_worker{key = {_, Id}, pid = Worker, transport = Transport, handle = Handle,
                                 in_flight = InFlight} <- camlbeam_registry:workers(Pid)]
    end.

%% @doc The OCaml handles ({@link ref()}) this VM holds: `live', the terms
%% alive (each answer that holds a handle makes one), and `unreleased', those
%% the garbage collector freed whose OCaml values the OCaml runtime has not
%% released yet (it does between requests, woken by the release and by this
%% call). Zeros while no pool of the `nif' transport has started.
-spec handles() -> #{live := non_neg_integer(), unreleased := non_neg_integer()}.
handles() ->
    %% Calling camlbeam_nif would load it, and start a runtime.
    case erlang:module_loaded(camlbeam_nif) of
        true -> camlbeam_nif:handles();
        false -> #{live => 0, unreleased => 0}
    end.

%% @doc The OCaml functions the workers of a pool export, sorted: each
%% plugin's (and the worker executable's own) as the workers reported them
%% when they loaded it. A plugin that replaced a module of an earlier one (a
%% new version) shows in its place. `[]' for a pool that is not running. Read
%% from the registry: no message goes to a worker.
-spec exports(pool()) -> [export()].
exports(Pool) when not ?IS_POOL(Pool) ->
    ?BAD_ARGUMENTS([Pool]);
exports(Pool) ->
    case pool_row(Pool) of
        error -> [];
        {ok, Row} -> camlbeam_registry:exports(Row)
    end.

%%% Calls

%% @doc Calls the OCaml function exported as `Fun' with `Args' on the least
%% loaded worker of the pool, and waits up to 5000 ms for its answer: the same
%% as `call(Pool, Fun, Args, 5000)'. `{ok, Value}' is what the function
%% returned; every failure is an `{error, Reason}' (`docs/api.md' lists them,
%% {@link format_error/1} says each in a sentence). `Fun' is `{Module,
%% Function}' (`{mathlib, fib}'; `{:mathlib, :fib}' in Elixir) or, when no
%% other module exports that name, `Function' alone (`fib'); `Args' a list
%% with one term per argument.
-spec call(pool(), fun_name(), [term()]) -> {ok, term()} | {error, call_error()}.
call(Pool, Fun, Args) when ?IS_POOL(Pool), ?IS_FUN_NAME(Fun), is_list(Args) ->
    call(Pool, Fun, Args, ?DEFAULT_TIMEOUT);
call(Pool, Fun, Args) ->
    ?BAD_ARGUMENTS([Pool, Fun, Args]).

%% @doc Calls the OCaml function exported as `Fun' with `Args' on the least
%% loaded worker of the pool, and waits up to `Timeout' milliseconds for its
%% answer, whatever the worker does. A call that times out answers
%% `{error, timeout}'; its worker skips it, or interrupts it at its deadline,
%% and a late answer is dropped, never delivered to a later call. Arguments of
%% the wrong type (a string for `Fun') raise `badarg', explained argument by
%% argument in the shell and in Elixir.
-spec call(pool(), fun_name(), [term()], timeout()) -> {ok, term()} | {error, call_error()}.
call(Pool, Fun, Args, Timeout)
  when ?IS_POOL(Pool), ?IS_FUN_NAME(Fun), is_list(Args),
       (Timeout =:= infinity orelse (is_integer(Timeout) andalso Timeout >= 0)) ->
    case ocaml_nif_transport:call_in_lane(Pool, Fun, Args, Timeout) of
        queue ->
            %% The time spent choosing a worker and encoding the request counts.
            Now = erlang:monotonic_time(millisecond),
            call(Pool, Fun, Args, Now, Timeout, []);
        Answer ->
            Answer
    end;
call(Pool, Fun, Args, Timeout) ->
    ?BAD_ARGUMENTS([Pool, Fun, Args, Timeout]).

%% A worker whose OS process turned out to be gone before the request was
%% written to it was sent nothing: the call goes to the next worker (each is
%% tried once), instead of failing while the others are up.
-spec call(pool(), fun_name(), [term()], integer(), timeout(), [pid()]) ->
    {ok, term()} | {error, call_error()}.
call(Pool, Fun, Args, Now, Timeout, Tried) ->
    case pick_worker(Pool, Tried) of
        {ok, #camlbeam_worker{pid = Worker} = Row} ->
            case call_worker(Row, Fun, Args, Now, Timeout) of
                unsent -> call(Pool, Fun, Args, Now, Timeout, [Worker | Tried]);
                Answer -> Answer
            end;
        {error, _} = Error ->
            Error
    end.

%% @doc Runs the OCaml function exported as `Fun' with `Args' on the least
%% loaded worker, and does not wait: never, also not for a worker that does
%% not read. A cast that fails (or runs past the pool's `cast_timeout', which
%% interrupts it) is logged; one that cannot be queued (no worker,
%% `overloaded', larger than `max_request_size') is dropped.
-spec cast(pool(), fun_name(), [term()]) -> ok.
cast(Pool, Fun, Args) when ?IS_POOL(Pool), ?IS_FUN_NAME(Fun), is_list(Args) ->
    cast(Pool, Fun, Args, []);
cast(Pool, Fun, Args) ->
    ?BAD_ARGUMENTS([Pool, Fun, Args]).

-spec cast(pool(), fun_name(), [term()], [pid()]) -> ok.
cast(Pool, Fun, Args, Tried) ->
    case pick_worker(Pool, Tried) of
        {ok, #camlbeam_worker{pid = Worker, transport = Transport, handle = Handle}} ->
            %% A call whose answer nobody waits for: it counts in the worker's
            %% load while it runs, and its worker logs it if it fails.
            case Transport:send_cast(Handle, Fun, Args) of
                unsent -> cast(Pool, Fun, Args, [Worker | Tried]);
                _ -> ok
            end;
        {error, _} ->
            ok
    end.

%%% Errors

%% @doc A sentence saying what an error of this module means.
-spec format_error(call_error() | load_error() | upgrade_error() | start_error() | not_owned
                   | {bad_pool_options, start_error()}) -> string().
format_error(Reason) ->
    lists:flatten(describe(Reason)).

%% @doc What was wrong with the arguments of a function of this module that
%% raised `badarg': one sentence per argument, for the shell's error report
%% (`erl_error') and Elixir's `ArgumentError' (EEP 54 `error_info'). Not
%% called directly.
-spec format_error(term(), erlang:stacktrace()) -> #{pos_integer() => unicode:chardata()}.
format_error(badarg, [{?MODULE, Function, Args, Info} | _]) when is_list(Args) ->
    Elixir = case proplists:get_value(error_info, Info) of
                 #{pretty_printer := _} -> true;  % only Elixir passes one
                 _ -> false
             end,
    maps:from_list([{Position, Problem}
                    || {Position, Arg} <- lists:zip(lists:seq(1, length(Args)), Args),
                       Problem <- [argument_problem(Function, Position, Arg, Elixir)],
                       Problem =/= none]);
format_error(_, _) ->
    #{}.

%%% Internals

%% What is wrong with argument Position of Function, said with Elixir's syntax
%% for a caller in Elixir; `none' if nothing is.
-spec argument_problem(atom(), pos_integer(), term(), boolean()) -> none | unicode:chardata().
argument_problem(Function, 1, Options, Elixir)
  when Function =:= start_link; Function =:= start; Function =:= child_spec ->
    Example = case Elixir of
                  true -> "%{plugins: [\"priv/mathlib.cmxs\"], pool_size: 2}";
                  false -> "#{plugins => [\"priv/mathlib.cmxs\"], pool_size => 2}"
              end,
    if
        is_map(Options) -> none;
        is_list(Options), Elixir -> ["the options are a map, not a keyword list: ", Example];
        true -> ["not a map of options, such as ", Example]
    end;
argument_problem(_Function, 1, Pool, _Elixir) when ?IS_POOL(Pool) ->
    none;
argument_problem(_Function, 1, _Pool, _Elixir) ->
    "not a pool: the pid start_link/1 or start/1 returned, or the pool's name (an atom)";
argument_problem(Function, 2, Fun, Elixir) when Function =:= call; Function =:= cast ->
    {Example, Qualified} = case Elixir of
                               true -> {":fib", "{:mathlib, :fib}"};
                               false -> {"fib", "{mathlib, fib}"}
                           end,
    if
        ?IS_FUN_NAME(Fun) -> none;
        is_binary(Fun); is_list(Fun) ->
            ["the name of an OCaml function is an atom, such as ", Example, ", not a string"];
        is_tuple(Fun) ->
            ["not {Module, Function}: that is a tuple of two atoms, such as ", Qualified];
        true ->
            ["not the name of an OCaml function: an atom, such as ", Example,
             ", or {Module, Function}, such as ", Qualified]
    end;
argument_problem(load, 2, Path, _Elixir) ->
    case is_list(Path) orelse is_binary(Path) of
        true -> none;
        false -> "not the path of a plugin file (a string)"
    end;
argument_problem(upgrade, 2, Plugins, _Elixir) ->
    case is_list(Plugins) andalso lists:all(fun is_path/1, Plugins) of
        true -> none;
        false -> "not a list of paths of plugin files (strings)"
    end;
argument_problem(upgrade, 3, Timeout, Elixir) ->
    argument_problem(call, 4, Timeout, Elixir);
argument_problem(Function, 3, Args, _Elixir) when Function =:= call; Function =:= cast ->
    case is_list(Args) of
        true -> none;
        false -> "not a list of arguments, one term per argument of the OCaml function"
    end;
argument_problem(call, 4, Timeout, Elixir) ->
    case Timeout =:= infinity orelse (is_integer(Timeout) andalso Timeout >= 0) of
        true -> none;
        false when Elixir -> "not a timeout: milliseconds (a non-negative integer) or :infinity";
        false -> "not a timeout: milliseconds (a non-negative integer) or infinity"
    end;
argument_problem(_Function, _Position, _Arg, _Elixir) ->
    none.

-spec is_path(term()) -> boolean().
is_path(Path) ->
    is_binary(Path) orelse (is_list(Path) andalso Path =/= [] andalso io_lib:char_list(Path)).

-spec start_pool(options(), pid() | none) -> {ok, pool()} | {error, start_error()}.
start_pool(Options, Owner) ->
    case prepare(Options, Owner) of
        {ok, Config} -> start_validated(Config);
        {error, _} = Error -> Error
    end.

%% The options checked, the executable and the plugins found: what a pool
%% starts from.
-spec prepare(options(), pid() | none) -> {ok, ocaml_pool:config()} | {error, start_error()}.
prepare(Options, Owner) ->
    case ocaml_options:validate(Options) of
        {ok, #{transport := Name, plugins := Plugins, nodes := Nodes} = Config} ->
            {ok, Transport} = ocaml_transport:callback_module(Name),
            %% The plugins of given nodes are on their hosts, not necessarily on this one.
            Local = case Nodes of
                        [] -> Plugins;
                        [_ | _] -> []
                    end,
            case {Transport:prepare(Config), missing_plugin(Local)} of
                {{ok, Prepared}, none} -> {ok, Prepared#{owner => Owner}};
                {{error, _} = Error, _} -> Error;
                {_, Missing} -> {error, {load_failed, enoent, Missing}}
            end;
        {error, _} = Error ->
            Error
    end.

%% The first plugin that is not a file, said as the worker would say it:
%% caught here, before any OS process starts.
-spec missing_plugin([file:filename_all()]) -> none | binary().
missing_plugin([]) ->
    none;
missing_plugin([Path | Paths]) ->
    case filelib:is_regular(Path) of
        true -> missing_plugin(Paths);
        false ->
            case unicode:characters_to_binary([filename:absname(Path), ": no such file"]) of
                Message when is_binary(Message) -> Message
            end
    end.

%% Not a child of ocaml_pool_sup: it stopped meanwhile (then `ok', as for any
%% pool that is not running), or it runs under someone else's supervisor.
-spec stopped_or_not_owned(pid()) -> ok | {error, not_owned}.
stopped_or_not_owned(Pid) ->
    case is_process_alive(Pid) of
        true -> {error, not_owned};
        false -> ok
    end.

-spec start_validated(ocaml_pool:config()) -> {ok, pool()} | {error, start_error()}.
start_validated(#{name := Name, start_timeout := Timeout} = Config) ->
    try ocaml_pool_sup:start_pool(Config) of
        {ok, Pid} ->
            %% Waited for here, not in the pool supervisor, which other pools share.
            case ocaml_pool:await_ready(Pid, Timeout) of
                ok when Name =:= undefined -> {ok, Pid};
                ok -> {ok, Name};
                {error, Reason} -> _ = ocaml_pool_sup:stop_pool(Pid), {error, Reason}
            end;
        {error, Reason} ->
            {error, start_failure(Reason)}
    catch
        exit:{noproc, _} -> {error, {not_started, camlbeam}}
    end.

%% What made the pool fail, out of the supervisors' wrapping: the worker's
%% or the manager's reason.
-spec start_failure(term()) -> start_error().
start_failure({shutdown, {failed_to_start_child, workers,
                          {shutdown, {failed_to_start_child, {worker, _}, Reason}}}}) ->
    Reason;
start_failure({shutdown, {failed_to_start_child, manager, Reason}}) ->
    Reason;
start_failure(Reason) ->
    Reason.

-spec whereis_pool(pool()) -> pid() | undefined.
whereis_pool(Pool) when is_pid(Pool) -> Pool;
whereis_pool(Name) when is_atom(Name) ->
    case whereis(Name) of
        Pid when is_pid(Pid) -> Pid;
        _ -> undefined
    end.

-spec pool_row(pool()) -> {ok, #camlbeam_pool{}} | error.
pool_row(Pool) ->
    case whereis_pool(Pool) of
        undefined -> error;
        Pid -> camlbeam_registry:pool(Pid)
    end.

%% Tried: the workers this request found gone already.
-spec pick_worker(pool(), [pid()]) -> {ok, #camlbeam_worker{}} | {error, overloaded | no_worker | noproc}.
pick_worker(Pool, Tried) ->
    case whereis_pool(Pool) of
        undefined ->
            {error, noproc};
        Pid ->
            case least_loaded(untried(camlbeam_registry:workers(Pid), Tried), none, 0) of
                {ok, _} = Found -> Found;
                {error, overloaded} = Overloaded -> Overloaded;
                {error, no_worker} = NoWorker ->
                    case camlbeam_registry:pool(Pid) of
                        {ok, _} -> NoWorker;
                        error -> {error, noproc}
                    end
            end
    end.

%% The first attempt of a call (Tried = []), the common case, copies nothing.
-spec untried([#camlbeam_worker{}], [pid()]) -> [#camlbeam_worker{}].
untried(Workers, []) ->
    Workers;
untried(Workers, Tried) ->
    [W || #camlbeam_worker{pid = P} = W <- Workers, not lists:member(P, Tried)].

%% The worker with the fewest calls in flight (the first of those with as
%% few), if it has room for one more.
-spec least_loaded([#camlbeam_worker{}], #camlbeam_worker{} | none, integer()) ->
    {ok, #camlbeam_worker{}} | {error, overloaded | no_worker}.
least_loaded([], none, _) ->
    {error, no_worker};
least_loaded([], #camlbeam_worker{max_queue = Max}, Load) when Load >= Max ->
    {error, overloaded};
least_loaded([], Best, _) ->
    {ok, Best};
least_loaded([#camlbeam_worker{in_flight = InFlight} = Worker | Workers], Best, BestLoad) ->
    case ocaml_transport:in_flight(InFlight) of
        Load when Best =:= none; Load < BestLoad -> least_loaded(Workers, Worker, Load);
        _ -> least_loaded(Workers, Best, BestLoad)
    end.

-spec call_worker(#camlbeam_worker{}, fun_name(), [term()], integer(), timeout()) ->
    {ok, term()} | {error, call_error()} | unsent.
call_worker(#camlbeam_worker{pid = Worker, transport = Transport, handle = Handle},
            Fun, Args, Started, Timeout) ->
    %% What is left of the timeout when the request is sent is the worker's.
    case Transport:send_call(Handle, Worker, Fun, Args, time_left(Started, Timeout)) of
        {sent, Tag, Monitor} ->
            await(Transport, Handle, Tag, Monitor, time_left(Started, Timeout));
        {answered, Answer} ->
            answered(Transport, Handle, Answer);
        NotSent ->
            NotSent
    end.

-spec await(module(), ocaml_transport:handle(), ocaml_transport:tag(), reference(), timeout()) ->
    {ok, term()} | {error, call_error()}.
await(Transport, Handle, Tag, Monitor, Timeout) ->
    receive
        {Tag, Answer} ->
            erlang:demonitor(Monitor, [flush]),
            answered(Transport, Handle, Answer);
        {'DOWN', Monitor, process, _, Reason} ->
            %% Under nif the call may still run, and would answer this process.
            given_up(Transport, Handle, Tag, {error, {worker_crashed, Reason}})
    after Timeout ->
        %% The answer will not reach this process once the cancel is made (the
        %% port: its alias goes with the monitor). The cancel lets the worker
        %% answer at once if it has not started it.
        erlang:demonitor(Monitor, [flush]),
        given_up(Transport, Handle, Tag, {error, timeout})
    end.

%% After the cancel, the answer is here if the worker sent it before the alias
%% went (or, under nif, before the call was withdrawn), and never comes later.
-spec given_up(module(), ocaml_transport:handle(), ocaml_transport:tag(), {error, call_error()}) ->
    {ok, term()} | {error, call_error()}.
given_up(Transport, Handle, Tag, Error) ->
    ok = Transport:cancel(Handle, Tag),
    receive
        {Tag, Answer} -> answered(Transport, Handle, Answer)
    after 0 ->
        Error
    end.

-spec answered(module(), ocaml_transport:handle(), term()) -> {ok, term()} | {error, call_error()}.
answered(Transport, Handle, Answer) ->
    ok = Transport:answered(Handle),
    Transport:decode_answer(call, Answer).

%% What is left of Timeout, begun at Started.
-spec time_left(integer(), timeout()) -> timeout().
time_left(_Started, infinity) -> infinity;
time_left(Started, Timeout) -> max(0, Started + Timeout - erlang:monotonic_time(millisecond)).

-spec describe(term()) -> io_lib:chars().
describe({undef, {Module, Fun}}) ->
    io_lib:format("the OCaml module ~tp exports no function ~tp", [Module, Fun]);
describe({undef, Fun}) ->
    io_lib:format("no OCaml function is exported as ~tp", [Fun]);
describe({ambiguous, Fun, [First | _] = Modules}) when is_list(Modules) ->
    io_lib:format("the OCaml modules ~ts all export ~tp: name one, as in {~tp, ~tp}",
                  [lists:join(", ", [io_lib:format("~tp", [M]) || M <- Modules]), Fun, First, Fun]);
describe({badarity, Expected, Got}) ->
    io_lib:format("the OCaml function takes ~b arguments, not ~b", [Expected, Got]);
describe({badarg, #{argument := N, expected := Expected, got := Got}}) ->
    io_lib:format("argument ~b is ~tP, not of the type ~ts", [N, Got, 10, Expected]);
describe({ocaml_exception, Name, Message, _Backtrace}) ->
    io_lib:format("the OCaml function raised ~ts: ~ts", [Name, Message]);
describe({reply_too_large, Size, Limit}) ->
    io_lib:format("the answer would take ~b bytes, more than the worker's limit of ~b",
                  [Size, Limit]);
describe({request_too_large, Size, Limit}) ->
    io_lib:format("the request takes ~b bytes, more than the pool's max_request_size of ~b",
                  [Size, Limit]);
describe({request_failed, Message}) ->
    io_lib:format("the worker could not run the request: ~ts", [Message]);
describe({bad_request, Message}) ->
    io_lib:format("the worker refused the request: ~ts", [Message]);
describe({bad_reply, Message}) ->
    io_lib:format("the answer is not a term of this VM: ~ts", [Message]);
describe(timeout) ->
    "no answer in time; a late one is dropped";
describe({worker_crashed, Reason}) ->
    io_lib:format("the worker stopped before answering: ~ts", [describe(Reason)]);
describe(overloaded) ->
    "every worker of the pool has max_queue calls in flight";
describe(no_worker) ->
    "no worker of the pool is running (they are being restarted)";
describe(noproc) ->
    "no such pool";
describe({upgrade_failed, Id, Reason}) ->
    io_lib:format("the upgrade stopped: worker ~b could not start on the new plugins (~ts); "
                  "the pool serves on its plugins", [Id, describe(Reason)]);
describe(upgrade_in_progress) ->
    "an upgrade of this pool is in progress (or moving its workers back after a failure)";
describe(load_in_progress) ->
    "a plugin is being loaded into this pool: upgrade once the load has answered";
describe(not_owned) ->
    "the pool runs under another supervisor (ocaml:child_spec/1), which stops it";
describe({bad_pool_options, Reason}) ->
    io_lib:format("bad pool options: ~ts", [describe(Reason)]);
describe({load_failed, Kind, Message})
  when Kind =:= enoent; Kind =:= not_a_plugin; Kind =:= incompatible;
       Kind =:= already_loaded; Kind =:= init_failed ->
    io_lib:format("the plugin did not load (~ts): ~ts", [Kind, Message]);
describe({load_failed, too_many_atoms, Message}) ->
    io_lib:format("the plugin declares (or exports names that make) more atoms than the pool's max_atoms "
                  "allows: ~ts", [Message]);
describe({unknown_option, Key}) ->
    io_lib:format("unknown option ~tp", [Key]);
describe({bad_option, Key, Value}) ->
    io_lib:format("bad value for option ~ts: ~tP", [Key, Value, 10]);
describe({mixed_plugin_kinds, Kinds}) ->
    io_lib:format("native and bytecode plugins in one pool: ~tp", [Kinds]);
describe({no_executable, no_priv_dir}) ->
    "no worker executable: the camlbeam application has no priv directory";
describe({no_executable, Path}) ->
    io_lib:format("no worker executable at ~ts", [Path]);
describe({already_started, Pid}) ->
    io_lib:format("a process with that name is running: ~p", [Pid]);
describe({not_started, camlbeam}) ->
    "the application camlbeam is not started";
describe({exit_status, 124}) ->
    "the worker's OS process exited with status 124: a request ran past its deadline and "
    "could not be interrupted (cancel_grace)";
describe({exit_status, Status}) when Status > 128, Status < 160 ->
    io_lib:format("the worker's OS process was killed by signal ~b", [Status - 128]);
describe({exit_status, Status}) ->
    io_lib:format("the worker's OS process exited with status ~b", [Status]);
describe({malformed_frame, {frame_too_large, Size, Limit}}) ->
    io_lib:format("the worker wrote a frame of ~b bytes, over the pool's max_reply_size of ~b",
                  [Size, Limit]);
describe({malformed_frame, Malformed}) ->
    io_lib:format("the worker broke the protocol: ~tP", [Malformed, 10]);
describe(flooding) ->
    "the worker's OS process wrote faster than the VM could read it (more than 1024 reads "
    "waiting, or heartbeats by the dozen): it was replaced";
describe(unresponsive) ->
    "the worker's OS process wrote nothing for stall_timeout while requests waited "
    "(stopped, or not reading); it was replaced";
describe(overdue) ->
    "the worker's OS process ran past the deadlines of every request it had and did not "
    "stop; it was replaced";
describe(recycled) ->
    "the worker was restarted on purpose (a plugin failed to load on the pool)";

describe({port_exit, Reason}) ->
    io_lib:format("the worker's port closed: ~tP", [Reason, 10]);
describe({spawn_failed, Reason}) ->
    io_lib:format("the worker executable could not be started: ~tP", [Reason, 10]);
describe({start_timeout, listen}) ->
    "the OCaml node did not listen within start_timeout";
describe({start_timeout, info}) ->
    "the OCaml node did not say what it runs on within start_timeout";
describe({start_timeout, hello}) ->
    "the worker did not answer hello within start_timeout";
describe({start_timeout, pool}) ->
    "the pool's workers did not report their start within start_timeout";
describe({start_timeout, {load, Path}}) ->
    io_lib:format("the worker did not load ~ts within start_timeout", [Path]);
describe({flavour_mismatch, Expected, Got}) ->
    io_lib:format("a ~ts worker was asked for, the executable is ~ts", [Expected, Got]);
describe({ocaml_mismatch, Wanted, Got}) ->
    io_lib:format("workers of OCaml ~ts were asked for, and they run OCaml ~ts",
                  [Wanted, Got]);
describe({protocol_mismatch, Version}) ->
    io_lib:format("the worker does not speak protocol 2: ~tP", [Version, 10]);
describe({bad_hello, Answer}) ->
    io_lib:format("the worker's hello is not the protocol's: ~tP", [Answer, 10]);
describe(no_pool) ->
    "the worker's pool is gone";
describe(not_distributed) ->
    "the node transport needs this VM to be a distributed node (erl -sname Name, or net_kernel:start/2)";
describe({cannot_connect, Node}) ->
    io_lib:format("the OCaml node ~ts cannot be reached (is it up, with this VM's cookie?)", [Node]);
describe({no_node, Id}) ->
    io_lib:format("the pool's option nodes names no node for worker ~b", [Id]);
describe(noconnection) ->
    "the connection to the worker's OCaml node was lost";
describe({bad_info, Info}) ->
    io_lib:format("the OCaml node's info is not camlbeam-node's: ~tP", [Info, 10]);
describe({nif_unavailable, Why}) ->
    io_lib:format("the OCaml runtime of the nif transport is not available: ~ts",
                  [case is_binary(Why) of true -> Why; false -> io_lib:format("~tP", [Why, 10]) end]);
describe(Other) ->
    io_lib:format("~tP", [Other, 10]).
