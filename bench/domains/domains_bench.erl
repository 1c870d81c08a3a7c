%% bench/domains: one call's work split across OCaml 5 domains inside one port worker.
%%
%% A pool of one OCaml 5.3 worker (option ocaml => "5.3.0") running examples/parallel's
%% plugin; ocaml:call(Pool, fib_sum, [D, N, Count]) for D = 1 and D = 2, and the same kernel
%% as a standalone ocamlopt program (domains_standalone, timing itself) for D = 1 and 2,
%% the four interleaved in every round (the order rotates), so that other tenants' load
%% falls on all four alike. Prints per cell the median and minimum wall time, the speed-up
%% t(1)/t(2) of the port (target >= 1.8) and of the standalone program, and port/standalone
%% per D: what the port adds over plain OCaml.
%%
%%   erl -noshell -pa EBIN -pa DIR_OF_THIS_BEAM -run domains_bench main -extra
%%       --plugin parallel.cmxs --standalone domains_standalone
%%       [--n 32] [--count 8] [--rounds 15] [--smoke]
%%
%% --smoke: small sizes, two rounds, every answer checked, no verdict. Exits 0 after the
%% report whatever the speed-up (a benchmark reports, it does not fail on speed); non-zero
%% on an error or a wrong answer.
-module(domains_bench).
-export([main/0]).

-define(TARGET, 1.8).

