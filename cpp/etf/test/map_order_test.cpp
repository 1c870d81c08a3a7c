// Map entry order against the live OTP 25 runtime.
//
// Maps of more than 32 keys: encode() must write the entries in the order term_to_binary/1
// does, which hashmap_encoding_order computes from a port of the runtime's internal hash.
// Maps of up to 32 keys: the entries go in Erlang's term order, so these cases check
// compare() (term.cpp) against erts for every kind of term.
//
// The expected bytes come from `erl` at test time: the Erlang program below (an escript,
// run with the `escript` that scripts/setup.sh installs) writes term_to_binary/1 of each
// case to a file, the test decodes and re-encodes them and compares the bytes. For keys
// whose hash in OTP 25 depends on the running VM (atoms: their atom-table index; pids,
// ports, references, funs: node or export-entry addresses) no byte comparison is possible,
// so for those a second run of the program checks that Erlang reads our bytes back as the
// same map.
#include <camlbeam/etf/encoder.hpp>
#include <camlbeam/etf/map_order.hpp>
#include <camlbeam/etf/term.hpp>
#include <camlbeam/etf/term_builder.hpp>
#include <camlbeam/etf/text.hpp>

#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <numeric>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

namespace etf = camlbeam::etf;
namespace fs = std::filesystem;
using Bytes = std::vector<std::uint8_t>;

