%% @doc The workers of one pool, `{worker, Id}' for Id in 1..pool_size, each
%% started by the pool's coupling ({@link ocaml_transport}, its `start_link/2').
%%
%% A worker outlives its OS processes: it replaces one that dies, breaks the
%% protocol or hangs by itself ({@link ocaml_worker}, for the port), so those
%% cost this supervisor no restart. A restart here means the Erlang process itself
%% crashed (a bug in camlbeam, or a kill from outside); the new one starts a
%% new OS process with the pool's plugins.
%%
%% A rolling upgrade ({@link ocaml:upgrade/3}) adds one temporary worker of
%% id `pool_size + 1' for its duration ({@link start_extra/4}).
-module(ocaml_worker_sup).
-behaviour(supervisor).

-export([start_link/3, start_extra/4]).
-export([init/1]).

%% Restarts allowed per period (seconds) before the pool's supervisor takes
%% over: a plugin that kills its worker at every load must not loop forever,
%% while a few crashes in a busy minute are no reason to drop the pool.
-define(INTENSITY, 10).
-define(PERIOD, 60).

-spec start_link(Pool :: pid(), PoolSize :: pos_integer(), Transport :: module()) ->
    supervisor:startlink_ret().
start_link(Pool, PoolSize, Transport) ->
    supervisor:start_link(?MODULE, {Pool, PoolSize, Transport}).

%% @doc Starts the temporary worker `Id' of a rolling upgrade: not restarted,
%% it stops by itself once told to (the coupling's `stop/1'), its calls
%% answered. A child id of its own: the one of the previous upgrade may still be answering its
%% last calls.
-spec start_extra(Sup :: pid(), Pool :: pid(), Id :: pos_integer(), Transport :: module()) ->
    supervisor:startchild_ret().
start_extra(Sup, Pool, Id, Transport) ->
    supervisor:start_child(Sup, #{id => {upgrade_worker, Id, make_ref()},
                                  start => {Transport, start_link, [Pool, Id]},
                                  restart => temporary,
                                  shutdown => 5000,
                                  type => worker}).

-spec init({pid(), pos_integer(), module()}) ->
    {ok, {supervisor:sup_flags(), [supervisor:child_spec()]}}.
init({Pool, PoolSize, Transport}) ->
    Flags = #{strategy => one_for_one, intensity => ?INTENSITY, period => ?PERIOD},
    Workers = [#{id => {worker, Id},
                 start => {Transport, start_link, [Pool, Id]},
                 restart => permanent,
                 shutdown => 5000,
                 type => worker}
               || Id <- lists:seq(1, PoolSize)],
    {ok, {Flags, Workers}}.
