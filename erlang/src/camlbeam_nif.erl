%% @doc The functions of `camlbeam_nif.so', the OCaml runtime inside this VM
%% (`cpp/nif/README.md'); only {@link ocaml_nif_transport} and
%% {@link ocaml_nif_worker} call them.
%%
%% The library is loaded with this module, once per VM, when the first pool
%% of the `nif' transport starts: that pool's option `ocaml' chooses which
%% OCaml's build ({@link ocaml_nif_transport:prepare/1} says which in
%% `persistent_term' `{camlbeam_nif, ocaml}' before it loads this module, which
%% it must not call before), and every later pool shares it: a VM has one OCaml
%% runtime, which cannot be stopped or replaced. A new version of this module
%% loaded with `code:load_file/1' keeps the running runtime and its workers.
-module(camlbeam_nif).

-export([runtime_info/0, new_worker/6, request/3, call/3, cancel/2, close/2, erl_reply/2, queued/1, handles/0]).
-export([new_lane/0, set_lane/4, lane_call/4]).
-export_type([worker/0, lane/0, runtime_info/0, handle_counts/0]).
-on_load(init/0).

-nifs([runtime_info/0, new_worker/6, request/3, call/3, cancel/2, close/2, erl_reply/2, queued/1, handles/0,
       new_lane/0, set_lane/4, lane_call/4]).

%% A worker's handle on the runtime (a NIF resource).
-opaque worker() :: reference().
%% A pool's way in for calls the library runs where they are made ({@link lane_call/4}).
-opaque lane() :: reference().

-type runtime_info() :: #{ocaml_version := binary(), flavour := native, domains := pos_integer(),
                          calls_on_scheduler := non_neg_integer(), calls_on_dirty := non_neg_integer()}.
%% `domains': how many of the runtime's domains run calls (OCaml 5: one per scheduler, at
%% most 16; OCaml 4: one thread). `calls_on_scheduler', `calls_on_dirty': the calls the
%% NIF answered itself since the runtime started, on the scheduler that made them (short
%% exports) or on a dirty CPU scheduler (normal ones); OCaml 5 only, zeros under 4.13.

-type handle_counts() :: #{live := non_neg_integer(), unreleased := non_neg_integer()}.
%% `live': the resource objects of OCaml handles ({@link ocaml:ref()}) the VM
%% holds; `unreleased': those its garbage collector freed whose OCaml values
%% the runtime's thread has not released yet.

%% The OCaml whose build the library is loaded from (set before the module's
%% first load).
-define(VERSION_KEY, {?MODULE, ocaml}).
%% The library the running runtime was loaded from.
-define(LIBRARY_KEY, {?MODULE, library}).

%% A new version of this module loads the library the running version
%% loaded, whose upgrade callback keeps its runtime; one that asks for another
%% OCaml is refused here (the other library would refuse to start a second
%% runtime).
-spec init() -> ok | {error, term()}.
init() ->
    Wanted = persistent_term:get(?VERSION_KEY, default),
    case running() of
        {ok, Running, Path} ->
            case Wanted =:= default orelse unicode:characters_to_list(Wanted) =:= Running of
                true -> erlang:load_nif(Path, 0);
                false -> {error, {ocaml_mismatch, Wanted, Running}}
            end;
        none ->
            case library(Wanted) of
                {ok, Path} ->
                    persistent_term:put(?LIBRARY_KEY, Path),
                    erlang:load_nif(Path, domains());
                {error, _} = Error ->
                    Error
            end
    end.

