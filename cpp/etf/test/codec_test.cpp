// Encoder and decoder on known bytes (taken from OTP 25's term_to_binary), and the
// streaming paths that later layers use.
#include <camlbeam/etf/etf.hpp>

#include <gtest/gtest.h>

#include <optional>

namespace etf = camlbeam::etf;
using etf::Term;
using Bytes = std::vector<std::uint8_t>;

namespace {

// Bytes printed by `erl -eval 'io:format("~w", [term_to_binary(T)])'` for each term.
struct Known {
  const char* text;
  Bytes minor1;
  Bytes minor2;  // empty: same as minor1
};

const std::vector<Known>& known_encodings() {
  static const std::vector<Known> table = {
      {"42", {131, 97, 42}, {}},
      {"-1", {131, 98, 255, 255, 255, 255}, {}},
      {"-2147483648", {131, 98, 128, 0, 0, 0}, {}},
      {"18446744073709551616", {131, 110, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, {}},
      {"-0.0", {131, 70, 128, 0, 0, 0, 0, 0, 0, 0}, {}},
      {"a", {131, 100, 0, 1, 97}, {131, 119, 1, 97}},
      {"'\xC3\x88'", {131, 100, 0, 1, 200}, {131, 119, 2, 195, 136}},  // 'È', Latin-1
      {"'\xCE\xB1'", {131, 119, 2, 206, 177}, {}},                    // 'α', not Latin-1
      {"[1,2|3]", {131, 108, 0, 0, 0, 2, 97, 1, 97, 2, 97, 3}, {}},
      {"[1,2,3,256]", {131, 108, 0, 0, 0, 4, 97, 1, 97, 2, 97, 3, 98, 0, 0, 1, 0, 106}, {}},
      {"\"ab\"", {131, 107, 0, 2, 97, 98}, {}},
      {"<<1:3>>", {131, 77, 0, 0, 0, 1, 3, 32}, {}},
      {"fun lists:map/2",
       {131, 113, 100, 0, 5, 108, 105, 115, 116, 115, 100, 0, 3, 109, 97, 112, 97, 2},
       {131, 113, 119, 5, 108, 105, 115, 116, 115, 119, 3, 109, 97, 112, 97, 2}},
      {"#{2 => b,0.5 => c,a => 1,{} => y,[] => x,<<>> => z}",
       {131, 116, 0, 0, 0, 6, 97, 2, 100, 0, 1, 98, 70, 63, 224, 0, 0, 0, 0, 0, 0, 100, 0, 1, 99,
        100, 0, 1, 97, 97, 1, 104, 0, 100, 0, 1, 121, 106, 100, 0, 1, 120, 109, 0, 0, 0, 0, 100, 0, 1, 122},
       {131, 116, 0, 0, 0, 6, 97, 2, 119, 1, 98, 70, 63, 224, 0, 0, 0, 0, 0, 0, 119, 1, 99, 119, 1, 97,
        97, 1, 104, 0, 119, 1, 121, 106, 119, 1, 120, 109, 0, 0, 0, 0, 119, 1, 122}},
  };
  return table;
}

Bytes encode_text(std::string_view text, int minor_version) {
  return etf::encode(etf::parse_term(text), etf::EncodeOptions{minor_version, 0});
}

// Re-encodes through the streaming path: decoder → Writer, no tree.
Bytes transcode(const Bytes& in, int minor_version = 1) {
  etf::ByteBuffer out;
  etf::Writer writer(out, minor_version);
  writer.version();
  const auto result = etf::decode(in, writer);
  EXPECT_TRUE(result) << result.error->message();
  return out.to_vector();
}

}  // namespace

TEST(Codec, EncodesLikeTermToBinary) {
  for (const Known& k : known_encodings()) {
    EXPECT_EQ(encode_text(k.text, 1), k.minor1) << k.text;
    EXPECT_EQ(encode_text(k.text, 2), k.minor2.empty() ? k.minor1 : k.minor2) << k.text;
  }
}

TEST(Codec, DecodesWhatTermToBinaryWrote) {
  for (const Known& k : known_encodings()) {
    EXPECT_EQ(etf::decode_term(k.minor1), etf::parse_term(k.text)) << k.text;
    if (!k.minor2.empty()) {
      EXPECT_EQ(etf::decode_term(k.minor2), etf::parse_term(k.text)) << k.text;
    }
    EXPECT_EQ(transcode(k.minor1), k.minor1) << k.text;
  }
}

TEST(Codec, OldFormsDecodeAndReencodeInTheCurrentForm) {
  // FLOAT_EXT "1.0", PID_EXT with a one-byte creation, SMALL_ATOM_EXT, NEW_REFERENCE.
  Bytes old_float = {131, 99};
  const std::string digits = "1.00000000000000000000e+00";
  old_float.insert(old_float.end(), digits.begin(), digits.end());
  old_float.resize(2 + 31, 0);
  EXPECT_EQ(etf::decode_term(old_float), Term::float64(1.0));
  EXPECT_EQ(etf::decode_term(Bytes{131, 103, 115, 1, 110, 0, 0, 0, 7, 0, 0, 0, 1, 2}),
            Term::pid({"n", 7, 1, 2}));
  EXPECT_EQ(etf::decode_term(Bytes{131, 115, 2, 0xE9, 0x74}), Term::atom("\xC3\xA9t"));
  EXPECT_EQ(etf::decode_term(Bytes{131, 114, 0, 1, 100, 0, 1, 110, 3, 0, 0, 0, 9}),
            Term::reference({"n", 3, {9}}));
}

TEST(Codec, NestedListTailsBecomeOneList) {
  // LIST_EXT [1 | LIST_EXT [2 | STRING_EXT "ab"]] is the proper list [1,2,97,98].
  const Bytes chained = {131, 108, 0, 0, 0, 1, 97, 1, 108, 0, 0, 0, 1, 97, 2, 107, 0, 2, 97, 98};
  const Term t = etf::decode_term(chained);
  EXPECT_EQ(t, Term::list({Term::integer(1), Term::integer(2), Term::integer(97), Term::integer(98)}));
  EXPECT_EQ(etf::encode(t), (Bytes{131, 107, 0, 4, 1, 2, 97, 98}));
}

TEST(Codec, CompressesOnlyWhenItPays) {
  const Term small = etf::parse_term("<<\"abc\">>");
  EXPECT_EQ(etf::encode(small, {1, 9}), etf::encode(small));
  const Term repetitive = Term::list(std::vector<Term>(1000, Term::integer(7)));
  const Bytes compressed = etf::encode(repetitive, {1, 6});
  ASSERT_EQ(compressed[1], etf::tag::compressed);
  // From term_to_binary(lists:duplicate(1000, 7), [compressed]): 25 bytes, this header.
  EXPECT_EQ(compressed.size(), 25u);
  EXPECT_EQ(Bytes(compressed.begin(), compressed.begin() + 8), (Bytes{131, 80, 0, 0, 3, 235, 120, 156}));
  EXPECT_EQ(etf::decode_term(compressed), repetitive);
}

TEST(Codec, FunsRoundTripByteForByte) {
  // erl: term_to_binary(fun(X) -> X end) in the shell (a local fun of erl_eval).
  const Bytes fun = {131, 112, 0, 0, 0, 160, 1, 6, 83, 97, 170, 70, 21, 144, 209, 189, 241, 235, 98, 209,
                     166, 235, 8, 0, 0, 0, 42, 0, 0, 0, 1, 100, 0, 8, 101, 114, 108, 95, 101, 118, 97, 108,
                     97, 42, 98, 0, 50, 155, 13, 88, 100, 0, 13, 110, 111, 110, 111, 100, 101, 64, 110, 111,
                     104, 111, 115, 116, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 104, 6, 97, 17, 106, 100, 0, 4,
                     110, 111, 110, 101, 100, 0, 4, 110, 111, 110, 101, 116, 0, 0, 0, 0, 108, 0, 0, 0, 1, 104,
                     5, 100, 0, 6, 99, 108, 97, 117, 115, 101, 97, 17, 108, 0, 0, 0, 1, 104, 3, 100, 0, 3, 118,
                     97, 114, 97, 17, 100, 0, 1, 88, 106, 106, 108, 0, 0, 0, 1, 104, 3, 100, 0, 3, 118, 97,
                     114, 97, 17, 100, 0, 1, 88, 106, 106};
  const Term t = etf::decode_term(fun);
  ASSERT_EQ(t.kind(), etf::Kind::fun);
  EXPECT_EQ((*t.get_if<etf::Boxed<etf::Fun>>())->module, "erl_eval");
  EXPECT_EQ(etf::encode(t), fun);
  EXPECT_EQ(transcode(fun), fun);
}

TEST(Codec, ErrorsCarryCodeOffsetAndTag) {
  etf::TermBuilder builder;
  const Bytes bad = {131, 104, 2, 97, 1, 70, 0x7F, 0xF0, 0, 0, 0, 0, 0, 0};  // {1, +inf}
  const auto result = etf::decode(bad, builder);
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error->code, etf::Errc::bad_float);
  EXPECT_EQ(result.error->offset, 6u);
  EXPECT_EQ(result.error->tag, etf::tag::new_float);
  EXPECT_EQ(result.error->message(), "bad_float at byte 6 (tag 70): float is NaN, infinite or unreadable");
  try {
    etf::decode_term(bad);
    FAIL() << "decode_term accepted infinity";
  } catch (const etf::DecodeException& e) {
    EXPECT_EQ(e.error(), *result.error);
  }
}

