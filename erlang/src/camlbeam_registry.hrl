%% The rows of camlbeam_registry's tables. Private to the application: only
%% camlbeam_registry writes them; callers on the request path read them.

%% One worker of a pool that is ready for calls (table camlbeam_workers, an
%% ordered_set, so that the workers of one pool are a contiguous range of
%% keys). A worker that is starting, restarting or draining has no row.
-record(camlbeam_worker, {
    key :: {Pool :: pid(), Id :: pos_integer()},
    %% The worker's process (ocaml_worker): callers monitor it.
    pid :: pid(),
    %% The port of its current OS process: callers write requests to it.
    port :: port(),
    %% Public set of {Ref, Kind, WrittenAt, Timeout, GivenPids} rows: one per
    %% request of the current OS process waiting for its answer.
    pending :: ets:tid(),
    %% Public bag of {Pid, Ref}: the pids the requests in flight gave OCaml.
    given :: ets:tid(),
    max_queue :: pos_integer(),
    max_request_size :: pos_integer(),
    cast_timeout :: timeout(),
    os_pid :: pos_integer(),
    flavour :: native | bytecode
}).

%% One pool (table camlbeam_pools).
-record(camlbeam_pool, {
    pool :: pid(),
    manager :: pid(),
    %% Loaded into every worker, in order, also after restarts; kept here so
    %% that a restarted manager resumes with what was loaded at run time.
    plugins :: [file:filename_all()],
    %% What the workers reported of each step of their start: the code linked
    %% into the executable (hello) and each plugin, every export of the modules
    %% that step filled. ocaml:exports/1 reads it without asking a worker; a
    %% restarted manager resumes with it.
    exports = #{} :: #{hello | file:filename_all() => [ocaml:export()]}
}).
