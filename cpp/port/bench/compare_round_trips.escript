#!/usr/bin/env escript
%%! -noshell
%% Two port workers compared on their hot path: round trips through the port protocol,
%% driven directly with open_port (no camlbeam application), one or two requests in
%% flight. Cells alternate between the two in every round, each on a fresh worker; the
%% verdict is the median over rounds of new p50 / base p50, and the same for the worker's
%% CPU time per call (every thread's, /proc/<os_pid>/task/*/schedstat).
%%
%%   escript cpp/port/bench/compare_round_trips.escript BASE_WORKER BASE_PLUGIN NEW_WORKER NEW_PLUGIN \
%%           [ROUNDS [PAYLOAD,...]]
%%
%% Each plugin exports id (bench/port/bench_exports.ml), built against its worker's camlbeam.
%% A worker that answers hello with os_pid speaks protocol 2; else it is sent protocol 1's
%% hello. Payloads: int42 floats_100 binary_1k mixed_tuple binary_1m ints_100k.
main([BaseExe, BasePlugin, NewExe, NewPlugin | Rest]) ->
    Rounds = case Rest of [R | _] -> list_to_integer(R); [] -> 7 end,
    Workers = [{base, BaseExe, BasePlugin, protocol(BaseExe)}, {new, NewExe, NewPlugin, protocol(NewExe)}],
    Only = case Rest of [_, O | _] -> [list_to_atom(X) || X <- string:split(O, ",", all)]; _ -> all end,
    Payloads0 = [{int42, 42},
                {floats_100, [X * 1.5 || X <- lists:seq(1, 100)]},
                {binary_1k, binary:copy(<<"x">>, 1024)},
                {mixed_tuple, {ok, [{<<"x">>, 1.25}], #{list => [a, "b", <<"c">>]}, 123456789012345678901234567890}},
                {binary_1m, binary:copy(<<"y">>, 1 bsl 20)},
                {ints_100k, lists:seq(1, 100000)}],
    Payloads = [{K, V} || {K, V} <- Payloads0, Only =:= all orelse lists:member(K, Only)],
    io:format("~-12s ~5s ~10s ~10s ~7s ~12s ~12s ~7s~n",
              [payload, depth, "base p50", "new p50", ratio, "base cpu/call", "new cpu/call", ratio]),
    lists:foreach(
      fun({Name, P}) ->
              lists:foreach(
                fun(Depth) ->
                        Runs = [begin
                                    Order = case R rem 2 of 0 -> Workers; 1 -> lists:reverse(Workers) end,
                                    [{W, cell(Exe, Plugin, Proto, P, Depth)} || {W, Exe, Plugin, Proto} <- Order]
                                end || R <- lists:seq(1, Rounds)],
                        Get = fun(W, K) -> [maps:get(K, C) || Run <- Runs, {W1, C} <- Run, W1 =:= W] end,
                        Ratio = fun(K) -> median([N / B || {B, N} <- lists:zip(Get(base, K), Get(new, K))]) end,
                        io:format("~-12s ~5w ~8.2fus ~8.2fus ~7.3f ~10.2fus ~10.2fus ~7.3f~n",
                                  [Name, Depth, median(Get(base, p50)) / 1000, median(Get(new, p50)) / 1000, Ratio(p50),
                                   median(Get(base, cpu)) / 1000, median(Get(new, cpu)) / 1000, Ratio(cpu)])
                end, [1, 2])
      end, Payloads).

median(L) -> lists:nth((length(L) + 1) div 2, lists:sort(L)).

%% The protocol a worker speaks: 2 if it accepts protocol 2's hello.
protocol(Exe) ->
    Port = open_port({spawn_executable, Exe}, [{packet, 4}, binary, nouse_stdio, exit_status]),
    port_command(Port, term_to_binary({hello, h, #{worker_id => 1, worker_pid => self(), protocol => 2}})),
    Protocol = case answer(Port, h) of {ok, _} -> 2; _ -> 1 end,
    port_close(Port),
    Protocol.

cell(Exe, Plugin, Proto, P, Depth) ->
    Port = open_port({spawn_executable, Exe}, [{packet, 4}, binary, nouse_stdio, exit_status]),
    Info = case Proto of 1 -> #{worker_id => 1, worker_pid => self()};
                         2 -> #{worker_id => 1, worker_pid => self(), protocol => 2} end,
    port_command(Port, term_to_binary({hello, h, Info})),
    {ok, Hello} = answer(Port, h),
    OsPid = case Hello of #{os_pid := O} -> O; _ -> {os_pid, O} = erlang:port_info(Port, os_pid), O end,
    port_command(Port, term_to_binary({load, l, list_to_binary(Plugin)})),
    %% ok from a worker before loads said what they declared, {ok, Declared} since.
    case answer(Port, l) of ok -> ok; {ok, #{}} -> ok end,
    {ok, P} = call(Port, P),
    T0 = erlang:monotonic_time(nanosecond),
    warm(Port, P, T0 + 20000000, 0),
    One = timed(Port, P, 1, Depth),  % size N to about 0.25 s
    N = max(20, min(20000, 250000000 div max(1, One))),
    Cpu0 = cpu(OsPid),
    Lats = timed_calls(Port, P, N, Depth),
    Cpu1 = cpu(OsPid),
    port_close(Port),
    receive {Port, {exit_status, _}} -> ok after 0 -> ok end,
    #{p50 => median(Lats), cpu => (Cpu1 - Cpu0) / N}.

warm(Port, P, Until, Done) ->
    {ok, _} = call(Port, P),
    case Done >= 3 andalso erlang:monotonic_time(nanosecond) > Until of
        true -> ok;
        false -> warm(Port, P, Until, Done + 1)
    end.

timed(Port, P, N, Depth) -> median(timed_calls(Port, P, N, Depth)).

%% Depth requests in flight: each latency from its send to its answer.
timed_calls(Port, P, N, Depth) ->
    Bin = term_to_binary({call, r, id, [P]}),
    Start = fun() -> port_command(Port, Bin), erlang:monotonic_time(nanosecond) end,
    InFlight = queue:from_list([Start() || _ <- lists:seq(1, min(Depth, N))]),
    loop(Port, Start, InFlight, N - min(Depth, N), []).

loop(Port, Start, InFlight, Left, Acc) ->
    case queue:out(InFlight) of
        {empty, _} -> Acc;
        {{value, T0}, Rest} ->
            {ok, _} = answer(Port, r),
            Lat = erlang:monotonic_time(nanosecond) - T0,
            case Left > 0 of
                true -> loop(Port, Start, queue:in(Start(), Rest), Left - 1, [Lat | Acc]);
                false -> loop(Port, Start, Rest, 0, [Lat | Acc])
            end
    end.

call(Port, P) ->
    port_command(Port, term_to_binary({call, r, id, [P]})),
    answer(Port, r).

answer(Port, Ref) ->
    receive
        {Port, {data, Frame}} ->
            {Env, Used} = binary_to_term(Frame, [used]),
            case Env of
                {reply, Ref} -> binary_to_term(binary_part(Frame, Used, byte_size(Frame) - Used));
                _ -> answer(Port, Ref)
            end;
        {Port, {exit_status, S}} -> error({exit_status, S})
    after 10000 -> error(timeout)
    end.

%% Every thread's CPU time (the new worker's request watch has one of its own).
cpu(OsPid) ->
    Dir = ["/proc/", integer_to_list(OsPid), "/task/"],
    {ok, Tasks} = file:list_dir(Dir),
    lists:sum([begin
                   {ok, S} = file:read_file([Dir, T, "/schedstat"]),
                   binary_to_integer(hd(binary:split(S, <<" ">>)))
               end || T <- Tasks]).
