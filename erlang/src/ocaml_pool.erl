%% @doc One pool of OCaml workers: a supervisor of its manager
%% ({@link ocaml_pool_manager}) and of its workers ({@link ocaml_worker_sup}).
%% The pool's handle is this supervisor's pid (or its registered name).
%%
%% `rest_for_one': the workers get their set-up from the manager, so a new
%% manager means new workers; a worker crashing touches nothing else. The
%% manager is the significant child: when it stops normally (the owner of
%% {@link ocaml:start_link/1} died) the whole pool shuts down.
%%
%% Workers do not crash when their OS process dies: each restarts its own,
%% with a backoff ({@link ocaml_worker}). So the restart intensities below
%% only count failures of camlbeam's own processes, never a plugin's.
%%
%% {@link start_link/1} returns once every worker's first OS process has
%% loaded the plugins; if one cannot, the pool is shut down again (quietly:
%% no crash report) and the reason returned. camlbeam's own pool supervisor
%% uses {@link start_supervisor/1} instead, and the caller of `ocaml:start'
%% waits ({@link await_ready/2}), not the supervisor.
-module(ocaml_pool).
-behaviour(supervisor).

-export([start_link/1, start_supervisor/1, await_ready/2]).
-export([init/1]).
-export_type([config/0]).

%% The validated options, the executable resolved, and the process whose
%% death stops the pool (`none' for {@link ocaml:start/1}).
-type config() :: ocaml_options:config().

%% @doc Starts a pool and returns once it has started, or could not: for a
%% pool under a supervisor of the user's ({@link ocaml:child_spec/1}), whose
%% later children may call it from their own start.
-spec start_link(config()) -> {ok, pid()} | {error, term()}.
start_link(#{start_timeout := Timeout} = Config) ->
    case start_supervisor(Config) of
        {ok, Pool} ->
            case await_ready(Pool, Timeout) of
                ok -> {ok, Pool};
                {error, Reason} -> stop_quietly(Pool), {error, Reason}
            end;
        {error, _} = Error ->
            Error
    end.

%% @doc Starts a pool's processes and returns at once, its workers starting:
%% for camlbeam's own pool supervisor, which must not wait on one pool while
%% others start and stop. The caller then waits with {@link await_ready/2}.
-spec start_supervisor(config()) -> {ok, pid()} | {error, term()}.
start_supervisor(#{name := Name} = Config) ->
    Started = case Name of
                  undefined -> supervisor:start_link(?MODULE, Config);
                  _ -> supervisor:start_link({local, Name}, ?MODULE, Config)
              end,
    case Started of
        {ok, Pool} -> {ok, Pool};
        {error, _} = Error -> Error;
        ignore -> {error, ignore}
    end.

%% @doc Waits until every worker of the pool has started and loaded its
%% plugins (`ok'), or one could not (`{error, Reason}').
-spec await_ready(pid(), timeout()) -> ok | {error, term()}.
await_ready(Pool, Timeout) ->
    ocaml_pool_manager:await_ready(manager(Pool), ready_timeout(Timeout)).

%% Every worker bounds its own start by start_timeout; this bound, a second
%% later, is for a start that never reports at all.
-spec ready_timeout(timeout()) -> timeout().
ready_timeout(infinity) -> infinity;
ready_timeout(Timeout) when is_integer(Timeout) -> Timeout + 1000.

-spec manager(pid()) -> pid().
manager(Pool) ->
    [Manager] = [Pid || {manager, Pid, _, _} <- supervisor:which_children(Pool), is_pid(Pid)],
    Manager.

%% Shuts a pool that did not start down, as its supervisor would: the
%% reason `shutdown' makes no crash report.
-spec stop_quietly(pid()) -> ok.
stop_quietly(Pool) ->
    unlink(Pool),
    Monitor = erlang:monitor(process, Pool),
    exit(Pool, shutdown),
    receive
        {'DOWN', Monitor, process, Pool, _} -> ok
    end.

-spec init(config()) -> {ok, {supervisor:sup_flags(), [supervisor:child_spec()]}}.
init(#{pool_size := PoolSize, transport := Name} = Config) ->
    Pool = self(),
    %% ocaml:start/1 refused a coupling that is not built before this.
    {ok, Transport} = ocaml_transport:callback_module(Name),
    Flags = #{strategy => rest_for_one, intensity => 3, period => 30,
              auto_shutdown => any_significant},
    Children = [
        #{id => manager,
          start => {ocaml_pool_manager, start_link, [Pool, Config]},
          restart => transient,
          significant => true,
          shutdown => 5000,
          type => worker},
        #{id => workers,
          start => {ocaml_worker_sup, start_link, [Pool, PoolSize, Transport]},
          restart => permanent,
          shutdown => infinity,
          type => supervisor}
    ],
    {ok, {Flags, Children}}.