%% Exits trapped: a pool that dies makes its call fail here (halt 1), not the VM hang.
main() ->
    process_flag(trap_exit, true),
    Status = try run(options(init:get_plain_arguments(), #{n => 32, count => 8, rounds => 15, smoke => false})) of
                 _ -> 0
             catch Class:Reason:Stack ->
                     io:format(standard_error, "domains_bench: ~p~n", [{Class, Reason, Stack}]),
                     1
             end,
    halt(Status).

options([], Opts) -> Opts;
options(["--smoke" | Rest], Opts) -> options(Rest, Opts#{smoke => true, n => 20, count => 4, rounds => 2});
options(["--plugin", P | Rest], Opts) -> options(Rest, Opts#{plugin => P});
options(["--standalone", P | Rest], Opts) -> options(Rest, Opts#{standalone => P});
options([Flag, V | Rest], Opts) when Flag =:= "--n"; Flag =:= "--count"; Flag =:= "--rounds" ->
    options(Rest, Opts#{list_to_atom(tl(tl(Flag))) => list_to_integer(V)});
options(Other, _) -> error({bad_options, Other}).

run(#{plugin := Plugin, standalone := Exe, n := N, count := Count, rounds := Rounds, smoke := Smoke}) ->
    {ok, _} = application:ensure_all_started(camlbeam),
    Load0 = loadavg(),
    io:format("camlbeam domains benchmark~s, ~s~n",
              [case Smoke of true -> " (smoke)"; false -> "" end,
               calendar:system_time_to_rfc3339(erlang:system_time(second))]),
    io:format("OTP ~s, ~b cores; load average before: ~s~n",
              [erlang:system_info(otp_release), erlang:system_info(logical_processors_available), Load0]),
    io:format("fib_sum(D, ~b, ~b): ~b fib(~b)s shared among D domains; ~b rounds, "
              "each cell once a round, the order rotating~n", [N, Count, Count, N, Rounds]),
    {ok, Pool} = ocaml:start_link(#{ocaml => "5.3.0", plugins => [Plugin], pool_size => 1}),
    [#{os_pid := OsPid}] = ocaml:workers(Pool),
    io:format("worker: OS pid ~b, ~s~n", [OsPid, os_exe(OsPid)]),
    Expected = fib(N) * Count,
    Cells = [{port, 1}, {port, 2}, {standalone, 1}, {standalone, 2}],
    Sample = fun({port, D}) -> port_call(Pool, D, N, Count, Expected);
                ({standalone, D}) -> standalone(Exe, D, N, Count, Expected)
             end,
    %% Warm-up: two untimed calls of each (the worker's first domains, page faults).
    [Sample(C) || C <- Cells, _ <- [1, 2]],
    Runs = [[{C, Sample(C)} || C <- rotate(R, Cells)] || R <- lists:seq(1, Rounds)],
    ok = ocaml:stop(Pool),
    Times = fun(C) -> [T || Run <- Runs, {C1, T} <- Run, C1 =:= C] end,
    io:format("~n~-11s ~2s ~10s ~10s ~10s~n", ["", "D", "median ms", "min ms", "max ms"]),
    [io:format("~-11s ~2b ~10.1f ~10.1f ~10.1f~n",
               [W, D, median(Times(C)) / 1.0e6, lists:min(Times(C)) / 1.0e6, lists:max(Times(C)) / 1.0e6])
     || C = {W, D} <- Cells],
    %% Speed-ups: of the medians, and the median over rounds of each round's own ratio
    %% (the two cells of a round are close in time, so under about the same load).
    %% And of the minima: the run least disturbed by other tenants, the closest to what two
    %% idle cores give (D = 2 needs both cores at once, D = 1 only one).
    Paired = fun(A, B) -> median(lists:zipwith(fun(X, Y) -> X / Y end, Times(A), Times(B))) end,
    Ratios = fun(A, B) -> [median(Times(A)) / median(Times(B)), Paired(A, B),
                           lists:min(Times(A)) / lists:min(Times(B))] end,
    io:format("~n~-34s ~8s ~14s ~8s~n", ["", "medians", "paired rounds", "minima"]),
    Row = fun(Label, A, B) -> io:format("~-34s ~8.3f ~14.3f ~8.3f~n", [Label | Ratios(A, B)]) end,
    Row("speed-up port t(1)/t(2)", {port, 1}, {port, 2}),
    Row("speed-up standalone t(1)/t(2)", {standalone, 1}, {standalone, 2}),
    [Row(io_lib:format("port / standalone, D = ~b", [D]), {port, D}, {standalone, D}) || D <- [1, 2]],
    io:format("load average after: ~s~n", [loadavg()]),
    io:format("(port: ocaml:call timed by the caller, so it includes the request's round trip and~n"
              " the worker spawning and joining D - 1 domains; standalone: domains_standalone timing~n"
              " one call of the same kernel after one untimed call, domains spawned the same way.)~n", []),
    case Smoke of
        true -> io:format("smoke: every answer was ~b; no verdict~n", [Expected]);
        false ->
            Ratio = Paired({port, 1}, {port, 2}),
            io:format("~s: port speed-up ~.2f (paired rounds), target >= ~.1f; ~.2f of the minima~n",
                      [case Ratio >= ?TARGET of true -> "PASS"; false -> "miss" end, Ratio, ?TARGET,
                       lists:min(Times({port, 1})) / lists:min(Times({port, 2}))])
    end.

port_call(Pool, D, N, Count, Expected) ->
    T0 = erlang:monotonic_time(nanosecond),
    {ok, Result} = ocaml:call(Pool, fib_sum, [D, N, Count], infinity),
    T = erlang:monotonic_time(nanosecond) - T0,
    Result =:= Expected orelse error({wrong_answer, port, D, Result, Expected}),
    T.

standalone(Exe, D, N, Count, Expected) ->
    Args = [integer_to_list(X) || X <- [D, N, Count]],
    Port = open_port({spawn_executable, Exe}, [{args, Args}, {line, 256}, binary, exit_status, use_stdio]),
    Line = receive {Port, {data, {eol, L}}} -> L after 120000 -> error(standalone_timeout) end,
    receive {Port, {exit_status, 0}} -> ok; {Port, Other} -> error({standalone, Other})
    after 120000 -> error(standalone_timeout)
    end,
    [Result, T] = [binary_to_integer(X) || X <- binary:split(Line, <<" ">>)],
    Result =:= Expected orelse error({wrong_answer, standalone, D, Result, Expected}),
    T.

fib(N) -> fib(N, 0, 1).
fib(0, A, _) -> A;
fib(N, A, B) -> fib(N - 1, B, A + B).

rotate(R, L) ->
    {A, B} = lists:split(R rem length(L), L),
    B ++ A.

%% The middle value (the lower of the two middle ones for an even count: rounds are odd).
median(Xs) -> lists:nth((length(Xs) + 1) div 2, lists:sort(Xs)).

loadavg() ->
    {ok, Load} = file:read_file("/proc/loadavg"),
    lists:join(" ", lists:sublist(string:lexemes(Load, " "), 3)).

os_exe(OsPid) ->
    case file:read_link("/proc/" ++ integer_to_list(OsPid) ++ "/exe") of
        {ok, Path} -> Path;
        _ -> "?"
    end.
