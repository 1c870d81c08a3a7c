// The handshake machines on crafted bytes: a full exchange between our two roles, split
// every way, and hostile peers. No sockets.
#include <camlbeam/dist/digest.hpp>
#include <camlbeam/dist/handshake.hpp>

#include <gtest/gtest.h>

#include <string>
#include <vector>

using namespace camlbeam::dist;
using Bytes = std::vector<std::uint8_t>;
using State = Handshake::State;

namespace {

HandshakeConfig config(std::string name, std::string cookie, std::uint32_t challenge) {
  HandshakeConfig c;
  c.node_name = std::move(name);
  c.cookie = std::move(cookie);
  c.creation = 0x11223344;
  c.challenge = challenge;
  return c;
}

void put16(Bytes& b, std::uint16_t v) {
  b.push_back(static_cast<std::uint8_t>(v >> 8));
  b.push_back(static_cast<std::uint8_t>(v));
}
void put32(Bytes& b, std::uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<std::uint8_t>(v >> s));
}
void put64(Bytes& b, std::uint64_t v) {
  for (int s = 56; s >= 0; s -= 8) b.push_back(static_cast<std::uint8_t>(v >> s));
}
void put(Bytes& b, std::string_view s) { b.insert(b.end(), s.begin(), s.end()); }

// A 2-byte-length packet around `body`.
Bytes packet(const Bytes& body) {
  Bytes out;
  out.reserve(2 + body.size());
  put16(out, static_cast<std::uint16_t>(body.size()));
  out.insert(out.end(), body.begin(), body.end());
  return out;
}
Bytes packet(std::string_view text) { return packet(Bytes(text.begin(), text.end())); }

Bytes send_name(std::uint64_t flags, std::string_view name) {
  Bytes b{'N'};
  put64(b, flags);
  put32(b, 7);
  put16(b, static_cast<std::uint16_t>(name.size()));
  put(b, name);
  return packet(b);
}

Bytes challenge(std::uint64_t flags, std::uint32_t value, std::string_view name) {
  Bytes b{'N'};
  put64(b, flags);
  put32(b, value);
  put32(b, 9);
  put16(b, static_cast<std::uint16_t>(name.size()));
  put(b, name);
  return packet(b);
}

Bytes reply(std::uint32_t value, const Digest& d) {
  Bytes b{'r'};
  put32(b, value);
  b.insert(b.end(), d.begin(), d.end());
  return packet(b);
}

// Runs two machines against each other, handing bytes over in chunks of `chunk`.
void exchange(Handshake& a, Handshake& b, std::size_t chunk) {
  for (int round = 0; round < 100 && !(a.done() && b.done()); ++round) {
    for (auto [from, to] : {std::pair{&a, &b}, std::pair{&b, &a}}) {
      const Bytes out = from->take_output();
      for (std::size_t i = 0; i < out.size(); i += chunk) {
        to->feed(std::span(out).subspan(i, std::min(chunk, out.size() - i)));
      }
    }
  }
}

}  // namespace

TEST(Digest, MatchesErlangMd5) {
  // erlang:md5(["secret" | integer_to_list(123456789)]) and the largest challenge.
  const Digest a{178, 220, 118, 163, 83, 12, 217, 25, 98, 186, 87, 45, 92, 82, 244, 118};
  EXPECT_EQ(gen_digest(123456789, "secret"), a);
  const Digest b{87, 229, 170, 19, 76, 27, 12, 153, 204, 190, 64, 126, 244, 179, 114, 212};
  EXPECT_EQ(gen_digest(4294967295u, "C"), b);
  EXPECT_TRUE(digest_equal(a, a));
  EXPECT_FALSE(digest_equal(a, b));
}

