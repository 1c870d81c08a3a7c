// The distribution atom cache: parse_dist_header() and ATOM_CACHE_REF in the decoder.
//
// The OTP bytes are the example of erl_ext_dist, section "Distribution Header for
// fragmented messages" (OTP's erts/doc/src/erl_ext_dist.xml, erl_ext_dist.md since OTP 27):
// `{call, <0.245.2>, {set_get_state, <<0:1024>>}}` sent to the registered name `reg` in two
// fragments of 128 bytes. The other headers are built byte by byte from the section "Normal
// Distribution Header" of the same page.
#include "erlang_oracle.hpp"

#include <camlbeam/etf/etf.hpp>

#include <gtest/gtest.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace etf = camlbeam::etf;
using etf::Errc;
using Bytes = std::vector<std::uint8_t>;

namespace {

Bytes operator+(Bytes a, const Bytes& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}
Bytes zeros(std::size_t n) { return Bytes(n, 0); }

// Cache entries the example's receiver already holds: its two CachedAtomRefs are (segment 4,
// internal index 10) and (segment 0, internal index 5). The doc calls them the node names;
// the control message uses the first as a pid's node and the second as REG_SEND's unused
// atom, which OTP writes as ''.
constexpr std::size_t sender_node_entry = 4 * 256 + 10;
constexpr std::size_t unused_atom_entry = 5;

const Bytes otp_first_fragment_header = {
    131, 69,                  // start of a fragmented message
    0, 0, 2, 168, 0, 0, 5, 83,  // sequence id
    0, 0, 0, 0, 0, 0, 0, 2,   // fragment id: 2 fragments
    5, 4, 137, 9,             // 5 references and their flags (LongAtoms clear)
    10, 5,                    // two cached entries
    236, 3, 'r', 'e', 'g',    // new entries: 'reg', 'call', 'set_get_state'
    9, 4, 'c', 'a', 'l', 'l',
    238, 13, 's', 'e', 't', '_', 'g', 'e', 't', '_', 's', 't', 'a', 't', 'e'};
const Bytes otp_control_message = {104, 4, 97, 6, 103, 82, 0, 0, 0, 0, 85, 0, 0, 0, 0, 2, 82, 1, 82, 2};
const Bytes otp_message_start = Bytes{104, 3, 82, 3, 103, 82, 0, 0, 0, 0, 245, 0, 0, 0, 2, 2,
                                      104, 2, 82, 4, 109, 0, 0, 0, 128} + zeros(103);
const Bytes otp_continuation_header = {131, 70, 0, 0, 2, 168, 0, 0, 5, 83, 0, 0, 0, 0, 0, 0, 0, 1};
const Bytes otp_message_rest = zeros(25);

etf::AtomCache cache_of_the_example() {
  etf::AtomCache cache;
  cache.store(sender_node_entry, "sender@host");
  cache.store(unused_atom_entry, "");
  return cache;
}

std::vector<std::string> listed(const etf::AtomCacheRefs& refs) {
  std::vector<std::string> atoms;
  for (std::size_t i = 0; i < refs.size(); ++i) atoms.emplace_back(refs[i]);
  return atoms;
}

// Decodes a term body with the header's references, as text.
std::string body_text(const Bytes& body, const etf::AtomCacheRefs& refs) {
  etf::TermBuilder builder;
  const etf::DecodeResult r = etf::decode_body(body, builder, etf::DecodeOptions{.atom_cache_refs = &refs});
  if (!r) return r.error->message();
  EXPECT_EQ(r.end, body.size());
  return builder.take().to_string();
}

etf::DecodeError failure(const etf::DistHeaderResult& r) {
  EXPECT_FALSE(r);
  return r.error.value_or(etf::DecodeError{});
}

}  // namespace