namespace {

// The oracle. Each case is framed as <<GroupLength:8, Group, Length:32, term_to_binary(Term)>>.
// `generate Out Group...` writes the cases of the groups named: "hash/..." are maps of more
// than 32 keys to match byte for byte; "order/pairs" and "order/chunks" are {maps:keys(M), M}
// for maps of at most 32 keys (keys in OTP's term order); "order/equal" are pairs of terms
// OTP holds =:=; "vm/keys" are large maps with keys whose order only that VM knows.
// `verify Theirs Ours` checks that each term in Ours is =:= the one at the same position in
// Theirs and prints "ok" if all are.
constexpr std::string_view oracle_escript = R"erl(%% -*- erlang -*-
-mode(compile).

main(["generate", Out | Groups]) ->
    ok = file:write_file(Out, [frame(list_to_binary(G), term_to_binary(T)) || G <- Groups, T <- cases(G)]);
main(["verify", Theirs, Ours]) ->
    A = frames(read(Theirs)),
    B = frames(read(Ours)),
    Bad = [G || {{G, X}, {G, Y}} <- lists:zip(A, B), binary_to_term(X) =/= binary_to_term(Y)],
    case {length(A) =:= length(B), Bad} of
        {true, []} -> io:format("ok~n");
        _ -> io:format("mismatch: ~p of ~p, first in ~p~n", [length(Bad), length(A), Bad])
    end.

read(File) -> {ok, Bin} = file:read_file(File), Bin.
frame(G, Bin) -> [byte_size(G), G, <<(byte_size(Bin)):32>>, Bin].
frames(<<>>) -> [];
frames(<<N:8, G:N/binary, L:32, Bin:L/binary, Rest/binary>>) -> [{G, Bin} | frames(Rest)].

%% Each group draws from a seed of its own, so any selection of groups gives the same cases.
cases(Group) ->
    rand:seed(exsss, erlang:phash2(Group)),
    case Group of
        "hash/integers" -> maps_of(fun int_key/0);
        "hash/floats" -> maps_of(fun float_key/0);
        "hash/binaries" -> maps_of(fun bits_key/0);
        "hash/lists" -> maps_of(fun() -> list_key(3) end);
        "hash/tuples" -> maps_of(fun() -> tuple_key(3) end);
        "hash/maps" -> maps_of(fun() -> map_key(2) end);
        "hash/mixed" -> maps_of(fun() -> any_key(4) end);
        "hash/large-map-keys" -> [map_of(fun() -> {large_map(), rand:uniform(3)} end, 40)];
        "hash/collisions" -> collision_maps();
        "hash/100000-keys" -> [map_of(fun() -> any_key(2) end, 100000)];
        "order/pairs" -> order_pairs();
        "order/chunks" -> order_chunks();
        "order/equal" -> [{A, B} || {A, B} <- equal_pairs(), A =:= B];
        "vm/keys" -> vm_maps()
    end.

%% ---- maps of more than 32 keys whose hashes are functions of their values ----

maps_of(Gen) -> [map_of(Gen, N) || N <- [33, 34, 47, 64, 129, 500, 2000], _ <- [1, 2, 3]].

%% Keys whose 32-bit internal hashes are equal (checked with
%% erts_debug:get_internal_state({internal_hash, K}) when written): the runtime tells them
%% apart with the depth-1 hash.
collision_maps() ->
    Pairs = [{40660, 59671}, {22575, 119693}, {121236, 167527}, {169647, 178740},
             {29879, 217607}, {204923, 232672}, {198773, 280384}, {229095, 281280},
             {<<70566:24>>, <<83016:24>>}, {<<49833:24>>, <<104944:24>>},
             {<<34923:24>>, <<118799:24>>}, {<<100898:24>>, <<123085:24>>},
             {<<135352:24>>, <<138158:24>>}, {<<47785:24>>, <<138365:24>>},
             {bytes(13312), bytes(58123)}, {bytes(102521), bytes(115942)},
             {bytes(123035), bytes(124364)}, {bytes(126427), bytes(126440)}],
    Filler = [{I, filler} || I <- lists:seq(10000000, 10000040)],
    [maps:from_list([{A, a}, {B, b} | Filler]) || {A, B} <- Pairs]
        ++ [maps:from_list([{K, x} || {A, B} <- Pairs, K <- [A, B]])].

bytes(X) -> binary_to_list(<<X:24>>).

map_of(Gen, N) -> map_of(Gen, N, #{}).
map_of(_Gen, N, M) when map_size(M) >= N -> M;
map_of(Gen, N, M) -> map_of(Gen, N, M#{Gen() => rand:uniform(1000)}).

sign() -> 2 * rand:uniform(2) - 3.
pick(L) -> lists:nth(rand:uniform(length(L)), L).

int_key() ->
    case rand:uniform(7) of
        1 -> rand:uniform(512) - 256;
        2 -> rand:uniform(1 bsl 32) - (1 bsl 31);
        3 -> rand:uniform(1 bsl 60) - (1 bsl 59);
        4 -> sign() * ((1 bsl 59) - 4 + rand:uniform(8));   % the small/bignum boundary
        5 -> sign() * ((1 bsl 63) - 4 + rand:uniform(8));   % the int64 boundary
        6 -> sign() * ((1 bsl 64) - 4 + rand:uniform(8));
        7 -> sign() * rand:uniform(1 bsl (64 + rand:uniform(300)))
    end.

float_key() ->
    case rand:uniform(5) of
        1 -> (rand:uniform() - 0.5) * math:pow(10, rand:uniform(600) - 300);
        2 -> float(rand:uniform(1000) - 500);
        3 -> 5.0e-324 * rand:uniform(1000000);               % subnormals
        4 -> pick([0.0, -0.0, 1.0e308, -1.0e308, 2.2250738585072014e-308]);
        5 -> rand:uniform() * 1.0e19
    end.

bits_key() ->
    case rand:uniform(3) of
        1 -> rand:bytes(rand:uniform(41) - 1);
        2 -> N = rand:uniform(100), <<(rand:uniform(1 bsl N) - 1):N>>;   % most not whole bytes
        3 -> rand:bytes(pick([11, 12, 13, 23, 24, 25]))                   % block_hash edges
    end.

leaf() ->
    case rand:uniform(5) of
        1 -> int_key();
        2 -> float_key();
        3 -> bits_key();
        4 -> [];
        5 -> rand:uniform(256) - 1
    end.

list_key(0) -> [leaf()];
list_key(D) ->
    case rand:uniform(6) of
        1 -> [rand:uniform(256) - 1 || _ <- lists:seq(1, rand:uniform(12))];     % strings
        2 -> [any_key(D - 1) || _ <- lists:seq(1, rand:uniform(5))];
        3 -> lists:foldl(fun(E, T) -> [E | T] end, pick([leaf(), {}, 1.5, <<"t">>]),
                         [any_key(D - 1) || _ <- lists:seq(1, rand:uniform(4))]);   % improper
        4 -> [rand:uniform(256) - 1, rand:uniform(256) - 1, any_key(D - 1), rand:uniform(256) - 1];
        5 -> [list_key(D - 1) | list_key(D - 1)];
        6 -> lists:seq(1, rand:uniform(9)) ++ 300
    end.

tuple_key(D) -> list_to_tuple([any_key(D - 1) || _ <- lists:seq(1, rand:uniform(6) - 1)]).

map_key(0) -> #{};
map_key(D) ->
    case rand:uniform(4) of
        4 -> large_map();
        _ -> maps:from_list([{any_key(D - 1), any_key(D - 1)} || _ <- lists:seq(1, rand:uniform(6) - 1)])
    end.

large_map() -> map_of(fun() -> pick([int_key(), bits_key(), tuple_key(2)]) end, 33 + rand:uniform(20)).

any_key(0) -> leaf();
any_key(D) ->
    case rand:uniform(8) of
        1 -> list_key(D - 1);
        2 -> tuple_key(D);
        3 when D > 2 -> map_key(1);
        _ -> leaf()
    end.

%% ---- maps of up to 32 keys: term order over every kind ----

order_pairs() ->
    Pool = enumerate(pool()),
    [{maps:keys(M), M} || {I, A} <- Pool, {J, B} <- Pool, I < J,
                          M <- [maps:from_list([{A, 1}, {B, 2}])], map_size(M) =:= 2].

order_chunks() ->
    Pool = pool(),
    [{maps:keys(M), M} || _ <- lists:seq(1, 200),
                          M <- [maps:from_list([{K, 0} || K <- lists:sublist(shuffle(Pool), 32)])]].

enumerate(L) -> lists:zip(lists:seq(1, length(L)), L).
shuffle(L) -> [X || {_, X} <- lists:sort([{rand:uniform(), X} || X <- L])].

%% Different encodings of one term: OTP holds each pair =:=, and as the same map key.
equal_pairs() ->
    Ref = fun(Ids) -> binary_to_term(<<131, 90, (length(Ids)):16, 100, 3:16, "a@h", 1:32,
                                       << <<I:32>> || I <- Ids >>/binary>>) end,
    Free = rand:uniform(5),
    [{0.0, -0.0}, {Ref([1]), Ref([1, 0, 0])}, {Ref([7, 0]), Ref([7, 0, 0, 0, 0])}]
        ++ [{F, other_creator(F)} || F <- [fun() -> ok end, fun(X) -> {X, Free} end]].

%% The same fun with another creator pid, which OTP 25 neither compares nor hashes.
other_creator(F) ->
    <<131, 112, Size:32, Body/binary>> = term_to_binary(F),
    <<131, Creator/binary>> = term_to_binary(self()),
    <<131, Other/binary>> = term_to_binary(binary_to_term(<<131, 88, 100, 3:16, "a@h", 7:32, 0:32, 1:32>>)),
    [Before, After] = binary:split(Body, Creator),
    binary_to_term(<<131, 112, (Size - byte_size(Creator) + byte_size(Other)):32,
                     Before/binary, Other/binary, After/binary>>).

pool() ->
    Node = fun(N) -> <<100, (byte_size(N)):16, N/binary>> end,
    Pid = fun(N, Id, Ser, Cr) -> binary_to_term(<<131, 88, (Node(N))/binary, Id:32, Ser:32, Cr:32>>) end,
    Port = fun(N, Id, Cr) -> binary_to_term(<<131, 89, (Node(N))/binary, Id:32, Cr:32>>) end,
    Port64 = fun(N, Id, Cr) -> binary_to_term(<<131, 120, (Node(N))/binary, Id:64, Cr:32>>) end,
    Ref = fun(N, Cr, Ids) -> binary_to_term(<<131, 90, (length(Ids)):16, (Node(N))/binary, Cr:32,
                                              << <<I:32>> || I <- Ids >>/binary>>) end,
    Spawned = spawn(fun() -> receive stop -> ok end end),
    Free = rand:uniform(5),
    [0, 1, -1, 255, 256, 1 bsl 27, -(1 bsl 31), (1 bsl 59) - 1, 1 bsl 59, -(1 bsl 59), -(1 bsl 59) - 1,
     1 bsl 63, -(1 bsl 63), 1 bsl 64, 1 bsl 200, -(1 bsl 200), 2, 100000000000000000000,
     0.0, 1.0, -1.0, 0.5, 1.5, 2.0, -2.5, 1.0e300, -1.0e-300, 1.0e20, 5.0e-324,
     '', a, b, aa, 'A', 'Zz', 'a b', '\x{e4}', '\x{3c9}', '\x{3c9}a', list_to_atom(lists:duplicate(255, $z)),
     make_ref(), make_ref(),
     Ref(<<"a@h">>, 1, [1, 2, 3]), Ref(<<"a@h">>, 2, [1, 2, 3]), Ref(<<"b@h">>, 1, [1, 2, 3]),
     Ref(<<"a@h">>, 1, [3, 2, 1]), Ref(<<"a@h">>, 1, [1]), Ref(<<"a@h">>, 1, [0, 1]),
     Ref(<<"a@h">>, 1, [1, 2, 3, 4, 5]), Ref(<<"a@h">>, 1, [5, 4, 3, 2]),
     Ref(<<"nonode@nohost">>, 7, [9, 9, 9]),
     fun() -> ok end, fun(X) -> X end, fun(X, Y) -> {X, Y} end, fun() -> Free end, fun() -> {Free, Free} end,
     fun lists:map/2, fun lists:map/3, fun erlang:abs/1, fun a:b/0, fun b:a/0, fun a:a/255,
     hd(erlang:ports()), lists:last(erlang:ports()),
     Port(<<"a@h">>, 5, 1), Port(<<"a@h">>, 6, 1), Port(<<"a@h">>, 5, 2), Port(<<"b@h">>, 1, 1),
     Port(<<"Z@h">>, 9, 3), Port64(<<"a@h">>, 1 bsl 40, 1),
     self(), Spawned,
     Pid(<<"a@h">>, 1, 0, 1), Pid(<<"a@h">>, 2, 0, 1), Pid(<<"a@h">>, 1, 1, 1), Pid(<<"a@h">>, 1, 0, 2),
     Pid(<<"b@h">>, 1, 0, 1), Pid(<<"Z@h">>, 100, 0, 1), Pid(<<"a@h">>, 0, 5, 1),
     {}, {1}, {1, 2}, {a}, {1.0}, {{}}, {1, 2, 3}, {2},
     #{}, #{1 => 1}, #{1 => 2}, #{2 => 1}, #{a => 1, b => 2}, #{1.0 => 1}, #{[] => {}},
     maps:from_list([{I, 0} || I <- lists:seq(1, 33)]), maps:from_list([{I, 1} || I <- lists:seq(1, 33)]),
     maps:from_list([{I, 0} || I <- lists:seq(2, 34)]),
     [], [1], [1, 2], [1 | 2], [1, 2 | 3], "abc", "abd", [a], [[]], [1.0], [1 | a], [2], [1, 2, 3, 4, 5, 300],
     <<>>, <<0>>, <<1>>, <<1, 2>>, <<255>>, <<1:1>>, <<0:1>>, <<1, 0:1>>, <<1:7>>, <<128, 1:1>>, <<0:7>>].

%% ---- large maps with keys only the VM that built them can order ----

vm_maps() ->
    Node = fun(N) -> <<100, (byte_size(N)):16, N/binary>> end,
    Pid = fun(N, Id) -> binary_to_term(<<131, 88, (Node(N))/binary, Id:32, 0:32, 1:32>>) end,
    Atom = fun() -> list_to_atom("k" ++ integer_to_list(rand:uniform(1 bsl 40))) end,
    Kinds = [fun() -> Atom() end,
             fun() -> Pid(pick([<<"a@h">>, <<"b@h">>]), rand:uniform(1 bsl 20)) end,
             fun() -> make_ref() end,
             fun() -> N = rand:uniform(1 bsl 30), fun() -> N end end,
             fun() -> erlang:make_fun(pick([lists, maps, m]), Atom(), rand:uniform(3)) end,
             fun() -> {Atom(), rand:uniform(100)} end,
             fun() -> pick([Atom(), rand:uniform(100000), self(), [x | Atom()]]) end],
    [map_of(Gen, N) || Gen <- Kinds, N <- [33, 200, 1000]].
)erl";

struct Case {
  std::string group;
  Bytes bytes;
};

Bytes read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::string read_text(const fs::path& path) {
  const auto bytes = read_file(path);
  return {bytes.begin(), bytes.end()};
}

std::uint32_t load_be32(const std::uint8_t* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) | p[3];
}

std::vector<Case> parse_frames(const Bytes& data) {
  std::vector<Case> cases;
  std::size_t pos = 0;
  while (pos < data.size()) {
    const std::size_t group_length = data[pos++];
    Case c;
    c.group.assign(data.begin() + static_cast<std::ptrdiff_t>(pos),
                   data.begin() + static_cast<std::ptrdiff_t>(pos + group_length));
    pos += group_length;
    const std::size_t length = load_be32(&data[pos]);
    pos += 4;
    c.bytes.assign(data.begin() + static_cast<std::ptrdiff_t>(pos),
                   data.begin() + static_cast<std::ptrdiff_t>(pos + length));
    pos += length;
    cases.push_back(std::move(c));
  }
  return cases;
}

void append_frame(Bytes& out, const std::string& group, const Bytes& bytes) {
  out.push_back(static_cast<std::uint8_t>(group.size()));
  out.insert(out.end(), group.begin(), group.end());
  const auto n = static_cast<std::uint32_t>(bytes.size());
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<std::uint8_t>(n >> shift));
  out.insert(out.end(), bytes.begin(), bytes.end());
}