TEST(Codec, TrailingBytesAreRefusedUnlessAllowed) {
  const Bytes two = {131, 97, 1, 97, 2};
  etf::TermBuilder builder;
  const auto strict = etf::decode(two, builder);
  ASSERT_FALSE(strict);
  EXPECT_EQ(strict.error->code, etf::Errc::trailing_bytes);
  etf::DecodeOptions lenient;
  lenient.allow_trailing_bytes = true;
  const auto result = etf::decode(two, builder, lenient);
  ASSERT_TRUE(result);
  EXPECT_EQ(result.end, 3u);
}

TEST(Codec, WriterStringFallsBackToListBeyond65535) {
  etf::ByteBuffer out;
  etf::Writer writer(out);
  const Bytes bytes(70000, 1);
  writer.string(bytes);
  EXPECT_EQ(out.data()[0], etf::tag::list);
  EXPECT_EQ(out.size(), 5 + 2 * bytes.size() + 1);
}

// The decoder keeps a deep term's stack storage for the next decode on the same thread (a
// spare, up to 2^14 frames): deep and shallow terms in turn, some deeper than the spare
// keeps, each read exactly, through the streaming re-encoder and through the Term builder.
TEST(Codec, DeepTermsOneAfterAnother) {
  auto nested = [](std::size_t depth) {
    Bytes bytes{131};
    for (std::size_t i = 0; i < depth; ++i) bytes.insert(bytes.end(), {104, 2, 97, static_cast<std::uint8_t>(i)});
    bytes.push_back(106);  // [] innermost
    return bytes;
  };
  for (std::size_t depth : {5'000u, 40'000u, 3u, 40'000u, 20'000u, 70'000u, 100u, 9'000u}) {
    const Bytes input = nested(depth);
    etf::ByteBuffer out;
    etf::Writer writer(out);
    writer.version();
    const etf::DecodeResult streamed = etf::decode(input, writer);
    ASSERT_TRUE(streamed) << depth << ": " << streamed.error->message();
    EXPECT_EQ(out.to_vector(), input) << depth;
    EXPECT_EQ(etf::encode(etf::decode_term(input)), input) << depth;
  }
}