TEST(NodeName, Validation) {
  EXPECT_TRUE(valid_node_name("a@b"));
  EXPECT_TRUE(valid_node_name("ocaml@vm"));
  EXPECT_FALSE(valid_node_name("ab"));
  EXPECT_FALSE(valid_node_name("@host"));
  EXPECT_FALSE(valid_node_name("alive@"));
  EXPECT_FALSE(valid_node_name("a@b@c"));
  EXPECT_FALSE(valid_node_name(std::string("a\0b@c", 5)));
  EXPECT_FALSE(valid_node_name(std::string(max_node_name, 'a') + "@h"));
}

TEST(Handshake, BothRolesConnectInEverySplit) {
  for (std::size_t chunk : {1, 2, 3, 7, 4096}) {
    auto i = Handshake::initiator(config("ini@host", "cookie", 1111));
    auto cfg = config("acc@host", "cookie", 2222);
    auto a = Handshake::acceptor(cfg);
    exchange(i, a, chunk);
    ASSERT_EQ(i.state(), State::connected) << chunk << " " << (i.error() ? i.error()->message() : "");
    ASSERT_EQ(a.state(), State::connected) << chunk << " " << (a.error() ? a.error()->message() : "");
    EXPECT_EQ(i.peer().name, "acc@host");
    EXPECT_EQ(a.peer().name, "ini@host");
    EXPECT_EQ(a.peer().creation, 0x11223344u);
    EXPECT_EQ(i.negotiated_flags(), flag::offered);
    EXPECT_EQ(a.negotiated_flags(), flag::offered);
  }
}

TEST(Handshake, HiddenSideClearsPublished) {
  auto ic = config("ini@host", "c", 1);
  ic.flags &= ~flag::published;
  auto i = Handshake::initiator(ic);
  auto a = Handshake::acceptor(config("acc@host", "c", 2));
  exchange(i, a, 4096);
  ASSERT_EQ(a.state(), State::connected);
  EXPECT_EQ(a.negotiated_flags() & flag::published, 0u);
  EXPECT_EQ(i.negotiated_flags() & flag::published, 0u);
}

TEST(Handshake, WrongCookieRefusedOnBothSides) {
  // The initiator has the wrong cookie: the acceptor sees a bad reply and sends no ack.
  {
    auto i = Handshake::initiator(config("ini@host", "wrong", 1));
    auto a = Handshake::acceptor(config("acc@host", "right", 2));
    exchange(i, a, 4096);
    EXPECT_EQ(a.state(), State::failed);
    EXPECT_EQ(a.error()->code, Errc::bad_digest);
    EXPECT_EQ(i.state(), State::await_ack);  // nothing came back
    i.peer_closed();
    EXPECT_EQ(i.error()->code, Errc::connection_closed);
  }
  // A forged ack: the initiator checks it.
  {
    auto i = Handshake::initiator(config("ini@host", "right", 1));
    i.take_output();
    i.feed(packet("sok"));
    i.feed(challenge(flag::offered, 99, "acc@host"));
    ASSERT_EQ(i.state(), State::await_ack);
    Bytes ack{'a'};
    const Digest forged = gen_digest(1, "wrong");
    ack.insert(ack.end(), forged.begin(), forged.end());
    i.feed(packet(ack));
    EXPECT_EQ(i.state(), State::failed);
    EXPECT_EQ(i.error()->code, Errc::bad_digest);
  }
}

TEST(Handshake, InitiatorFollowsTheStatus) {
  const std::pair<const char*, Errc> refusals[] = {
      {"snok", Errc::refused_nok}, {"snot_allowed", Errc::refused_not_allowed},
      {"snamed:", Errc::name_me_refused}, {"sbogus", Errc::bad_status}, {"s", Errc::bad_status},
      {"xok", Errc::unexpected_message}};
  for (auto [status, code] : refusals) {
    auto i = Handshake::initiator(config("ini@host", "c", 1));
    i.take_output();
    i.feed(packet(status));
    EXPECT_EQ(i.state(), State::failed) << status;
    EXPECT_EQ(i.error()->code, code) << status;
  }
  auto i = Handshake::initiator(config("ini@host", "c", 1));
  i.take_output();
  i.feed(packet("salive"));
  EXPECT_EQ(i.take_output(), packet("strue"));
  EXPECT_EQ(i.state(), State::await_challenge);
  auto ic = config("ini@host", "c", 1);
  ic.continue_if_alive = false;
  auto j = Handshake::initiator(ic);
  j.take_output();
  j.feed(packet("salive"));
  EXPECT_EQ(j.take_output(), packet("sfalse"));
  EXPECT_EQ(j.error()->code, Errc::refused_alive);
}