std::string quoted(const fs::path& p) { return "'" + p.string() + "'"; }

// Where two encodings first differ, for failure messages.
std::string first_difference(const Bytes& ours, const Bytes& theirs) {
  const auto mismatch = std::mismatch(ours.begin(), ours.end(), theirs.begin(), theirs.end());
  std::ostringstream s;
  s << "sizes " << ours.size() << " (ours) and " << theirs.size() << " (OTP), first difference at byte "
    << (mismatch.first - ours.begin());
  return s.str();
}

// Each test runs the oracle for the groups it checks: ctest runs every test in a process of
// its own, so a suite-wide setup would generate every group once per test.
class MapOrderVsOtp : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/camlbeam-map-order-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr) << "cannot create a temporary directory";
    dir_ = pattern;
    std::ofstream(dir_ / "oracle.escript") << oracle_escript;
  }

  void TearDown() override {
    std::error_code ignored;
    if (!dir_.empty()) fs::remove_all(dir_, ignored);
  }

  // The cases of these groups, as OTP writes them; empty (and a failure) if `escript` fails.
  std::vector<Case> generate(const std::vector<std::string>& groups) {
    std::string args = "generate " + quoted(dir_ / "cases.bin");
    for (const std::string& g : groups) args += " " + g;
    if (!run_oracle(args)) return {};
    return parse_frames(read_file(dir_ / "cases.bin"));
  }

  // Runs the escript with these arguments and keeps what it printed in oracle_output_.
  bool run_oracle(const std::string& args) {
    const fs::path stdout_file = dir_ / "stdout.txt", stderr_file = dir_ / "stderr.txt";
    const std::string command = "escript " + quoted(dir_ / "oracle.escript") + " " + args + " >" +
                                quoted(stdout_file) + " 2>" + quoted(stderr_file);
    const int status = std::system(command.c_str());
    oracle_output_ = read_text(stdout_file);
    if (status == 0) return true;
    ADD_FAILURE() << "the Erlang oracle failed (is OTP 25 installed? run scripts/setup.sh): " << command
                  << "\n" << read_text(stderr_file);
    return false;
  }

  fs::path dir_;
  std::string oracle_output_;
};

