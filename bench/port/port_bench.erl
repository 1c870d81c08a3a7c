%% The port coupling's benchmark driver (bench/port/README.md). One run measures, side by
%% side, and prints with PASS/miss against the targets of issue 4:
%%
%%   round trips  ocaml:call of an identity export on the payloads of bench/etf_bench.escript
%%                (read from the .etf files it writes), p50/p99/calls per second with one
%%                and two concurrent callers: camlbeam-port, the C port (c_port.cpp) through
%%                the same ocaml:start_link machinery, the bare C port driven directly with
%%                open_port/port_command/receive, and a local gen_server:call identity;
%%   pool         calls/s of a pool_size 2 pool vs one worker on fib (CPU-bound);
%%   kernels      nbody, spectral_norm, mandelbrot through the port vs the standalone
%%                ocamlopt program (timing itself) vs the same kernels in Erlang;
%%   worker cost  ocaml:start_link to the first answered call, and idle VmRSS, vs the C
%%                port and vs a bare ocamlopt program blocked on a read of stdin.
%%
%% Run by bench/port/run.sh:
%%   erl -noshell -pa EBIN -pa CAMLBEAM_EBIN -run port_bench main -extra [--smoke] --c-port P
%%       --worker P --bench-plugin P --kernels-plugin P --standalone P --idle P
%%       --payloads DIR --out FILE [--only SECTION] [--rt-rounds N] [--rt-cell-ms MS]
%% It halts 0 when every check passed (targets missed are reported, not failures), 1 on an
%% error or a failed check (an echo that differs from its payload, kernels that disagree).
-module(port_bench).
-behaviour(gen_server).

-export([main/0]).
-export([init/1, handle_call/3, handle_cast/2]).
%% Shared with bench/nif/nif_bench.erl, which measures the same payloads, plugins and
%% kernels through the nif coupling: one definition of each, here.
-export([run_and_halt/2, p/2, header/2, payload_names/0, read_payload/2, warm_up/4, timed_calls/4,
         port_samples/5, standalone/5, erlang_sample/3, digest/1, fib/1, cpu_times/1, others_cores/2,
         median/1, percentile/2]).

-define(CALL_TIMEOUT, 60000).
-define(WAIT, 300000).  % the longest any receive here waits: no step hangs the run

-define(PAYLOADS, ["int42", "floats_100", "binary_1k", "mixed_tuple", "binary_1m", "ints_100k"]).

%% ---- Entry ----