// SMALL_BIG magnitudes of 0 to 10 bytes, with and without high zero bytes, either sign,
// alone (the magnitude ends the input, so fewer than 8 bytes may follow its start) and
// followed by another term: the 64-bit fast read and its byte-wise fallback agree with
// the value the digits spell.
TEST(Codec, SmallBigMagnitudesOfEveryLength) {
  auto decimal = [](bool negative, unsigned __int128 v) {
    std::string digits;
    do {
      digits.insert(digits.begin(), static_cast<char>('0' + static_cast<int>(v % 10)));
      v /= 10;
    } while (v != 0);
    return (negative && digits != "0" ? "-" : "") + digits;
  };
  for (std::size_t value_bytes = 0; value_bytes <= 10; ++value_bytes) {
    for (std::size_t high_zeros : {0u, 1u, 3u}) {
      for (bool negative : {false, true}) {
        Bytes magnitude;
        unsigned __int128 value = 0;
        for (std::size_t i = 0; i < value_bytes; ++i) {
          const auto digit = static_cast<std::uint8_t>(0x81 + 13 * i);
          magnitude.push_back(digit);
          value |= static_cast<unsigned __int128>(digit) << (8 * i);
        }
        magnitude.insert(magnitude.end(), high_zeros, 0);
        Bytes big{110, static_cast<std::uint8_t>(magnitude.size()), negative ? std::uint8_t{1} : std::uint8_t{0}};
        big.insert(big.end(), magnitude.begin(), magnitude.end());
        const std::string text = decimal(negative, value);
        SCOPED_TRACE(text + " with " + std::to_string(high_zeros) + " high zero bytes");

        Bytes alone{131};
        alone.insert(alone.end(), big.begin(), big.end());
        EXPECT_EQ(etf::decode_term(alone), etf::parse_term(text));

        Bytes in_tuple{131, 104, 2};
        in_tuple.insert(in_tuple.end(), big.begin(), big.end());
        in_tuple.insert(in_tuple.end(), {119, 1, 97});
        EXPECT_EQ(etf::decode_term(in_tuple), etf::parse_term("{" + text + ",a}"));
      }
    }
  }
}