TEST(Handshake, SendNameBytes) {
  auto i = Handshake::initiator(config("a@b", "c", 1));
  Bytes expected{'N'};
  put64(expected, flag::offered);
  put32(expected, 0x11223344);
  put16(expected, 3);
  put(expected, "a@b");
  EXPECT_EQ(i.take_output(), packet(expected));
}

TEST(Handshake, InitiatorChecksTheChallenge) {
  auto start = [] {
    auto i = Handshake::initiator([] {
      auto c = config("ini@host", "c", 1);
      c.peer_name = "acc@host";
      return c;
    }());
    i.take_output();
    i.feed(packet("sok"));
    return i;
  };
  {
    auto i = start();
    i.feed(challenge(flag::offered, 5, "other@host"));
    EXPECT_EQ(i.error()->code, Errc::wrong_peer);
  }
  {
    auto i = start();  // OTP 25's mandatory set without V4_NC and UNLINK_ID: refused as OTP 26 does
    i.feed(challenge(flag::mandatory_25, 5, "acc@host"));
    EXPECT_EQ(i.error()->code, Errc::missing_flags);
  }
  {
    auto i = start();  // the digest bit stands for the OTP 25 set
    i.feed(challenge(flag::mandatory_25_digest | flag::v4_nc | flag::unlink_id, 5, "acc@host"));
    EXPECT_EQ(i.state(), State::await_ack);
    const Bytes out = i.take_output();
    ASSERT_EQ(out.size(), 2u + 21u);
    EXPECT_EQ(out[2], 'r');
    const Digest d = gen_digest(5, "c");
    EXPECT_TRUE(std::equal(d.begin(), d.end(), out.begin() + 7));
  }
  {
    auto i = start();
    Bytes b{'N'};
    put64(b, flag::offered);
    put32(b, 5);  // challenge, then nothing
    i.feed(packet(b));
    EXPECT_EQ(i.error()->code, Errc::truncated);
  }
  {
    auto i = start();
    Bytes b{'N'};
    put64(b, flag::offered);
    put32(b, 5);
    put32(b, 9);
    put16(b, 500);  // name length past the packet
    put(b, "acc@host");
    i.feed(packet(b));
    EXPECT_EQ(i.error()->code, Errc::truncated);
  }
}

