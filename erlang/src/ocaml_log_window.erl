%% @doc The log budget of one worker: at most 20 lines a second logged on its
%% behalf, whatever its OCaml code does; past it, lines are counted, and how
%% many were dropped is said when logging again.
-module(ocaml_log_window).

-include_lib("kernel/include/logger.hrl").

-export([new/0, log/4]).
-export_type([window/0]).

%% Log lines a worker may cause per second.
-define(LOG_BUDGET, 20).

-opaque window() :: {Second :: integer(), Logged :: non_neg_integer(), Dropped :: non_neg_integer()}.

-spec new() -> window().
new() ->
    {0, 0, 0}.

%% @doc Logs a line if the budget allows. Args may be a function that makes
%% them: it runs only for a line that is logged (a worker's log line is
%% decoded only then).
-spec log(logger:level(), io:format(), [term()] | fun(() -> [term()]), window()) -> window().
log(Level, Format, Args, {Second, Logged, Dropped}) ->
    Now = erlang:monotonic_time(second),
    case {Now =:= Second, Logged < ?LOG_BUDGET} of
        {true, false} ->
            {Second, Logged, Dropped + 1};
        {true, true} ->
            logger:log(Level, Format, arguments(Args)),
            {Second, Logged + 1, Dropped};
        {false, _} ->
            _ = Dropped > 0 andalso
                ?LOG_WARNING("OCaml worker: ~b log line~s dropped (more than ~b a second)",
                             [Dropped, plural(Dropped), ?LOG_BUDGET]),
            logger:log(Level, Format, arguments(Args)),
            {Now, 1, 0}
    end.

-spec arguments([term()] | fun(() -> [term()])) -> [term()].
arguments(Make) when is_function(Make, 0) -> Make();
arguments(Args) when is_list(Args) -> Args.

-spec plural(non_neg_integer()) -> string().
plural(1) -> "";
plural(_) -> "s".
