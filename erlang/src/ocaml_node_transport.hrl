%% What a caller needs to send requests to a worker of the node transport
%% (ocaml_node_transport): the OCaml node the worker stands for.
-record(ocaml_node, {
    %% The node whose registered process `ocaml' runs the calls.
    node :: node(),
    %% The worker's count of requests in flight, which callers route by.
    in_flight :: ocaml_transport:counter(),
    %% The deadline of a cast on the node (the pool's cast_timeout).
    cast_timeout :: timeout(),
    %% What ocaml:workers/1 shows of it (the node's `info').
    os_pid :: non_neg_integer(),
    ocaml_version :: binary()
}).