main() ->
    Opts = options(init:get_plain_arguments(), #{mode => full}),
    run_and_halt(?MODULE, fun() -> run(Opts) end).

%% Runs Run in a process of its own, which every caller it spawns is linked to: a caller that
%% crashes takes it down, and the VM halts 1 (0 when Run returns) instead of waiting forever.
run_and_halt(Name, Run) ->
    {_, Monitor} = spawn_monitor(fun() ->
                                         try Run()
                                         catch Class:Reason:Stack -> exit({Class, Reason, Stack})
                                         end
                                 end),
    receive
        {'DOWN', Monitor, process, _, normal} ->
            halt(0);
        {'DOWN', Monitor, process, _, Reason} ->
            io:format(standard_error, "~s: ~p~n", [Name, Reason]),
            halt(1)
    end.

options([], Opts) -> Opts;
options(["--smoke" | Rest], Opts) -> options(Rest, Opts#{mode => smoke});
%% Shorter round trips for runs that repeat the section (bench/ocaml5/compare.sh).
options([Flag, Value | Rest], Opts) when Flag =:= "--rt-rounds"; Flag =:= "--rt-cell-ms" ->
    Key = case Flag of "--rt-rounds" -> rt_rounds; "--rt-cell-ms" -> rt_cell_ms end,
    options(Rest, Opts#{Key => list_to_integer(Value)});
options([Flag, Value | Rest], Opts) ->
    Key = case Flag of
              "--c-port" -> c_port;
              "--worker" -> worker;
              "--bench-plugin" -> bench_plugin;
              "--kernels-plugin" -> kernels_plugin;
              "--standalone" -> standalone;
              "--idle" -> idle;
              "--idle-linkall" -> idle_linkall;
              "--payloads" -> payloads;
              "--out" -> out;
              "--only" -> only;  % round_trips | pool | kernels | worker_cost: one section
              _ -> error({unknown_option, Flag})
          end,
    options(Rest, Opts#{Key => Value});
options(Other, _) -> error({bad_options, Other}).

%% What each mode does. smoke: every code path for a few iterations, checks, no verdicts.
config(full) ->
    %% Many short rounds, every target in each: a burst of load from another tenant (a
    %% compilation lasts seconds) then falls on all targets alike, not on one.
    #{rt_cell_ms => 600, rt_rounds => 15, rt_max_calls => 30000,
      fib_n => 27, fib_callers => 4, fib_ms => 250, fib_rounds => 9,
      %% {Kernel, Size, calls per sample, big (target) | small}
      kernels => [{nbody, 2000000, 1, big}, {spectral_norm, 1000, 1, big}, {mandelbrot, 2000, 1, big},
                  {nbody, 1000, 100, small}, {spectral_norm, 100, 10, small}, {mandelbrot, 200, 10, small}],
      k_reps => 9, k_rounds => 9, erl_reps => 3,
      start_iters => 21, rss_iters => 3, idle_ms => 300};
config(smoke) ->
    #{rt_cell_ms => 5, rt_rounds => 1, rt_max_calls => 20,
      fib_n => 20, fib_callers => 2, fib_ms => 20, fib_rounds => 1,
      kernels => [{nbody, 1000, 2, small}, {spectral_norm, 100, 1, small}, {mandelbrot, 200, 1, small}],
      k_reps => 1, k_rounds => 1, erl_reps => 1,
      start_iters => 1, rss_iters => 1, idle_ms => 50}.

run(Opts = #{mode := Mode, out := Out}) ->
    Cfg = maps:merge(config(Mode), Opts),
    {ok, Fd} = file:open(Out, [write, {encoding, utf8}]),
    put(report_fd, Fd),
    ok = application:set_env(camlbeam, port_executable, maps:get(worker, Cfg)),
    {ok, _} = application:ensure_all_started(camlbeam),
    header("port", Cfg),
    Sections = [{round_trips, fun round_trips/1}, {pool, fun pool/1}, {kernels, fun kernels/1},
                {worker_cost, fun worker_cost/1}],
    Only = maps:get(only, Cfg, all),
    Verdicts = lists:append([F(Cfg) || {Name, F} <- Sections, Only =:= all orelse Only =:= atom_to_list(Name)]),
    verdicts(Mode, Verdicts),
    ok = file:close(Fd).

%% Prints to stdout and to the report file (report_fd in the calling process's dictionary).
p(Fmt, Args) ->
    Text = io_lib:format(Fmt, Args),
    io:put_chars(Text),
    ok = io:put_chars(get(report_fd), Text).

header(Bench, #{mode := Mode}) ->
    {ok, Load} = file:read_file("/proc/loadavg"),
    [L1, L5, L15 | _] = string:lexemes(Load, " "),
    p("camlbeam ~s benchmark (~s mode), ~s~n", [Bench, Mode, calendar:system_time_to_rfc3339(erlang:system_time(second))]),
    p("OTP ~s, erts ~s, ~b schedulers, ~b cores; load average ~s ~s ~s~n",
      [erlang:system_info(otp_release), erlang:system_info(version), erlang:system_info(schedulers_online),
       erlang:system_info(logical_processors_available), L1, L5, L15]),
    p("Every number below comes from this one run; baselines were interleaved with what they are compared to.~n", []).

%% ---- Round trips ----

round_trips(Cfg = #{payloads := Dir, bench_plugin := Plugin, c_port := CPort}) ->
    p("~n== Round trip: identity export, one worker (pool_size 1), times in microseconds ==~n", []),
    p("~-12s ~7s  ~-15s ~9s ~9s ~10s ~10s~n", ["payload", "callers", "worker", "p50", "p99", "calls/s", "wCPU/call"]),
    %% Every cell starts its worker afresh (untimed): where the OS happens to place a worker
    %% process (next to the caller's scheduler, or next to another tenant's busy process)
    %% moves small round trips by 2x, so no worker keeps one placement for the whole run.
    {ok, Server} = gen_server:start_link(?MODULE, [], []),
    Targets = [{camlbeam, #{start => fun() -> ocaml:start_link(#{plugins => [Plugin]}) end}},
               {'camlbeam_s=4M', #{start => fun() -> with_minor_heap("s=4M", #{plugins => [Plugin]}) end}},
               {c_port, #{start => fun() -> ocaml:start_link(#{executable => CPort}) end}},
               {bare_c_port, #{exe => CPort}}, {gen_server, #{server => Server}}],
    Verdicts = lists:append([round_trip_payload(Cfg, Targets, Name, read_payload(Dir, Name)) || Name <- payload_names()]),
    ok = gen_server:stop(Server),
    p("(camlbeam_s=4M: the same worker started with OCAMLRUNPARAM=s=4M, a 32 MB minor heap instead of 2 MB,~n"
      " to show what the GC costs; c_port: c_port.cpp through ocaml:start_link(#{executable => ...});~n"
      " bare_c_port: the same program, the caller owns the port (1 caller) or one process owns it and relays~n"
      " replies to the callers' aliases (2 callers). wCPU/call: CPU time of the worker process per call,~n"
      " from /proc/<os_pid>/schedstat: what the port program itself costs, whatever the load.)~n", []),
    Verdicts.

%% A pool whose workers inherit OCAMLRUNPARAM=Param from the VM's environment at spawn time.
with_minor_heap(Param, Options) ->
    Saved = os:getenv("OCAMLRUNPARAM"),
    true = os:putenv("OCAMLRUNPARAM", Param),
    Started = try ocaml:start_link(Options) after
                  case Saved of
                      false -> os:unsetenv("OCAMLRUNPARAM");
                      _ -> os:putenv("OCAMLRUNPARAM", Saved)
                  end
              end,
    {ok, Pool} = Started,
    [#{os_pid := OsPid}] = ocaml:workers(Pool),
    {ok, Env} = file:read_file(["/proc/", integer_to_list(OsPid), "/environ"]),
    lists:member(<<"OCAMLRUNPARAM=", (list_to_binary(Param))/binary>>, binary:split(Env, <<0>>, [global]))
        orelse error({ocamlrunparam_not_inherited, Param}),
    {ok, Pool}.

%% The round trips' payloads, in the report's order: files NAME.etf of etf_bench.escript gen.
payload_names() -> ?PAYLOADS.

read_payload(Dir, Name) ->
    {ok, Bin} = file:read_file(filename:join(Dir, Name ++ ".etf")),
    binary_to_term(Bin).

round_trip_payload(#{rt_cell_ms := CellMs, rt_rounds := Rounds, rt_max_calls := Max}, Targets, Name, Payload) ->
    %% Calls per cell: from a probe of camlbeam, so that a cell takes about CellMs.
    {_, CamlbeamCtx} = hd(Targets),
    {ProbeLats, _, _} = cell(camlbeam, CamlbeamCtx, Payload, 1, 5),
    PerCall = max(1, median(ProbeLats)),
    N = max(Rounds * 2, min(Max, CellMs * 1000000 div PerCall)) div Rounds,
    Results = [{C, round_trip_rounds(Targets, Payload, C, N, Rounds)} || C <- [1, 2]],
    lists:append(
      [begin
           Stats = [{T, stats(lists:append([L || {L, _, _} <- Cells]), lists:sum([W || {_, W, _} <- Cells])),
                     cpu_per_call(Cells)}
                    || {T, Cells} <- ByTarget],
           [p("~-12s ~7b  ~-15s ~9.1f ~9.1f ~10b ~10s~n",
              [Name, C, T, P50 / 1000, P99 / 1000, round(Rate), Cpu]) || {T, {P50, P99, Rate}, Cpu} <- Stats],
           %% The verdict pairs each round's camlbeam cell with the C port's cell of the same
           %% round (adjacent in time, so under the same load) and takes the median ratio.
           Paired = lists:zipwith(fun({Ours, _, _}, {C0, _, _}) -> median(Ours) / median(C0) end,
                                  proplists:get_value(camlbeam, ByTarget), proplists:get_value(c_port, ByTarget)),
           [{io_lib:format("round trip p50 ~s, ~b caller(s): camlbeam / C port", [Name, C]),
             median(Paired), '=<', 1.10}]
       end || {C, ByTarget} <- Results]).

%% Rounds of every target in turn (the order rotates): per target, its cells in round order.
round_trip_rounds(Targets, Payload, Callers, N, Rounds) ->
    Runs = [begin
                Order = rotate(R, Targets),
                [{T, cell(T, Ctx, Payload, Callers, N)} || {T, Ctx} <- Order]
            end || R <- lists:seq(1, Rounds)],
    [{T, [Cell || Run <- Runs, {T1, Cell} <- Run, T1 =:= T]} || {T, _} <- Targets].

rotate(R, L) ->
    {A, B} = lists:split(R rem length(L), L),
    B ++ A.

%% One cell: Callers processes, each N timed calls after its warm-up calls. Returns
%% every latency (ns) and the wall time from go to the last caller's end.
cell(Target, Ctx0, Payload, Callers, N) ->
    Ctx = cell_start(Target, Ctx0, Callers),
    Parent = self(),
    Pids = [spawn_link(fun() -> caller(Parent, Target, Ctx, Payload, N) end) || _ <- lists:seq(1, Callers)],
    OsPids = lists:usort([receive {ready, P, OsPid} -> OsPid after ?WAIT -> error({caller_not_ready, Target}) end
                          || P <- Pids]),
    Cpu0 = worker_cpu_ns(OsPids),
    T0 = now_ns(),
    [P ! go || P <- Pids],
    Lats = [receive {done, P, L} -> L after ?WAIT -> error({caller_timeout, Target}) end || P <- Pids],
    Wall = now_ns() - T0,
    Cpu = case worker_cpu_ns(OsPids) of
              undefined -> undefined;
              Cpu1 -> Cpu1 - Cpu0
          end,
    [P ! stop || P <- Pids],
    cell_stop(Ctx),
    {lists:append(Lats), Wall, Cpu}.

%% CPU time (ns) the worker process has run, from /proc/<pid>/schedstat; undefined when
%% there is no worker process (the gen_server).
worker_cpu_ns([undefined]) -> undefined;
worker_cpu_ns([OsPid]) ->
    {ok, Sched} = file:read_file(["/proc/", integer_to_list(OsPid), "/schedstat"]),
    binary_to_integer(hd(string:lexemes(Sched, " \n"))).

cell_start(bare_c_port, Ctx = #{exe := Exe}, 2) ->
    Parent = self(),
    Relay = spawn_link(fun() -> Port = open_c_port(Exe), Parent ! {relay_port, Port}, relay(Port) end),
    receive {relay_port, Port} -> Ctx#{relay => Relay, port => Port} after ?WAIT -> error(relay_not_started) end;
cell_start(_, Ctx = #{start := Start}, _) ->
    {ok, Pool} = Start(),
    Ctx#{pool => Pool};
cell_start(_, Ctx, _) -> Ctx.

cell_stop(#{relay := Relay}) ->
    Relay ! {stop, self()},
    receive {stopped, Relay} -> ok after ?WAIT -> error(relay_not_stopped) end;
cell_stop(#{pool := Pool}) -> ok = ocaml:stop(Pool);
cell_stop(_) -> ok.

%% Untimed calls first, the first checked: at least three, and at least 20 ms of them (a
%% fresh worker's heap grows to its steady size in its first few large calls).
caller(Parent, Target, Ctx, Payload, N) ->
    {Call, OsPid} = call_fun(Target, Ctx),
    case Call(Payload) of
        Payload -> ok;
        Other -> error({bad_echo, Target, erts_debug:flat_size(Other)})
    end,
    warm_up(Call, Payload, 2, now_ns() + 20000000),
    Parent ! {ready, self(), OsPid},
    receive go -> ok after ?WAIT -> error(no_go) end,
    Parent ! {done, self(), timed_calls(Call, Payload, N, [])},
    receive stop -> ok after ?WAIT -> ok end.  % a port it owns lives until its CPU time is read

warm_up(_Call, _Payload, 200, _Until) -> ok;
warm_up(Call, Payload, Done, Until) ->
    _ = Call(Payload),
    case Done >= 2 andalso now_ns() > Until of
        true -> ok;
        false -> warm_up(Call, Payload, Done + 1, Until)
    end.

timed_calls(_Call, _Payload, 0, Acc) -> Acc;
timed_calls(Call, Payload, N, Acc) ->
    T0 = now_ns(),
    _ = Call(Payload),
    timed_calls(Call, Payload, N - 1, [now_ns() - T0 | Acc]).

call_fun(_Target, #{pool := Pool}) ->
    [#{os_pid := OsPid}] = ocaml:workers(Pool),
    {fun(X) -> {ok, R} = ocaml:call(Pool, id, [X], ?CALL_TIMEOUT), R end, OsPid};
call_fun(bare_c_port, #{port := Port}) ->  % two callers: replies come through the relay
    {os_pid, OsPid} = erlang:port_info(Port, os_pid),
    {fun(X) ->
            Alias = alias(),
            true = erlang:port_command(Port, term_to_binary({call, Alias, id, [X]})),
            receive
                {Alias, Bin} -> unalias(Alias), {ok, R} = binary_to_term(Bin, [safe]), R
            after ?CALL_TIMEOUT -> error(bare_timeout)
            end
     end, OsPid};
call_fun(bare_c_port, #{exe := Exe}) ->  % one caller: it owns the port
    Port = open_c_port(Exe),
    {os_pid, OsPid} = erlang:port_info(Port, os_pid),
    {fun(X) -> bare_call(Port, X) end, OsPid};
call_fun(gen_server, #{server := Server}) ->
    {fun(X) -> gen_server:call(Server, X, ?CALL_TIMEOUT) end, undefined}.

open_c_port(Exe) ->
    open_port({spawn_executable, Exe}, [{packet, 4}, binary, nouse_stdio, exit_status]).

bare_call(Port, X) ->
    Ref = make_ref(),
    true = erlang:port_command(Port, term_to_binary({call, Ref, id, [X]})),
    receive
        {Port, {data, Frame}} ->
            {{reply, Ref}, Payload} = split_frame(Frame),
            {ok, R} = binary_to_term(Payload, [safe]),
            R
    after ?CALL_TIMEOUT -> error(bare_timeout)
    end.

%% A worker's frame: the envelope, then the payload left undecoded (a sub-binary).
split_frame(Frame) ->
    {Envelope, Used} = binary_to_term(Frame, [safe, used]),
    {Envelope, binary_part(Frame, Used, byte_size(Frame) - Used)}.

relay(Port) ->
    receive
        {Port, {data, Frame}} ->
            {{reply, Alias}, Payload} = split_frame(Frame),
            Alias ! {Alias, Payload},
            relay(Port);
        {stop, From} ->
            port_close(Port),
            From ! {stopped, self()}
    after ?WAIT -> error(relay_idle)
    end.

%% The worker process's CPU time per call (us), as text; "-" for the gen_server.
cpu_per_call(Cells) ->
    case [Cpu || {_, _, Cpu} <- Cells] of
        [undefined | _] -> "-";
        Cpus -> io_lib:format("~.2f", [lists:sum(Cpus) / 1000 / length(lists:append([L || {L, _, _} <- Cells]))])
    end.

stats(Lats, Wall) ->
    Sorted = lists:sort(Lats),
    {percentile(Sorted, 50), percentile(Sorted, 99), length(Sorted) * 1.0e9 / Wall}.

%% ---- Pool throughput ----

pool(#{bench_plugin := Plugin, fib_n := F, fib_callers := Callers, fib_ms := Ms, fib_rounds := Rounds}) ->
    p("~n== Pool: fib(~b) (CPU-bound) from ~b concurrent callers ==~n", [F, Callers]),
    {ok, P1} = ocaml:start_link(#{plugins => [Plugin], pool_size => 1}),
    {ok, P2} = ocaml:start_link(#{plugins => [Plugin], pool_size => 2}),
    2 = length(ocaml:workers(P2)),
    Expected = fib(F),
    {ok, Expected} = ocaml:call(P1, fib, [F], ?CALL_TIMEOUT),
    {ok, Expected} = ocaml:call(P2, fib, [F], ?CALL_TIMEOUT),
    {PerCall, _} = timer:tc(fun() -> ocaml:call(P1, fib, [F], ?CALL_TIMEOUT) end),
    K = max(2, Ms * 1000 div max(1, PerCall) div Callers),
    Ours = [list_to_integer(os:getpid()) | [OsPid || P <- [P1, P2], #{os_pid := OsPid} <- ocaml:workers(P)]],
    Cpu0 = cpu_times(Ours),
    Runs = [{fib_rate(P1, F, Expected, Callers, K), fib_rate(P2, F, Expected, Callers, K)}
            || _ <- lists:seq(1, Rounds)],
    Others = others_cores(Cpu0, cpu_times(Ours)),
    R1 = median([A || {A, _} <- Runs]),
    R2 = median([B || {_, B} <- Runs]),
    ok = ocaml:stop(P1),
    ok = ocaml:stop(P2),
    p("~-28s ~10s~n", ["pool", "calls/s"]),
    p("~-28s ~10.1f~n~-28s ~10.1f~n", ["pool_size 1", R1, "pool_size 2", R2]),
    p("(~b rounds of ~b calls per caller each, medians; meanwhile other processes than this VM and~n"
      " the workers kept ~.2f of the ~b cores busy)~n", [Rounds, K, Others, erlang:system_info(logical_processors_available)]),
    [{io_lib:format("pool_size 2 / pool_size 1 calls/s on fib (others busy: ~.2f cores)", [Others]),
      R2 / R1, '>=', 1.8}].

%% {busy ticks of the machine, all ticks, ticks of the processes Ours}, from /proc.
cpu_times(Ours) ->
    {ok, Stat} = file:read_file("/proc/stat"),
    [<<"cpu">> | Fields] = string:lexemes(hd(string:split(Stat, "\n")), " "),
    [User, Nice, System, Idle, IoWait, Irq, SoftIrq, Steal | _] = [binary_to_integer(X) || X <- Fields],
    Busy = User + Nice + System + Irq + SoftIrq + Steal,
    Mine = lists:sum([begin
                          {ok, PStat} = file:read_file(["/proc/", integer_to_list(Pid), "/stat"]),
                          %% after "(comm)": state is field 3, utime and stime fields 14 and 15
                          [_, AfterComm] = string:split(PStat, ")", trailing),
                          Rest = string:lexemes(AfterComm, " "),
                          binary_to_integer(lists:nth(12, Rest)) + binary_to_integer(lists:nth(13, Rest))
                      end || Pid <- Ours]),
    {Busy, Busy + Idle + IoWait, Mine}.

%% How many cores other processes kept busy between two cpu_times/1.
others_cores({B0, T0, M0}, {B1, T1, M1}) ->
    Cores = erlang:system_info(logical_processors_available),
    max(0.0, ((B1 - B0) - (M1 - M0)) * Cores / max(1, T1 - T0)).

fib(N) when N < 2 -> N;
fib(N) -> fib(N - 1) + fib(N - 2).

fib_rate(Pool, F, Expected, Callers, K) ->
    Parent = self(),
    T0 = now_ns(),
    Pids = [spawn_link(fun() ->
                               [{ok, Expected} = ocaml:call(Pool, fib, [F], ?CALL_TIMEOUT) || _ <- lists:seq(1, K)],
                               Parent ! {fib_done, self()}
                       end) || _ <- lists:seq(1, Callers)],
    [receive {fib_done, P} -> ok after ?WAIT -> error(fib_timeout) end || P <- Pids],
    Callers * K * 1.0e9 / (now_ns() - T0).

%% ---- Kernels ----

kernels(Cfg = #{kernels_plugin := Plugin}) ->
    p("~n== Kernels: one call, milliseconds (median); ratios: port/standalone, Erlang/port ==~n", []),
    p("~-14s ~8s ~11s ~11s ~11s ~9s ~9s~n",
      ["kernel", "size", "port", "standalone", "erlang", "port/sa", "erl/port"]),
    {ok, Pool} = ocaml:start_link(#{plugins => [Plugin]}),
    Verdicts = lists:append([kernel(Cfg, Pool, K) || K <- maps:get(kernels, Cfg)]),
    ok = ocaml:stop(Pool),
    p("(port: ocaml:call, timed by the caller; standalone: kernels_standalone timing itself; every result~n"
      " checked equal to the bit across the three)~n", []),
    Verdicts.

kernel(#{k_reps := Reps, k_rounds := Rounds, erl_reps := ErlReps, standalone := Exe}, Pool, {K, Size, Inner, Class}) ->
    {ok, First} = ocaml:call(Pool, K, [Size], ?CALL_TIMEOUT),  % warm-up, and the port's result
    PortDigest = digest(First),
    PerRound = max(1, Reps div Rounds),
    Samples = [{port_samples(Pool, K, Size, Inner, PerRound),
                standalone(Exe, K, Size, PerRound, Inner),
                [erlang_sample(K, Size, Inner) || R =< ErlReps]}
               || R <- lists:seq(1, Rounds)],
    Port = median(lists:append([S || {S, _, _} <- Samples])),
    Sa = median(lists:append([S || {_, {S, _}, _} <- Samples])),
    ErlRuns = lists:append([E || {_, _, E} <- Samples]),
    Erl = median([T || {T, _} <- ErlRuns]),
    Digests = lists:usort([PortDigest] ++ [D || {_, {_, D}, _} <- Samples] ++ [D || {_, D} <- ErlRuns]),
    length(Digests) =:= 1 orelse error({kernels_disagree, K, Size, Digests}),
    p("~-14s ~8b ~11.3f ~11.3f ~11.3f ~9.3f ~9.1f~n", [K, Size, Port / 1.0e6, Sa / 1.0e6, Erl / 1.0e6, Port / Sa, Erl / Port]),
    case Class of
        big -> [{io_lib:format("kernel ~s(~b): port / standalone", [K, Size]), Port / Sa, '=<', 1.05}];
        small -> []
    end.

%% ns per call, each sample timing Inner calls.
port_samples(Pool, K, Size, Inner, N) ->
    [begin
         T0 = now_ns(),
         [{ok, _} = ocaml:call(Pool, K, [Size], ?CALL_TIMEOUT) || _ <- lists:seq(1, Inner)],
         (now_ns() - T0) / Inner
     end || _ <- lists:seq(1, N)].

%% The standalone program's own timings (ns per call) and the digest of its result.
standalone(Exe, K, Size, Reps, Inner) ->
    Args = [atom_to_list(K), integer_to_list(Size), integer_to_list(Reps), integer_to_list(Inner)],
    Port = open_port({spawn_executable, Exe}, [{args, Args}, {line, 256}, binary, exit_status, use_stdio]),
    standalone_lines(Port, [], undefined).

standalone_lines(Port, Times, Digest) ->
    receive
        {Port, {data, {eol, <<"ns ", T/binary>>}}} -> standalone_lines(Port, [binary_to_integer(T) | Times], Digest);
        {Port, {data, {eol, <<"result ", D/binary>>}}} -> standalone_lines(Port, Times, binary_to_list(D));
        {Port, {exit_status, 0}} when Times =/= [], Digest =/= undefined -> {Times, Digest};
        {Port, Other} -> error({standalone, Other})
    after ?WAIT -> error(standalone_timeout)
    end.

%% One sample in a fresh process (no garbage from earlier samples): ns per call, digest.
erlang_sample(K, Size, Inner) ->
    {Pid, Ref} = spawn_monitor(fun() ->
                                       T0 = now_ns(),
                                       R = lists:last([K:run(Size) || _ <- lists:seq(1, Inner)]),
                                       exit({sample, (now_ns() - T0) / Inner, digest(R)})
                               end),
    receive {'DOWN', Ref, process, Pid, {sample, T, D}} -> {T, D}
    after ?WAIT -> error({erlang_kernel_timeout, K})
    end.

%% As kernels_main.ml prints it: a float's IEEE bits in hex, a binary's MD5 in hex.
digest(F) when is_float(F) ->
    <<Bits:64>> = <<F/float>>,
    string:lowercase(integer_to_list(Bits, 16));
digest(B) when is_binary(B) ->
    string:lowercase(binary_to_list(binary:encode_hex(erlang:md5(B)))).

%% ---- Worker cost ----

worker_cost(Cfg = #{start_iters := Iters, rss_iters := RssIters}) ->
    Kinds = [camlbeam, camlbeam_no_plugin, c_port, bare_c_port],
    Starts = [[{Kind, start_to_answer(Kind, Cfg)} || Kind <- rotate(I, Kinds)] || I <- lists:seq(1, Iters)],
    StartMs = [{Kind, median([T || Run <- Starts, {K, T} <- Run, K =:= Kind]) / 1.0e6} || Kind <- Kinds],
    RssKinds = Kinds ++ [ocaml_idle, ocaml_idle_linkall],
    Rss = [[{Kind, idle_rss(Kind, Cfg)} || Kind <- rotate(I, RssKinds)] || I <- lists:seq(1, RssIters)],
    RssOf = fun(Kind, I) -> median([element(I, R) || Run <- Rss, {K, R} <- Run, K =:= Kind]) end,
    RssKb = [{Kind, RssOf(Kind, 1)} || Kind <- RssKinds],
    p("~n== Worker cost: start to first answered call (median of ~b), idle VmRSS (median of ~b) ==~n",
      [Iters, RssIters]),
    p("~-20s ~10s ~11s ~11s ~11s~n", ["worker", "start ms", "VmRSS kB", "RssAnon kB", "RssFile kB"]),
    [p("~-20s ~10s ~11b ~11b ~11b~n", [Kind, case proplists:get_value(Kind, StartMs) of
                                                 undefined -> "-";
                                                 Ms -> io_lib:format("~.2f", [Ms])
                                             end, RssOf(Kind, 1), RssOf(Kind, 2), RssOf(Kind, 3)])
     || Kind <- RssKinds],
    p("(camlbeam: ocaml:start_link with the benchmark plugin, then ocaml:call id [42]; camlbeam_no_plugin: no~n"
      " plugin, the call answered {error, {undef, id}}; c_port: through ocaml:start_link(#{executable => ...});~n"
      " bare_c_port: open_port, one call, its answer; ocaml_idle: ocamlopt program blocked in input_line stdin;~n"
      " ocaml_idle_linkall: the same linked -linkall with the OCaml a worker carries for its plugins:~n"
      " the standard library, dynlink, zarith, unix, camlbeam)~n", []),
    [{"start to first answer: camlbeam / C port", value(camlbeam, StartMs) / value(c_port, StartMs), '=<', 1.5},
     {"idle VmRSS: camlbeam worker / bare ocamlopt program", value(camlbeam, RssKb) / value(ocaml_idle, RssKb),
      '=<', 1.2},
     {"idle VmRSS: camlbeam worker / ocamlopt program, same OCaml libraries",
      value(camlbeam, RssKb) / value(ocaml_idle_linkall, RssKb), '=<', 1.2}].

value(K, L) -> proplists:get_value(K, L).

start_to_answer(bare_c_port, #{c_port := Exe}) ->
    T0 = now_ns(),
    Port = open_c_port(Exe),
    42 = bare_call(Port, 42),
    T = now_ns() - T0,
    close_port(Port),
    T;
start_to_answer(Kind, Cfg) ->
    T0 = now_ns(),
    {ok, Pool} = ocaml:start_link(start_options(Kind, Cfg)),
    Answer = ocaml:call(Pool, id, [42], ?CALL_TIMEOUT),
    T = now_ns() - T0,
    ok = ocaml:stop(Pool),
    case {Kind, Answer} of
        {camlbeam_no_plugin, {error, {undef, _}}} -> T;
        {_, {ok, 42}} -> T;
        _ -> error({bad_first_answer, Kind, Answer})
    end.

start_options(camlbeam, #{bench_plugin := Plugin}) -> #{plugins => [Plugin]};
start_options(camlbeam_no_plugin, _) -> #{};
start_options(c_port, #{c_port := Exe}) -> #{executable => Exe}.

%% VmRSS (kB) of the worker's OS process, after one call and IdleMs of rest.
idle_rss(ocaml_idle_linkall, Cfg = #{idle_linkall := Exe}) ->
    idle_rss(ocaml_idle, Cfg#{idle := Exe});
idle_rss(ocaml_idle, #{idle := Exe, idle_ms := IdleMs}) ->
    Port = open_port({spawn_executable, Exe}, [binary, use_stdio, exit_status]),
    {os_pid, OsPid} = erlang:port_info(Port, os_pid),
    timer:sleep(IdleMs),
    Rss = vm_rss(OsPid),
    close_port(Port),
    Rss;
idle_rss(bare_c_port, #{c_port := Exe, idle_ms := IdleMs}) ->
    Port = open_c_port(Exe),
    42 = bare_call(Port, 42),
    {os_pid, OsPid} = erlang:port_info(Port, os_pid),
    timer:sleep(IdleMs),
    Rss = vm_rss(OsPid),
    close_port(Port),
    Rss;
idle_rss(Kind, Cfg = #{idle_ms := IdleMs}) ->
    {ok, Pool} = ocaml:start_link(start_options(Kind, Cfg)),
    _ = ocaml:call(Pool, id, [42], ?CALL_TIMEOUT),
    [#{os_pid := OsPid}] = ocaml:workers(Pool),
    timer:sleep(IdleMs),
    Rss = vm_rss(OsPid),
    ok = ocaml:stop(Pool),
    Rss.

%% Closes a port this process owns and waits for its program to exit.
close_port(Port) ->
    port_close(Port),
    receive {Port, {exit_status, _}} -> ok after 0 -> ok end.

%% {VmRSS, RssAnon, RssFile} in kB: resident in all, anonymous (private to the worker: heaps,
%% stacks, buffers), file-backed (the executable's and the libraries' pages, shareable).
vm_rss(OsPid) ->
    {ok, Status} = file:read_file(["/proc/", integer_to_list(OsPid), "/status"]),
    list_to_tuple([begin
                       {match, [Kb]} = re:run(Status, [Field, ":\\s+(\\d+) kB"], [{capture, all_but_first, binary}]),
                       binary_to_integer(Kb)
                   end || Field <- ["VmRSS", "RssAnon", "RssFile"]]).

%% ---- Verdicts ----

verdicts(Mode, Verdicts) ->
    p("~n== Targets ==~n", []),
    [p("~-76s ~7.3f  ~s ~s~n", [Label, Ratio, Op, verdict(Mode, Ratio, Op, Limit)])
     || {Label, Ratio, Op, Limit} <- Verdicts],
    case Mode of
        smoke -> p("(smoke mode: a few iterations, no verdicts)~n", []);
        full -> ok
    end.

verdict(smoke, _, _, Limit) -> io_lib:format("~.2f   -", [Limit * 1.0]);
verdict(full, Ratio, '=<', Limit) when Ratio =< Limit -> io_lib:format("~.2f   PASS", [Limit * 1.0]);
verdict(full, Ratio, '>=', Limit) when Ratio >= Limit -> io_lib:format("~.2f   PASS", [Limit * 1.0]);
verdict(full, _, _, Limit) -> io_lib:format("~.2f   miss", [Limit * 1.0]).

%% ---- The gen_server identity ----

init([]) -> {ok, nostate}.
handle_call(X, _From, State) -> {reply, X, State}.
handle_cast(_, State) -> {noreply, State}.

%% ---- Helpers ----

now_ns() -> erlang:monotonic_time(nanosecond).

percentile(Sorted, P) ->
    lists:nth(max(1, (length(Sorted) * P + 99) div 100), Sorted).

median(Xs) ->
    Sorted = lists:sort(Xs),
    Len = length(Sorted),
    case Len rem 2 of
        1 -> lists:nth(Len div 2 + 1, Sorted);
        0 -> (lists:nth(Len div 2, Sorted) + lists:nth(Len div 2 + 1, Sorted)) / 2
    end.
