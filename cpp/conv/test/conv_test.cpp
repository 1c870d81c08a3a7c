// ETF ⇄ Erl.Term.t: the conversions against the OCaml library's own view of the values
// (Erl.Term.validate and to_string), under a minor heap small enough that the GC runs in
// the middle of every conversion.
#include <camlbeam/conv/conv.hpp>
#include <camlbeam/etf/etf.hpp>

#include <caml/alloc.h>
#include <caml/callback.h>
#include <caml/memory.h>
#include <caml/mlvalues.h>

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace etf = camlbeam::etf;
namespace conv = camlbeam::conv;
using Bytes = std::vector<std::uint8_t>;

namespace {

value call_ocaml(const char* name, value arg) {
  const value* f = caml_named_value(name);
  if (f == nullptr) throw std::logic_error(std::string(name) + " not registered");
  return caml_callback(*f, arg);
}

std::string ocaml_string(value s) { return {String_val(s), caml_string_length(s)}; }

// Decodes to OCaml, checks the value is canonical, re-encodes; returns the new bytes.
Bytes through_ocaml(const Bytes& in, int minor_version = 1) {
  conv::DecodeToOcaml decoded = conv::etf_to_ocaml(in);
  EXPECT_FALSE(decoded.error) << decoded.error->message();
  if (decoded.error) return {};
  const std::string why = ocaml_string(call_ocaml("test.validate", decoded.value.get()));
  EXPECT_EQ(why, "") << "not canonical: " << etf::decode_term(in).to_string();
  call_ocaml("test.full_major", Val_unit);  // moves everything: the root must follow
  etf::ByteBuffer out;
  conv::ocaml_to_etf(decoded.value.get(), out, minor_version);
  return out.to_vector();
}

std::vector<std::string> sample_terms() {
  return {
      "0", "255", "256", "-1", "4611686018427387903", "4611686018427387904", "-4611686018427387905",
      "9223372036854775807", "-9223372036854775808", "123456789012345678901234567890",
      "-123456789012345678901234567890", "1.5", "-0.0", "1.0e300", "a", "'Hello World'",
      "'caf\xC3\xA9'", "'\xCE\xB1\xCE\xB2'", "<<>>", "<<\"binary\">>", "<<1,2,3:4>>", "[]", "\"abc\"",
      "[1,2,3,256]", "[a|b]", "[1,2|[3,4|c]]", "{}", "{a,{b,{c}}}", "#{}", "#{a => 1, 1 => a, 1.0 => b}",
      "#{#{k => v} => [1], {x} => <<>>}", "fun lists:map/2", "#Pid<n@h.1.2.3>",
      "#Port<n@h.5000000000.2>", "#Port<n@h.7.2>", "#Ref<n@h.3.1.2.3>",
      "{ok, [{<<\"x\">>, 1.25}], #{list => [a, \"b\", <<\"c\">>]}}"};
}

}  // namespace

TEST(Conv, EveryKindRoundTripsByteForByte) {
  for (const std::string& text : sample_terms()) {
    for (int minor : {1, 2}) {
      const Bytes bytes = etf::encode(etf::parse_term(text), {minor, 0});
      EXPECT_EQ(through_ocaml(bytes, minor), bytes) << text;
    }
  }
}

TEST(Conv, OcamlPrintsWhatCppPrints) {
  for (const std::string& text : sample_terms()) {
    const etf::Term term = etf::parse_term(text);
    conv::DecodeToOcaml decoded = conv::etf_to_ocaml(etf::encode(term));
    ASSERT_FALSE(decoded.error);
    EXPECT_EQ(ocaml_string(call_ocaml("test.to_string", decoded.value.get())), term.to_string()) << text;
  }
}

TEST(Conv, WireShapesBecomeCanonical) {
  // [1 | [2 | "ab"]] as three chained LIST/STRING encodings is the proper list [1,2,97,98].
  const Bytes chained = {131, 108, 0, 0, 0, 1, 97, 1, 108, 0, 0, 0, 1, 97, 2, 107, 0, 2, 97, 98};
  EXPECT_EQ(through_ocaml(chained), (Bytes{131, 107, 0, 4, 1, 2, 97, 98}));
  // A map whose keys arrive out of order is sorted.
  const Bytes unsorted = {131, 116, 0, 0, 0, 2, 100, 0, 1, 98, 97, 1, 100, 0, 1, 97, 97, 2};
  EXPECT_EQ(through_ocaml(unsorted), etf::encode(etf::parse_term("#{a => 2, b => 1}")));
}