std::vector<const Case*> cases_in(const std::vector<Case>& cases, std::string_view group) {
  std::vector<const Case*> found;
  for (const Case& c : cases)
    if (c.group == group) found.push_back(&c);
  return found;
}

// Decodes each case of the group and checks that encode() gives back the same bytes.
void expect_byte_identical(const std::vector<Case>& all, std::string_view group, std::size_t expected) {
  const auto cases = cases_in(all, group);
  ASSERT_EQ(cases.size(), expected) << group;
  std::size_t failures = 0;
  for (const Case* c : cases) {
    const etf::Term term = etf::decode_term(c->bytes);
    const auto ours = etf::encode(term);
    if (ours != c->bytes && ++failures <= 5) {
      ADD_FAILURE() << group << ": " << first_difference(ours, c->bytes) << "\n  term: "
                    << term.to_string().substr(0, 300);
    }
  }
  EXPECT_EQ(failures, 0u) << "of " << cases.size() << " cases in " << group;
}

TEST_F(MapOrderVsOtp, LargeMapsOfEveryHashableKindAreByteIdentical) {
  const std::vector<std::string> groups = {"hash/integers", "hash/floats", "hash/binaries", "hash/lists",
                                           "hash/tuples",   "hash/maps",   "hash/mixed"};
  const auto cases = generate(groups);
  for (const std::string& group : groups) expect_byte_identical(cases, group, 21);
}

