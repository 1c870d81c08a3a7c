%% @doc What OCaml may do to Erlang: the pool option `policy'.
%%
%% A plugin is the application's own code, but a careless or broken one must
%% not be able to stop the VM, fill its atom table or message processes at
%% random. So by default a worker may neither call Erlang functions nor send
%% to any process but those it was given, and opening either is the pool
%% owner's decision, written in the pool's options:
%%
%% ```
%% policy => #{send => given,          % none | given | any
%%             erl_call => [{my_cache, lookup, 1}, {logger, info}],
%%             max_erl_calls => 8}
%% '''
%% <ul>
%% <li>`send': where `Erl.send' may deliver. `none': nowhere. `given'
%%     (default): to a pid passed as one of the arguments of a call or cast
%%     in flight on that worker (an argument that is a pid, not a pid inside
%%     another term), while that call runs: to stream results to the caller,
%%     pass `self()'. `any': to any process, local or remote.</li>
%% <li>`erl_call': what `Erl.call_erlang' may run. `none' (default), a list
%%     of `{Module, Function}' (any arity) and `{Module, Function, Arity}', or
%%     `all'. `all' lets a plugin run `erlang:halt/0' or `binary_to_atom/2':
%%     give it only to code you would run in the VM itself.</li>
%% <li>`max_erl_calls': how many `Erl.call_erlang' one worker may have
%%     running at once (default 8; a port worker makes one at a time, so more
%%     means a worker writing frames of its own); past it the call answers
%%     `{error, {error, too_many_erl_calls}}' without running.</li>
%% </ul>
%% A refused send is dropped and logged; a refused call answers
%% `{error, {error, {not_allowed, {Module, Function, Arity}}}}' to OCaml,
%% where `Erl.call_erlang' raises it.
%%
%% The arguments of an `Erl.call_erlang' never hold a fun: `{lists, map}' on
%% the list must not run `fun erlang:halt/1' (a request with one answers
%% `{error, {error, {bad_erl_call, _}}}').
-module(ocaml_policy).

-export([default/0, validate/1, may_call/4, given_pids/1, run_erl_call/2]).
-export_type([policy/0, send/0, erl_call/0]).

-type send() :: none | given | any.
-type erl_call() :: none | all | [{module(), atom()} | {module(), atom(), arity()}].
-type policy() :: #{send := send(), erl_call := erl_call(), max_erl_calls := pos_integer()}.

%% @doc Nothing but sends to the pids a call was given.
-spec default() -> policy().
default() ->
    #{send => given, erl_call => none, max_erl_calls => 8}.

%% @doc The policy of a pool's options, the defaults filled in; `error' if a
%% key or a value is not one of the above.
-spec validate(term()) -> {ok, policy()} | error.
validate(Given) when is_map(Given) ->
    Policy = maps:merge(default(), Given),
    case map_size(Policy) =:= map_size(default()) andalso lists:all(fun valid/1, maps:to_list(Policy)) of
        true -> {ok, Policy};
        false -> error
    end;
validate(_) ->
    error.

%% @doc Whether `Erl.call_erlang' may run `Module:Function/Arity'.
-spec may_call(policy(), module(), atom(), arity()) -> boolean().
may_call(#{erl_call := all}, _M, _F, _A) -> true;
may_call(#{erl_call := none}, _M, _F, _A) -> false;
may_call(#{erl_call := Allowed}, M, F, A) ->
    lists:member({M, F}, Allowed) orelse lists:member({M, F, A}, Allowed).

%% @doc The pids a call gives OCaml: its arguments that are pids.
-spec given_pids([term()]) -> [pid()].
given_pids([Pid | Args]) when is_pid(Pid) ->
    [Pid | given_pids(Args)];
given_pids([_ | Args]) ->
    given_pids(Args);
given_pids(_) ->
    %% [] or an improper tail: the worker answers bad_request for that call.
    [].

-spec valid({atom(), term()}) -> boolean().
valid({send, Send}) -> lists:member(Send, [none, given, any]);
valid({erl_call, all}) -> true;
valid({erl_call, none}) -> true;
valid({erl_call, Allowed}) ->
    try
        lists:all(fun({M, F}) -> is_atom(M) andalso is_atom(F);
                     ({M, F, A}) -> is_atom(M) andalso is_atom(F) andalso is_integer(A) andalso A >= 0;
                     (_) -> false
                  end, Allowed)
    catch
        error:_ -> false  % not a proper list
    end;
valid({max_erl_calls, Max}) -> is_integer(Max) andalso Max > 0;
valid(_) -> false.

%% @doc Runs a request of `Erl.call_erlang' (checked by
%% {@link ocaml_port_protocol:erl_call_request/1}) if the policy allows it, in
%% the calling process: what OCaml gets back, `{ok, Value}' or
%% `{error, {Class, Reason}}'.
-spec run_erl_call(policy(), {ok, {module(), atom(), [term()]}} | {error, binary()}) ->
    {ok, term()} | {error, {atom(), term()}}.
run_erl_call(Policy, {ok, {M, F, A}}) ->
    case may_call(Policy, M, F, length(A)) of
        true ->
            try {ok, apply(M, F, A)}
            catch Class:Reason -> {error, {Class, Reason}}
            end;
        false ->
            {error, {error, {not_allowed, {M, F, length(A)}}}}
    end;
run_erl_call(_Policy, {error, Why}) ->
    {error, {error, {bad_erl_call, Why}}}.
