%% n-body (the Computer Language Benchmarks Game) in plain Erlang: the same arithmetic, in
%% the same order, as nbody.ml, so the energy agrees to the bit. Bodies are tuples
%% {X, Y, Z, VX, VY, VZ, Mass} in a list; run(Steps) -> Energy.
-module(nbody).
-export([run/1]).

-define(PI, 3.141592653589793).
-define(SOLAR_MASS, (4 * ?PI * ?PI)).
-define(DAYS_PER_YEAR, 365.24).

run(Steps) ->
    energy(advance(Steps, offset_momentum(bodies()), 0.01)).

advance(0, Bodies, _Dt) -> Bodies;
advance(N, Bodies, Dt) -> advance(N - 1, move(velocities(Bodies, Dt), Dt), Dt).

%% Body I's velocity takes the pulls of the bodies before it (when they were visited),
%% then of those after it: the order of nbody.ml's nested loops.
velocities([], _Dt) -> [];
velocities([B | Rest], Dt) ->
    {Rest1, B1} = lists:mapfoldl(fun(B2, Acc) -> pair(Acc, B2, Dt) end, B, Rest),
    [B1 | velocities(Rest1, Dt)].

pair({X, Y, Z, VX, VY, VZ, M}, {X2, Y2, Z2, VX2, VY2, VZ2, M2}, Dt) ->
    DX = X - X2, DY = Y - Y2, DZ = Z - Z2,
    Dist2 = DX * DX + DY * DY + DZ * DZ,
    Mag = Dt / (Dist2 * math:sqrt(Dist2)),
    {{X2, Y2, Z2, VX2 + DX * M * Mag, VY2 + DY * M * Mag, VZ2 + DZ * M * Mag, M2},
     {X, Y, Z, VX - DX * M2 * Mag, VY - DY * M2 * Mag, VZ - DZ * M2 * Mag, M}}.

move(Bodies, Dt) ->
    [{X + Dt * VX, Y + Dt * VY, Z + Dt * VZ, VX, VY, VZ, M} || {X, Y, Z, VX, VY, VZ, M} <- Bodies].

energy(Bodies) -> energy(Bodies, 0.0).

energy([], E) -> E;
energy([{X, Y, Z, VX, VY, VZ, M} | Rest], E0) ->
    E1 = E0 + 0.5 * M * (VX * VX + VY * VY + VZ * VZ),
    E = lists:foldl(fun({X2, Y2, Z2, _, _, _, M2}, Acc) ->
                            DX = X - X2, DY = Y - Y2, DZ = Z - Z2,
                            Acc - M * M2 / math:sqrt(DX * DX + DY * DY + DZ * DZ)
                    end, E1, Rest),
    energy(Rest, E).

offset_momentum(Bodies = [{X, Y, Z, _, _, _, M} | Planets]) ->
    {PX, PY, PZ} = lists:foldl(fun({_, _, _, VX, VY, VZ, Mi}, {AX, AY, AZ}) ->
                                       {AX + VX * Mi, AY + VY * Mi, AZ + VZ * Mi}
                               end, {0.0, 0.0, 0.0}, Bodies),
    [{X, Y, Z, -PX / ?SOLAR_MASS, -PY / ?SOLAR_MASS, -PZ / ?SOLAR_MASS, M} | Planets].

planet(X, Y, Z, VX, VY, VZ, M) ->
    {X, Y, Z, VX * ?DAYS_PER_YEAR, VY * ?DAYS_PER_YEAR, VZ * ?DAYS_PER_YEAR, M * ?SOLAR_MASS}.

bodies() ->
    [{0.0, 0.0, 0.0, 0.0, 0.0, 0.0, ?SOLAR_MASS},
     planet(4.84143144246472090e+00, -1.16032004402742839e+00, -1.03622044471123109e-01,
            1.66007664274403694e-03, 7.69901118419740425e-03, -6.90460016972063023e-05,
            9.54791938424326609e-04),
     planet(8.34336671824457987e+00, 4.12479856412430479e+00, -4.03523417114321381e-01,
            -2.76742510726862411e-03, 4.99852801234917238e-03, 2.30417297573763929e-05,
            2.85885980666130812e-04),
     planet(1.28943695621391310e+01, -1.51111514016986312e+01, -2.23307578892655734e-01,
            2.96460137564761618e-03, 2.37847173959480950e-03, -2.96589568540237556e-05,
            4.36624404335156298e-05),
     planet(1.53796971148509165e+01, -2.59193146099879641e+01, 1.79258772950371181e-01,
            2.68067772490389322e-03, 1.62824170038242295e-03, -9.51592254519715870e-05,
            5.15138902046611451e-05)].