TEST_F(MapOrderVsOtp, LargeMapsNestedInKeysAreHashedInTheirOwnOrder) {
  expect_byte_identical(generate({"hash/large-map-keys"}), "hash/large-map-keys", 1);
}

TEST_F(MapOrderVsOtp, KeysWithEqual32BitHashesAreSplitByTheDepthOneHash) {
  expect_byte_identical(generate({"hash/collisions"}), "hash/collisions", 19);
}

TEST_F(MapOrderVsOtp, HundredThousandKeyMapIsByteIdentical) {
  const auto cases = generate({"hash/100000-keys"});
  ASSERT_EQ(cases.size(), 1u);
  const etf::Term term = etf::decode_term(cases[0].bytes);
  ASSERT_EQ(term.map_size(), 100000u);
  const auto start = std::chrono::steady_clock::now();
  const auto order = etf::hashmap_encoding_order(term.get_if<etf::Map>()->flat);
  const auto elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  RecordProperty("order_seconds", std::to_string(elapsed));
  EXPECT_EQ(order.size(), 100000u);
  EXPECT_EQ(etf::encode(term), cases[0].bytes);
}

// OTP writes a small map's keys in term order; maps:keys/1 gives that order.
TEST_F(MapOrderVsOtp, SmallMapKeysFollowErlangTermOrder) {
  const auto cases = generate({"order/pairs", "order/chunks"});
  ASSERT_GT(cases.size(), 7000u);
  std::size_t failures = 0;
  for (const Case& c : cases) {
    const etf::Term pair = etf::decode_term(c.bytes);
    const auto keys = pair.tuple_elements()[0].children();
    for (std::size_t i = 0; i + 2 < keys.size(); ++i) {  // children() ends with the [] tail
      if (compare(keys[i], keys[i + 1]) < 0) continue;  // a hidden friend, found by ADL
      if (++failures <= 20) {
        ADD_FAILURE() << "OTP orders " << keys[i].to_string() << " before " << keys[i + 1].to_string()
                      << ", compare() does not";
      }
    }
    if (etf::encode(pair) != c.bytes && ++failures <= 20)
      ADD_FAILURE() << c.group << ": re-encoding differs: " << pair.to_string().substr(0, 300);
  }
  EXPECT_EQ(failures, 0u);
}

