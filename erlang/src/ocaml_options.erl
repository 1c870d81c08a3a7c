%% @doc The options of {@link ocaml:start/1}: validation, defaults, and the
%% choice of worker executable. Pure functions, no process state.
-module(ocaml_options).

-export([validate/1, flavour_of_plugins/1, executable/2, app_env/0]).
-export_type([config/0, flavour/0, ocaml_version/0, app_env/0, backoff/0]).

-type flavour() :: native | bytecode.

%% The OCaml the workers are built with: `default' (the one of `make build'), or a release
%% such as "5.3.0", whose workers are in priv/ocaml-5.3.0 (docs/ocaml5.md).
-type ocaml_version() :: default | string() | binary().

%% The delays before restarting a worker that keeps dying: the first,
%% doubled at each death, up to the last (milliseconds).
-type backoff() :: {First :: non_neg_integer(), Max :: non_neg_integer()}.

%% The options with every default filled in. `flavour' is `any' only when
%% the user names an executable and neither the option nor the plugins say
%% which flavour it is: the worker's hello then tells.
-type config() :: #{
    transport := ocaml_transport:name(),
    nodes := [node()],
    plugins := [file:filename_all()],
    pool_size := pos_integer(),
    flavour := flavour() | any,
    executable := file:filename_all() | undefined,
    ocaml := ocaml_version(),
    max_queue := pos_integer(),
    max_queue_bytes := pos_integer(),
    start_timeout := timeout(),
    name := atom() | undefined,
    policy := ocaml_policy:policy(),
    max_request_size := pos_integer(),
    max_reply_size := pos_integer(),
    max_memory := pos_integer() | infinity,
    restart_backoff := backoff(),
    cast_timeout := timeout(),
    cancel_grace := non_neg_integer(),
    stall_timeout := pos_integer(),
    max_atoms := non_neg_integer(),
    %% Set when the pool starts: the process whose death stops it, if any.
    owner => pid() | none
}.

%% What {@link executable/2} reads besides the config: the application's
%% environment and its priv directory, passed in so that the choice is testable.
-type app_env() :: #{
    port_executable => file:filename_all(),
    port_bytecode_executable => file:filename_all(),
    node_executable => file:filename_all(),
    priv_dir => file:filename_all()
}.

-define(OPTION_KEYS, [transport, nodes, plugins, pool_size, flavour, executable, ocaml, max_queue,
                      max_queue_bytes, start_timeout, name, policy, max_request_size,
                      max_reply_size, max_memory, restart_backoff, cast_timeout, cancel_grace,
                      stall_timeout, max_atoms]).

%% The largest frame {packet, 4} can announce.
-define(MAX_FRAME, 16#ffffffff).

%% Every option but flavour, which has no default of its own (with_flavour/1).
-define(DEFAULTS, #{
    transport => port,
    nodes => [],
    plugins => [],
    pool_size => 1,
    executable => undefined,
    ocaml => default,
    max_queue => 10000,
    max_queue_bytes => 8 bsl 20,
    start_timeout => 10000,
    name => undefined,
    policy => #{},
    max_request_size => 1 bsl 30,
    max_reply_size => 64 bsl 20,
    max_memory => infinity,
    restart_backoff => {100, 30000},
    cast_timeout => 5000,
    cancel_grace => 1000,
    stall_timeout => 5000,
    max_atoms => 1024
}).

