#!/usr/bin/env escript
%% -*- erlang -*-
%% Erlang's side of the ETF benchmark (bench/run.sh drives it):
%%
%%   etf_bench.escript gen DIR                 write NAME.etf = term_to_binary(Term) for each
%%                                             payload: the bytes every decoder reads
%%   etf_bench.escript digest DIR              NAME DIGEST lines, as `etf_bench --check` prints
%%   etf_bench.escript time DIR MIN_MS REPS    "erlang decode|encode NAME NS_PER_OP" lines
%%
%% The payload list must describe the same terms as bench/payloads.hpp; `etf_bench --check`
%% fails when etf::Writer does not reproduce these bytes.
-mode(compile).

main(["gen", Dir]) ->
    ok = filelib:ensure_path(Dir),
    [write_atomically(path(Dir, Name), term_to_binary(Term)) || {Name, Term} <- payloads()],
    ok;
main(["digest", Dir]) ->
    [io:format("~s ~s~n", [Name, digest_line(binary_to_term(read(Dir, Name)))])
     || {Name, _} <- payloads()],
    ok;
main(["time", Dir, MinMs, Reps]) ->
    io:format("erlang otp ~s erts ~s~n",
              [erlang:system_info(otp_release), erlang:system_info(version)]),
    MinNs = list_to_integer(MinMs) * 1000000,
    [begin
         Bin = read(Dir, Name),
         Term = binary_to_term(Bin),
         io:format("erlang decode ~s ~.1f~n", [Name, ns_per_op(decode, Bin, MinNs, list_to_integer(Reps))]),
         io:format("erlang encode ~s ~.1f~n", [Name, ns_per_op(encode, Term, MinNs, list_to_integer(Reps))])
     end || {Name, _} <- payloads()],
    ok;
main(_) ->
    io:format(standard_error, "usage: etf_bench.escript gen|digest DIR | time DIR MIN_MS REPS~n", []),
    halt(2).

%% ---- Payloads: keep in step with bench/payloads.hpp ----