TEST_F(MapOrderVsOtp, TermsErlangHoldsEqualCompareEqual) {
  const auto cases = generate({"order/equal"});
  ASSERT_EQ(cases.size(), 5u);
  for (const Case& c : cases) {
    const etf::Term pair = etf::decode_term(c.bytes);
    const auto both = pair.tuple_elements();
    EXPECT_EQ(compare(both[0], both[1]), std::strong_ordering::equal)
        << both[0].to_string() << " and " << both[1].to_string();
  }
}

TEST_F(MapOrderVsOtp, MapsWithVmDependentKeysReadBackAsTheSameMap) {
  const auto cases = generate({"vm/keys"});
  ASSERT_EQ(cases.size(), 21u);
  Bytes theirs, ours;
  for (const Case& c : cases) {
    const etf::Term term = etf::decode_term(c.bytes);
    const auto encoded = etf::encode(term);
    EXPECT_EQ(etf::decode_term(encoded), term) << c.group;
    append_frame(theirs, c.group, c.bytes);
    append_frame(ours, c.group, encoded);
  }
  std::ofstream(dir_ / "theirs.bin", std::ios::binary)
      .write(reinterpret_cast<const char*>(theirs.data()), static_cast<std::streamsize>(theirs.size()));
  std::ofstream(dir_ / "ours.bin", std::ios::binary)
      .write(reinterpret_cast<const char*>(ours.data()), static_cast<std::streamsize>(ours.size()));
  ASSERT_TRUE(run_oracle("verify " + quoted(dir_ / "theirs.bin") + " " + quoted(dir_ / "ours.bin")));
  EXPECT_EQ(oracle_output_, "ok\n");
}