TEST(Conv, DuplicateKeysAreRefused) {
  const Bytes twice = {131, 116, 0, 0, 0, 2, 100, 0, 1, 97, 97, 1, 119, 1, 97, 97, 2};
  conv::DecodeToOcaml decoded = conv::etf_to_ocaml(twice);
  ASSERT_TRUE(decoded.error);
  EXPECT_EQ(decoded.error->code, etf::Errc::duplicate_map_key);
  const conv::UnrootedDecode unrooted = conv::etf_to_ocaml_unrooted(twice);
  ASSERT_TRUE(unrooted.error);
  EXPECT_EQ(*unrooted.error, *decoded.error);
  EXPECT_EQ(unrooted.term, Val_unit);
}

// An exception from the map callback's OCaml code is no fault of the input: it comes back
// as what it is, never as a duplicate key, and the builder is usable afterwards.
TEST(Conv, AnExceptionInTheMapCallbackIsReportedAsItself) {
  const Bytes map = etf::encode(etf::parse_term("[#{a => 1, b => 2}]"));
  call_ocaml("test.break_map_of_array", Val_unit);
  conv::DecodeToOcaml decoded = conv::etf_to_ocaml(map);
  const conv::UnrootedDecode unrooted = conv::etf_to_ocaml_unrooted(map);
  ASSERT_TRUE(unrooted.raised.has_value());
  EXPECT_FALSE(unrooted.error);
  const value* asynchronous = caml_named_value("test.asynchronous");
  ASSERT_NE(asynchronous, nullptr);
  EXPECT_EQ(*unrooted.raised, *asynchronous);
  call_ocaml("test.mend_map_of_array", Val_unit);
  ASSERT_TRUE(decoded.raised.has_value());
  EXPECT_FALSE(decoded.error);
  EXPECT_EQ(decoded.raised->get(), *caml_named_value("test.asynchronous"));
  EXPECT_EQ(through_ocaml(map), map);
}

// Strings too long for the minor heap are made in the major heap by the converters
// themselves (so that running out of memory is a C++ failure): every length around the
// boundary keeps its exact size, which OCaml reads from the block's last byte.
TEST(Conv, LongStringsKeepTheirExactLength) {
  const std::size_t boundary = Max_young_wosize * sizeof(value);
  for (std::size_t size = boundary - 10; size <= boundary + 10; ++size) {
    std::vector<std::uint8_t> bytes(size);
    for (std::size_t i = 0; i < size; ++i) bytes[i] = static_cast<std::uint8_t>(i * 13 % 256);
    bytes.back() = 0xE0;  // 3 bits used: the unused ones are zero
    const Bytes bitstring = etf::encode(etf::Term::bitstring(std::move(bytes), 3));
    EXPECT_EQ(through_ocaml(bitstring), bitstring) << size;
  }
}

// A handle is no ETF kind: the builder takes one from a source that holds it, and the ETF
// writer refuses it, naming the transport that carries handles.
TEST(Conv, HandlesCrossOnlyWhereASourceHoldsThem) {
  conv::Root made(call_ocaml("test.handle", Val_long(7)));
  try {
    etf::ByteBuffer out;
    conv::ocaml_to_etf(made.get(), out);
    ADD_FAILURE() << "a handle was written as ETF";
  } catch (const etf::EncodeError& e) {
    EXPECT_NE(std::string(e.what()).find("nif"), std::string::npos) << e.what();
  }
  const value handle_term = Field(Field(made.get(), 0), 1);
  ASSERT_EQ(conv::tag_of(handle_term), conv::layout::term_tag::handle);
  conv::OcamlBuilder builder;
  builder.begin_tuple(1);
  builder.handle(Field(handle_term, 0));
  builder.end_tuple();
  conv::Root built(builder.take());
  call_ocaml("test.full_major", Val_unit);
  EXPECT_EQ(ocaml_string(call_ocaml("test.validate", built.get())), "");
  const value pair = caml_alloc_tuple(2);
  Store_field(pair, 0, made.get());
  Store_field(pair, 1, built.get());
  EXPECT_EQ(call_ocaml("test.same_handle", pair), Val_true);
}