payloads() ->
    [{"int42", 42},
     {"floats_100", [I / 7 || I <- lists:seq(1, 100)]},
     {"binary_1k", pattern(1024)},
     {"mixed_tuple", {ok, 42, 3.14, <<"abc">>, [1, 2, 3], atom, #{a => 1}}},
     {"binary_1m", pattern(1 bsl 20)},
     {"ints_100k", [mixed_int(I) || I <- lists:seq(0, 99999)]},
     {"deep_10k", nest(10000, deep)},
     {"map_1k", keyed_map(1000)},
     {"map_100k", keyed_map(100000)}].

pattern(N) -> << <<((I * 31 + 7) band 255)>> || I <- lists:seq(0, N - 1) >>.

mixed_int(I) when I rem 4 =:= 0 -> I rem 256;
mixed_int(I) when I rem 4 =:= 1 -> -(I * 37);
mixed_int(I) when I rem 4 =:= 2 -> I * 20000;
mixed_int(I) ->
    Sign = case (I div 4) rem 2 of 0 -> 1; 1 -> -1 end,
    I * 1000003 * 1000003 * Sign.

%% More than 32 keys: a HAMT, written in its hash order (payloads.hpp's KeyedMap).
keyed_map(N) -> maps:from_list([{map_key(I), I} || I <- lists:seq(0, N - 1)]).

map_key(I) when I rem 2 =:= 0 -> I;
map_key(I) -> integer_to_binary(I).

nest(0, Leaf) -> Leaf;
nest(N, Leaf) -> nest(N - 1, {Leaf}).

path(Dir, Name) -> filename:join(Dir, Name ++ ".etf").

%% Two runs may share the payload directory (the bench_smoke and port_bench_smoke tests run
%% at once): a reader sees the old file or the new one, never one being written.
write_atomically(Path, Bytes) ->
    Temp = Path ++ "." ++ os:getpid(),
    ok = file:write_file(Temp, Bytes),
    ok = file:rename(Temp, Path).

read(Dir, Name) ->
    {ok, Bin} = file:read_file(path(Dir, Name)),
    Bin.

%% ---- Digest: the same fold as bench/digest.hpp, in the decoder's document order ----

-record(d, {terms = 0, ints = 0, floats = 0.0, binary = 0, edges = 0, atoms = 0}).

digest_line(Term) ->
    {D, Depth} = digest(Term, #d{}),
    <<Bits:64>> = <<(D#d.floats)/float>>,
    io_lib:format("terms=~b ints=~b floats=~b binary=~b edges=~b atoms=~b depth=~b",
                  [D#d.terms, D#d.ints band (1 bsl 64 - 1), Bits, D#d.binary, D#d.edges,
                   D#d.atoms, Depth]).

%% Returns the updated digest and the term's depth (containers nested at its deepest).
digest(T, D) when is_integer(T) -> {bump(D#d{ints = D#d.ints + T}), 0};
digest(T, D) when is_float(T) -> {bump(D#d{floats = D#d.floats + T}), 0};
digest(T, D) when is_atom(T) -> {bump(D#d{atoms = D#d.atoms + byte_size(atom_to_binary(T, utf8))}), 0};
digest(<<>>, D) -> {bump(D), 0};
digest(T, D) when is_binary(T) ->
    {bump(D#d{binary = D#d.binary + byte_size(T),
              edges = D#d.edges + binary:first(T) + binary:last(T)}), 0};
digest(T, D) when is_bitstring(T) -> {bump(D#d{binary = D#d.binary + byte_size(T)}), 0};
digest([], D) -> {bump(D), 0};
digest(T, D) when is_list(T) -> container(cons_children(T), D);
digest(T, D) when is_tuple(T) -> container(tuple_to_list(T), D);
digest(T, D) when is_map(T) -> container(lists:append([[K, V] || {K, V} <- maps:to_list(T)]), D);
digest(_, D) -> {bump(D), 0}.  % pids, ports, references, funs: one term each, as in C++

%% A list's children are its elements and then its tail, as ETF writes them.
cons_children([H | T]) -> [H | cons_children(T)];
cons_children(Tail) -> [Tail].

container(Children, D0) ->
    lists:foldl(fun(C, {D, Depth}) ->
                        {D1, CDepth} = digest(C, D),
                        {D1, max(Depth, CDepth + 1)}
                end, {bump(D0), 1}, Children).

bump(D) -> D#d{terms = D#d.terms + 1}.

%% ---- Timing ----

%% Median ns per operation over Reps samples, each a tight loop of N operations with N
%% grown until one loop takes at least MinNs. Every sample runs in a fresh process so that
%% one payload's garbage does not tax the next; collecting one's own garbage is part of the
%% cost, as it is for a real receiver.
ns_per_op(Op, Arg, MinNs, Reps) ->
    N = calibrate(Op, Arg, 1, MinNs),
    median([sample(Op, Arg, N) / N || _ <- lists:seq(1, Reps)]).

calibrate(Op, Arg, N, MinNs) ->
    case sample(Op, Arg, N) of
        Ns when Ns >= MinNs -> N;
        Ns when Ns * 10 < MinNs -> calibrate(Op, Arg, N * 10, MinNs);
        _ -> calibrate(Op, Arg, N * 2, MinNs)
    end.

sample(Op, Arg, N) ->
    {Pid, Ref} = spawn_monitor(fun() -> exit({ns, timed(Op, Arg, N)}) end),
    receive {'DOWN', Ref, process, Pid, {ns, Ns}} -> Ns end.

timed(Op, Arg, N) ->
    T0 = erlang:monotonic_time(nanosecond),
    loop(Op, N, Arg, none),
    erlang:monotonic_time(nanosecond) - T0.

%% The previous result rides along in the loop so the compiler cannot drop the call.
loop(_, 0, _, _) -> ok;
loop(decode, N, Bin, _) -> loop(decode, N - 1, Bin, binary_to_term(Bin));
loop(encode, N, Term, _) -> loop(encode, N - 1, Term, term_to_binary(Term)).

median(Xs) ->
    Sorted = lists:sort(Xs),
    Len = length(Sorted),
    case Len rem 2 of
        1 -> lists:nth(Len div 2 + 1, Sorted);
        0 -> (lists:nth(Len div 2, Sorted) + lists:nth(Len div 2 + 1, Sorted)) / 2
    end.