TEST(DistHeader, ReadsOtpsFragmentedExample) {
  etf::AtomCache cache = cache_of_the_example();
  etf::AtomCacheRefs refs;
  const Bytes frame = otp_first_fragment_header + otp_control_message + otp_message_start;
  const etf::DistHeaderResult first = etf::parse_dist_header(frame, etf::AtomTextEncoding::utf8, cache, refs);
  ASSERT_TRUE(first) << first.error->message();
  EXPECT_EQ(first.end, otp_first_fragment_header.size());
  EXPECT_EQ(first.header.kind, etf::DistHeader::Kind::fragment_start);
  EXPECT_EQ(first.header.sequence_id, 0x000002A800000553u);
  EXPECT_EQ(first.header.fragment_id, 2u);
  EXPECT_EQ(listed(refs), (std::vector<std::string>{"sender@host", "", "reg", "call", "set_get_state"}));

  // The new entries stay for the headers that follow.
  EXPECT_EQ(cache.find(1 * 256 + 236), "reg");
  EXPECT_EQ(cache.find(0 * 256 + 9), "call");
  EXPECT_EQ(cache.find(1 * 256 + 238), "set_get_state");
  EXPECT_EQ(cache.find(sender_node_entry), "sender@host");
  EXPECT_EQ(cache.find(7), std::nullopt);

  EXPECT_EQ(body_text(otp_control_message, refs), "{6,#Pid<sender@host.85.0.2>,'',reg}");

  // The second fragment has no atom cache section and leaves the references alone.
  const etf::DistHeaderResult second =
      etf::parse_dist_header(otp_continuation_header + otp_message_rest, etf::AtomTextEncoding::utf8, cache, refs);
  ASSERT_TRUE(second) << second.error->message();
  EXPECT_EQ(second.end, otp_continuation_header.size());
  EXPECT_EQ(second.header.kind, etf::DistHeader::Kind::fragment_continuation);
  EXPECT_EQ(second.header.sequence_id, first.header.sequence_id);
  EXPECT_EQ(second.header.fragment_id, 1u);
  EXPECT_EQ(refs.size(), 5u);

  const std::string message = body_text(otp_message_start + otp_message_rest, refs);
  EXPECT_EQ(message, "{call,#Pid<sender@host.245.2.2>,{set_get_state,<<" + [] {
              std::string zero_bytes;
              for (int i = 0; i < 128; ++i) zero_bytes += i == 0 ? "0" : ",0";
              return zero_bytes;
            }() + ">>}}");
}

TEST(DistHeader, LongAtomsLatin1AndAnEvenCount) {
  // Two new references (an even count: the LongAtoms half byte is the low half of the byte
  // after their flags), 2-byte lengths, a Latin-1 connection.
  const Bytes frame = {131, 68, 2,
                       0x98,        // ref 0: new, segment 0; ref 1: new, segment 1
                       0x01,        // LongAtoms
                       7, 0, 4, 'c', 'a', 'f', 0xE9,  // 'café' in Latin-1 at entry 7
                       7, 0, 2, 'o', 'k'};            // 'ok' at entry 256 + 7
  etf::AtomCache cache;
  etf::AtomCacheRefs refs;
  const etf::DistHeaderResult r = etf::parse_dist_header(frame, etf::AtomTextEncoding::latin1, cache, refs);
  ASSERT_TRUE(r) << r.error->message();
  EXPECT_EQ(r.end, frame.size());
  EXPECT_EQ(r.header.kind, etf::DistHeader::Kind::normal);
  EXPECT_EQ(listed(refs), (std::vector<std::string>{"caf\xC3\xA9", "ok"}));
  EXPECT_EQ(cache.find(7), "caf\xC3\xA9");
  EXPECT_EQ(cache.find(256 + 7), "ok");
}

TEST(DistHeader, NoReferences) {
  etf::AtomCache cache;
  etf::AtomCacheRefs refs;
  refs.push_back("from_an_earlier_message");
  const Bytes frame = {131, 68, 0, 104, 0};
  const etf::DistHeaderResult r = etf::parse_dist_header(frame, etf::AtomTextEncoding::utf8, cache, refs);
  ASSERT_TRUE(r) << r.error->message();
  EXPECT_EQ(r.end, 3u);
  EXPECT_EQ(refs.size(), 0u);
}

TEST(DistHeader, AnEntryWrittenTwiceInOneHeaderIsReadInOrder) {
  // OTP applies a header's references one after the other: a CachedAtomRef sees the latest
  // NewAtomCacheRef before it, in this header or an earlier one.
  etf::AtomCache cache;
  cache.store(3, "before");
  const Bytes frame = {131, 68, 5,
                       0x80,  // ref 0: cached; ref 1: new
                       0x80,  // ref 2: cached; ref 3: new
                       0x00,  // ref 4: cached; LongAtoms clear
                       3, 3, 1, 'a', 3, 3, 1, 'b', 3};
  etf::AtomCacheRefs refs;
  const etf::DistHeaderResult r = etf::parse_dist_header(frame, etf::AtomTextEncoding::utf8, cache, refs);
  ASSERT_TRUE(r) << r.error->message();
  EXPECT_EQ(listed(refs), (std::vector<std::string>{"before", "a", "a", "b", "b"}));
  EXPECT_EQ(cache.find(3), "b");
}

