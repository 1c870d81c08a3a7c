// Control messages and MessageReader on crafted bytes: every operation written and read
// back in both frame forms, the atom cache, fragments, and hostile frames.
#include "frame_seed.hpp"

#include <camlbeam/dist/control.hpp>
#include <camlbeam/dist/message_reader.hpp>
#include <camlbeam/etf/etf.hpp>

#include <gtest/gtest.h>

#include <string>
#include <vector>

using namespace camlbeam::dist;
using namespace camlbeam::dist::control;
namespace etf = camlbeam::etf;
using etf::Term;
using Bytes = std::vector<std::uint8_t>;

namespace {

etf::Pid pid(std::uint32_t id) { return etf::Pid{"erl@host", id, 0, 7}; }
etf::Reference ref(std::uint32_t word) { return etf::Reference{"erl@host", 7, {word, 2, 3}}; }
etf::Atom atom(std::string name) { return etf::Atom{std::move(name)}; }
Term token() {
  return Term::tuple({Term::integer(0), Term::atom("label"), Term::integer(1), Term::pid(pid(9)), Term::integer(2)});
}
Term message() {
  return Term::tuple({Term::atom("hello"), Term::binary(std::string_view("world")), Term::integer(-70000)});
}

// What negotiates each frame form: every flag an operation may need, and either the
// distribution header or not.
constexpr std::uint64_t all_ops = flag::mandatory_26 | flag::dist_monitor | flag::send_sender | flag::exit_payload |
                                  flag::spawn | flag::alias | flag::altact_sig;
constexpr std::uint64_t pass_through_flags = all_ops;
constexpr std::uint64_t header_flags = all_ops | flag::dist_hdr_atom_cache | flag::fragments;

// One message of every operation.
std::vector<Control> every_operation() {
  const Mfa mfa{atom("erpc"), atom("execute_call"), 4};
  const Term options = Term::list({Term::atom("monitor")});
  const Term args = Term::list({Term::reference(ref(5)), Term::atom("m"), Term::atom("f"), Term::nil()});
  std::vector<Control> all{
      Link{pid(1), pid(2)},
      Send{pid(2), message()},
      Exit{pid(1), pid(2), Term::atom("killed")},
      Unlink{pid(1), pid(2)},
      NodeLink{},
      RegSend{pid(1), atom("net_kernel"), message()},
      GroupLeader{pid(1), pid(2)},
      Exit2{pid(1), pid(2), Term::atom("kill")},
      SendTT{pid(2), token(), message()},
      ExitTT{pid(1), pid(2), token(), Term::atom("normal")},
      RegSendTT{pid(1), atom("foo"), token(), message()},
      Exit2TT{pid(1), pid(2), token(), Term::atom("kill")},
      MonitorP{pid(1), atom("foo"), ref(1)},
      DemonitorP{pid(1), pid(3), ref(1)},
      MonitorPExit{atom("foo"), pid(1), ref(1), Term::atom("noproc")},
      SendSender{pid(1), pid(2), message()},
      SendSenderTT{pid(1), pid(2), token(), message()},
      PayloadExit{pid(1), pid(2), message()},
      PayloadExitTT{pid(1), pid(2), token(), message()},
      PayloadExit2{pid(1), pid(2), Term::atom("kill")},
      PayloadExit2TT{pid(1), pid(2), token(), Term::atom("kill")},
      PayloadMonitorPExit{pid(3), pid(1), ref(1), Term::atom("noconnection")},
      SpawnRequest{ref(4), pid(1), pid(8), mfa, options, args},
      SpawnRequestTT{ref(4), pid(1), pid(8), mfa, options, token(), args},
      SpawnReply{ref(4), pid(1), 2, pid(10)},
      SpawnReplyTT{ref(4), pid(1), 3, atom("system_limit"), token()},
      AliasSend{pid(1), ref(6), message()},
      AliasSendTT{pid(1), ref(6), token(), message()},
      UnlinkId{std::uint64_t{1} << 63, pid(1), pid(2)},
      UnlinkIdAck{42, pid(2), pid(1)},
      AltactSigSend{altact::prio | altact::alias, pid(1), ref(6), std::nullopt, message()},
  };
  all.push_back(AltactSigSend{altact::name | altact::token, pid(1), atom("foo"), token(), message()});
  all.push_back(AltactSigSend{altact::exit, pid(1), pid(2), std::nullopt, Term::atom("bye")});
  return all;
}

void expect_same(const Control& expected, const Control& got) {
  EXPECT_EQ(op_of(expected), op_of(got));
  EXPECT_EQ(control_tuple(expected), control_tuple(got)) << control_tuple(got).to_string();
  const Term* a = payload_of(expected);
  const Term* b = payload_of(got);
  ASSERT_EQ(a == nullptr, b == nullptr);
  if (a != nullptr) {
    EXPECT_EQ(*a, *b) << b->to_string();
  }
}

Bytes encode(const Control& c, std::uint64_t flags) {
  etf::ByteBuffer out;
  const auto error = encode_frame(c, flags, out);
  EXPECT_FALSE(error) << error->message();
  return out.to_vector();
}

// The bytes of a term without its version byte: what follows a distribution header.
Bytes body_of(const Term& t) {
  Bytes b = etf::encode(t, {.minor_version = 2});
  b.erase(b.begin());
  return b;
}

void append(Bytes& to, const Bytes& from) { to.insert(to.end(), from.begin(), from.end()); }
void append_u64(Bytes& to, std::uint64_t v) {
  for (int shift = 56; shift >= 0; shift -= 8) to.push_back(static_cast<std::uint8_t>(v >> shift));
}

// A message split into fragments the way OTP sends them: the first fragment's header (no
// atom cache references here), then continuations, ids counting down to 1.
std::vector<Bytes> fragments_of(const Bytes& header_frame, std::uint64_t sequence, std::size_t pieces) {
  const Bytes terms(header_frame.begin() + 3, header_frame.end());  // after 131 68 0
  std::vector<Bytes> out;
  const std::size_t size = (terms.size() + pieces - 1) / pieces;
  for (std::size_t i = 0; i < pieces; ++i) {
    Bytes f{131, static_cast<std::uint8_t>(i == 0 ? 69 : 70)};
    append_u64(f, sequence);
    append_u64(f, pieces - i);
    if (i == 0) f.push_back(0);
    const std::size_t begin = std::min(terms.size(), i * size);
    f.insert(f.end(), terms.begin() + static_cast<std::ptrdiff_t>(begin),
             terms.begin() + static_cast<std::ptrdiff_t>(std::min(terms.size(), begin + size)));
    out.push_back(std::move(f));
  }
  return out;
}

Control read_one(MessageReader& reader, const Bytes& body) {
  auto got = reader.read(body);
  EXPECT_FALSE(got.error) << got.error->message();
  EXPECT_TRUE(got.message);
  return got.message ? std::move(*got.message) : Control(NodeLink{});
}

Errc error_of(MessageReader& reader, const Bytes& body) {
  auto got = reader.read(body);
  EXPECT_FALSE(got.message);
  if (!got.error) {
    ADD_FAILURE() << "no error";
    return Errc::bad_state;
  }
  return got.error->code;
}

}  // namespace