%% @doc Checks every option and fills in the defaults. The flavour, unless
%% given, follows the plugins' extensions: `.cmxs' native, `.cma' and `.cmo'
%% bytecode, native when there is no plugin.
-spec validate(#{atom() => term()}) ->
    {ok, config()}
    | {error, {unknown_option, term()}
            | {bad_option, atom(), term()}
            | {mixed_plugin_kinds, #{flavour() => [file:filename_all()]}}}.
validate(Options) when is_map(Options) ->
    case [Key || Key <- maps:keys(Options), not lists:member(Key, ?OPTION_KEYS)] of
        [Unknown | _] ->
            {error, {unknown_option, Unknown}};
        [] ->
            Config = maps:merge(?DEFAULTS, with_pool_size_of_nodes(Options)),
            case first_bad_option(lists:sort(maps:to_list(Config))) of
                {Key, Value} -> {error, {bad_option, Key, Value}};
                none ->
                    case nodes_mismatch(Config) of
                        {Key, Value} -> {error, {bad_option, Key, Value}};
                        none -> with_flavour(with_policy(Config))
                    end
            end
    end.

%% Given nodes make the pool's size, unless it is given too (and must then agree).
-spec with_pool_size_of_nodes(#{atom() => term()}) -> #{atom() => term()}.
with_pool_size_of_nodes(#{nodes := Nodes} = Options) when is_list(Nodes), Nodes =/= [],
                                                         not is_map_key(pool_size, Options) ->
    Options#{pool_size => length(Nodes)};
with_pool_size_of_nodes(Options) ->
    Options.

%% `nodes' is the node transport's; its size is the pool's.
-spec nodes_mismatch(#{atom() => term()}) -> {atom(), term()} | none.
nodes_mismatch(#{nodes := []}) -> none;
nodes_mismatch(#{nodes := Nodes, transport := Transport}) when Transport =/= node -> {nodes, Nodes};
nodes_mismatch(#{nodes := Nodes, pool_size := Size}) when length(Nodes) =/= Size -> {pool_size, Size};
nodes_mismatch(_) -> none.

%% @doc The flavour the plugins' extensions ask for; `undefined' when none of
%% them says (no plugin, or extensions of neither kind).
-spec flavour_of_plugins([file:filename_all()]) ->
    {ok, flavour() | undefined}
    | {error, {mixed_plugin_kinds, #{flavour() => [file:filename_all()]}}}.
flavour_of_plugins(Plugins) ->
    Kinds = lists:foldr(
        fun(Plugin, Acc) ->
            case plugin_kind(Plugin) of
                undefined -> Acc;
                Kind -> maps:update_with(Kind, fun(Ps) -> [Plugin | Ps] end, [Plugin], Acc)
            end
        end,
        #{}, Plugins),
    case maps:keys(Kinds) of
        [] -> {ok, undefined};
        [Kind] -> {ok, Kind};
        [_, _] -> {error, {mixed_plugin_kinds, Kinds}}
    end.

%% @doc The worker executable: the `executable' option; else, for the default
%% OCaml, the application environment (`port_executable',
%% `port_bytecode_executable', `node_executable'); else `camlbeam-port',
%% `camlbeam-port-bytecode' or `camlbeam-node' in the priv directory, or in
%% its subdirectory `ocaml-Version' for the workers built with OCaml Version.
-spec executable(config(), app_env()) -> {ok, file:filename_all()} | {error, no_priv_dir}.
executable(#{executable := Executable}, _Env) when Executable =/= undefined ->
    {ok, Executable};
executable(#{transport := Transport, flavour := Flavour, ocaml := Ocaml}, Env) ->
    {EnvKey, File} = case {Transport, Flavour} of
                         {node, _} -> {node_executable, "camlbeam-node"};
                         {_, bytecode} -> {port_bytecode_executable, "camlbeam-port-bytecode"};
                         {_, _} -> {port_executable, "camlbeam-port"}
                     end,
    case {Ocaml, Env} of
        {default, #{EnvKey := Path}} -> {ok, Path};
        {default, #{priv_dir := Priv}} -> {ok, filename:join(Priv, File)};
        {_, #{priv_dir := Priv}} -> {ok, filename:join([Priv, "ocaml-" ++ unicode:characters_to_list(Ocaml), File])};
        {_, #{}} -> {error, no_priv_dir}
    end.

%% @doc What {@link executable/2} reads of the application: its environment's
%% executables, and its priv directory.
-spec app_env() -> app_env().
app_env() ->
    Env = maps:from_list([{Key, Value}
                          || Key <- [port_executable, port_bytecode_executable, node_executable],
                             {ok, Value} <- [application:get_env(camlbeam, Key)]]),
    case code:priv_dir(camlbeam) of
        {error, bad_name} -> Env;
        Priv -> Env#{priv_dir => Priv}
    end.

%%% Internals

-spec first_bad_option([{atom(), term()}]) -> {atom(), term()} | none.
first_bad_option([]) ->
    none;
first_bad_option([{Key, Value} | Rest]) ->
    case valid(Key, Value) of
        true -> first_bad_option(Rest);
        false -> {Key, Value}
    end.

-spec valid(atom(), term()) -> boolean().
%% Every coupling's name.
valid(transport, Transport) -> lists:member(Transport, ocaml_transport:names());
valid(nodes, Nodes) ->
    is_list(Nodes) andalso lists:all(fun is_node_name/1, Nodes)
        andalso length(lists:usort(Nodes)) =:= length(Nodes);
valid(plugins, Plugins) -> is_list(Plugins) andalso lists:all(fun is_filename/1, Plugins);
valid(pool_size, Size) -> is_integer(Size) andalso Size > 0;
valid(flavour, Flavour) -> Flavour =:= native orelse Flavour =:= bytecode;
valid(executable, undefined) -> true;
valid(executable, Executable) -> is_filename(Executable);
valid(ocaml, default) -> true;
valid(ocaml, Version) -> is_ocaml_version(Version);
valid(max_queue, Max) -> is_integer(Max) andalso Max > 0;
%% The port's busy limits are {Max div 2, Max}: both must be positive.
valid(max_queue_bytes, Max) -> is_integer(Max) andalso Max >= 2;
valid(start_timeout, Timeout) -> is_timeout(Timeout);
valid(name, Name) -> is_atom(Name);
valid(policy, Policy) -> ocaml_policy:validate(Policy) =/= error;
valid(max_request_size, Max) -> is_integer(Max) andalso Max > 0 andalso Max =< ?MAX_FRAME;
valid(max_reply_size, Max) -> is_integer(Max) andalso Max > 0 andalso Max =< ?MAX_FRAME;
valid(max_memory, infinity) -> true;
valid(max_memory, Max) -> is_integer(Max) andalso Max > 0;
valid(restart_backoff, {First, Max}) ->
    is_integer(First) andalso is_integer(Max) andalso First >= 0 andalso Max >= First;
valid(restart_backoff, _) -> false;
valid(cast_timeout, Timeout) -> is_timeout(Timeout);
valid(cancel_grace, Grace) -> is_integer(Grace) andalso Grace >= 0;
valid(stall_timeout, Timeout) -> is_integer(Timeout) andalso Timeout > 0;
valid(max_atoms, Max) -> is_integer(Max) andalso Max >= 0.

-spec is_timeout(term()) -> boolean().
is_timeout(infinity) -> true;
is_timeout(Timeout) -> is_integer(Timeout) andalso Timeout >= 0.

%% The policy with its defaults (valid/2 checked it).
-spec with_policy(#{atom() => term()}) -> #{atom() => term()}.
with_policy(#{policy := Given} = Config) ->
    {ok, Policy} = ocaml_policy:validate(Given),
    Config#{policy := Policy}.

-spec with_flavour(#{atom() => term()}) ->
    {ok, config()} | {error, {mixed_plugin_kinds, #{flavour() => [file:filename_all()]}}}.
with_flavour(#{flavour := _} = Config) ->
    {ok, Config};
with_flavour(#{plugins := Plugins, executable := Executable} = Config) ->
    case flavour_of_plugins(Plugins) of
        {ok, undefined} when Executable =:= undefined -> {ok, Config#{flavour => native}};
        {ok, undefined} -> {ok, Config#{flavour => any}};
        {ok, Flavour} -> {ok, Config#{flavour => Flavour}};
        {error, _} = Error -> Error
    end.

-spec plugin_kind(file:filename_all()) -> flavour() | undefined.
plugin_kind(Plugin) ->
    case string:lowercase(filename:extension(Plugin)) of
        Ext when Ext =:= ".cmxs"; Ext =:= <<".cmxs">> -> native;
        Ext when Ext =:= ".cma"; Ext =:= <<".cma">>; Ext =:= ".cmo"; Ext =:= <<".cmo">> -> bytecode;
        _ -> undefined
    end.

%% A release as OCaml numbers them (Sys.ocaml_version: "5.3.0", "5.3.0+trunk"): it names
%% a directory, so nothing that could leave priv.
-spec is_ocaml_version(term()) -> boolean().
is_ocaml_version(Version) when is_binary(Version) ->
    is_ocaml_version(binary_to_list(Version));
is_ocaml_version([First | _] = Version) when length(Version) =< 32, First >= $0, First =< $9 ->
    lists:all(fun(C) -> (C >= $0 andalso C =< $9) orelse (C >= $a andalso C =< $z)
                            orelse (C >= $A andalso C =< $Z) orelse lists:member(C, ".+~_-")
              end, Version)
        andalso string:find(Version, "..") =:= nomatch;
is_ocaml_version(_) ->
    false.

%% An atom such as 'ocaml@host': a name with a host part.
-spec is_node_name(term()) -> boolean().
is_node_name(Node) when is_atom(Node) ->
    case string:split(atom_to_list(Node), "@") of
        [Alive, Host] -> Alive =/= [] andalso Host =/= [] andalso not lists:member($@, Host);
        _ -> false
    end;
is_node_name(_) ->
    false.

%% A flat string or a binary: what a worker accepts as a path.
-spec is_filename(term()) -> boolean().
is_filename(Name) when is_binary(Name) -> byte_size(Name) > 0;
is_filename(Name) when is_list(Name) -> Name =/= [] andalso io_lib:printable_unicode_list(Name);
is_filename(_) -> false.