TEST(DistHeader, ABadHeaderChangesNothing) {
  // A new entry, then a reference to an entry no header has written: the header fails at
  // that reference's index, the new entry is not kept, and no references are listed.
  const Bytes frame = {131, 68, 2, 0x08 | (0x02 << 4), 0x00, 9, 1, 'x', 44};
  etf::AtomCache cache;
  etf::AtomCacheRefs refs;
  refs.push_back("stale");
  const etf::DecodeError e = failure(etf::parse_dist_header(frame, etf::AtomTextEncoding::utf8, cache, refs));
  EXPECT_EQ(e.code, Errc::atom_cache_miss);
  EXPECT_EQ(e.offset, 8u);
  EXPECT_EQ(e.detail, 2u * 256 + 44);
  EXPECT_EQ(e.tag, etf::tag::dist_header);
  EXPECT_EQ(cache.find(9), std::nullopt);
  EXPECT_EQ(refs.size(), 0u);
}

TEST(DistHeader, EveryCutOfOtpsHeaderFailsCleanly) {
  for (std::size_t n = 0; n < otp_first_fragment_header.size(); ++n) {
    const Bytes cut(otp_first_fragment_header.begin(), otp_first_fragment_header.begin() + static_cast<std::ptrdiff_t>(n));
    etf::AtomCache cache = cache_of_the_example();
    etf::AtomCacheRefs refs;
    const etf::DecodeError e = failure(etf::parse_dist_header(cut, etf::AtomTextEncoding::utf8, cache, refs));
    EXPECT_TRUE(e.code == Errc::truncated || e.code == Errc::length_exceeds_input) << n << ": " << e.message();
    EXPECT_LE(e.offset, n);
    EXPECT_EQ(cache.find(9), std::nullopt) << n;
    EXPECT_EQ(refs.size(), 0u) << n;
  }
}

TEST(DistHeader, RefusesWhatIsNotAHeaderOrNotAnAtom) {
  struct Case {
    const char* name;
    Bytes frame;
    etf::AtomTextEncoding encoding;
    Errc code;
    std::size_t offset;
    std::uint64_t detail;
  };
  const Case cases[] = {
      {"not_131", {130, 68, 0}, etf::AtomTextEncoding::utf8, Errc::bad_version, 0, 130},
      {"a_term_not_a_header", {131, 104, 0}, etf::AtomTextEncoding::utf8, Errc::bad_dist_header, 1, 104},
      {"flags_past_the_end", {131, 68, 9, 0}, etf::AtomTextEncoding::utf8, Errc::length_exceeds_input, 2, 5},
      {"text_past_the_end", {131, 68, 1, 0x08, 0, 200, 'a'}, etf::AtomTextEncoding::utf8,
       Errc::length_exceeds_input, 5, 200},
      {"invalid_utf8", {131, 68, 1, 0x08, 0, 1, 0xC0}, etf::AtomTextEncoding::utf8, Errc::invalid_utf8_atom, 6, 0},
      // One reference (new, LongAtoms in the high half of its flag byte) of 256 characters.
      {"latin1_over_255", Bytes{131, 68, 1, 0x18, 0, 1, 0} + Bytes(256, 'a'), etf::AtomTextEncoding::latin1,
       Errc::atom_too_long, 7, 256},
      {"utf8_over_255_chars", Bytes{131, 68, 1, 0x18, 0, 1, 0} + Bytes(256, 'a'), etf::AtomTextEncoding::utf8,
       Errc::atom_too_long, 7, 256},
  };
  for (const Case& c : cases) {
    etf::AtomCache cache;
    etf::AtomCacheRefs refs;
    const etf::DecodeError e = failure(etf::parse_dist_header(c.frame, c.encoding, cache, refs));
    EXPECT_EQ(e.code, c.code) << c.name << ": " << e.message();
    EXPECT_EQ(e.offset, c.offset) << c.name;
    EXPECT_EQ(e.detail, c.detail) << c.name;
  }
}

TEST(AtomCacheRefs, RefusesWhatNoHeaderCanList) {
  etf::AtomCacheRefs refs;
  EXPECT_THROW(refs.push_back_again(0), std::length_error);
  EXPECT_THROW(refs.push_back(std::string(etf::AtomCacheRefs::max_atom_bytes + 1, 'a')), std::length_error);
  for (std::size_t i = 0; i < etf::AtomCacheRefs::max_refs; ++i) refs.push_back("a");
  EXPECT_THROW(refs.push_back("b"), std::length_error);
  EXPECT_THROW(refs.push_back_again(0), std::length_error);
  etf::AtomCache cache;
  EXPECT_THROW(cache.store(etf::AtomCache::entries, "a"), std::out_of_range);
}