// OTP 27 holds 0.0 and -0.0 apart as map keys, OTP 25 refuses a map with both. A builder
// told that zero signs count (the distribution's, whose peers may be OTP 27) keeps both
// keys; a key that really is there twice is refused either way.
TEST(Decode, MapKeysThatDifferOnlyInAZerosSignAreTwoKeysWhenAsked) {
  const auto map2 = [](Bytes k1, Bytes k2) {
    Bytes b{131, 116, 0, 0, 0, 2};
    b.insert(b.end(), k1.begin(), k1.end());
    b.insert(b.end(), {97, 1});
    b.insert(b.end(), k2.begin(), k2.end());
    b.insert(b.end(), {97, 2});
    return b;
  };
  const Bytes zero{70, 0, 0, 0, 0, 0, 0, 0, 0};
  const Bytes minus_zero{70, 128, 0, 0, 0, 0, 0, 0, 0};
  const auto tuple_of = [](const Bytes& f) {
    Bytes t{104, 2, 97, 7};
    t.insert(t.end(), f.begin(), f.end());
    return t;
  };
  const auto decode_with = [](const Bytes& in, bool apart) {
    etf::TermBuilder builder({.zero_signs_apart = apart});
    const etf::DecodeResult r = etf::decode(in, builder);
    return r ? std::optional<Term>(builder.take()) : std::nullopt;
  };
  for (const Bytes& in : {map2(zero, minus_zero), map2(tuple_of(minus_zero), tuple_of(zero))}) {
    EXPECT_FALSE(decode_with(in, false));  // OTP 25's reading
    const auto kept = decode_with(in, true);
    ASSERT_TRUE(kept);
    EXPECT_EQ(kept->children().size(), 4u);  // two keys, each with its value
  }
  EXPECT_FALSE(decode_with(map2(minus_zero, minus_zero), true));
  // Three keys equal up to signs, two of them the same: still refused.
  Bytes three{131, 116, 0, 0, 0, 3};
  for (const Bytes* k : {&zero, &minus_zero, &zero}) {
    three.insert(three.end(), k->begin(), k->end());
    three.insert(three.end(), {97, 1});
  }
  EXPECT_FALSE(decode_with(three, true));
}
