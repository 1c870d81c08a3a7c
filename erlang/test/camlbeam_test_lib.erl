%% What the Common Test suites share: the couplings they run on, where the plugins are,
%% starting pools, waiting with bounds.
%%
%% Every suite runs its cases once per group of groups/1; a group stands for one
%% transport (and, for the port, one flavour). A coupling joins every suite with one
%% line in ?GROUPS; a suite's Cases(Group) leaves out the cases that do not
%% apply to it (transport/1 says which coupling a group runs).
-module(camlbeam_test_lib).

-include_lib("common_test/include/ct.hrl").

-export([groups/1, node_cases_run/0, init_per_suite/1, end_per_suite/1, init_per_group/2]).
-export([transport/1, plugin/2, plugin/3, pool_options/2, start_pool/2, workers_dir/0]).
-export([wait_until/2, wait_until/3, os_pid_alive/1, new_os_pids/2, flush/0]).
-export([worker_processes/2, wait_gone/2, kill_workers/2, crashed/2]).
-export([add_log_collector/0, remove_log_collector/1, logged/2, mentions/2]).

%% Each group: the options every pool of its cases starts with (pool_options/2: the
%% transport), and the flavour of the plugins those pools load (plugin/2).
-define(GROUPS, [{port, #{transport => port}, native},
                 {port_bytecode, #{transport => port}, bytecode},
                 {nif, #{transport => nif}, native},
                 {node, #{transport => node}, native}]).

%% The groups a suite runs its cases in: one per coupling, Cases(Group) the cases that
%% apply to it.
groups(Cases) ->
    [{Group, [], Cases(Group)} || {Group, _, _} <- ?GROUPS, runs(Group, ocaml_option())].

%% The node coupling's groups run with the default OCaml only: its OCaml half is the
%% port's and the nif's (ocaml/), and the suite's time budget has no room for them twice
%% (scripts/test.sh runs every suite again on OCaml 5.3). CAMLBEAM_TEST_NODE_ON_5=1 runs
%% them on 5.3 too.
runs(node, #{ocaml := _}) -> os:getenv("CAMLBEAM_TEST_NODE_ON_5") =:= "1";
runs(_, _) -> true.

%% Whether this run runs the node coupling's cases (runs/2), for a suite of those only.
node_cases_run() ->
    runs(node, ocaml_option()).

init_per_group(Group, Config) ->
    {Group, #{transport := Transport} = Options, Flavour} = lists:keyfind(Group, 1, ?GROUPS),
    ok = distributed(Transport),
    [{transport, Transport}, {group_options, maps:merge(Options, ocaml_option())}, {flavour, Flavour}
     | Config].

%% The node transport's pools need this VM distributed: it is made so (on loopback's EPMD)
%% if it is not, and stays so for the rest of the run.
distributed(node) ->
    case erlang:is_alive() of
        true ->
            ok;
        false ->
            _ = os:cmd("epmd -daemon -address 127.0.0.1"),
            {ok, _} = net_kernel:start([list_to_atom("camlbeam_ct_" ++ os:getpid()), shortnames]),
            ok
    end;
distributed(_) ->
    ok.

%% CAMLBEAM_TEST_OCAML=5.3.0: every pool of the suites runs workers built with that OCaml
%% (option ocaml), with the plugins of its build (CAMLBEAM_TEST_PLUGINS).
ocaml_option() ->
    case os:getenv("CAMLBEAM_TEST_OCAML") of
        false -> #{};
        Version -> #{ocaml => Version}
    end.

%% Starts camlbeam and checks that the workers and plugins of the build are there.
%% CAMLBEAM_TEST_PLUGINS: the plugins' directory (default: build/erlang of the repository);
%% CAMLBEAM_PORT_DIR, if set: where camlbeam-port and camlbeam-port-bytecode are, instead
%% of the application's priv directory; CAMLBEAM_TEST_NIF_LIBRARY, the camlbeam_nif
%% library the nif pools load (scripts/test-nif-sanitized.sh: the sanitizer build's).
init_per_suite(Config) ->
    case os:getenv("CAMLBEAM_TEST_NIF_LIBRARY") of
        false -> ok;
        Library -> ok = application:set_env(camlbeam, nif_library, Library)
    end,
    case os:getenv("CAMLBEAM_PORT_DIR") of
        false ->
            ok;
        Dir ->
            ok = application:set_env(camlbeam, port_executable,
                                     filename:join(Dir, "camlbeam-port")),
            ok = application:set_env(camlbeam, port_bytecode_executable,
                                     filename:join(Dir, "camlbeam-port-bytecode"))
    end,
    {ok, _} = application:ensure_all_started(camlbeam),
    %% The suites crash workers on purpose: their reports go to the Common Test logs
    %% (which keep everything), not to the console of the test run.
    _ = logger:set_handler_config(default, level, none),
    Plugins = case os:getenv("CAMLBEAM_TEST_PLUGINS") of
                  false -> filename:join([repository(), "build", "erlang"]);
                  Given -> Given
              end,
    Workers = workers_dir(),
    Missing = [Path || Path <- [filename:join(Plugins, "camlbeam_test.cmxs"),
                                filename:join(Plugins, "camlbeam_test.cma"),
                                filename:join(Workers, "camlbeam-port"),
                                filename:join(Workers, "camlbeam-port-bytecode")],
                       not filelib:is_regular(Path)],
    Missing =:= [] orelse
        ct:fail("~p missing: build first (erlang/README.md)", [Missing]),
    [{plugins_dir, Plugins}, {other_ocaml_plugins_dir, other_ocaml_plugins()} | Config].

%% Where the executables of this run's OCaml are: camlbeam-port, camlbeam-port-bytecode and
%% camlbeam-node.
workers_dir() ->
    case {os:getenv("CAMLBEAM_PORT_DIR"), ocaml_option()} of
        {false, #{ocaml := Version}} -> filename:join(code:priv_dir(camlbeam), "ocaml-" ++ Version);
        {false, #{}} -> code:priv_dir(camlbeam);
        {PortDir, _} -> PortDir
    end.

%% The plugins of the build for the other OCaml (4.13 and 5.3: build/erlang and
%% build-ocaml5/erlang), which the workers of this run must refuse.
%% CAMLBEAM_TEST_OTHER_PLUGINS names them; scripts/test-erlang.sh sets it.
other_ocaml_plugins() ->
    Dir = case os:getenv("CAMLBEAM_TEST_OTHER_PLUGINS") of
              false ->
                  Build = case ocaml_option() of
                              #{ocaml := _} -> "build";
                              #{} -> "build-ocaml5"
                          end,
                  filename:join([repository(), Build, "erlang"]);
              Given ->
                  Given
          end,
    filelib:is_regular(filename:join(Dir, "camlbeam_extra.cmxs")) orelse
        ct:fail("~ts has no plugins of the other OCaml: build it (make test builds both; "
                "CAMLBEAM_TEST_OTHER_PLUGINS names another directory)", [Dir]),
    Dir.

end_per_suite(_Config) ->
    _ = logger:set_handler_config(default, level, all),
    ok = application:stop(camlbeam).

%% erlang/test/ is two levels below the repository; compiled suites keep their source path.
repository() ->
    filename:dirname(filename:dirname(filename:dirname(filename:absname(?FILE)))).

transport(Config) ->
    ?config(transport, Config).

%% A plugin of the group's flavour, by module name: plugin(Config, "camlbeam_extra").
plugin(Config, Name) ->
    plugin(Config, Name, ?config(flavour, Config)).

plugin(Config, Name, Flavour) ->
    Ext = case Flavour of
              native -> ".cmxs";
              bytecode -> ".cma"
          end,
    filename:join(?config(plugins_dir, Config), Name ++ Ext).

%% The options of a pool of this group's coupling with the test plugin, and Extra.
pool_options(Config, Extra) ->
    maps:merge(?config(group_options, Config),
               maps:merge(#{plugins => [plugin(Config, "camlbeam_test")]}, Extra)).

%% A pool owned by the calling process: it stops when the test case's process ends.
start_pool(Config, Extra) ->
    {ok, Pool} = ocaml:start_link(pool_options(Config, Extra)),
    Pool.

%% Polls Fun every 10 ms until it returns true, for at most TimeoutMs.
wait_until(Fun, TimeoutMs) ->
    wait_until(Fun, TimeoutMs, 10).

wait_until(Fun, TimeoutMs, IntervalMs) ->
    Deadline = erlang:monotonic_time(millisecond) + TimeoutMs,
    wait_loop(Fun, Deadline, IntervalMs).

wait_loop(Fun, Deadline, IntervalMs) ->
    case Fun() of
        true ->
            ok;
        false ->
            case erlang:monotonic_time(millisecond) >= Deadline of
                true -> ct:fail("condition not met in time: ~p", [erlang:fun_info(Fun)]);
                false -> timer:sleep(IntervalMs), wait_loop(Fun, Deadline, IntervalMs)
            end
    end.

os_pid_alive(OsPid) ->
    %% A zombie is not alive; the VM reaps its children, but not instantly.
    case file:read_file("/proc/" ++ integer_to_list(OsPid) ++ "/stat") of
        {ok, Stat} ->
            [_, State | _] = string:lexemes(lists:last(string:split(Stat, ")", trailing)), " "),
            State =/= <<"Z">>;
        {error, _} ->
            false
    end.

%% The workers' OS pids once every worker of Pool runs in a process other than Old.
new_os_pids(Pool, Old) ->
    wait_until(fun() ->
                   Workers = ocaml:workers(Pool),
                   length(Workers) =:= length(Old) andalso
                       [] =:= [P || #{os_pid := P} <- Workers, lists:member(P, Old)]
               end, 10000),
    [P || #{os_pid := P} <- ocaml:workers(Pool)].

%% What runs the workers of Pool, to see them end (wait_gone/2): their OS processes, or
%% under nif, where every worker's OS process is the VM's own, their Erlang processes.
worker_processes(Config, Pool) ->
    case transport(Config) of
        nif -> [P || #{pid := P} <- ocaml:workers(Pool)];
        _ -> [P || #{os_pid := P} <- ocaml:workers(Pool)]
    end.

%% Waits (5 s at most) until none of Processes (worker_processes/2) runs.
wait_gone(Config, Processes) ->
    Alive = case transport(Config) of
                nif -> fun erlang:is_process_alive/1;
                _ -> fun os_pid_alive/1
            end,
    wait_until(fun() -> not lists:any(Alive, Processes) end, 5000).

%% Kills every worker of Pool and waits until others serve instead: kill -9 of their OS
%% processes, or under nif (whose OS process is the VM) exit(Pid, kill) of their Erlang
%% processes, which their supervisor starts again.
kill_workers(Config, Pool) ->
    case transport(Config) of
        nif ->
            Old = [P || #{pid := P} <- ocaml:workers(Pool)],
            _ = [exit(P, kill) || P <- Old],
            wait_until(fun() ->
                           New = [P || #{pid := P} <- ocaml:workers(Pool)],
                           length(New) =:= length(Old) andalso [] =:= [P || P <- New, lists:member(P, Old)]
                       end, 10000);
        _ ->
            Old = [P || #{os_pid := P} <- ocaml:workers(Pool)],
            _ = [os:cmd("kill -9 " ++ integer_to_list(P)) || P <- Old],
            _ = new_os_pids(Pool, Old),
            ok
    end.

%% How a call in flight learns that its worker ended for Reason: as Reason, or under node,
%% where the caller watches the node's process, as the connection lost (noconnection).
crashed(Config, Reason) ->
    case transport(Config) of
        node -> {worker_crashed, noconnection};
        _ -> {worker_crashed, Reason}
    end.

flush() ->
    receive Any -> [Any | flush()] after 0 -> [] end.

%% Logger events of this node are copied to the calling process as {logged, Event}.
add_log_collector() ->
    Id = list_to_atom("camlbeam_test_collector_" ++ integer_to_list(erlang:unique_integer([positive]))),
    ok = logger:add_handler(Id, camlbeam_test_log_collector, #{config => #{pid => self()}}),
    Id.

remove_log_collector(Id) ->
    ok = logger:remove_handler(Id).

%% Waits (bounded) for a logged event for which Pred is true; returns it.
logged(Pred, TimeoutMs) ->
    wait_logged(Pred, erlang:monotonic_time(millisecond) + TimeoutMs).

wait_logged(Pred, Deadline) ->
    receive
        {logged, Event} ->
            case Pred(Event) of
                true -> Event;
                false -> wait_logged(Pred, Deadline)
            end
    after max(0, Deadline - erlang:monotonic_time(millisecond)) ->
        ct:fail("no such log event in time")
    end.

%% Whether a log event's message, as a handler prints it, contains every one of Texts.
mentions(#{msg := Msg}, Texts) ->
    Printed = lists:flatten(case Msg of
                                {string, String} -> io_lib:format("~ts", [String]);
                                {report, Report} -> io_lib:format("~0tp", [Report]);
                                {Format, Args} -> io_lib:format(Format, Args)
                            end),
    lists:all(fun(Text) -> string:find(Printed, Text) =/= nomatch end, Texts).
