%% The rows of camlbeam_registry's tables. Private to the application: only
%% camlbeam_registry writes them; callers on the request path read them.

%% One worker of a pool that is ready for calls (table camlbeam_workers, an
%% ordered_set, so that the workers of one pool are a contiguous range of
%% keys). A worker that is starting, restarting or draining has no row.
-record(camlbeam_worker, {
    key :: {Pool :: pid(), Id :: pos_integer()},
    %% The worker's process: callers monitor it.
    pid :: pid(),
    %% Its coupling's callback module (ocaml_transport), and what that module's
    %% callbacks need to send to it from a caller.
    transport :: module(),
    handle :: ocaml_transport:handle(),
    %% Its requests in flight: callers route by it, and refuse past max_queue.
    in_flight :: ocaml_transport:counter(),
    max_queue :: pos_integer()
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
    exports = #{} :: #{hello | file:filename_all() => [ocaml:export()]},
    %% The texts of the atoms the pool created for its workers (declared atoms, export
    %% names), counted against max_atoms: kept here so that a restarted manager does not
    %% count from zero again, which would let a pool create max_atoms atoms per restart.
    created_atoms = #{} :: #{binary() => []}
}).