// The request path's form: the value is read before anything else allocates.
TEST(Conv, UnrootedDecodeReadsBackAtOnce) {
  for (const std::string& text : sample_terms()) {
    const Bytes bytes = etf::encode(etf::parse_term(text));
    const conv::UnrootedDecode decoded = conv::etf_to_ocaml_unrooted(bytes);
    ASSERT_FALSE(decoded.error) << text;
    etf::ByteBuffer out;
    conv::ocaml_to_etf(decoded.term, out);
    EXPECT_EQ(out.to_vector(), bytes) << text;
  }
}

TEST(Conv, LargeAndDeepTerms) {
  std::vector<etf::Term> ints;
  for (int k = 0; k < 100'000; ++k) ints.push_back(etf::Term::integer(k * 7919LL - 300'000));
  const Bytes long_list = etf::encode(etf::Term::list(std::move(ints)));
  EXPECT_EQ(through_ocaml(long_list), long_list);

  const Bytes megabyte = etf::encode(etf::Term::binary(std::string(1 << 20, 'x')));
  EXPECT_EQ(through_ocaml(megabyte), megabyte);

  etf::Term deep = etf::Term::atom("leaf");
  for (int k = 0; k < 100'000; ++k) {
    std::vector<etf::Term> one;
    one.push_back(std::move(deep));
    deep = k % 2 ? etf::Term::tuple(std::move(one)) : etf::Term::list(std::move(one));
  }
  const Bytes deep_bytes = etf::encode(deep);
  EXPECT_EQ(through_ocaml(deep_bytes), deep_bytes);
}

// Containers wider than Max_young_wosize go to the major heap (caml_alloc_shr) with young
// children; maps of 0, 1 and many bindings take different paths; a fun's free variables
// are rebuilt into a fresh record. Each is built under the 4k-word minor heap.
TEST(Conv, WideContainersAndFuns) {
  std::vector<etf::Term> elements;
  std::vector<std::pair<etf::Term, etf::Term>> bindings;
  for (int k = 0; k < 1000; ++k) {
    std::vector<etf::Term> pair;
    pair.push_back(etf::Term::binary(std::string(k % 40, 'b')));
    pair.push_back(etf::Term::float64(k * 0.5));
    elements.push_back(etf::Term::tuple(std::move(pair)));
    bindings.emplace_back(etf::Term::integer(999 - k), etf::Term::atom("v" + std::to_string(k)));
  }
  const Bytes wide_tuple = etf::encode(etf::Term::tuple(std::move(elements)));
  EXPECT_EQ(through_ocaml(wide_tuple), wide_tuple);
  for (std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{2}, std::size_t{1000}}) {
    std::vector<std::pair<etf::Term, etf::Term>> some(bindings.end() - static_cast<std::ptrdiff_t>(n), bindings.end());
    const Bytes map = etf::encode(etf::Term::map(std::move(some)));
    EXPECT_EQ(etf::decode_term(through_ocaml(map)), etf::decode_term(map)) << n << " bindings";
  }

  etf::Fun fun;
  fun.arity = 2;
  fun.index = 7;
  fun.module = "m";
  fun.pid.node = "n@h";
  for (int k = 0; k < 300; ++k) fun.free_vars.push_back(etf::Term::atom("fv" + std::to_string(k)));
  const Bytes local = etf::encode(etf::Term::fun(std::move(fun)));
  EXPECT_EQ(through_ocaml(local), local);
}