TEST(Handshake, AcceptorRefusals) {
  auto acceptor = [] { return Handshake::acceptor(config("acc@host", "c", 2)); };
  {
    auto a = acceptor();  // an old 'n' send_name
    Bytes b{'n', 0, 5};
    put32(b, 0x7fff);
    put(b, "old@host");
    a.feed(packet(b));
    EXPECT_EQ(a.error()->code, Errc::unexpected_message);
  }
  {
    auto a = acceptor();
    a.feed(send_name(flag::mandatory_25, "ini@host"));
    EXPECT_EQ(a.error()->code, Errc::missing_flags);
    EXPECT_EQ(a.take_output(), packet("snot_allowed"));
  }
  {
    auto a = acceptor();  // NAME_ME: the name is the host only
    a.feed(send_name(flag::offered | flag::name_me, "host"));
    EXPECT_EQ(a.error()->code, Errc::name_me_refused);
    EXPECT_EQ(a.take_output(), packet("snot_allowed"));
  }
  {
    auto a = acceptor();
    a.feed(send_name(flag::offered, "no-at-sign"));
    EXPECT_EQ(a.error()->code, Errc::bad_name);
    EXPECT_TRUE(a.take_output().empty());
  }
  {
    auto c = config("acc@host", "c", 2);
    c.decide = [](const PeerInfo&) { return Status::nok; };
    auto a = Handshake::acceptor(c);
    a.feed(send_name(flag::offered, "ini@host"));
    EXPECT_EQ(a.error()->code, Errc::refused_nok);
    EXPECT_EQ(a.take_output(), packet("snok"));
  }
  {
    auto c = config("acc@host", "c", 2);
    c.decide = [](const PeerInfo&) { return Status::alive; };
    auto a = Handshake::acceptor(c);
    a.feed(send_name(flag::offered, "ini@host"));
    EXPECT_EQ(a.take_output(), packet("salive"));
    a.feed(packet("sfalse"));
    EXPECT_EQ(a.error()->code, Errc::refused_alive);
  }
  {
    auto a = acceptor();  // a reply of the wrong size
    a.feed(send_name(flag::offered, "ini@host"));
    a.take_output();
    a.feed(packet(Bytes{'r', 0, 0, 0, 1, 2, 3}));
    EXPECT_EQ(a.error()->code, Errc::truncated);
  }
}

TEST(Handshake, AcceptorAnswersAGoodReplyOnly) {
  auto a = Handshake::acceptor(config("acc@host", "c", 2));
  a.feed(send_name(flag::offered, "ini@host"));
  Bytes expected = packet("sok");
  Bytes ch{'N'};
  put64(ch, flag::offered);
  put32(ch, 2);
  put32(ch, 0x11223344);
  put16(ch, 8);
  put(ch, "acc@host");
  const Bytes challenge_packet = packet(ch);
  expected.insert(expected.end(), challenge_packet.begin(), challenge_packet.end());
  EXPECT_EQ(a.take_output(), expected);
  // A replayed digest of another challenge is refused.
  a.feed(reply(77, gen_digest(3, "c")));
  EXPECT_EQ(a.error()->code, Errc::bad_digest);
  EXPECT_TRUE(a.take_output().empty());

  auto b = Handshake::acceptor(config("acc@host", "c", 2));
  b.feed(send_name(flag::offered, "ini@host"));
  b.take_output();
  // The good reply, and the first frames of the connected phase in the same read.
  Bytes in = reply(77, gen_digest(2, "c"));
  const Bytes frames{0, 0, 0, 0, 0, 0, 0, 1, 'p'};
  in.insert(in.end(), frames.begin(), frames.end());
  b.feed(in);
  ASSERT_EQ(b.state(), State::connected);
  Bytes ack{'a'};
  const Digest d = gen_digest(77, "c");
  ack.insert(ack.end(), d.begin(), d.end());
  EXPECT_EQ(b.take_output(), packet(ack));
  EXPECT_EQ(b.take_leftover(), frames);
  b.feed(Bytes{1, 2});
  EXPECT_EQ(b.take_leftover(), (Bytes{1, 2}));
}

TEST(Handshake, HostileLengthsFailAtOnce) {
  auto a = Handshake::acceptor(config("acc@host", "c", 2));
  a.feed(Bytes{0xFF, 0xFF});  // 65535 announced: no wait for the bytes
  EXPECT_EQ(a.error()->code, Errc::frame_too_long);
  auto b = Handshake::acceptor(config("acc@host", "c", 2));
  b.feed(Bytes{0, 0});
  EXPECT_EQ(b.error()->code, Errc::truncated);
  // A name of the longest length the packet allows, but longer than an atom.
  auto c = Handshake::acceptor(config("acc@host", "c", 2));
  c.feed(send_name(flag::offered, std::string(max_node_name, 'x') + "@h"));
  EXPECT_EQ(c.error()->code, Errc::bad_name);
  // Garbage after failure is ignored; the machine stays failed.
  c.feed(Bytes(100, 0xAB));
  EXPECT_EQ(c.state(), State::failed);
  // A truncated send_name left waiting: the peer closes.
  auto d = Handshake::acceptor(config("acc@host", "c", 2));
  Bytes partial = send_name(flag::offered, "ini@host");
  partial.erase(partial.end() - 3, partial.end());
  d.feed(partial);
  EXPECT_EQ(d.state(), State::await_name);
  d.peer_closed();
  EXPECT_EQ(d.error()->code, Errc::connection_closed);
}

