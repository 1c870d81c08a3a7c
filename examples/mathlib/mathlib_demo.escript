#!/usr/bin/env escript
%% -*- erlang -*-
%%
%% The mathlib plugin driven from Erlang: a pool of two OCaml workers, a call to each
%% export, the errors a caller can get, two calls at once, a worker killed under a call,
%% and the bytecode flavour. Every answer is checked: a surprise ends the script with a
%% non-zero exit status.
%%
%% Usage, from the top of the repository after `make build` and `rebar3 compile` in erlang/:
%%   ERL_LIBS=erlang/_build/default/lib examples/mathlib/mathlib_demo.escript build/examples/mathlib
-mode(compile).

main([PluginDir]) ->
    Native = filename:join(PluginDir, "mathlib.cmxs"),
    Bytecode = filename:join(PluginDir, "mathlib.cma"),
    {ok, _} = application:ensure_all_started(camlbeam),

    section("1. A pool of two native workers, each loading ~ts", [Native]),
    {ok, Pool} = ocaml:start_link(#{plugins => [Native], pool_size => 2}),
    show_workers(Pool),

    section("2. One call to each export", []),
    {ok, 832040} = call(Pool, fib, [30]),
    {ok, {ok, #{count := 4, mean := 3.75, variance := 7.1875, min := 1.0, max := 8.0}}} =
        call(Pool, stats, [[1.0, 2.0, 4.0, 8.0]]),
    {ok, [2.0, 3.0, 4.0, 5.0]} = call(Pool, moving_average, [3, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]]),
    Request = <<"GET /index.html HTTP/1.1\r\nHost: example.com\r\nAccept: text/html\r\n\r\n">>,
    {ok, {ok, #{method := <<"GET">>, path := <<"/index.html">>,
                headers := #{<<"host">> := <<"example.com">>}}}} =
        call(Pool, parse_request, [Request]),
    %% The plugin's exports are in its module, named after its file: mathlib.
    {ok, 832040} = call(Pool, {mathlib, fib}, [30]),
    io:format("  ocaml:exports(Pool)~n"),
    Exports = answer(ocaml:exports(Pool)),
    {mathlib, fib, 1, <<"fun((ocaml:int63()) -> ocaml:int63())">>} = lists:keyfind(fib, 2, Exports),

    section("3. Two calls at once: each goes to the least loaded worker", []),
    N = 38,
    {Alone, {ok, Fib}} = timer:tc(fun() -> ocaml:call(Pool, fib, [N], 60000) end),
    say("one fib(~b) alone: ~b ms", [N, Alone div 1000]),
    two_at_once(Pool, N, Fib, 3),

    section("4. Errors are values; the worker answers them and carries on", []),
    say("no such export:"),
    {error, {undef, fibonacci}} = call(Pool, fibonacci, [30]),
    {error, {undef, {mathlib, fibonacci}}} = call(Pool, {mathlib, fibonacci}, [30]),
    say("an argument its converter refuses (fib takes an integer):"),
    {error, {badarg, #{argument := 1, got := <<"30">>}}} = call(Pool, fib, [<<"30">>]),
    say("the wrong number of arguments:"),
    {error, {badarity, 1, 2}} = call(Pool, fib, [30, 31]),
    say("an OCaml exception (fib raises Invalid_argument on a negative number):"),
    {error, {ocaml_exception, <<"Invalid_argument">>, _, _}} = call(Pool, fib, [-1]),
    say("a typed error, part of the export's result type (a successful call):"),
    {ok, {error, empty}} = call(Pool, stats, [[]]),
    {ok, {error, {bad_header, <<"Host example.com">>}}} =
        call(Pool, parse_request, [<<"GET / HTTP/1.1\r\nHost example.com\r\n\r\n">>]),
    say("the same bad input, given to the parser that raises:"),
    {error, {ocaml_exception, <<"Mathlib.Bad_request">>, <<"bad header line: ", _/binary>>, _}} =
        call(Pool, parse_request_exn, [<<"GET / HTTP/1.1\r\nHost example.com\r\n\r\n">>]),
    say("a call that cannot finish within the caller's timeout (10 ms):"),
    [#{os_pid := Busy} | _] = ocaml:workers(Pool),
    {error, timeout} = call(Pool, fib, [45], 10),
    say("the worker got the deadline with the call. OCaml raises Erl.Cancelled at its next"),
    say("poll point, but fib is a recursion on ints that never allocates: native code has no"),
    say("poll point in it. So cancel_grace (1 s) after the deadline its OS process exits and is"),
    say("replaced (it logs one line); meanwhile new calls go to the other worker:"),
    show_workers(Pool),
    wait_until(fun() -> length(ocaml:workers(Pool)) =:= 2 andalso
                            not lists:member(Busy, [P || #{os_pid := P} <- ocaml:workers(Pool)]) end),
    say("the worker serves again, in a new OS process:"),
    show_workers(Pool),

    section("5. A worker killed under a call: the caller gets an error, the worker a new OS process", []),
    say("(the worker logs one warning about it, printed by OTP's default logger handler)"),
    Victim = spawn_call(Pool, fib, [45]),
    wait_until(fun() -> lists:any(fun(#{in_flight := I}) -> I > 0 end, ocaml:workers(Pool)) end),
    [#{id := Id, os_pid := OsPid} | _] = [W || #{in_flight := I} = W <- ocaml:workers(Pool), I > 0],
    say("kill -9 ~b (worker ~b)", [OsPid, Id]),
    _ = os:cmd("kill -9 " ++ integer_to_list(OsPid)),
    %% {exit_status, 137} is SIGKILL's; {port_exit, epipe} if the VM was still writing to it.
    {error, {worker_crashed, _}} = Crashed = await(Victim),
    say("the caller of fib(45) got ~tp", [Crashed]),
    wait_until(fun() ->
                   Workers = ocaml:workers(Pool),
                   length(Workers) =:= 2 andalso
                       lists:all(fun(#{os_pid := P}) -> P =/= OsPid end, Workers)
               end),
    say("the worker started a new OS process; it takes calls once its plugins are loaded:"),
    show_workers(Pool),
    {ok, 6765} = call(Pool, fib, [20]),

    section("6. Loading plugins at run time", []),
    {error, {load_failed, enoent, _}} = load(Pool, "no/such/plugin.cmxs"),
    {error, {load_failed, already_loaded, _}} = load(Pool, Native),
    ok = ocaml:stop(Pool),

    section("7. The bytecode worker runs the same source, compiled to ~ts", [Bytecode]),
    {ok, BytecodePool} = ocaml:start_link(#{plugins => [Bytecode]}),
    show_workers(BytecodePool),
    {ok, 832040} = call(BytecodePool, fib, [30]),
    ok = ocaml:stop(BytecodePool),
    io:format("~nmathlib demo: every answer was the expected one~n");
main(_) ->
    io:format(standard_error, "usage: mathlib_demo.escript DIR_WITH_MATHLIB_CMXS_AND_CMA~n", []),
    halt(2).

%%% Calls, printed as they are made

call(Pool, Fun, Args) ->
    io:format("  ocaml:call(Pool, ~tp, ~ts)~n", [Fun, format_args(Args)]),
    answer(ocaml:call(Pool, Fun, Args)).

call(Pool, Fun, Args, Timeout) ->
    io:format("  ocaml:call(Pool, ~tp, ~ts, ~b)~n", [Fun, format_args(Args), Timeout]),
    answer(ocaml:call(Pool, Fun, Args, Timeout)).

load(Pool, Path) ->
    io:format("  ocaml:load(Pool, ~tp)~n", [Path]),
    answer(ocaml:load(Pool, Path)).

%% One by one: ~p would print the argument list [36] as the string "$".
format_args(Args) ->
    ["[", lists:join(", ", [io_lib:format("~tp", [Arg]) || Arg <- Args]), "]"].

answer(Result) ->
    Text = io_lib:format("~tp", [shorten(Result)]),
    io:format("    -> ~ts~n", [string:replace(Text, "\n", "\n       ", all)]),
    Result.

%% Backtraces run over several lines; their first line says enough here.
shorten({error, {ocaml_exception, Name, Message, Backtrace}}) ->
    [FirstLine | _] = binary:split(Backtrace, <<"\n">>),
    {error, {ocaml_exception, Name, Message, <<FirstLine/binary, "...">>}};
shorten(Result) ->
    Result.

%% Two fib(N) calls started one after the other, shown while both run. On a busy machine
%% the first may end before the second is seen in flight: then the pair runs again.
two_at_once(Pool, N, Fib, Attempts) ->
    Start = erlang:monotonic_time(millisecond),
    First = spawn_call(Pool, fib, [N]),
    wait_until(fun() -> lists:sort(in_flight(Pool)) =:= [0, 1] orelse answered(First) end),
    Second = spawn_call(Pool, fib, [N]),
    wait_until(fun() -> in_flight(Pool) =:= [1, 1] orelse answered(First) end),
    BothSeen = not answered(First),
    BothSeen andalso say("while both run, each worker has one call in flight:"),
    BothSeen andalso show_workers(Pool),
    [{ok, Fib}, {ok, Fib}] = [await(C) || C <- [First, Second]],
    case BothSeen of
        true ->
            say("two fib(~b) at once: ~b ms", [N, erlang:monotonic_time(millisecond) - Start]);
        false when Attempts > 1 ->
            two_at_once(Pool, N, Fib, Attempts - 1);
        false ->
            error(never_saw_two_calls_in_flight)
    end.

%% Whether the call's answer has arrived (it stays in the mailbox for await/1).
answered(Tag) ->
    {messages, Messages} = process_info(self(), messages),
    lists:keymember(Tag, 1, Messages).

%% A call in a process of its own, so that several can run at once.
spawn_call(Pool, Fun, Args) ->
    Self = self(),
    Tag = make_ref(),
    spawn_link(fun() -> Self ! {Tag, ocaml:call(Pool, Fun, Args, 60000)} end),
    Tag.

await(Tag) ->
    receive {Tag, Result} -> Result after 60000 -> error({no_answer_within_60_s, Tag}) end.

%% Polls a condition every 10 ms for at most 10 s.
wait_until(Condition) -> wait_until(Condition, 1000).

wait_until(_Condition, 0) -> error(condition_not_reached_within_10_s);
wait_until(Condition, Tries) ->
    case Condition() of
        true -> ok;
        false -> timer:sleep(10), wait_until(Condition, Tries - 1)
    end.

%%% Printing

section(Format, Args) -> io:format("~n" ++ Format ++ "~n", Args).

say(Text) -> say(Text, []).
say(Format, Args) -> io:format("  " ++ Format ++ "~n", Args).

in_flight(Pool) -> [InFlight || #{in_flight := InFlight} <- ocaml:workers(Pool)].

show_workers(Pool) ->
    [say("worker ~b: os_pid ~b, ~p, ~b in flight", [Id, OsPid, Flavour, InFlight])
     || #{id := Id, os_pid := OsPid, flavour := Flavour, in_flight := InFlight} <- ocaml:workers(Pool)],
    ok.