// Pids, ports and references a live erl made, through Erl.Term.Pid, Port and Ref (which the
// OCaml tests only see on values made from fields): each pair ordered as Erlang orders it,
// and equal, hash, to_string and pp in agreement (conv_test_glue.ml checks those). The bytes
// are term_to_binary(L) and the rows Erlang's own order on L, from OTP 25:
//   Other = binary_to_term(<<131,88,119,3,"a@h",1:32,2:32,3:32>>),
//   OtherPort = binary_to_term(<<131,120,119,3,"a@h",16#ffffffffffffffff:64,4:32>>),
//   OtherRef = binary_to_term(<<131,90,3:16,119,3,"a@h",3:32,1:32,2:32,3:32>>),
//   Dead = spawn(fun() -> ok end), [P1 | _] = erlang:ports(), P2 = lists:last(erlang:ports()),
//   R1 = make_ref(), R2 = make_ref(),
//   L = [self(), Dead, self(), Other, P1, P2, P1, OtherPort, R1, R2, R1, OtherRef]
// (NEW_PID_EXT, NEW_PORT_EXT, V4_PORT_EXT and NEWER_REFERENCE_EXT, on nonode@nohost and a@h).
TEST(Conv, PidsPortsAndReferencesFromErlangKeepErlangsOrder) {
  const Bytes from_erlang = {
      131, 108, 0, 0, 0, 12, 88, 100, 0, 13, 110, 111, 110, 111, 100, 101, 64, 110, 111, 104, 111, 115, 116, 0,
      0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 88, 100, 0, 13, 110, 111, 110, 111, 100, 101, 64, 110, 111,
      104, 111, 115, 116, 0, 0, 0, 79, 0, 0, 0, 0, 0, 0, 0, 0, 88, 100, 0, 13, 110, 111, 110, 111,
      100, 101, 64, 110, 111, 104, 111, 115, 116, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 88, 100, 0,
      3, 97, 64, 104, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 89, 100, 0, 13, 110, 111, 110, 111,
      100, 101, 64, 110, 111, 104, 111, 115, 116, 0, 0, 0, 0, 0, 0, 0, 0, 89, 100, 0, 13, 110, 111, 110,
      111, 100, 101, 64, 110, 111, 104, 111, 115, 116, 0, 0, 0, 4, 0, 0, 0, 0, 89, 100, 0, 13, 110, 111,
      110, 111, 100, 101, 64, 110, 111, 104, 111, 115, 116, 0, 0, 0, 0, 0, 0, 0, 0, 120, 100, 0, 3, 97,
      64, 104, 255, 255, 255, 255, 255, 255, 255, 255, 0, 0, 0, 4, 90, 0, 3, 100, 0, 13, 110, 111, 110, 111,
      100, 101, 64, 110, 111, 104, 111, 115, 116, 0, 0, 0, 0, 0, 1, 233, 237, 242, 68, 0, 1, 123, 32, 160,
      168, 90, 0, 3, 100, 0, 13, 110, 111, 110, 111, 100, 101, 64, 110, 111, 104, 111, 115, 116, 0, 0, 0, 0,
      0, 1, 233, 238, 242, 68, 0, 1, 123, 32, 160, 168, 90, 0, 3, 100, 0, 13, 110, 111, 110, 111, 100, 101,
      64, 110, 111, 104, 111, 115, 116, 0, 0, 0, 0, 0, 1, 233, 237, 242, 68, 0, 1, 123, 32, 160, 168, 90,
      0, 3, 100, 0, 3, 97, 64, 104, 0, 0, 0, 3, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3,
      106,
  };
  conv::DecodeToOcaml decoded = conv::etf_to_ocaml(from_erlang);
  ASSERT_FALSE(decoded.error) << decoded.error->message();
  // One row per element: '<', '=' or '>' against each element of its kind, '.' otherwise.
  EXPECT_EQ(ocaml_string(call_ocaml("test.identifier_relations", decoded.value.get())),
            "=<=<........ >=><........ =<=<........ >>>=........ ....=<=>.... ....>=>>.... ....=<=>.... ....<<<=.... ........=<=> ........>=>> ........=<=> ........<<<=");
  EXPECT_EQ(through_ocaml(from_erlang), from_erlang);
}

// ---- Maps of more than 32 keys: OTP's order, computed on the OCaml values ----