// Over TLS OTP frames the handshake with 4-byte lengths ({packet, 4}): both roles in every
// split, the bytes OTP sends, and its hostile lengths bounded as the 2-byte ones.
TEST(Handshake, FourByteLengthsAsOverTls) {
  const auto four = [](HandshakeConfig c) {
    c.length_bytes = 4;
    return c;
  };
  for (std::size_t chunk : {1, 3, 5, 4096}) {
    auto i = Handshake::initiator(four(config("ini@host", "cookie", 1111)));
    auto a = Handshake::acceptor(four(config("acc@host", "cookie", 2222)));
    exchange(i, a, chunk);
    ASSERT_EQ(i.state(), State::connected) << chunk << " " << (i.error() ? i.error()->message() : "");
    ASSERT_EQ(a.state(), State::connected) << chunk << " " << (a.error() ? a.error()->message() : "");
    EXPECT_EQ(a.peer().name, "ini@host");
  }
  auto i = Handshake::initiator(four(config("a@b", "c", 1)));
  Bytes expected{0, 0, 0, 18, 'N'};
  put64(expected, flag::offered);
  put32(expected, 0x11223344);
  put16(expected, 3);
  put(expected, "a@b");
  EXPECT_EQ(i.take_output(), expected);
  auto huge = Handshake::acceptor(four(config("acc@host", "c", 2)));
  huge.feed(Bytes{0x7F, 0xFF, 0xFF, 0xFF});  // 2 GB announced: no wait for the bytes
  EXPECT_EQ(huge.error()->code, Errc::frame_too_long);
  auto empty = Handshake::acceptor(four(config("acc@host", "c", 2)));
  empty.feed(Bytes{0, 0, 0, 0});
  EXPECT_EQ(empty.error()->code, Errc::truncated);
  // A 2-byte-length peer (plain inet_tcp framing) is no 4-byte handshake.
  auto plain = Handshake::acceptor(four(config("acc@host", "c", 2)));
  plain.feed(send_name(flag::offered, "ini@host"));
  EXPECT_EQ(plain.state(), State::failed);
}

TEST(Handshake, OwnConfigurationChecked) {
  auto i = Handshake::initiator(config("noat", "c", 1));
  EXPECT_EQ(i.error()->code, Errc::bad_name);
  EXPECT_TRUE(i.take_output().empty());
  auto c = config("a@b", "c", 1);
  c.flags |= flag::name_me;
  EXPECT_EQ(Handshake::acceptor(c).error()->code, Errc::name_me_refused);
}

TEST(Handshake, EveryPrefixOfAGoodExchangeWaits) {
  // The acceptor fed each prefix of a good initiator stream neither fails nor connects early.
  auto i = Handshake::initiator(config("ini@host", "c", 1));
  Bytes stream = i.take_output();
  const Bytes r = reply(1, gen_digest(2, "c"));
  stream.insert(stream.end(), r.begin(), r.end());
  for (std::size_t n = 0; n < stream.size(); ++n) {
    auto a = Handshake::acceptor(config("acc@host", "c", 2));
    a.feed(std::span(stream).first(n));
    EXPECT_NE(a.state(), State::failed) << n;
    EXPECT_NE(a.state(), State::connected) << n;
  }
  auto a = Handshake::acceptor(config("acc@host", "c", 2));
  a.feed(stream);
  EXPECT_EQ(a.state(), State::connected);
}
