%% The nif coupling's benchmark driver (bench/nif/README.md). One run measures, side by side,
%% and prints with PASS/miss against the targets of the nif coupling's issue:
%%
%%   round trips  the payloads of the port benchmark (port_bench:payload_names/0), p50/p99
%%                latency and calls/s with one and two concurrent callers, through
%%                  c_nif         camlbeam_bench_cnif:echo/1 (c_nif.cpp): a hand-written C NIF
%%                                that walks the term and builds an equal copy;
%%                  gen_server    a local gen_server:call identity;
%%                  t2b_b2t       binary_to_term(term_to_binary(P)) in the caller;
%%                  camlbeam_nif  ocaml:call(Pool, id, [P]) on a pool started with
%%                                #{transport => nif}: the port benchmark's plugin.
%%   throughput   fib (CPU-bound) from 1 and from 2 callers through camlbeam nif, beside
%%                Erlang's own fib from 1 and 2 processes (what this machine gives two
%%                callers at the time);
%%   kernels      nbody, spectral_norm, mandelbrot through camlbeam nif vs the standalone
%%                ocamlopt program (timing itself) vs the same kernels in Erlang.
%%   responsiveness  a gen_server:call ping's latency on the normal schedulers, p50/p99/max,
%%                idle, while two callers keep long nif exports running (fib), and while
%%                two processes compute the same fib in Erlang.
%%
%% Until the nif transport exists, ocaml:start_link answers {error, {transport_unavailable,
%% nif}}: the report says "camlbeam nif: unavailable (...)", measures the baselines, and
%% judges nothing. The column plugs in at nif_start/1 (the one call that starts it). The
%% payloads, plugins, kernels and timing helpers are port_bench's (bench/port), not copies.
%%
%% Run by bench/nif/run.sh:
%%   erl -noshell -pa EBIN -pa PORT_EBIN -pa CAMLBEAM_EBIN -run nif_bench main -extra [--smoke]
%%       --cnif LIB --nif-library LIB --bench-plugin P --kernels-plugin P --standalone P --payloads DIR --out FILE
%%       [--only round_trips|throughput|kernels] [--nif-options MAP] [--rt-rounds N] [--rt-cell-ms MS]
%%       [--rt-payloads NAME,NAME...]
%% (--nif-options: an Erlang map merged into the nif pool's start options, e.g.
%% '#{pool_size => 2}'.) It halts 0 when every check passed (missed targets are reported, not
%% failures), 1 on an error or a failed check (an echo that differs from its payload,
%% kernels that disagree, a nif transport that exists but does not start).
-module(nif_bench).

-export([main/0]).

-define(CALL_TIMEOUT, 60000).
-define(WAIT, 300000).  % the longest any receive here waits: no step hangs the run

%% ---- Entry ----

