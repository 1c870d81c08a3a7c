%% The handle of a port worker in the registry (ocaml_transport:handle()): what a
%% caller needs to send it a request without going through its process. Private to
%% the application: ocaml_worker makes it when it publishes an OS process,
%% ocaml_port_transport reads it on the request path.
-record(ocaml_port, {
    %% The port of the worker's current OS process: callers write requests to it.
    port :: port(),
    %% Public set of {Ref, Kind, WrittenAt, Deadline, GivenPids, Owner} rows: one per
    %% request of the current OS process waiting for its answer; Owner, the process
    %% that wrote the row (the caller; the worker's own for a load).
    pending :: ets:tid(),
    %% Public bag of {Pid, Ref}: the pids the requests in flight gave OCaml.
    given :: ets:tid(),
    %% The OS process's count of requests in flight, which callers route by.
    in_flight :: ocaml_transport:counter(),
    max_request_size :: pos_integer(),
    cast_timeout :: timeout(),
    os_pid :: non_neg_integer(),
    flavour :: native | bytecode,
    %% The release of the OCaml the worker runs (its hello's ocaml_version).
    ocaml_version :: binary()
}).