TEST(Control, EveryOperationHasASampleAndANumber) {
  std::vector<bool> seen(std::variant_size_v<Control>);
  for (const auto& c : every_operation()) seen[c.index()] = true;
  for (std::size_t i = 0; i < seen.size(); ++i) EXPECT_TRUE(seen[i]) << "no sample of alternative " << i;
  EXPECT_EQ(name_of(Op::send_sender_tt), "send_sender_tt");
  EXPECT_EQ(name_of(static_cast<Op>(9)), "");
  EXPECT_TRUE(has_payload(Op::spawn_request));
  EXPECT_FALSE(has_payload(Op::spawn_reply));
}

namespace {
// Every operation written with `flags`, each frame starting with `start` and the control
// tuple's tag, read back the same by one reader.
void round_trip_every_operation(std::uint64_t flags, const Bytes& start, const std::string& seed_name) {
  MessageReader reader(flags);
  std::vector<Bytes> seed;
  for (const auto& c : every_operation()) {
    const Bytes body = encode(c, flags);
    seed.push_back(body);
    ASSERT_GT(body.size(), start.size());
    EXPECT_EQ((Bytes{body.begin(), body.begin() + static_cast<std::ptrdiff_t>(start.size())}), start);
    EXPECT_EQ(body[start.size()], 104) << "a small tuple";
    expect_same(c, read_one(reader, body));
  }
  frame_seed::write(seed_name, flags, seed);
}
}  // namespace