%% The OCaml and the library of the current version of this module, while a
%% new version loads.
-spec running() -> {ok, string(), file:filename()} | none.
running() ->
    case {erlang:module_loaded(?MODULE), persistent_term:get(?LIBRARY_KEY, none)} of
        {true, Path} when Path =/= none ->
            try ?MODULE:runtime_info() of
                {ok, #{ocaml_version := Version}} -> {ok, binary_to_list(Version), Path};
                {error, _} -> none
            catch
                error:_ -> none
            end;
        _ ->
            none
    end.

%% How many domains the runtime runs calls on (OCaml 5; the library takes at
%% most 16, and OCaml 4 one thread): the application environment's
%% `nif_domains', a positive integer, or `schedulers' (the default), one per
%% scheduler. More domains run more calls at once; a minor collection on any
%% domain stops them all, which shows in the tail latency of large terms
%% (cpp/nif/README.md measures it).
-spec domains() -> pos_integer().
domains() ->
    case application:get_env(camlbeam, nif_domains, schedulers) of
        Domains when is_integer(Domains), Domains > 0 -> Domains;
        schedulers -> erlang:system_info(schedulers);
        Other ->
            logger:warning("camlbeam: nif_domains ~0p is neither a positive integer nor schedulers: "
                           "a domain per scheduler", [Other]),
            erlang:system_info(schedulers)
    end.

%% The library of OCaml `Ocaml': the application environment's `nif_library'
%% if set (a path without its extension, as erlang:load_nif/2 takes it: a
%% build of one's own, a sanitizer build), else camlbeam's own in priv.
-spec library(ocaml_options:ocaml_version()) -> {ok, file:filename()} | {error, no_priv_dir}.
library(Ocaml) ->
    case {application:get_env(camlbeam, nif_library), code:priv_dir(camlbeam)} of
        {{ok, Given}, _} ->
            {ok, Given};
        {undefined, {error, bad_name}} ->
            {error, no_priv_dir};
        {undefined, Priv} when Ocaml =:= default ->
            {ok, filename:join(Priv, "camlbeam_nif")};
        {undefined, Priv} ->
            {ok, filename:join([Priv, "ocaml-" ++ unicode:characters_to_list(Ocaml), "camlbeam_nif"])}
    end.

%% @doc The OCaml of the running runtime, or why there is none.
-spec runtime_info() -> {ok, runtime_info()} | {error, binary()}.
runtime_info() ->
    erlang:nif_error(nif_not_loaded).

%% @doc A handle for worker `Id' of a pool, whose process is `WorkerPid': the
%% answers of its requests are messages to it, `{camlbeam_reply, Ref, Answer}',
%% and so are its logs (`{camlbeam_log, Level, Text}'), its calls of Erlang
%% (`{camlbeam_erl_call, Id, {Module, Function, Args}}', answered with
%% {@link erl_reply/2}), the sends to other
%% nodes (`{camlbeam_send, Pid, Message}') and a request that ignores its
%% deadline (`{camlbeam_overdue, RunningMs, TimeoutMs}'). `Node' and `Creation'
%% are this node's (the references answers may hold). An answer that would take
%% more than `MaxReply' bytes of the VM's memory (about: `erts_debug:flat_size/1'
%% words and binaries' bytes) is `{error, {reply_too_large, AtLeast, MaxReply}}'.
-spec new_worker(pos_integer(), pid(), ocaml_policy:send(), binary(), non_neg_integer(), pos_integer()) -> worker().
new_worker(_Id, _WorkerPid, _SendPolicy, _Node, _Creation, _MaxReply) ->
    erlang:nif_error(nif_not_loaded).

%% @doc Queues a request (`{call, Ref, Fun, Args, Timeout}' or `{load, Ref,
%% Path, Timeout}'); `GivenPids' are the pids its arguments give OCaml (policy
%% `send => given'). `closed': the worker takes no more.
-spec request(worker(), tuple(), [pid()]) -> ok | closed.
request(_Worker, _Request, _GivenPids) ->
    erlang:nif_error(nif_not_loaded).

%% @doc A call (`{call, Ref, Fun, Args, Timeout}'), run at once on the
%% calling scheduler under OCaml 5 when its export has always run short (or is
%% declared short) and its arguments are small, or on a dirty CPU scheduler when
%% its export is normal (`{answered, Answer}' either way), else queued (`ok'), its
%% answer coming straight to the calling process as `{Ref, Answer}'; the
%% caller counts it out, and withdraws it with {@link cancel/2} when it gives
%% up.
-spec call(worker(), {call, reference(), term(), list(), timeout()}, [pid()]) -> {answered, term()} | ok | closed.
call(_Worker, _Request, _GivenPids) ->
    erlang:nif_error(nif_not_loaded).

%% @doc The caller of the request carrying `Ref' gave up on it. `withdrawn': a
%% call of {@link call/3}, queued or running, whose answer will not come (it
%% is in the caller's mailbox already, or never will be). `cancelled': a
%% request of {@link request/3} that had not started, answered
%% `{error, timeout}' to the worker's process. `none': no request carries it
%% (answered already).
-spec cancel(worker(), reference()) -> withdrawn | cancelled | none.
cancel(_Worker, _Ref) ->
    erlang:nif_error(nif_not_loaded).

%% @doc The worker takes no more requests; those waiting are dropped. A call
%% the NIF itself runs meanwhile (on a scheduler, dirty or not) is answered
%% `{error, {worker_crashed, Reason}}', as its caller would have been told by the
%% worker's `DOWN' had it been queued.
-spec close(worker(), term()) -> ok.
close(_Worker, _Reason) ->
    erlang:nif_error(nif_not_loaded).

%% @doc The answer to `{camlbeam_erl_call, Id, _}': `{ok, Value}' or
%% `{error, {Class, Reason}}'. An answer to a call given up is dropped.
-spec erl_reply(pos_integer(), {ok, term()} | {error, {atom(), term()}}) -> ok.
erl_reply(_Id, _Result) ->
    erlang:nif_error(nif_not_loaded).

%% @doc The worker's requests queued or running (their answers not sent yet).
-spec queued(worker()) -> non_neg_integer().
queued(_Worker) ->
    erlang:nif_error(nif_not_loaded).

%% @doc The OCaml handles ({@link ocaml:ref()}) this VM holds, and those freed
%% but not yet released by the runtime's thread (which this wakes).
-spec handles() -> handle_counts().
handles() ->
    erlang:nif_error(nif_not_loaded).

%% @doc A lane for a pool: calls of it run on the calling scheduler when they
%% may ({@link lane_call/4}). `none' under OCaml 4, where none may.
-spec new_lane() -> lane() | none.
new_lane() ->
    erlang:nif_error(nif_not_loaded).

%% @doc What the lane's pool is now: its live workers' handles, by id, whether
%% its policy gives OCaml the pids among a call's arguments, and its exports.
-spec set_lane(lane(), [worker()], boolean(), [{module(), atom()}]) -> ok.
set_lane(_Lane, _Workers, _GivePids, _Exports) ->
    erlang:nif_error(nif_not_loaded).

%% @doc Runs the call here, as {@link call/3} runs a short one, when `Fun'
%% names one export of the lane's pool, a worker of it is free and the call
%% may run on this scheduler: its answer. Else `queue': nothing was run,
%% counted or queued, and the caller takes the way through a worker.
-spec lane_call(lane(), ocaml:fun_name(), [term()], timeout()) -> term() | queue.
lane_call(_Lane, _Fun, _Args, _Timeout) ->
    erlang:nif_error(nif_not_loaded).
