%% @doc The options of {@link ocaml:start/1}: validation, defaults, and the
%% choice of worker executable. Pure functions, no process state.
-module(ocaml_options).

-export([validate/1, flavour_of_plugins/1, executable/2]).
-export_type([config/0, flavour/0, erl_call_policy/0, app_env/0]).

-type flavour() :: native | bytecode.

%% What `Erl.call_erlang' may run: everything, nothing, or the listed
%% functions (any arity).
-type erl_call_policy() :: all | none | [{module(), atom()}].

%% The options with every default filled in. `flavour' is `any' only when
%% the user names an executable and neither the option nor the plugins say
%% which flavour it is: the worker's hello then tells.
-type config() :: #{
    transport := port,
    plugins := [file:filename_all()],
    pool_size := pos_integer(),
    flavour := flavour() | any,
    executable := file:filename_all() | undefined,
    max_queue := pos_integer(),
    start_timeout := timeout(),
    name := atom() | undefined,
    erl_call := erl_call_policy()
}.

%% What {@link executable/2} reads besides the config: the application's
%% environment and its priv directory, passed in so that the choice is testable.
-type app_env() :: #{
    port_executable => file:filename_all(),
    port_bytecode_executable => file:filename_all(),
    priv_dir => file:filename_all()
}.

-define(OPTION_KEYS, [transport, plugins, pool_size, flavour, executable, max_queue,
                      start_timeout, name, erl_call]).

%% Every option but flavour, which has no default of its own (with_flavour/1).
-define(DEFAULTS, #{
    transport => port,
    plugins => [],
    pool_size => 1,
    executable => undefined,
    max_queue => 10000,
    start_timeout => 10000,
    name => undefined,
    erl_call => all
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
            Config = maps:merge(?DEFAULTS, Options),
            case first_bad_option(lists:sort(maps:to_list(Config))) of
                {Key, Value} -> {error, {bad_option, Key, Value}};
                none -> with_flavour(Config)
            end
    end.

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

%% @doc The worker executable: the `executable' option, else the application
%% environment (`port_executable', `port_bytecode_executable'), else
%% `camlbeam-port' or `camlbeam-port-bytecode' in the priv directory.
-spec executable(config(), app_env()) -> {ok, file:filename_all()} | {error, no_priv_dir}.
executable(#{executable := Executable}, _Env) when Executable =/= undefined ->
    {ok, Executable};
executable(#{flavour := Flavour}, Env) ->
    {EnvKey, File} = case Flavour of
                         native -> {port_executable, "camlbeam-port"};
                         bytecode -> {port_bytecode_executable, "camlbeam-port-bytecode"}
                     end,
    case Env of
        #{EnvKey := Path} -> {ok, Path};
        #{priv_dir := Priv} -> {ok, filename:join(Priv, File)};
        #{} -> {error, no_priv_dir}
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
valid(transport, Transport) -> Transport =:= port;
valid(plugins, Plugins) -> is_list(Plugins) andalso lists:all(fun is_filename/1, Plugins);
valid(pool_size, Size) -> is_integer(Size) andalso Size > 0;
valid(flavour, Flavour) -> Flavour =:= native orelse Flavour =:= bytecode;
valid(executable, undefined) -> true;
valid(executable, Executable) -> is_filename(Executable);
valid(max_queue, Max) -> is_integer(Max) andalso Max > 0;
valid(start_timeout, infinity) -> true;
valid(start_timeout, Timeout) -> is_integer(Timeout) andalso Timeout >= 0;
valid(name, Name) -> is_atom(Name);
valid(erl_call, all) -> true;
valid(erl_call, none) -> true;
valid(erl_call, Allowed) ->
    is_list(Allowed) andalso
        lists:all(fun({M, F}) -> is_atom(M) andalso is_atom(F); (_) -> false end, Allowed).

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

%% A flat string or a binary: what a worker accepts as a path.
-spec is_filename(term()) -> boolean().
is_filename(Name) when is_binary(Name) -> byte_size(Name) > 0;
is_filename(Name) when is_list(Name) -> Name =/= [] andalso io_lib:printable_unicode_list(Name);
is_filename(_) -> false.