// Keys of every kind that can be a map key, nested up to `depth`: etf::encode orders the
// map from etf::Terms (and is byte-identical to term_to_binary: etf's map_order_test), the
// OCaml walk from the Erl.Term.t; both must write the same bytes. Pids, ports, references
// and funs are ordered by the stand-in hash (etf/map_order.hpp), which both share too.
class KeyMaker {
 public:
  explicit KeyMaker(std::uint64_t seed) : rng_(seed) {}

  etf::Term key(int depth) {
    const int kinds = depth > 0 ? 20 : 15;
    switch (below(kinds)) {
      case 0: return etf::Term::integer(below(512) - 256);
      case 1: return etf::Term::integer(static_cast<std::int64_t>(rng_()));  // many are Bigint in OCaml
      case 2: {  // the boundaries of OCaml's int, erts's small integer and int64
        const std::int64_t edges[] = {(std::int64_t{1} << 62) - 1, std::int64_t{1} << 62, -(std::int64_t{1} << 62),
                                      -(std::int64_t{1} << 62) - 1, (std::int64_t{1} << 59) - 1, std::int64_t{1} << 59,
                                      INT64_MAX, INT64_MIN};
        // Just below an edge (INT64_MIN wraps round to INT64_MAX, another edge).
        const std::uint64_t edge = static_cast<std::uint64_t>(edges[below(8)]);
        return etf::Term::integer(static_cast<std::int64_t>(edge - static_cast<std::uint64_t>(below(3))));
      }
      case 3: {
        std::vector<std::uint8_t> magnitude(9 + below(30));
        for (auto& b : magnitude) b = static_cast<std::uint8_t>(rng_());
        magnitude.back() |= 1;  // no high zero byte
        return etf::Term::big_integer(below(2) == 0, std::move(magnitude));
      }
      case 4: {
        const double floats[] = {0.0, -1.5, 1.0e300, 5.0e-324, 2.2250738585072014e-308, 0.1};
        return etf::Term::float64(floats[below(6)] * static_cast<double>(1 + below(1000)));
      }
      case 5: return etf::Term::binary(bytes(below(30)));
      case 6: {
        const int edges[] = {0, 11, 12, 13, 23, 24, 25};  // block_hash's 12-byte rounds
        return etf::Term::binary(bytes(edges[below(7)]));
      }
      case 7: {
        std::string b = bytes(1 + below(20));
        const auto bits = static_cast<std::uint8_t>(1 + below(7));
        b.back() = static_cast<char>(static_cast<std::uint8_t>(b.back()) & (0xFF << (8 - bits)));
        return etf::Term::bitstring({b.begin(), b.end()}, bits);
      }
      case 8: return etf::Term::nil();
      case 9: return etf::Term::string(bytes(1 + below(12)));  // packed four to a word
      case 10: return etf::Term::atom("k" + std::to_string(below(100000)));
      case 11: return etf::Term::pid({"n@h", static_cast<std::uint32_t>(rng_()), static_cast<std::uint32_t>(below(8)), 3});
      case 12: return etf::Term::port({"n@h", rng_() >> below(64), static_cast<std::uint32_t>(below(4))});
      case 13: {
        std::vector<std::uint32_t> ids(1 + below(5));
        for (auto& w : ids) w = static_cast<std::uint32_t>(rng_());
        return etf::Term::reference({"other@host", 2, std::move(ids)});
      }
      case 14:
        return below(2) == 0 ? etf::Term::export_fun("lists", "map", 2)
                             : etf::Term::export_fun("m" + std::to_string(below(50)), "f", static_cast<std::uint8_t>(below(4)));
      case 15: {  // a list: bytes and other terms, proper or not
        std::vector<etf::Term> items;
        for (int n = 1 + below(5); n > 0; --n)
          items.push_back(below(2) == 0 ? etf::Term::integer(below(300)) : key(depth - 1));
        return etf::Term::list(std::move(items), below(3) == 0 ? key(0) : etf::Term::nil());
      }
      case 16: {
        std::vector<etf::Term> elements;
        for (int n = below(5); n > 0; --n) elements.push_back(key(depth - 1));
        return etf::Term::tuple(std::move(elements));
      }
      case 17: return map_of(below(6), depth - 1);
      case 18: return map_of(33 + below(10), depth - 1);  // a large map inside a key
      default: {
        etf::Fun fun;
        fun.arity = static_cast<std::uint8_t>(below(3));
        fun.index = static_cast<std::uint32_t>(below(20));
        fun.module = "m";
        fun.old_uniq = below(1 << 30);
        fun.pid = {"n@h", 1, 0, 1};
        for (int n = below(3); n > 0; --n) fun.free_vars.push_back(key(depth - 1));
        return etf::Term::fun(std::move(fun));
      }
    }
  }

