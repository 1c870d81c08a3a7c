%% mandelbrot (the Computer Language Benchmarks Game) in plain Erlang: the same bitmap as
%% mandelbrot.ml, bit for bit; run(N) -> Binary ((N + 7) div 8 bytes per row, N rows).
-module(mandelbrot).
-export([run/1]).

-define(NITER, 50).
-define(LIMIT, 4.0).

run(N) -> << <<(row(Y, N))/bits>> || Y <- lists:seq(0, N - 1) >>.

row(Y, N) ->
    Ci = 2.0 * Y / N - 1.0,
    Bits = << <<(point(2.0 * X / N - 1.5, Ci)):1>> || X <- lists:seq(0, N - 1) >>,
    Pad = (8 - N rem 8) rem 8,
    <<Bits/bits, 0:Pad>>.

point(Cr, Ci) -> iter(?NITER, 0.0, 0.0, 0.0, 0.0, Cr, Ci).

iter(I, Zr, Zi, Tr, Ti, Cr, Ci) when I > 0, Tr + Ti =< ?LIMIT ->
    Zi1 = 2.0 * Zr * Zi + Ci,
    Zr1 = Tr - Ti + Cr,
    iter(I - 1, Zr1, Zi1, Zr1 * Zr1, Zi1 * Zi1, Cr, Ci);
iter(_, _, _, Tr, Ti, _, _) when Tr + Ti =< ?LIMIT -> 1;
iter(_, _, _, _, _, _, _) -> 0.
