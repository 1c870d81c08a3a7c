%% @doc The top supervisor of camlbeam.
%%
%% `one_for_one': the registry owns the tables through which callers find the
%% workers of every pool; if it ever restarts, the pools stay up and register
%% again (`camlbeam_registry'), as pools under other supervisors
%% ({@link ocaml:child_spec/1}) must anyway. A pool supervisor crashing
%% touches nothing above it.
-module(camlbeam_sup).
-behaviour(supervisor).

-export([start_link/0]).
-export([init/1]).

-spec start_link() -> supervisor:startlink_ret().
start_link() ->
    supervisor:start_link({local, ?MODULE}, ?MODULE, []).

-spec init([]) -> {ok, {supervisor:sup_flags(), [supervisor:child_spec()]}}.
init([]) ->
    Flags = #{strategy => one_for_one, intensity => 3, period => 10},
    Children = [
        #{id => camlbeam_registry,
          start => {camlbeam_registry, start_link, []},
          restart => permanent,
          shutdown => 5000,
          type => worker},
        #{id => ocaml_pool_sup,
          start => {ocaml_pool_sup, start_link, []},
          restart => permanent,
          shutdown => infinity,
          type => supervisor}
    ],
    {ok, {Flags, Children}}.
