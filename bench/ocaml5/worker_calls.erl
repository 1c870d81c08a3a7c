%% worker_callgrind.sh's driver: N calls of the identity export with Term through a pool whose
%% worker executable is Exe (a wrapper that runs camlbeam-port under callgrind), then stop.
%%   erl -noshell -pa EBIN -pa DIR -run worker_calls main -extra Exe Plugin N
-module(worker_calls).
-export([main/0]).

main() ->
    [Exe, Plugin, N] = init:get_plain_arguments(),
    Status = try
                 {ok, _} = application:ensure_all_started(camlbeam),
                 {ok, Pool} = ocaml:start_link(#{executable => Exe, plugins => [Plugin], start_timeout => 120000}),
                 [{ok, 42} = ocaml:call(Pool, id, [42], 60000) || _ <- lists:seq(1, list_to_integer(N))],
                 ok = ocaml:stop(Pool),
                 0
             catch Class:Reason -> io:format(standard_error, "worker_calls: ~p~n", [{Class, Reason}]), 1
             end,
    halt(Status).
