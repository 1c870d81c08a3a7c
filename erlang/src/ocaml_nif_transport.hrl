%% What a caller needs to send requests to a worker of the nif transport
%% (ocaml_nif_transport): the worker's handle on the VM's OCaml runtime.
-record(ocaml_nif, {
    worker :: camlbeam_nif:worker(),
    %% The worker's pool, whose own exports the names of its calls are looked up in
    %% (the runtime's are every pool's), and the worker's process, which logs the
    %% casts that name no export of the pool.
    pool :: pid(),
    process :: pid(),
    %% The worker's count of requests in flight, which callers route by.
    in_flight :: ocaml_transport:counter(),
    %% Whether callers list the pids their arguments give OCaml (policy send => given).
    give_pids :: boolean(),
    cast_timeout :: timeout(),
    ocaml_version :: binary()
}).