// ---- Without Erlang ----

etf::Term int_map(std::size_t n, std::int64_t first = 0) {
  std::vector<std::pair<etf::Term, etf::Term>> entries;
  for (std::size_t i = 0; i < n; ++i)
    entries.emplace_back(etf::Term::integer(first + static_cast<std::int64_t>(i)), etf::Term::nil());
  return etf::Term::map(std::move(entries));
}

// A one-element vector that takes the term over (an initializer list would copy it, which
// for a deep term costs its whole size at every level).
std::vector<etf::Term> just(etf::Term t) {
  std::vector<etf::Term> v;
  v.push_back(std::move(t));
  return v;
}

bool is_permutation_of_entries(const std::vector<std::uint32_t>& order, std::size_t n) {
  std::vector<std::uint32_t> sorted = order;
  std::sort(sorted.begin(), sorted.end());
  std::vector<std::uint32_t> expected(n);
  std::iota(expected.begin(), expected.end(), 0u);
  return sorted == expected;
}

TEST(HashmapEncodingOrder, IsAPermutationOfTheEntries) {
  for (std::size_t n : {33u, 100u, 4097u}) {
    const etf::Term m = int_map(n);
    const auto order = etf::hashmap_encoding_order(m.get_if<etf::Map>()->flat);
    EXPECT_TRUE(is_permutation_of_entries(order, n)) << n;
  }
}

// Values play no part in the order, only keys do.
TEST(HashmapEncodingOrder, DependsOnKeysOnly) {
  std::vector<std::pair<etf::Term, etf::Term>> a, b;
  for (std::int64_t i = 0; i < 40; ++i) {
    a.emplace_back(etf::Term::integer(i), etf::Term::integer(i));
    b.emplace_back(etf::Term::integer(i), etf::Term::binary(std::string_view("value")));
  }
  const etf::Term ma = etf::Term::map(std::move(a)), mb = etf::Term::map(std::move(b));
  EXPECT_EQ(etf::hashmap_encoding_order(ma.get_if<etf::Map>()->flat),
            etf::hashmap_encoding_order(mb.get_if<etf::Map>()->flat));
}

