%% @doc One pool of OCaml workers: a supervisor of its manager
%% ({@link ocaml_pool_manager}) and of its workers ({@link ocaml_worker_sup}).
%% The pool's handle is this supervisor's pid (or its registered name).
%%
%% `rest_for_one': the workers get their set-up from the manager, so a new
%% manager means new workers; a worker crashing touches nothing else. The
%% manager is the significant child: when it stops normally (the owner of
%% {@link ocaml:start_link/1} died) the whole pool shuts down.
-module(ocaml_pool).
-behaviour(supervisor).

-export([start_link/1]).
-export([init/1]).
-export_type([config/0]).

%% The validated options, the executable resolved, and the process whose
%% death stops the pool (`none' for {@link ocaml:start/1}).
-type config() :: #{
    transport := port,
    plugins := [file:filename_all()],
    pool_size := pos_integer(),
    flavour := ocaml_options:flavour() | any,
    executable := file:filename_all(),
    max_queue := pos_integer(),
    start_timeout := timeout(),
    name := atom() | undefined,
    erl_call := ocaml_options:erl_call_policy(),
    owner := pid() | none
}.

-spec start_link(config()) -> supervisor:startlink_ret().
start_link(#{name := undefined} = Config) ->
    supervisor:start_link(?MODULE, Config);
start_link(#{name := Name} = Config) ->
    supervisor:start_link({local, Name}, ?MODULE, Config).

-spec init(config()) -> {ok, {supervisor:sup_flags(), [supervisor:child_spec()]}}.
init(#{pool_size := PoolSize} = Config) ->
    Pool = self(),
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
          start => {ocaml_worker_sup, start_link, [Pool, PoolSize]},
          restart => permanent,
          shutdown => infinity,
          type => supervisor}
    ],
    {ok, {Flags, Children}}.