main() ->
    Opts = options(init:get_plain_arguments(), #{mode => full}),
    port_bench:run_and_halt(?MODULE, fun() -> run(Opts) end).

options([], Opts) -> Opts;
options(["--smoke" | Rest], Opts) -> options(Rest, Opts#{mode => smoke});
options(["--rt-payloads", Value | Rest], Opts) ->
    options(Rest, Opts#{rt_payloads => string:lexemes(Value, ",")});
options([Flag, Value | Rest], Opts) when Flag =:= "--rt-rounds"; Flag =:= "--rt-cell-ms" ->
    Key = case Flag of "--rt-rounds" -> rt_rounds; "--rt-cell-ms" -> rt_cell_ms end,
    options(Rest, Opts#{Key => list_to_integer(Value)});
options(["--nif-options", Value | Rest], Opts) ->
    {ok, Tokens, _} = erl_scan:string(Value ++ "."),
    {ok, [Expr]} = erl_parse:parse_exprs(Tokens),
    {value, Map, _} = erl_eval:expr(Expr, erl_eval:new_bindings()),
    true = is_map(Map),
    options(Rest, Opts#{nif_options => Map});
options([Flag, Value | Rest], Opts) ->
    Key = case Flag of
              "--cnif" -> cnif;
              "--nif-library" -> nif_library;  % the build's camlbeam_nif (its path without .so)
              "--bench-plugin" -> bench_plugin;
              "--kernels-plugin" -> kernels_plugin;
              "--standalone" -> standalone;
              "--payloads" -> payloads;
              "--out" -> out;
              "--only" -> only;  % round_trips | throughput | kernels | responsiveness: one section
              _ -> error({unknown_option, Flag})
          end,
    options(Rest, Opts#{Key => Value});
options(Other, _) -> error({bad_options, Other}).

%% What each mode does. smoke: every code path for a few iterations, checks, no verdicts.
config(full) ->
    %% Many short rounds, every target in each: a burst of load from another tenant then
    %% falls on all targets alike, not on one.
    #{rt_cell_ms => 400, rt_rounds => 15, rt_max_calls => 200000, warm_ms => 20, pings => 3000, long_fib => 32,
      fib_n => 27, fib_ms => 250, fib_rounds => 9,
      %% {Kernel, Size, calls per sample, big (target) | small}, as bench/port
      kernels => [{nbody, 2000000, 1, big}, {spectral_norm, 1000, 1, big}, {mandelbrot, 2000, 1, big},
                  {nbody, 1000, 100, small}, {spectral_norm, 100, 10, small}, {mandelbrot, 200, 10, small}],
      k_reps => 9, k_rounds => 9, erl_reps => 3};
config(smoke) ->
    #{rt_cell_ms => 5, rt_rounds => 1, rt_max_calls => 20, warm_ms => 1, pings => 50, long_fib => 25,
      fib_n => 20, fib_ms => 20, fib_rounds => 1,
      kernels => [{nbody, 1000, 2, small}, {spectral_norm, 100, 1, small}, {mandelbrot, 200, 1, small}],
      k_reps => 1, k_rounds => 1, erl_reps => 1}.

run(Opts = #{mode := Mode, out := Out, cnif := Cnif}) ->
    Cfg0 = maps:merge(config(Mode), Opts),
    {ok, Fd} = file:open(Out, [write, {encoding, utf8}]),
    put(report_fd, Fd),
    ok = camlbeam_bench_cnif:load(Cnif),
    %% The build's library, as the build's plugins: the application may have no priv.
    ok = application:load(camlbeam),
    _ = maps:is_key(nif_library, Opts) andalso
        application:set_env(camlbeam, nif_library, maps:get(nif_library, Opts)),
    {ok, _} = application:ensure_all_started(camlbeam),
    Nif = nif_pool(Cfg0),
    Cfg = Cfg0#{nif => Nif},
    header(Cfg),
    Sections = [{round_trips, fun round_trips/1}, {throughput, fun throughput/1}, {kernels, fun kernels/1},
                {responsiveness, fun responsiveness/1}],
    Only = maps:get(only, Cfg, all),
    Verdicts = lists:append([F(Cfg) || {Name, F} <- Sections, Only =:= all orelse Only =:= atom_to_list(Name)]),
    verdicts(Mode, Verdicts),
    case Nif of
        {available, Pool, _} -> ok = ocaml:stop(Pool);
        {unavailable, _} -> ok
    end,
    ok = file:close(Fd).

%% ---- The camlbeam nif column: where it plugs in ----

%% The one call that starts camlbeam's nif coupling: both plugins of the port benchmark (its
%% `id' and `fib' exports, and the kernels) in one pool, started once for the whole run and
%% used by every section, with a worker per scheduler: a worker's calls run one at a time, so
%% two callers run at once on two workers (under OCaml 5, each on a domain). --nif-options
%% adds or overrides start options.
nif_start(#{bench_plugin := Bench, kernels_plugin := Kernels} = Cfg) ->
    ocaml:start_link(maps:merge(#{transport => nif, plugins => [Bench, Kernels],
                                  pool_size => erlang:system_info(schedulers_online)},
                                maps:get(nif_options, Cfg, #{}))).

%% {available, Pool, OcamlVersion} or {unavailable, Reason}. Only the transport's absence is
%% "unavailable": once it exists, a pool that does not start, or that answers id wrongly, is
%% an error of the run, not a column left out.
nif_pool(Cfg) ->
    case nif_start(Cfg) of
        {ok, Pool} ->
            {ok, 42} = ocaml:call(Pool, id, [42], ?CALL_TIMEOUT),
            {available, Pool, ocaml_version(Pool)};
        {error, {transport_unavailable, nif} = Reason} ->
            {unavailable, Reason};
        {error, Reason} ->
            error({nif_pool_did_not_start, Reason})
    end.

%% The OCaml the pool's code runs, as ocaml:workers/1 says (the fib target is OCaml 5's).
ocaml_version(Pool) ->
    case catch ocaml:workers(Pool) of
        [#{ocaml_version := V} | _] -> V;
        _ -> <<"unknown">>
    end.

available(#{nif := {available, _, _}}) -> true;
available(_) -> false.

unavailable_text({unavailable, Reason}) ->
    io_lib:format("camlbeam nif: unavailable (~0p: ~ts)", [Reason, ocaml:format_error(Reason)]).

%% ---- Report ----

header(Cfg = #{nif := Nif}) ->
    port_bench:header("nif", Cfg),
    case Nif of
        {available, _, Version} -> p("camlbeam nif: available (OCaml ~s)~n", [Version]);
        {unavailable, _} -> p("~ts; the baselines only, no verdicts~n", [unavailable_text(Nif)])
    end.

p(Fmt, Args) -> port_bench:p(Fmt, Args).

%% ---- Round trips ----

round_trips(Cfg = #{payloads := Dir, nif := Nif}) ->
    {ok, Server} = gen_server:start_link(port_bench, [], []),  % its identity server
    Targets = [{c_nif, fun camlbeam_bench_cnif:echo/1},
               {gen_server, fun(X) -> gen_server:call(Server, X, ?CALL_TIMEOUT) end},
               {t2b_b2t, fun(X) -> binary_to_term(term_to_binary(X)) end}]
        ++ case Nif of
               {available, Pool, _} ->
                   [{camlbeam_nif, fun(X) -> {ok, R} = ocaml:call(Pool, id, [X], ?CALL_TIMEOUT), R end}];
               {unavailable, _} -> []
           end,
    p("~n== Round trip: echo of each payload, times in microseconds; p50 ratios against each baseline ==~n", []),
    case Nif of
        {unavailable, _} -> p("(~ts: its rows are left out)~n", [unavailable_text(Nif)]);
        _ -> ok
    end,
    p("timing floor: ~.3f us p50 (a fun returning its argument, timed as every call below)~n", [floor_ns() / 1000]),
    p("~-12s ~7s  ~-13s ~9s ~9s ~10s ~7s  ~7s ~8s ~7s~n",
      ["payload", "callers", "echo", "p50", "p99", "calls/s", "2c/1c", "/c_nif", "/gen_srv", "/t2b"]),
    Verdicts = lists:append([round_trip_payload(Cfg, Targets, Name, port_bench:read_payload(Dir, Name))
                             || Name <- maps:get(rt_payloads, Cfg, port_bench:payload_names())]),
    ok = gen_server:stop(Server),
    p("(c_nif: c_nif.cpp's echo/1, a C NIF walking the term and building an equal copy on the normal~n"
      " scheduler; gen_server: a local gen_server:call identity; t2b_b2t: binary_to_term(term_to_binary(P))~n"
      " in the caller; camlbeam_nif: ocaml:call(Pool, id, [P]) on the nif pool. 2c/1c: calls/s of two~n"
      " concurrent callers over one caller's. /X: this row's p50 over X's p50, same payload and callers.)~n", []),
    Verdicts.

%% The cost of timing one call: a fun that returns its argument, timed like the echoes.
floor_ns() ->
    F = fun(X) -> X end,
    port_bench:median([begin
                           Lats = port_bench:timed_calls(F, 42, 1000, []),
                           port_bench:percentile(lists:sort(Lats), 50)
                       end || _ <- lists:seq(1, 5)]).

round_trip_payload(#{rt_cell_ms := CellMs, rt_rounds := Rounds, rt_max_calls := Max} = Cfg, Targets, Name, Payload) ->
    %% Calls per cell: the same for every target, from a probe of each, so that the slowest
    %% target's cell takes about CellMs.
    PerCall = lists:max([max(1, port_bench:median(port_bench:timed_calls(F, Payload, 5, []))) || {_, F} <- Targets]),
    N = max(Rounds * 2, min(Max, CellMs * 1000000 div PerCall)) div Rounds,
    ByCallers = [{C, round_trip_rounds(Cfg, Targets, Payload, C, N, Rounds)} || C <- [1, 2]],
    Stats = [{C, [{T, stats(lists:append([L || {L, _} <- Cells]), lists:sum([W || {_, W} <- Cells]))}
                  || {T, Cells} <- ByTarget]}
             || {C, ByTarget} <- ByCallers],
    [begin
         Of = proplists:get_value(C, Stats),
         P50Of = fun(T) -> element(1, proplists:get_value(T, Of)) end,
         [begin
              Scale = case C of
                          1 -> "";
                          2 -> io_lib:format("~.2f", [Rate / element(3, proplists:get_value(T, proplists:get_value(1, Stats)))])
                      end,
              p("~-12s ~7b  ~-13s ~9.3f ~9.3f ~10b ~7s  ~7.2f ~8.2f ~7.2f~n",
                [Name, C, T, P50 / 1000, P99 / 1000, round(Rate), Scale,
                 P50 / P50Of(c_nif), P50 / P50Of(gen_server), P50 / P50Of(t2b_b2t)])
          end || {T, {P50, P99, Rate}} <- Of]
     end || C <- [1, 2]],
    round_trip_verdicts(Cfg, Name, proplists:get_value(1, ByCallers)).

%% The targets that concern this payload, one caller: each round's camlbeam_nif cell paired
%% with the baseline's cell of the same round (adjacent in time, so under the same load),
%% the median of the ratios of their p50s.
round_trip_verdicts(Cfg, Name, ByTarget) ->
    Targets = case Name of
                  %% the small terms: every kind of the payload set in a few words (mixed_tuple)
                  %% and the smallest (int42)
                  "int42" -> [{gen_server, "small-term p50, 1 caller: camlbeam nif / gen_server:call", 0.5}];
                  "mixed_tuple" -> [{gen_server, "small-term p50, 1 caller: camlbeam nif / gen_server:call", 0.5}];
                  "floats_100" -> [{t2b_b2t, "p50, 1 caller: camlbeam nif / term_to_binary+binary_to_term", 1.0}];
                  "ints_100k" -> [{t2b_b2t, "p50, 1 caller: camlbeam nif / term_to_binary+binary_to_term", 1.0}];
                  _ -> []
              end,
    [{io_lib:format("~s ~s", [Name, Label]),
      case available(Cfg) of
          true ->
              port_bench:median(lists:zipwith(fun({Ours, _}, {Theirs, _}) ->
                                                      port_bench:median(Ours) / port_bench:median(Theirs)
                                              end,
                                              proplists:get_value(camlbeam_nif, ByTarget),
                                              proplists:get_value(Baseline, ByTarget)));
          false -> unavailable
      end, '=<', Limit}
     || {Baseline, Label, Limit} <- Targets].

%% Rounds of every target in turn (the order rotates): per target, its cells in round order.
round_trip_rounds(Cfg, Targets, Payload, Callers, N, Rounds) ->
    Runs = [[{T, cell(Cfg, T, F, Payload, Callers, N)} || {T, F} <- rotate(R, Targets)]
            || R <- lists:seq(1, Rounds)],
    [{T, [Cell || Run <- Runs, {T1, Cell} <- Run, T1 =:= T]} || {T, _} <- Targets].

rotate(R, L) ->
    {A, B} = lists:split(R rem length(L), L),
    B ++ A.

%% One cell: Callers processes, each N timed calls after its warm-up. Returns every latency
%% (ns) and the wall time from go to the last caller's end.
cell(#{warm_ms := WarmMs}, Target, Call, Payload, Callers, N) ->
    Parent = self(),
    Pids = [spawn_caller(I, fun() -> caller(Parent, Target, Call, Payload, N, WarmMs) end) || I <- lists:seq(1, Callers)],
    [receive {ready, P} -> ok after ?WAIT -> error({caller_not_ready, Target}) end || P <- Pids],
    T0 = now_ns(),
    [P ! go || P <- Pids],
    Lats = [receive {done, P, L} -> L after ?WAIT -> error({caller_timeout, Target}) end || P <- Pids],
    Wall = now_ns() - T0,
    {lists:append(Lats), Wall}.

%% Caller I runs on scheduler I (of those online), linked to the run. Left to the VM, callers
%% that never block (a NIF's or a BIF's calls) stay for whole cells on the run queue they
%% were spawned on, and two callers measured one core: 2c/1c was 1.0 for c_nif and t2b_b2t
%% on an idle machine. {scheduler, N} is a spawn_opt option OTP's own test suites use (not
%% documented); where it is refused, the VM places the callers.
spawn_caller(I, Fun) ->
    Scheduler = (I - 1) rem erlang:system_info(schedulers_online) + 1,
    try spawn_opt(Fun, [link, {scheduler, Scheduler}])
    catch error:badarg -> spawn_link(Fun)
    end.

%% Untimed calls first, the first checked equal to the payload: at least three, and at
%% least WarmMs of them (the caller's heap grows to its steady size).
caller(Parent, Target, Call, Payload, N, WarmMs) ->
    case Call(Payload) of
        Payload -> ok;
        Other -> error({bad_echo, Target, erts_debug:flat_size(Other)})
    end,
    port_bench:warm_up(Call, Payload, 1, now_ns() + WarmMs * 1000000),
    Parent ! {ready, self()},
    receive go -> ok after ?WAIT -> error(no_go) end,
    Parent ! {done, self(), port_bench:timed_calls(Call, Payload, N, [])}.

stats(Lats, Wall) ->
    Sorted = lists:sort(Lats),
    {port_bench:percentile(Sorted, 50), port_bench:percentile(Sorted, 99), length(Sorted) * 1.0e9 / Wall}.

%% ---- Throughput: a CPU-bound export from 1 and from 2 callers ----

throughput(Cfg = #{fib_n := F, fib_rounds := Rounds, nif := Nif}) ->
    p("~n== Throughput: fib(~b) (CPU-bound) from 1 and from 2 concurrent callers, calls/s ==~n", [F]),
    Expected = port_bench:fib(F),
    ErlangFib = fun() -> Expected = port_bench:fib(F) end,
    Rows = [{erlang_fib, ErlangFib}]
        ++ case Nif of
               {available, Pool, _} ->
                   [{camlbeam_nif, fun() -> {ok, Expected} = ocaml:call(Pool, fib, [F], ?CALL_TIMEOUT) end}];
               {unavailable, _} -> []
           end,
    Cpu0 = port_bench:cpu_times([list_to_integer(os:getpid())]),
    Rates = [{Name, fib_rounds(Fun, calls_per_cell(Cfg, Fun), Rounds)} || {Name, Fun} <- Rows],
    Others = port_bench:others_cores(Cpu0, port_bench:cpu_times([list_to_integer(os:getpid())])),
    p("~-14s ~12s ~12s ~8s~n", ["fib", "1 caller", "2 callers", "2c/1c"]),
    [p("~-14s ~12.1f ~12.1f ~8.2f~n", [Name, R1, R2, R2 / R1]) || {Name, {R1, R2}} <- Rates],
    case Nif of
        {unavailable, _} -> p("camlbeam_nif   ~ts~n", [unavailable_text(Nif)]);
        _ -> ok
    end,
    p("(~b rounds, 1 and 2 callers alternating, medians; erlang_fib: the same fib in Erlang, in the~n"
      " callers' own processes: what two callers get from this machine meanwhile. Other processes than~n"
      " this VM kept ~.2f of the ~b cores busy.)~n",
      [Rounds, Others, erlang:system_info(logical_processors_available)]),
    Label = io_lib:format("fib(~b) 2 callers / 1 caller calls/s, camlbeam nif (others busy: ~.2f cores)", [F, Others]),
    Ratio = case Nif of
                {unavailable, _} ->
                    unavailable;
                {available, _, <<"5", _/binary>>} ->
                    {One, Two} = proplists:get_value(camlbeam_nif, Rates),
                    Two / One;
                {available, _, Version} ->
                    {not_applicable, io_lib:format("OCaml ~s: the target is OCaml 5's", [Version])}
            end,
    [{Label, Ratio, '>=', 1.8}].

%% Calls per caller per cell, so that a cell lasts about fib_ms.
calls_per_cell(#{fib_ms := Ms}, Fun) ->
    Fun(),
    {PerCall, _} = timer:tc(Fun),
    max(2, Ms * 1000 div max(1, PerCall)).

%% {median calls/s of 1 caller, of 2 callers}, the two alternating.
fib_rounds(Fun, K, Rounds) ->
    Runs = [{fib_rate(Fun, 1, K), fib_rate(Fun, 2, K)} || _ <- lists:seq(1, Rounds)],
    {port_bench:median([A || {A, _} <- Runs]), port_bench:median([B || {_, B} <- Runs])}.

fib_rate(Fun, Callers, K) ->
    Parent = self(),
    T0 = now_ns(),
    Pids = [spawn_caller(I, fun() -> [Fun() || _ <- lists:seq(1, K)], Parent ! {fib_done, self()} end)
            || I <- lists:seq(1, Callers)],
    [receive {fib_done, P} -> ok after ?WAIT -> error(fib_timeout) end || P <- Pids],
    Callers * K * 1.0e9 / (now_ns() - T0).

%% ---- Kernels ----

kernels(Cfg = #{nif := Nif}) ->
    p("~n== Kernels: one call, milliseconds (median) ==~n", []),
    case Nif of
        {available, _, _} ->
            p("~-14s ~8s ~11s ~11s ~11s ~9s ~9s~n", ["kernel", "size", "nif", "standalone", "erlang", "nif/sa", "erl/nif"]);
        {unavailable, _} ->
            p("(~ts: its column is left out)~n", [unavailable_text(Nif)]),
            p("~-14s ~8s ~11s ~11s ~9s~n", ["kernel", "size", "standalone", "erlang", "erl/sa"])
    end,
    Verdicts = lists:append([kernel(Cfg, K) || K <- maps:get(kernels, Cfg)]),
    p("(nif: ocaml:call on the nif pool, timed by the caller; standalone: kernels_standalone timing itself;~n"
      " erlang: bench/kernels/*.erl; every result checked equal to the bit across them)~n", []),
    Verdicts.

kernel(#{k_reps := Reps, k_rounds := Rounds, erl_reps := ErlReps, standalone := Exe, nif := Nif}, {K, Size, Inner, Class}) ->
    PerRound = max(1, Reps div Rounds),
    {NifDigest, NifRound} =
        case Nif of
            {available, Pool, _} ->
                {ok, First} = ocaml:call(Pool, K, [Size], ?CALL_TIMEOUT),  % warm-up, and its result
                {[port_bench:digest(First)], fun() -> port_bench:port_samples(Pool, K, Size, Inner, PerRound) end};
            {unavailable, _} ->
                {[], fun() -> [] end}
        end,
    Samples = [{NifRound(),
                port_bench:standalone(Exe, K, Size, PerRound, Inner),
                [port_bench:erlang_sample(K, Size, Inner) || R =< ErlReps]}
               || R <- lists:seq(1, Rounds)],
    Sa = port_bench:median(lists:append([S || {_, {S, _}, _} <- Samples])),
    ErlRuns = lists:append([E || {_, _, E} <- Samples]),
    Erl = port_bench:median([T || {T, _} <- ErlRuns]),
    Digests = lists:usort(NifDigest ++ [D || {_, {_, D}, _} <- Samples] ++ [D || {_, D} <- ErlRuns]),
    length(Digests) =:= 1 orelse error({kernels_disagree, K, Size, Digests}),
    case Nif of
        {available, _, _} ->
            Ours = port_bench:median(lists:append([S || {S, _, _} <- Samples])),
            p("~-14s ~8b ~11.3f ~11.3f ~11.3f ~9.3f ~9.1f~n",
              [K, Size, Ours / 1.0e6, Sa / 1.0e6, Erl / 1.0e6, Ours / Sa, Erl / Ours]),
            [{io_lib:format("kernel ~s(~b): camlbeam nif / standalone", [K, Size]), Ours / Sa, '=<', 1.05} || Class =:= big];
        {unavailable, _} ->
            p("~-14s ~8b ~11.3f ~11.3f ~9.1f~n", [K, Size, Sa / 1.0e6, Erl / 1.0e6, Erl / Sa]),
            [{io_lib:format("kernel ~s(~b): camlbeam nif / standalone", [K, Size]), unavailable, '=<', 1.05}
             || Class =:= big]
    end.

%% ---- Scheduler responsiveness ----

%% What long exports cost the rest of the VM: a process pings a local gen_server every
%% millisecond (on the normal schedulers, as any Erlang work) and times each call; while two
%% callers keep fib(long_fib) running through the nif (each call tens of milliseconds of
%% OCaml), and, for scale, while two processes compute it in Erlang (which the schedulers
%% preempt). The nif's OCaml runs on a thread of its own: the schedulers only copy requests
%% and receive answers.
responsiveness(Cfg = #{pings := N, long_fib := F, nif := Nif}) ->
    p("~n== Scheduler responsiveness: a gen_server:call ping every ms, microseconds ==~n", []),
    {ok, Server} = gen_server:start_link(port_bench, [], []),
    Expected = port_bench:fib(F),
    Loads = [{idle, none}]
        ++ case Nif of
               {available, Pool, _} ->
                   [{nif_fib, fun() -> {ok, Expected} = ocaml:call(Pool, fib, [F], ?CALL_TIMEOUT) end}];
               {unavailable, _} -> []
           end
        ++ [{erlang_fib, fun() -> Expected = port_bench:fib(F) end}],
    p("~-12s ~9s ~9s ~9s ~12s~n", ["load", "p50", "p99", "max", "load calls"]),
    Rows = [{Name, ping_under(Server, N, Load)} || {Name, Load} <- Loads],
    [p("~-12s ~9.1f ~9.1f ~9.1f ~12b~n", [Name, P50 / 1000, P99 / 1000, Max / 1000, Calls])
     || {Name, {P50, P99, Max, Calls}} <- Rows],
    ok = gen_server:stop(Server),
    p("(~b pings, one a millisecond; load: two callers calling fib(~b) again and again, through the~n"
      " nif pool (nif_fib) or in their own processes (erlang_fib); load calls: how many they completed.)~n",
      [N, F]),
    _ = Cfg,
    [].

%% {p50, p99, max} of N pings in nanoseconds, and the load's calls meanwhile.
ping_under(Server, N, Load) ->
    Parent = self(),
    Loaders = case Load of
                  none -> [];
                  _ -> [spawn_caller(I, fun() -> load_loop(Load, 0) end) || I <- [1, 2]]
              end,
    timer:sleep(50),
    Lats = [begin
                timer:sleep(1),
                T0 = now_ns(),
                ok = gen_server:call(Server, ok, ?CALL_TIMEOUT),
                now_ns() - T0
            end || _ <- lists:seq(1, N)],
    Calls = lists:sum([begin L ! {stop, Parent}, receive {load_calls, L, C} -> C after ?WAIT -> error(load_stuck) end end
                       || L <- Loaders]),
    Sorted = lists:sort(Lats),
    {port_bench:percentile(Sorted, 50), port_bench:percentile(Sorted, 99), lists:last(Sorted), Calls}.

load_loop(Load, Calls) ->
    receive
        {stop, Parent} -> Parent ! {load_calls, self(), Calls}
    after 0 ->
        Load(),
        load_loop(Load, Calls + 1)
    end.

%% ---- Verdicts ----

verdicts(Mode, Verdicts) ->
    p("~n== Targets ==~n", []),
    [p("~-84ts ~s~n", [Label, verdict(Mode, Ratio, Op, Limit)]) || {Label, Ratio, Op, Limit} <- Verdicts],
    case Mode of
        smoke -> p("(smoke mode: a few iterations, no verdicts)~n", []);
        full -> ok
    end.

verdict(_, unavailable, Op, Limit) -> io_lib:format("      -  ~s ~.2f   unavailable", [Op, Limit * 1.0]);
verdict(_, {not_applicable, Why}, Op, Limit) -> io_lib:format("      -  ~s ~.2f   n/a (~s)", [Op, Limit * 1.0, Why]);
verdict(smoke, Ratio, Op, Limit) -> io_lib:format("~7.3f  ~s ~.2f   -", [Ratio, Op, Limit * 1.0]);
verdict(full, Ratio, Op, Limit) ->
    Pass = case Op of '=<' -> Ratio =< Limit; '>=' -> Ratio >= Limit end,
    io_lib:format("~7.3f  ~s ~.2f   ~s", [Ratio, Op, Limit * 1.0, case Pass of true -> "PASS"; false -> "miss" end]).

%% ---- Helpers ----

now_ns() -> erlang:monotonic_time(nanosecond).