// Keys nested far deeper than any C++ stack allows are hashed without recursion.
TEST(HashmapEncodingOrder, HandlesDeeplyNestedKeys) {
  constexpr std::size_t depth = 200'000;
  std::vector<std::pair<etf::Term, etf::Term>> entries;
  etf::Term deep_list = etf::Term::nil();
  etf::Term deep_tuple = etf::Term::integer(0);
  for (std::size_t i = 0; i < depth; ++i) {
    deep_list = etf::Term::list(just(std::move(deep_list)));
    deep_tuple = etf::Term::tuple(just(std::move(deep_tuple)));
  }
  entries.emplace_back(std::move(deep_list), etf::Term::nil());
  entries.emplace_back(std::move(deep_tuple), etf::Term::nil());
  for (std::int64_t i = 0; i < 40; ++i) entries.emplace_back(etf::Term::integer(i), etf::Term::nil());
  const etf::Term m = etf::Term::map(std::move(entries));
  EXPECT_TRUE(is_permutation_of_entries(etf::hashmap_encoding_order(m.get_if<etf::Map>()->flat), 42));
}

// Large maps nested in keys inside large maps inside keys: each level is ordered before the
// level that hashes it.
TEST(HashmapEncodingOrder, HandlesLargeMapsNestedInKeys) {
  etf::Term key = int_map(33);
  for (int level = 0; level < 50; ++level) {
    std::vector<std::pair<etf::Term, etf::Term>> entries;
    entries.emplace_back(etf::Term::tuple({key}), etf::Term::nil());
    for (std::int64_t i = 0; i < 40; ++i) entries.emplace_back(etf::Term::integer(i), etf::Term::nil());
    key = etf::Term::map(std::move(entries));
  }
  EXPECT_TRUE(is_permutation_of_entries(etf::hashmap_encoding_order(key.get_if<etf::Map>()->flat), 41));
}

}  // namespace

// A map of 33 keys: 31 integers and two references of another node with these words,
// each as the key or inside it (`around` puts a key in its braces: "{%}", "[%]").
etf::Term map_with_references(std::string_view first_words, std::string_view second_words,
                              std::string_view around = "%") {
  const auto key = [&](std::string_view words) {
    const std::string ref = "#Ref<'other@host'.1." + std::string(words) + ">";
    std::string wrapped(around);
    return wrapped.replace(wrapped.find('%'), 1, ref);
  };
  std::string text = "#{" + key(first_words) + " => a, " + key(second_words) + " => b";
  for (int i = 1; i <= 31; ++i) text += ", " + std::to_string(i) + " => " + std::to_string(i);
  return etf::parse_term(text + "}");
}

// OTP 25.2 hashes the first three words of a reference only: two that differ after them tie
// at every depth of its HAMT, and binary_to_term of such a map segfaults the VM (checked:
// maps:from_list too). Such a map must never reach Erlang from us.
TEST(HashmapEncodingOrder, RefusesMapsOfReferencesOtpCannotTellApart) {
  // Printed most significant word first: these differ in the fourth word only.
  EXPECT_THROW(etf::encode(map_with_references("1.0.0.2", "2.0.0.2")), etf::EncodeError);
  EXPECT_THROW(etf::encode(map_with_references("1.0.0.0.2", "2.0.0.0.2")), etf::EncodeError);
  // A difference within the first three words is fine, as it is for OTP.
  EXPECT_NO_THROW(etf::encode(map_with_references("0.1.0.2", "0.2.0.2")));
  EXPECT_NO_THROW(etf::encode(map_with_references("1.0.2", "2.0.2")));
  // Inside the keys, at any depth: the keys tie as the references do.
  for (std::string_view around : {"{%}", "[%]", "{x, [%, 1]}", "#{k => %}"}) {
    EXPECT_THROW(etf::encode(map_with_references("1.0.0.2", "2.0.0.2", around)), etf::EncodeError) << around;
    EXPECT_NO_THROW(etf::encode(map_with_references("0.1.0.2", "0.2.0.2", around))) << around;
  }
}
