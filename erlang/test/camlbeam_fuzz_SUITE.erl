%% Fuzzing the Erlang side: what a worker writes, mutated, into the real application.
%%
%% - parsers: random and mutated byte strings straight into the parsers of worker output
%%   (ocaml_port_protocol's framer and envelope parser, and ocaml_etf_guard, which gives
%%   what it accepts to binary_to_term);
%% - worker_frames: mutated frames written to fd 4 by a real worker (the hostile plugin's
%%   write_fd export), through the real application, with calls in flight.
%%
%% Both run in a VM of their own (peer), so that a crash is a failure, not the end of the
%% run; after them the VM must answer, its atom count must be unchanged (nothing a worker
%% writes creates an atom), its process count and memory bounded, and the pool serving.
%% They run for CAMLBEAM_FUZZ_SECONDS seconds each (default 15; scripts/fuzz-erlang.sh runs
%% them longer by hand) from the seed CAMLBEAM_FUZZ_SEED (default: random, printed), and
%% print what they did.
-module(camlbeam_fuzz_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

-define(LIB, camlbeam_test_lib).

suite() ->
    [{timetrap, {seconds, 60 + 3 * seconds()}}].

all() ->
    [parsers, worker_frames].

init_per_suite(Config) ->
    Seed = case os:getenv("CAMLBEAM_FUZZ_SEED") of
               false -> erlang:unique_integer([positive]) bxor erlang:system_time();
               Given -> list_to_integer(Given)
           end,
    ct:pal("fuzz seed ~b (CAMLBEAM_FUZZ_SEED=~b reproduces), ~b s per case", [Seed, Seed, seconds()]),
    %% The port's frames are what is fuzzed: the port group's configuration, native.
    [{fuzz_seed, Seed} | ?LIB:init_per_group(port, ?LIB:init_per_suite(Config))].

end_per_suite(Config) -> ?LIB:end_per_suite(Config).

seconds() ->
    case os:getenv("CAMLBEAM_FUZZ_SECONDS") of
        false -> 15;
        Given -> list_to_integer(Given)
    end.

parsers(Config) -> in_peer(Config, parsers).
worker_frames(Config) -> in_peer(Config, worker_frames).

%%% The cases, in the peer

parsers(peer, Config) ->
    rand:seed(exsss, ?config(fuzz_seed, Config)),
    %% Loading the code on the way (io_lib's formatting, zlib ...) makes atoms: first a
    %% round of every path, then the count that must not move.
    _ = parse_loop(erlang:monotonic_time(millisecond) + 1000, #{inputs => 0, accepted => 0,
                                                                  decoded => 0, frames => 0}),
    Atoms = erlang:system_info(atom_count),
    Until = erlang:monotonic_time(millisecond) + seconds() * 1000,
    Counts = parse_loop(Until, #{inputs => 0, accepted => 0, decoded => 0, frames => 0}),
    ?assertEqual(Atoms, erlang:system_info(atom_count)),
    Counts.

parse_loop(Until, Counts) ->
    case erlang:monotonic_time(millisecond) < Until of
        false ->
            Counts;
        true ->
            NewCounts = lists:foldl(fun(_, C) -> parse_one(C) end, Counts, lists:seq(1, 200)),
            parse_loop(Until, NewCounts)
    end.

parse_one(#{inputs := Inputs} = Counts) ->
    Bytes = mutate(seed_payload()),
    C1 = case ocaml_etf_guard:check(Bytes) of
             ok -> bump(accepted, Counts);
             {error, Why} when is_binary(Why) -> Counts
         end,
    C2 = case ocaml_etf_guard:decode(Bytes) of
             {ok, _} -> bump(decoded, C1);
             {error, Why2} when is_binary(Why2) -> C1
         end,
    %% As a stream from a worker: frames cut against a limit, envelopes parsed.
    Stream = case rand:uniform(2) of
                 1 -> Bytes;
                 2 -> mutate(iolist_to_binary([packet(seed_frame()) || _ <- lists:seq(1, rand:uniform(4))]))
             end,
    Framer = ocaml_port_protocol:new_framer(),
    C3 = case ocaml_port_protocol:frames(Stream, Framer, 1 bsl 16) of
             {ok, Frames, _} ->
                 lists:foreach(fun(F) ->
                                       case ocaml_port_protocol:parse_frame(F) of
                                           {ok, _, Payload} -> _ = ocaml_port_protocol:decode_answer(Payload);
                                           {error, _} -> ok
                                       end
                               end, Frames),
                 C2#{frames := maps:get(frames, C2) + length(Frames)};
             {error, _} ->
                 C2
         end,
    C3#{inputs := Inputs + 1}.

worker_frames(peer, Config) ->
    rand:seed(exsss, ?config(fuzz_seed, Config)),
    {ok, Pool} = ocaml:start_link(?LIB:pool_options(Config, #{plugins => [?LIB:plugin(Config, "camlbeam_test"),
                                                                         ?LIB:plugin(Config, "camlbeam_hostile")],
                                                             pool_size => 2, restart_backoff => {0, 0},
                                                             policy => #{send => given, erl_call => [{erlang, node}]}})),
    %% A first round, for the code it loads (modules make atoms); then the counts that
    %% must not move.
    _ = frame_loop(Pool, erlang:monotonic_time(millisecond) + 3000, #{batches => 0, frames => 0}),
    ?LIB:wait_until(fun() -> ocaml:call(Pool, identity, [x], 1000) =:= {ok, x} end, 15000, 50),
    %% What the bystander may load when it waits (a module's names are atoms too).
    {module, timer} = code:ensure_loaded(timer),
    Atoms = erlang:system_info(atom_count),
    Modules = [M || {M, _} <- code:all_loaded()],
    Processes = erlang:system_info(process_count),
    Until = erlang:monotonic_time(millisecond) + seconds() * 1000,
    Self = self(),
    %% Calls in flight all along, each checked: its own answer or an error of the model.
    Bystander = spawn_link(fun() -> Self ! {bystander, bystander(Pool, Until, #{})} end),
    Counts = frame_loop(Pool, Until, #{batches => 0, frames => 0}),
    Bystanders = receive {bystander, B} -> B after 60000 -> ct:fail(bystander_stuck) end,
    _ = Bystander,
    ?LIB:wait_until(fun() -> ocaml:call(Pool, identity, [x], 1000) =:= {ok, x} end, 15000, 50),
    timer:sleep(500),
    _ = ?LIB:flush(),
    ?assertEqual({Atoms, []}, {erlang:system_info(atom_count),
                                [M || {M, _} <- code:all_loaded()] -- Modules}),
    ?assert(erlang:system_info(process_count) - Processes < 50),
    Counts#{bystander_calls => Bystanders}.

frame_loop(Pool, Until, #{batches := Batches, frames := Frames} = Counts) ->
    case erlang:monotonic_time(millisecond) < Until of
        false ->
            Counts;
        true ->
            N = rand:uniform(8),
            Batch = iolist_to_binary([fuzzed_packet() || _ <- lists:seq(1, N)]),
            Answer = ocaml:call(Pool, write_fd, [4, Batch], 2000),
            Kind = outcome(Answer),
            frame_loop(Pool, Until, bump(Kind, Counts#{batches := Batches + 1, frames := Frames + N}))
    end.

%% A frame a worker could write, or one damaged: in its body (the framing right), or in
%% the stream itself.
fuzzed_packet() ->
    case rand:uniform(10) of
        1 -> mutate(packet(seed_frame()));
        2 -> crypto:strong_rand_bytes(rand:uniform(64));
        N when N =< 6 -> packet(mutate(seed_frame()));
        _ -> packet(seed_frame())
    end.

outcome({ok, ok}) -> written;
outcome({error, {worker_crashed, {malformed_frame, _}}}) -> malformed;
outcome({error, {worker_crashed, Reason}} = Answer) ->
    %% Only the ways an OS process ends that frames can cause: anything else is a bug here.
    case Reason of
        {exit_status, N} when is_integer(N), N >= 0 -> crashed;
        flooding -> crashed;
        unresponsive -> crashed;
        overdue -> crashed;
        _ -> ct:fail({unexpected_answer, Answer})
    end;
outcome({error, timeout}) -> timeout;
outcome({error, no_worker}) -> no_worker;
outcome({error, {bad_reply, _}}) -> bad_reply;
outcome(Other) -> ct:fail({unexpected_answer, Other}).

bystander(Pool, Until, Counts) ->
    case erlang:monotonic_time(millisecond) < Until of
        false ->
            Counts;
        true ->
            I = erlang:unique_integer(),
            Started = erlang:monotonic_time(millisecond),
            Answer = ocaml:call(Pool, identity, [{I, self()}], 1000),
            Ms = erlang:monotonic_time(millisecond) - Started,
            ?assert(Ms =< 1000 + 500),
            Kind = case Answer of
                       {ok, {I, _}} -> ok;
                       {ok, Other} -> ct:fail({misdelivered, I, Other});
                       {error, {worker_crashed, _}} -> crashed;
                       {error, no_worker} -> timer:sleep(10), no_worker;
                       {error, timeout} -> timeout;
                       {error, {bad_reply, _}} -> bad_reply;
                       Else -> ct:fail({unexpected_answer, Else})
                   end,
            bystander(Pool, Until, bump(Kind, Counts))
    end.

%%% Seeds and mutations

%% A frame body of the protocol: an envelope and a payload.
seed_frame() ->
    Payload = seed_payload(),
    Envelope = case rand:uniform(6) of
                   1 -> {send, self()};
                   2 -> {log, lists:nth(rand:uniform(3), [warning, error, nonsense])};
                   3 -> {erl_call, rand:uniform(100)};
                   4 -> {heartbeat, rand:uniform(1000)};
                   5 -> {reply, make_ref()};
                   6 -> {erl_call, rand:uniform(100)}
               end,
    Body = case {Envelope, rand:uniform(2)} of
               {{erl_call, _}, 1} -> term_to_binary({erlang, node, []});
               _ -> Payload
           end,
    <<(term_to_binary(Envelope))/binary, Body/binary>>.

%% An external term of any kind, sometimes the map OTP 25 cannot decode.
seed_payload() ->
    case rand:uniform(20) of
        1 -> camlbeam_hostile_SUITE:crash_map_bytes();
        _ -> term_to_binary(random_term(3), [{minor_version, rand:uniform(3) - 1}])
    end.

random_term(0) ->
    random_leaf();
random_term(Depth) ->
    case rand:uniform(8) of
        1 -> [random_term(Depth - 1) || _ <- lists:seq(1, rand:uniform(5))];
        2 -> list_to_tuple([random_term(Depth - 1) || _ <- lists:seq(1, rand:uniform(4))]);
        3 -> maps:from_list([{random_term(Depth - 1), random_term(Depth - 1)}
                             || _ <- lists:seq(1, rand:uniform(40))]);
        4 -> [random_leaf() | random_leaf()];
        _ -> random_leaf()
    end.

random_leaf() ->
    case rand:uniform(12) of
        1 -> rand:uniform(255);
        2 -> rand:uniform(1 bsl 40) - (1 bsl 39);
        3 -> (rand:uniform(1 bsl 80)) * (1 bsl 64);
        4 -> rand:uniform() * 1.0e10;
        5 -> lists:nth(rand:uniform(4), [ok, error, true, undefined]);
        6 -> crypto:strong_rand_bytes(rand:uniform(40));
        7 -> <<(rand:uniform(255)):7>>;
        8 -> make_ref();
        9 -> self();
        10 -> "text";
        11 -> [];
        12 -> fun lists:reverse/1
    end.

%% One to four of: a bit flipped, a byte set (often to a tag or a boundary value), bytes
%% inserted, deleted, duplicated, a 32-bit length field set to a boundary, the end cut.
mutate(Bin) ->
    lists:foldl(fun(_, B) -> mutate_once(B) end, Bin, lists:seq(1, rand:uniform(4))).

mutate_once(<<>>) ->
    crypto:strong_rand_bytes(rand:uniform(8));
mutate_once(Bin) ->
    Size = byte_size(Bin),
    At = rand:uniform(Size) - 1,
    <<Before:At/binary, Byte, After/binary>> = Bin,
    case rand:uniform(7) of
        1 -> <<Before/binary, (Byte bxor (1 bsl (rand:uniform(8) - 1))), After/binary>>;
        2 -> <<Before/binary, (interesting_byte()), After/binary>>;
        3 -> <<Before/binary, (crypto:strong_rand_bytes(rand:uniform(8)))/binary, Byte, After/binary>>;
        4 -> <<Before/binary, (binary:part(After, 0, min(byte_size(After), rand:uniform(8))))/binary>>;
        5 -> <<Before/binary, Byte, After/binary, (binary:part(Bin, 0, min(Size, rand:uniform(16))))/binary>>;
        6 when byte_size(After) >= 4 ->
            <<_:32, Rest/binary>> = After,
            <<Before/binary, Byte, (interesting_u32()):32, Rest/binary>>;
        _ -> binary:part(Bin, 0, At)
    end.

interesting_byte() ->
    lists:nth(rand:uniform(17), [0, 1, 32, 33, 127, 128, 255, 131, 80, 90, 104, 105, 106, 108,
                                 109, 116, 119]).

interesting_u32() ->
    lists:nth(rand:uniform(8), [0, 1, 32, 33, 16#7fffffff, 16#ffffffff, 16#10000, 255]).

packet(Body) ->
    <<(byte_size(Body)):32, Body/binary>>.

bump(Key, Counts) ->
    maps:update_with(Key, fun(N) -> N + 1 end, 1, Counts).

%%% Running a case in a VM of its own

in_peer(Config, Case) ->
    {ok, Peer, _} = peer:start_link(#{connection => standard_io,
                                   args => camlbeam_hostile_SUITE:peer_args()}),
    PeerOsPid = peer:call(Peer, os, getpid, [], 30000),
    try
        run_in_peer(Config, Case, Peer)
    after
        os:cmd("kill -9 " ++ PeerOsPid)
    end.

run_in_peer(Config, Case, Peer) ->
    _ = peer:call(Peer, camlbeam_hostile_SUITE, prepare_peer, [Config], 30000),
    Result = try peer:call(Peer, camlbeam_hostile_SUITE, run_case, [?MODULE, Case, Config],
                           (seconds() + 120) * 1000)
             catch Class:Reason -> ct:fail({vm_died, Case, Class, Reason})
             end,
    %% The VM answers after all that.
    ?assert(peer:call(Peer, erlang, garbage_collect, [], 10000)),
    peer:stop(Peer),
    case Result of
        {ok, Counts, _Notes} -> ct:pal("~p: ~p", [Case, Counts]), {comment, io_lib:format("~p", [Counts])};
        {failed, C, R, S, _Notes} -> erlang:raise(C, R, S)
    end.
