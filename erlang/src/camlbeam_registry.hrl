%% The rows of camlbeam_registry's tables. Private to the application: only
%% camlbeam_registry writes them; callers on the request path read them.

%% One live worker of a pool (table camlbeam_workers, an ordered_set, so that
%% the workers of one pool are a contiguous range of keys).
-record(camlbeam_worker, {
    key :: {Pool :: pid(), Id :: pos_integer()},
    pid :: pid(),
    port :: port(),
    %% Public set of {CallerAlias} rows: one per call waiting for its answer.
    pending :: ets:tid(),
    max_queue :: pos_integer(),
    os_pid :: non_neg_integer(),
    flavour :: native | bytecode
}).

%% One pool (table camlbeam_pools).
-record(camlbeam_pool, {
    pool :: pid(),
    manager :: pid(),
    %% Loaded into every worker, in order, also after restarts; kept here so
    %% that a restarted manager resumes with what was loaded at run time.
    plugins :: [file:filename_all()]
}).