  // A map of `n` distinct keys of at most `depth` levels.
  etf::Term map_of(std::size_t n, int depth) {
    std::set<etf::Term> keys;
    while (keys.size() < n) keys.insert(key(depth));
    std::vector<std::pair<etf::Term, etf::Term>> entries;
    for (const etf::Term& k : keys) entries.emplace_back(k, etf::Term::integer(below(1000)));
    return etf::Term::map(std::move(entries));
  }

 private:
  int below(int n) { return static_cast<int>(rng_() % static_cast<std::uint64_t>(n)); }
  std::string bytes(int n) {
    std::string b(static_cast<std::size_t>(n), '\0');
    for (char& c : b) c = static_cast<char>(rng_());
    return b;
  }
  std::mt19937_64 rng_;
};

TEST(ConvLargeMaps, AreWrittenInTheOrderEtfWritesThem) {
  KeyMaker make(2026);
  for (std::size_t n : {std::size_t{33}, std::size_t{34}, std::size_t{100}, std::size_t{1000}}) {
    for (int depth = 0; depth <= 3; ++depth) {
      const etf::Term map = make.map_of(n, depth);
      const Bytes bytes = etf::encode(map);
      EXPECT_EQ(through_ocaml(bytes), bytes) << n << " keys of depth " << depth << ": " << map.to_string().substr(0, 300);
    }
  }
}

