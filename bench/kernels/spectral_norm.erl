%% spectral-norm (the Computer Language Benchmarks Game) in plain Erlang: the same sums in
%% the same order as spectral_norm.ml, so the result agrees to the bit. Vectors are tuples
%% (element/2 is O(1)); run(N) -> Norm.
-module(spectral_norm).
-export([run/1]).

run(N) ->
    {U, V} = power(10, erlang:make_tuple(N, 1.0), N),
    {VBv, VV} = dots(1, N, U, V, 0.0, 0.0),
    math:sqrt(VBv / VV).

power(1, U, N) -> V = ata(U, N), {ata(V, N), V};
power(K, U, N) -> power(K - 1, ata(ata(U, N), N), N).

dots(I, N, _U, _V, VBv, VV) when I > N -> {VBv, VV};
dots(I, N, U, V, VBv, VV) ->
    Vi = element(I, V),
    dots(I + 1, N, U, V, VBv + element(I, U) * Vi, VV + Vi * Vi).

ata(U, N) -> at(a(U, N), N).

%% A(i,j) with i, j from 0, as in the OCaml.
eval_a(I, J) -> 1.0 / ((I + J) * (I + J + 1) div 2 + I + 1).

a(U, N) -> list_to_tuple([row_a(I, 0, N, U, 0.0) || I <- lists:seq(0, N - 1)]).
at(U, N) -> list_to_tuple([row_at(I, 0, N, U, 0.0) || I <- lists:seq(0, N - 1)]).

row_a(_I, N, N, _U, Acc) -> Acc;
row_a(I, J, N, U, Acc) -> row_a(I, J + 1, N, U, Acc + eval_a(I, J) * element(J + 1, U)).

row_at(_I, N, N, _U, Acc) -> Acc;
row_at(I, J, N, U, Acc) -> row_at(I, J + 1, N, U, Acc + eval_a(J, I) * element(J + 1, U)).