// ---- ATOM_CACHE_REF in the decoder ----------------------------------------------------------

class AtomCacheRef : public ::testing::Test {
 protected:
  void SetUp() override {
    refs.push_back("node@host");
    refs.push_back("lists");
    refs.push_back("map");
    refs.push_back("\xC3\xA9t\xC3\xA9");
  }
  std::string decoded(const Bytes& input) {
    etf::TermBuilder builder;
    const etf::DecodeResult r = etf::decode(input, builder, etf::DecodeOptions{.atom_cache_refs = &refs});
    if (!r) return r.error->message();
    return builder.take().to_string();
  }
  etf::AtomCacheRefs refs;
};

TEST_F(AtomCacheRef, IsAnAtomWhereverAnAtomMayBe) {
  EXPECT_EQ(decoded({131, 82, 3}), "\xC3\xA9t\xC3\xA9");
  EXPECT_EQ(decoded({131, 104, 2, 82, 1, 82, 2}), "{lists,map}");
  EXPECT_EQ(decoded({131, 116, 0, 0, 0, 1, 82, 1, 97, 1}), "#{lists => 1}");
  EXPECT_EQ(decoded({131, 88, 82, 0, 0, 0, 0, 80, 0, 0, 0, 1, 0, 0, 0, 3}), "#Pid<node@host.80.1.3>");
  EXPECT_EQ(decoded({131, 113, 82, 1, 82, 2, 97, 2}), "fun lists:map/2");
  // A node in every identifier, and the module of a fun.
  const etf::Term port = etf::decode_term(Bytes{131, 89, 82, 0, 0, 0, 0, 7, 0, 0, 0, 3},
                                          etf::DecodeOptions{.atom_cache_refs = &refs});
  EXPECT_EQ(port.to_string(), "#Port<node@host.7.3>");
  const etf::Term ref = etf::decode_term(Bytes{131, 90, 0, 1, 82, 0, 0, 0, 0, 3, 0, 0, 0, 9},
                                         etf::DecodeOptions{.atom_cache_refs = &refs});
  EXPECT_EQ(ref, etf::decode_term(Bytes{131, 90, 0, 1, 119, 9, 'n', 'o', 'd', 'e', '@', 'h', 'o', 's', 't',
                                        0, 0, 0, 3, 0, 0, 0, 9}));
}

TEST_F(AtomCacheRef, ReencodesAsAPlainAtom) {
  // The streaming re-encoder writes what term_to_binary would: the atom's text (the body:
  // the Writer leaves the version byte to its caller).
  etf::ByteBuffer out;
  etf::Writer writer(out);
  ASSERT_TRUE(etf::decode(Bytes{131, 104, 2, 82, 1, 82, 2}, writer, etf::DecodeOptions{.atom_cache_refs = &refs}));
  const Bytes encoded = etf::encode(etf::Term::tuple({etf::Term::atom("lists"), etf::Term::atom("map")}));
  EXPECT_EQ(Bytes(out.data(), out.data() + out.size()), Bytes(encoded.begin() + 1, encoded.end()));
}

