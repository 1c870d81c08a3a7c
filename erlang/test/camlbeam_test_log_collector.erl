%% A logger handler for the suites: sends every event to a test process.
-module(camlbeam_test_log_collector).

-export([log/2]).

log(Event, #{config := #{pid := Pid}}) ->
    Pid ! {logged, Event},
    ok.