// 100,000 integer and binary keys: the ordering on the OCaml heap at the size of a large
// reply.
TEST(ConvLargeMaps, HundredThousandKeys) {
  std::vector<std::pair<etf::Term, etf::Term>> entries;
  for (std::int64_t i = 0; i < 100'000; ++i)
    entries.emplace_back(i % 2 == 0 ? etf::Term::integer(i * 7919) : etf::Term::binary(std::to_string(i)),
                         etf::Term::integer(i));
  const Bytes bytes = etf::encode(etf::Term::map(std::move(entries)));
  EXPECT_EQ(through_ocaml(bytes), bytes);
}

// Keys nested far deeper than a C++ stack allows, and large maps as keys of large maps as
// keys: hashed with explicit stacks, the inner maps ordered first.
TEST(ConvLargeMaps, DeepKeysAndLargeMapsNestedInKeys) {
  etf::Term deep = etf::Term::integer(7);
  for (int k = 0; k < 100'000; ++k) {
    std::vector<etf::Term> one;
    one.push_back(std::move(deep));
    deep = k % 2 ? etf::Term::tuple(std::move(one)) : etf::Term::list(std::move(one));
  }
  etf::Term nested = etf::Term::nil();
  for (int level = 0; level < 20; ++level) {
    std::vector<std::pair<etf::Term, etf::Term>> entries;
    entries.emplace_back(etf::Term::tuple({nested}), etf::Term::nil());
    for (std::int64_t i = 0; i < 40; ++i) entries.emplace_back(etf::Term::integer(i), etf::Term::integer(level));
    nested = etf::Term::map(std::move(entries));
  }
  std::vector<std::pair<etf::Term, etf::Term>> entries;
  entries.emplace_back(std::move(deep), etf::Term::atom("deep"));
  entries.emplace_back(std::move(nested), etf::Term::atom("nested"));
  for (std::int64_t i = 0; i < 40; ++i) entries.emplace_back(etf::Term::integer(i), etf::Term::nil());
  const Bytes bytes = etf::encode(etf::Term::map(std::move(entries)));
  EXPECT_EQ(through_ocaml(bytes), bytes);
}

// A map of 33 keys, 31 integers and two references of another node with these id words
// (least significant first), each wrapped as `wrap` says, written as ETF with no ordering
// (Writer takes entries as given), since etf::encode would refuse the maps OTP cannot read.
enum class Wrap { none, tuple, list };
Bytes map_with_two_references(std::vector<std::uint32_t> first, std::vector<std::uint32_t> second, Wrap wrap) {
  etf::ByteBuffer out;
  etf::Writer w(out);
  w.version();
  w.begin_map(33);
  for (const auto* ids : {&first, &second}) {
    if (wrap == Wrap::tuple) w.begin_tuple(1);
    if (wrap == Wrap::list) w.begin_list(1);
    w.reference(etf::ReferenceView{"other@host", 1, *ids});
    if (wrap == Wrap::tuple) w.end_tuple();
    if (wrap == Wrap::list) {
      w.nil();
      w.end_list();
    }
    w.atom(ids == &first ? "a" : "b");
  }
  for (std::int64_t i = 1; i <= 31; ++i) {
    w.integer(i);
    w.integer(i);
  }
  w.end_map();
  return out.to_vector();
}

// OTP 25 hashes the first three words of a reference only; a map of more than 32 keys that
// holds two differing only after them crashes its binary_to_term (etf's map_order_test).
// The OCaml walk refuses it as etf::encode does: the same error, from the same code.
TEST(ConvLargeMaps, RefuseMapsOfReferencesOtpCannotTellApart) {
  for (Wrap wrap : {Wrap::none, Wrap::tuple, Wrap::list}) {
    const Bytes refused = map_with_two_references({2, 0, 0, 1}, {2, 0, 0, 2}, wrap);
    conv::DecodeToOcaml decoded = conv::etf_to_ocaml(refused);
    ASSERT_FALSE(decoded.error) << decoded.error->message();
    std::string ours, etfs;
    try {
      etf::ByteBuffer out;
      conv::ocaml_to_etf(decoded.value.get(), out);
    } catch (const etf::EncodeError& e) {
      ours = e.what();
    }
    try {
      (void)etf::encode(etf::decode_term(refused));
    } catch (const etf::EncodeError& e) {
      etfs = e.what();
    }
    EXPECT_NE(ours, "") << "not refused, wrap " << static_cast<int>(wrap);
    EXPECT_EQ(ours, etfs);

    // A difference within the first three words is one OTP sees.
    const Bytes fine = map_with_two_references({2, 0, 1, 7}, {2, 0, 2, 7}, wrap);
    EXPECT_EQ(through_ocaml(fine), etf::encode(etf::decode_term(fine)));
  }
}

int main(int argc, char** argv) {
  caml_startup(argv);
  testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}

// Binaries up to Max_young_wosize words stay OCaml strings; longer ones live off the heap
// (Erl.Binary). Either way the bytes read back unchanged, and OCaml compares them by value
// against a heap string. Both sides agree on the limit.
TEST(Conv, BinariesLeaveTheHeapPastHeapMax) {
  constexpr std::size_t limit = conv::layout::heap_binary_max;
  for (std::size_t size : {std::size_t{0}, std::size_t{1}, limit - 1, limit, limit + 1, 3 * limit, std::size_t{1} << 20}) {
    std::string bytes(size, '\0');
    for (std::size_t i = 0; i < size; ++i) bytes[i] = static_cast<char>(i * 7 % 251);
    const Bytes encoded = etf::encode(etf::Term::binary(bytes));
    EXPECT_EQ(through_ocaml(encoded), encoded) << size;

    conv::DecodeToOcaml decoded = conv::etf_to_ocaml(encoded);
    ASSERT_FALSE(decoded.error);
    const value info = call_ocaml("test.binary_info", decoded.value.get());
    EXPECT_EQ(Bool_val(Field(info, 0)), size > limit) << size;
    EXPECT_EQ(static_cast<std::size_t>(Long_val(Field(info, 1))), limit);
    EXPECT_TRUE(Bool_val(Field(info, 2))) << size;
    EXPECT_TRUE(Bool_val(Field(info, 3))) << size << ": not the Bigarray OCaml makes of these bytes";
  }
}