TEST_F(AtomCacheRef, PastTheListedReferencesIsAnError) {
  etf::IgnoreTerm ignore;
  const etf::DecodeResult r =
      etf::decode(Bytes{131, 104, 2, 82, 1, 82, 4}, ignore, etf::DecodeOptions{.atom_cache_refs = &refs});
  ASSERT_FALSE(r);
  EXPECT_EQ(*r.error, (etf::DecodeError{Errc::bad_atom_cache_ref, 6, 4, etf::tag::atom_cache_ref}));
  // In a node position too.
  const etf::DecodeResult in_pid = etf::decode(Bytes{131, 88, 82, 200, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, ignore,
                                               etf::DecodeOptions{.atom_cache_refs = &refs});
  ASSERT_FALSE(in_pid);
  EXPECT_EQ(*in_pid.error, (etf::DecodeError{Errc::bad_atom_cache_ref, 3, 200, etf::tag::new_pid}));
}

TEST_F(AtomCacheRef, WithoutReferencesIsRefused) {
  etf::IgnoreTerm ignore;
  const etf::DecodeResult r = etf::decode(Bytes{131, 104, 1, 82, 0}, ignore);
  ASSERT_FALSE(r);
  EXPECT_EQ(*r.error, (etf::DecodeError{Errc::unsupported_tag, 3, 82, etf::tag::atom_cache_ref}));
  const etf::DecodeResult in_pid = etf::decode(Bytes{131, 88, 82, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, ignore);
  ASSERT_FALSE(in_pid);
  EXPECT_EQ(*in_pid.error, (etf::DecodeError{Errc::unsupported_tag, 2, 82, etf::tag::new_pid}));
}

// ---- Erlang agrees ---------------------------------------------------------------------------
// erts_debug:dist_ext_to_term(Atoms, Bin) decodes a term the way the distribution does after
// a header whose references are the atoms of the tuple Atoms. Every input, and every cut of
// it, must decode to the term OTP decodes it to (compared as term_to_binary/1's bytes), or
// fail where OTP raises badarg. Skipped without escript on PATH.

constexpr const char* kDistDecoder = R"(#!/usr/bin/env escript
%% Each line: "A<hex> A<hex> ... |<hex>": the atoms (UTF-8 text in hex) the term's atom
%% cache references mean, then the term. Answers term_to_binary of what
%% erts_debug:dist_ext_to_term/2 makes of it, in hex, or badarg.
main([Path]) ->
    {ok, Data} = file:read_file(Path),
    Lines = binary:split(Data, <<"\n">>, [global, trim_all]),
    [io:put_chars([answer(L), $\n]) || L <- Lines].
answer(Line) ->
    [AtomsField, TermHex] = binary:split(Line, <<"|">>),
    Atoms = [binary_to_atom(binary:decode_hex(Hex), utf8)
             || <<"A", Hex/binary>> <- binary:split(AtomsField, <<" ">>, [global, trim_all])],
    try binary:encode_hex(term_to_binary(erts_debug:dist_ext_to_term(list_to_tuple(Atoms),
                                                                     binary:decode_hex(TermHex))))
    catch error:badarg -> <<"badarg">> end.
)";

TEST(ErlangAgrees, DecodesAtomCacheReferencesAsTheDistributionDoes) {
  using camlbeam::etf::test::to_hex;
  ASSERT_TRUE(camlbeam::etf::test::on_path("escript")) << "escript is missing (erlang-nox): run scripts/setup.sh";
  etf::AtomCacheRefs refs;
  for (const char* atom : {"sender@host", "", "reg", "call", "set_get_state", "\xC3\xA9t\xC3\xA9", "caf\xC3\xA9"})
    refs.push_back(atom);
  std::string atoms_field;
  for (std::size_t i = 0; i < refs.size(); ++i)
    atoms_field += "A" + to_hex(std::span(reinterpret_cast<const std::uint8_t*>(refs[i].data()), refs[i].size())) + " ";

  const Bytes version = {131};
  const std::vector<Bytes> inputs = {
      version + otp_control_message,
      version + otp_message_start + otp_message_rest,
      {131, 82, 5},
      {131, 108, 0, 0, 0, 2, 82, 6, 82, 1, 82, 0},
      {131, 116, 0, 0, 0, 1, 82, 1, 82, 5},
      {131, 88, 82, 0, 0, 0, 0, 80, 0, 0, 0, 1, 0, 0, 0, 3},
      {131, 89, 82, 0, 0, 0, 0, 7, 0, 0, 0, 3},
      {131, 90, 0, 1, 82, 0, 0, 0, 0, 3, 0, 0, 0, 9},
      {131, 113, 82, 3, 82, 2, 97, 2},
      {131, 104, 2, 82, 1, 82, 7},  // past the references
      {131, 88, 82, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
  };
  std::vector<std::string> lines, ours;
  for (const Bytes& input : inputs) {
    for (std::size_t cut = 1; cut <= input.size(); ++cut) {
      const std::span<const std::uint8_t> bytes(input.data(), cut);
      lines.push_back(atoms_field + "|" + to_hex(bytes));
      etf::TermBuilder builder;
      const etf::DecodeResult r = etf::decode(bytes, builder, etf::DecodeOptions{.atom_cache_refs = &refs});
      ours.push_back(r ? to_hex(etf::encode(builder.take())) : "badarg");
    }
  }
  const std::vector<std::string> answers = camlbeam::etf::test::ask_erlang(kDistDecoder, lines);
  ASSERT_EQ(answers.size(), lines.size()) << (answers.empty() ? "" : answers.front());
  for (std::size_t i = 0; i < lines.size(); ++i) EXPECT_EQ(ours[i], answers[i]) << lines[i].substr(0, 160);
}