TEST(Control, EveryOperationRoundTripsPassThrough) {
  round_trip_every_operation(pass_through_flags, {112, 131}, "every-operation-pass-through");
}

TEST(Control, EveryOperationRoundTripsWithTheDistributionHeader) {
  // No version byte after the header: the control tuple follows it at once.
  round_trip_every_operation(header_flags, {131, 68, 0}, "every-operation-header");
}

TEST(Control, TheWireFormIsOtps) {
  // {6, From, '', net_kernel} then the message, as erl_dist_protocol lays REG_SEND out.
  const RegSend c{pid(1), atom("net_kernel"), Term::atom("hi")};
  Bytes expected{131, 68, 0};
  append(expected,
         body_of(Term::tuple({Term::integer(6), Term::pid(pid(1)), Term::atom(""), Term::atom("net_kernel")})));
  append(expected, body_of(Term::atom("hi")));
  EXPECT_EQ(encode(c, header_flags), expected);
}

TEST(Control, WritingRefusesWhatThePeerDidNotOffer) {
  etf::ByteBuffer out;
  const auto error = encode_frame(SpawnReply{ref(1), pid(1), 0, pid(2)}, flag::mandatory_26, out);
  ASSERT_TRUE(error);
  EXPECT_EQ(error->code, Errc::bad_state);
  EXPECT_EQ(out.size(), 0u);
}

TEST(Control, WritingAnUnencodableTermIsAnErrorAndWritesNothing) {
  etf::ByteBuffer out;
  etf::Pid bad = pid(1);
  bad.node = std::string(300, 'n');  // an atom over 255 characters
  const auto error = encode_frame(Link{bad, pid(2)}, header_flags, out);
  ASSERT_TRUE(error);
  EXPECT_EQ(error->code, Errc::bad_term);
  EXPECT_EQ(out.size(), 0u);
}

TEST(Control, APayloadWrittenByTheCallerIsTheFrameOfTheSameMessage) {
  const Term message = Term::tuple({Term::atom("ok"), Term::list({Term::integer(1), Term::binary(Bytes{7, 8})})});
  const auto write = [&](etf::Writer& writer) { etf::walk(message, writer); };
  for (const std::uint64_t flags : {pass_through_flags, header_flags}) {
    for (const Control& control : std::vector<Control>{Send{pid(1), Term::nil()}, AliasSend{pid(2), ref(3), Term::nil()}}) {
      etf::ByteBuffer written;
      ASSERT_FALSE(encode_frame(control, flags, written, write));
      Control whole = control;
      std::visit([&](auto& c) {
        if constexpr (requires { c.message; }) c.message = message;
      }, whole);
      etf::ByteBuffer expected;
      ASSERT_FALSE(encode_frame(whole, flags, expected));
      EXPECT_EQ(written.to_vector(), expected.to_vector());
    }
  }
  // An operation without a payload has none to write; a writer's own exception leaves
  // nothing behind, and its etf::EncodeError is bad_term.
  etf::ByteBuffer out;
  EXPECT_EQ(encode_frame(Link{pid(1), pid(2)}, header_flags, out, write)->code, Errc::bad_state);
  EXPECT_THROW(encode_frame(Send{pid(1), Term::nil()}, header_flags, out,
                            [](etf::Writer& writer) {
                              writer.begin_tuple(2);
                              throw std::runtime_error("walked halfway");
                            }),
               std::runtime_error);
  EXPECT_EQ(encode_frame(Send{pid(1), Term::nil()}, header_flags, out,
                         [](etf::Writer& writer) {
                           writer.begin_tuple(2);
                           throw etf::EncodeError("no such term");
                         })
                ->code,
            Errc::bad_term);
  EXPECT_EQ(out.size(), 0u);
}

