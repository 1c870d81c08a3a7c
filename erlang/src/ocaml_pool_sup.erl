%% @doc The supervisor of every pool ({@link ocaml_pool}). Pools are
%% temporary: one that gives up after its own restarts stays down, and its
%% callers get `{error, noproc}'; nobody else is taken down with it.
-module(ocaml_pool_sup).
-behaviour(supervisor).

-export([start_link/0, start_pool/1, stop_pool/1]).
-export([init/1]).

-spec start_link() -> supervisor:startlink_ret().
start_link() ->
    supervisor:start_link({local, ?MODULE}, ?MODULE, []).

%% @doc Starts a pool, and returns at once: its workers are starting
%% ({@link ocaml_pool:await_ready/2}).
-spec start_pool(ocaml_pool:config()) -> supervisor:startchild_ret().
start_pool(Config) ->
    supervisor:start_child(?MODULE, [Config]).

%% @doc Stops a pool and its workers.
-spec stop_pool(pid()) -> ok | {error, not_found}.
stop_pool(Pool) ->
    supervisor:terminate_child(?MODULE, Pool).

-spec init([]) -> {ok, {supervisor:sup_flags(), [supervisor:child_spec()]}}.
init([]) ->
    Flags = #{strategy => simple_one_for_one, intensity => 10, period => 10},
    Pool = #{id => ocaml_pool,
             start => {ocaml_pool, start_supervisor, []},
             restart => temporary,
             shutdown => infinity,
             type => supervisor},
    {ok, {Flags, [Pool]}}.