TEST(MessageReader, ReadsAtomCacheReferencesAndKeepsTheCache) {
  MessageReader reader(header_flags);
  // First message: one new entry (segment 0, index 5) 'net_kernel', referred to as
  // ATOM_CACHE_REF 0 in REG_SEND's name slot. Flags: one nibble per reference (8 = new,
  // segment 0), then the header's own nibble (0: short atoms).
  Bytes first{131, 68, 1, 0x08, 5, 10};
  for (char ch : std::string("net_kernel")) first.push_back(static_cast<std::uint8_t>(ch));
  Bytes tuple{104, 4, 97, 6};
  append(tuple, body_of(Term::pid(pid(1))));
  append(tuple, {119, 0, 82, 0});
  append(first, tuple);
  append(first, body_of(message()));
  expect_same(RegSend{pid(1), atom("net_kernel"), message()}, read_one(reader, first));
  // Second message: the same entry, now only named (not new).
  Bytes second{131, 68, 1, 0x00, 5};
  append(second, tuple);
  append(second, body_of(Term::atom("again")));
  expect_same(RegSend{pid(1), atom("net_kernel"), Term::atom("again")}, read_one(reader, second));
  frame_seed::write("atom-cache", header_flags, {first, second});
}

TEST(MessageReader, ReassemblesInterleavedFragments) {
  MessageReader reader(header_flags);
  const Send big{pid(2), Term::binary(std::string(20'000, 'x'))};
  const Send other{pid(3), Term::list({Term::integer(1), Term::string(std::string(10'000, 'y'))})};
  const auto a = fragments_of(encode(big, header_flags), 11, 4);
  const auto b = fragments_of(encode(other, header_flags), 12, 3);
  const std::vector<const Bytes*> order{&a[0], &b[0], &a[1], &b[1], &a[2], &a[3], &b[2]};
  std::vector<Control> done;
  std::vector<Bytes> seed;
  for (const Bytes* f : order) {
    seed.push_back(*f);
    auto got = reader.read(*f);
    ASSERT_FALSE(got.error) << got.error->message();
    if (got.message) done.push_back(std::move(*got.message));
  }
  ASSERT_EQ(done.size(), 2u);
  expect_same(big, done[0]);
  expect_same(other, done[1]);
  EXPECT_EQ(reader.partial_sequences(), 0u);
  EXPECT_EQ(reader.partial_bytes(), 0u);
  frame_seed::write("interleaved-fragments", header_flags, seed);
}

TEST(MessageReader, AMessageInOneFragmentIsWhole) {
  MessageReader reader(header_flags);
  const Link c{pid(1), pid(2)};
  expect_same(c, read_one(reader, fragments_of(encode(c, header_flags), 1, 1)[0]));
}

TEST(Control, ALargeMessageIsWrittenInFragmentsWhenNegotiated) {
  const Send big{pid(2), Term::binary(std::string(200'000, 'x'))};
  std::vector<Bytes> bodies;
  ASSERT_FALSE(encode_frames(big, header_flags, 77, bodies));
  ASSERT_EQ(bodies.size(), 4u) << "200 KB in 64 KB fragments";
  EXPECT_EQ(bodies[0][1], 69);
  EXPECT_EQ(bodies[0].size(), 2 + 8 + 8 + 1 + otp_fragment_size);
  MessageReader reader(header_flags);
  for (std::size_t i = 0; i + 1 < bodies.size(); ++i) {
    EXPECT_EQ(bodies[i + 1][1], 70);
    auto got = reader.read(bodies[i]);
    ASSERT_FALSE(got.error || got.message);
  }
  expect_same(big, read_one(reader, bodies.back()));

  for (std::uint64_t flags : {pass_through_flags, header_flags & ~flag::fragments}) {
    std::vector<Bytes> whole;
    ASSERT_FALSE(encode_frames(big, flags, 77, whole));
    ASSERT_EQ(whole.size(), 1u) << "no FRAGMENTS, one frame";
    MessageReader one(flags);
    expect_same(big, read_one(one, whole[0]));
  }
  std::vector<Bytes> small;
  ASSERT_FALSE(encode_frames(Link{pid(1), pid(2)}, header_flags, 78, small));
  EXPECT_EQ(small.size(), 1u);
  EXPECT_EQ(small[0], encode(Link{pid(1), pid(2)}, header_flags));
  EXPECT_TRUE(encode_frames(Link{pid(1), pid(2)}, header_flags, 79, small, 0));
}

// ---- Hostile frames: each an error value, and the reader stays broken.

TEST(MessageReaderHostile, TruncatedHeaders) {
  for (const Bytes& body : {Bytes{131}, Bytes{131, 68}, Bytes{131, 68, 1, 0x08}, Bytes{131, 69, 0, 0, 0},
                            Bytes{131, 70, 0, 0, 0, 0, 0, 0, 0, 1, 0}}) {
    MessageReader reader(header_flags);
    const Errc e = error_of(reader, body);
    EXPECT_TRUE(e == Errc::bad_term) << to_string(e);
  }
  MessageReader reader(header_flags);
  EXPECT_EQ(error_of(reader, Bytes{}), Errc::truncated);
  MessageReader other(header_flags);
  EXPECT_EQ(error_of(other, Bytes{7, 1, 2}), Errc::bad_control);
}

TEST(MessageReaderHostile, ACacheReferenceToAnUnwrittenEntry) {
  MessageReader reader(header_flags);
  Bytes body{131, 68, 1, 0x00, 5, 104, 1, 82, 0};
  EXPECT_EQ(error_of(reader, body), Errc::bad_term);
}

TEST(MessageReaderHostile, AnAtomCacheRefPastTheHeadersReferences) {
  MessageReader reader(header_flags);
  EXPECT_EQ(error_of(reader, Bytes{131, 68, 0, 104, 2, 97, 5, 82, 0}), Errc::bad_term);
}

TEST(MessageReaderHostile, FragmentsOutOfOrder) {
  const auto f = fragments_of(encode(Send{pid(2), Term::binary(std::string(1000, 'x'))}, header_flags), 5, 3);
  MessageReader reader(header_flags);
  EXPECT_FALSE(reader.read(f[0]).error);
  EXPECT_EQ(error_of(reader, f[2]), Errc::bad_fragment);
  EXPECT_EQ(reader.partial_bytes(), 0u) << "a broken reader holds nothing";
}

TEST(MessageReaderHostile, AContinuationWithoutAStart) {
  const auto f = fragments_of(encode(Send{pid(2), Term::atom("x")}, header_flags), 5, 2);
  MessageReader reader(header_flags);
  EXPECT_EQ(error_of(reader, f[1]), Errc::bad_fragment);
}

TEST(MessageReaderHostile, ASequenceStartedTwiceOrAtZero) {
  const auto f = fragments_of(encode(Send{pid(2), Term::atom("x")}, header_flags), 5, 2);
  MessageReader reader(header_flags);
  EXPECT_FALSE(reader.read(f[0]).error);
  EXPECT_EQ(error_of(reader, f[0]), Errc::bad_fragment);
  Bytes zero{131, 69};
  append_u64(zero, 1);
  append_u64(zero, 0);
  zero.push_back(0);
  MessageReader fresh(header_flags);
  EXPECT_EQ(error_of(fresh, zero), Errc::bad_fragment);
}

MessageReader reader_holding_at_most(std::size_t partial_bytes) {
  MessageReader::Limits limits;
  limits.max_partial_bytes = partial_bytes;
  return MessageReader(header_flags, limits);
}

const Term thirty_kb = Term::binary(std::string(30'000, 'x'));

// thirty_kb sent in 4 fragments, as sequence 5.
std::vector<Bytes> thirty_kb_in_four() { return fragments_of(encode(Send{pid(2), thirty_kb}, header_flags), 5, 4); }

TEST(MessageReaderHostile, ReassemblyPastTheByteLimit) {
  MessageReader reader = reader_holding_at_most(10'000);
  const auto f = thirty_kb_in_four();
  EXPECT_FALSE(reader.read(f[0]).error);
  EXPECT_EQ(error_of(reader, f[1]), Errc::fragment_limit);
}

TEST(MessageReaderHostile, RoomIsReservedForWhatTheFirstFragmentAnnouncesWithinBounds) {
  MessageReader reader = reader_holding_at_most(100'000);
  const auto f = thirty_kb_in_four();
  const std::size_t piece = f[1].size() - 18;  // a continuation's bytes after its header
  ASSERT_FALSE(reader.read(f[0]).error);
  const std::size_t room = reader.reserved_bytes();
  EXPECT_GE(room, 4 * piece) << "room for the fragments announced";
  EXPECT_EQ(reader.partial_bytes(), piece);
  for (std::size_t i = 1; i < 3; ++i) ASSERT_FALSE(reader.read(f[i]).error);
  EXPECT_EQ(reader.reserved_bytes(), room) << "they fit in it";
  const auto whole = reader.read(f[3]);
  ASSERT_TRUE(whole.message);
  EXPECT_EQ(std::get<Send>(*whole.message).message, thirty_kb);
  EXPECT_EQ(reader.partial_bytes(), 0u);
  EXPECT_EQ(reader.reserved_bytes(), 0u);
  // A first fragment that announces more than the limit takes: no room reserved, and the
  // bytes it brought are all it counts, so another sequence still fits.
  Bytes greedy = f[0];
  const std::uint64_t many = std::uint64_t{1} << 40;
  for (int i = 0; i < 8; ++i) greedy[10 + i] = static_cast<std::uint8_t>(many >> (56 - 8 * i));
  ASSERT_FALSE(reader.read(greedy).error);
  EXPECT_EQ(reader.reserved_bytes(), piece);
  Bytes other = f[0];
  other[9] = 6;  // sequence 6, announcing what the limit takes: room for it
  ASSERT_FALSE(reader.read(other).error);
  EXPECT_EQ(reader.partial_bytes(), 2 * piece);
  EXPECT_GE(reader.reserved_bytes(), piece + 4 * piece);
}

TEST(MessageReaderHostile, RoomAheadIsBoundedOnItsOwn) {
  MessageReader::Limits limits;
  limits.max_room_ahead = 10'000;  // less than the three fragments still to come
  MessageReader reader(header_flags, limits);
  const auto f = thirty_kb_in_four();
  ASSERT_FALSE(reader.read(f[0]).error);
  EXPECT_EQ(reader.reserved_bytes(), reader.partial_bytes()) << "no room ahead";
  for (std::size_t i = 1; i < 3; ++i) ASSERT_FALSE(reader.read(f[i]).error);
  EXPECT_EQ(std::get<Send>(*reader.read(f[3]).message).message, thirty_kb);
}

TEST(MessageReaderHostile, TooManySequencesAtOnce) {
  MessageReader::Limits limits;
  limits.max_partial_sequences = 3;
  MessageReader reader(header_flags, limits);
  const Bytes whole = encode(Send{pid(2), Term::atom("x")}, header_flags);
  for (std::uint64_t s = 0; s < 3; ++s) EXPECT_FALSE(reader.read(fragments_of(whole, s, 2)[0]).error);
  EXPECT_EQ(error_of(reader, fragments_of(whole, 3, 2)[0]), Errc::fragment_limit);
}

TEST(MessageReaderHostile, HeadersTheHandshakeDidNotNegotiate) {
  MessageReader plain(pass_through_flags);
  EXPECT_EQ(error_of(plain, encode(Link{pid(1), pid(2)}, header_flags)), Errc::bad_control);
  MessageReader no_fragments(pass_through_flags | flag::dist_hdr_atom_cache);
  EXPECT_EQ(error_of(no_fragments, fragments_of(encode(Link{pid(1), pid(2)}, header_flags), 1, 2)[0]),
            Errc::bad_control);
}

namespace {
// A header frame carrying exactly these terms.
Bytes header_frame_of(const std::vector<Term>& terms) {
  Bytes b{131, 68, 0};
  for (const Term& t : terms) append(b, body_of(t));
  return b;
}
Bytes pass_through_of(const std::vector<Term>& terms) {
  Bytes b{112};
  for (const Term& t : terms) append(b, etf::encode(t));
  return b;
}
}  // namespace

TEST(MessageReaderHostile, MalformedControlTuples) {
  const Term p = Term::pid(pid(1));
  const std::vector<std::vector<Term>> cases{
      {Term::tuple({Term::integer(1), p})},                                              // LINK of arity 2
      {Term::tuple({Term::integer(1), p, p, p})},                                        // LINK of arity 4
      {Term::atom("link")},                                                              // not a tuple
      {Term::tuple({})},                                                                 // {}
      {Term::tuple({Term::integer(99), p, p})},                                          // unknown operation
      {Term::tuple({Term::integer(9), p, p})},                                           // a gap in the numbers
      {Term::tuple({Term::atom("send"), p, p})},                                         // operation not an integer
      {Term::tuple({Term::integer(1), Term::atom("a"), p})},                             // a field of the wrong type
      {Term::tuple({Term::integer(2), Term::atom(""), p})},                              // SEND without its message
      {Term::tuple({Term::integer(1), p, p}), Term::atom("extra")},                      // LINK with a payload
      {Term::tuple({Term::integer(19), p, Term::integer(3), Term::reference(ref(1))})},  // PidOrName a number
      {Term::tuple({Term::integer(35), Term::integer(-1), p, p})},                       // a negative unlink id
      {Term::tuple({Term::integer(29), Term::reference(ref(1)), p, p,
                    Term::tuple({Term::atom("m"), Term::atom("f"), Term::integer(256)}), Term::nil()}),
       Term::nil()},                                                                             // an arity past 255
      {Term::tuple({Term::integer(37), Term::integer(altact::token), p, p}), Term::atom("m")},   // token flag, no token
      {Term::tuple({Term::integer(37), Term::integer(altact::alias), p, p}), Term::atom("m")},  // alias a pid
      {Term::tuple({Term::integer(37), Term::integer(altact::alias | altact::name), p, Term::atom("n")}),
       Term::atom("m")},                                                                   // alias and name
      {Term::tuple({Term::integer(37), Term::integer(-1), p, p}), Term::atom("m")},        // negative flags
      {Term::tuple({Term::integer(37), Term::integer(0), p}), Term::atom("m")},            // no target
      {Term::list({Term::tuple({Term::integer(1), p, p})})},                               // a list around a tuple
      {Term::tuple({Term::integer(1), Term::tuple({p}), p})},                              // a tuple where a pid goes
      {Term::tuple({Term::integer(35), Term::big_integer(false, {1, 2, 3, 4, 5, 6, 7, 8, 9}), p, p})},  // id of 72 bits
      {Term::tuple({Term::tuple({Term::integer(1)}), p, p})},                              // operation a tuple
  };
  for (const auto& terms : cases) {
    MessageReader header_reader(header_flags);
    EXPECT_EQ(error_of(header_reader, header_frame_of(terms)), Errc::bad_control) << terms[0].to_string();
    MessageReader plain_reader(pass_through_flags);
    EXPECT_EQ(error_of(plain_reader, pass_through_of(terms)), Errc::bad_control) << terms[0].to_string();
  }
}

// The control tuple is read into its elements without a tree; what it says when it is not a
// control tuple is what the tree said (control_from_terms), whatever the frame's form.
TEST(MessageReaderHostile, MalformedControlIsNamedAsControlFromTermsNamesIt) {
  const Term p = Term::pid(pid(1));
  const std::vector<Term> tuples{Term::atom("link"), Term::tuple({}), Term::tuple({Term::integer(99), p, p}),
                                 Term::tuple({Term::tuple({Term::integer(1)}), p, p}),
                                 Term::tuple({Term::integer(1), Term::tuple({p}), p}),
                                 Term::list({Term::tuple({Term::integer(1), p, p})}, Term::atom("tail"))};
  for (const Term& tuple : tuples) {
    const ControlResult expected = control_from_terms(tuple, std::nullopt);
    ASSERT_TRUE(expected.error) << tuple.to_string();
    for (const std::uint64_t flags : {header_flags, pass_through_flags}) {
      MessageReader reader(flags);
      const Bytes body = flags == header_flags ? header_frame_of({tuple}) : pass_through_of({tuple});
      const auto got = reader.read(body);
      ASSERT_TRUE(got.error) << tuple.to_string();
      EXPECT_EQ(got.error->message(), expected.error->message()) << tuple.to_string();
    }
  }
}

// OTP 27 holds 0.0 and -0.0 apart as map keys: such a map in a control message is read, and
// its tuple made again, as it came.
TEST(MessageReader, AControlTupleWithAnOtp27MapIsReadAndMadeAgain) {
  etf::ByteBuffer body;
  body.push(112);
  etf::Writer writer(body, 2);
  writer.version();
  writer.begin_tuple(4);
  writer.integer(static_cast<std::int64_t>(Op::exit));
  const etf::Pid from = pid(1), to = pid(2);
  writer.pid(etf::PidView{from.node, from.id, from.serial, from.creation});
  writer.pid(etf::PidView{to.node, to.id, to.serial, to.creation});
  writer.begin_map(2);
  writer.float64(0.0);
  writer.atom("positive");
  writer.float64(-0.0);
  writer.atom("negative");
  writer.end_map();
  writer.end_tuple();
  MessageReader reader(pass_through_flags);
  const Control got = read_one(reader, body.to_vector());
  Term tuple;
  ASSERT_NO_THROW(tuple = control_tuple(got));
  EXPECT_EQ(tuple.tuple_elements().size(), 4U);
  etf::ByteBuffer again;
  ASSERT_FALSE(encode_frame(got, pass_through_flags, again));
  EXPECT_EQ(again.to_vector(), body.to_vector());
}

TEST(MessageReader, AltactSigSendIsReadAsOtpReadsItWithRoomForLaterReleases) {
  const Term p = Term::pid(pid(1));
  const auto read = [](std::vector<Term> terms) {
    MessageReader reader(header_flags);
    return std::get<AltactSigSend>(read_one(reader, header_frame_of(terms)));
  };
  // Elements past the ones the flags ask for are ignored, a token without its flag too;
  // only the low byte of the flags counts, however large the integer.
  const AltactSigSend extended =
      read({Term::tuple({Term::integer(37), Term::integer(0x100 | altact::prio), p, p, Term::nil(), Term::atom("later")}), Term::atom("m")});
  EXPECT_EQ(extended.flags, altact::prio);
  EXPECT_FALSE(extended.trace_token);
  EXPECT_EQ(Term::pid(std::get<etf::Pid>(extended.to)), p);
  const Term huge = Term::big_integer(false, {altact::name, 0, 0, 0, 0, 0, 0, 0, 0, 1});  // 2^72 + name
  const AltactSigSend named = read({Term::tuple({Term::integer(37), huge, p, Term::atom("ocaml")}), Term::atom("m")});
  EXPECT_EQ(named.flags, altact::name);
  EXPECT_EQ(std::get<etf::Atom>(named.to).name, "ocaml");
  const AltactSigSend with_token =
      read({Term::tuple({Term::integer(37), Term::integer(altact::token | altact::alias), p, Term::reference(ref(2)), Term::atom("t"),
                         Term::nil()}),
            Term::atom("m")});
  EXPECT_EQ(with_token.trace_token, Term::atom("t"));
  EXPECT_EQ(with_token.message, Term::atom("m"));
}

TEST(MessageReaderHostile, TrailingGarbage) {
  Bytes header = encode(Send{pid(2), Term::atom("m")}, header_flags);
  header.push_back(0);
  MessageReader a(header_flags);
  EXPECT_EQ(error_of(a, header), Errc::bad_control);
  Bytes plain = encode(Send{pid(2), Term::atom("m")}, pass_through_flags);
  plain.push_back(106);
  MessageReader b(pass_through_flags);
  EXPECT_EQ(error_of(b, plain), Errc::bad_control);
}

TEST(MessageReaderHostile, TheFirstErrorSticks) {
  MessageReader reader(header_flags);
  EXPECT_EQ(error_of(reader, Bytes{131, 68, 0, 97, 1}), Errc::bad_control);
  EXPECT_EQ(error_of(reader, encode(Link{pid(1), pid(2)}, header_flags)), Errc::bad_control);
}

TEST(MessageReaderHostile, DeepNestingIsBoundedByTheTermLimits) {
  MessageReader::Limits limits;
  limits.terms.max_depth = 100;
  MessageReader reader(header_flags, limits);
  Bytes body{131, 68, 0};
  append(body, body_of(Term::tuple({Term::integer(2), Term::atom(""), Term::pid(pid(1))})));
  for (int i = 0; i < 1000; ++i) append(body, {104, 1});
  body.push_back(106);
  EXPECT_EQ(error_of(reader, body), Errc::bad_term);
}
