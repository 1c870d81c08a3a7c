// run_handshake and Link over loopback sockets, with a scripted peer instead of a node:
// a garbage sender, a staller, a silent peer, a closing one. No epmd, no erl.
#include <camlbeam/dist/connection.hpp>

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <chrono>
#include <thread>

using namespace camlbeam::dist;
using namespace std::chrono_literals;
using Bytes = std::vector<std::uint8_t>;

namespace {

HandshakeConfig acceptor_config() {
  HandshakeConfig c;
  c.node_name = "acc@host";
  c.cookie = "c";
  c.challenge = 2;
  return c;
}

// Errc of what f throws (bad_state if it throws nothing).
template <class F>
Errc thrown(F&& f) {
  try {
    f();
  } catch (const DistError& e) {
    return e.code();
  }
  return Errc::bad_state;
}

// A connected pair: the client side and what the listener accepted.
std::pair<Socket, Socket> pair() {
  Listener l = Listener::loopback();
  Socket client = Socket::connect("127.0.0.1", l.port(), after(2s));
  Socket server = l.accept(after(2s));
  return {std::move(client), std::move(server)};
}

}  // namespace

TEST(Socket, GarbageBeforeTheNameIsATypedError) {
  auto [peer, ours] = pair();
  peer.write_all(Bytes{0, 5, 'G', 'E', 'T', ' ', '/'}, after(1s));
  Handshake hs = Handshake::acceptor(acceptor_config());
  EXPECT_EQ(thrown([&] { run_handshake(std::move(ours), hs, after(2s)); }), Errc::unexpected_message);
}

TEST(Socket, AnOverlongDeclaredLengthFailsWithoutWaiting) {
  auto [peer, ours] = pair();
  peer.write_all(Bytes{0xFF, 0xF0}, after(1s));
  Handshake hs = Handshake::acceptor(acceptor_config());
  const auto start = Clock::now();
  EXPECT_EQ(thrown([&] { run_handshake(std::move(ours), hs, after(5s)); }), Errc::frame_too_long);
  EXPECT_LT(Clock::now() - start, 1s);
}

TEST(Socket, AStallingPeerTimesOut) {
  auto [peer, ours] = pair();
  peer.write_all(Bytes{0, 20, 'N', 0, 0}, after(1s));  // part of a send_name, then nothing
  Handshake hs = Handshake::acceptor(acceptor_config());
  EXPECT_EQ(thrown([&] { run_handshake(std::move(ours), hs, after(300ms)); }), Errc::timeout);
}

TEST(Socket, APeerClosingMidHandshake) {
  auto [peer, ours] = pair();
  peer.write_all(Bytes{0, 20, 'N', 0, 0}, after(1s));
  peer.close();
  Handshake hs = Handshake::acceptor(acceptor_config());
  EXPECT_EQ(thrown([&] { run_handshake(std::move(ours), hs, after(2s)); }), Errc::connection_closed);
}

TEST(Socket, ConnectToNothingFails) {
  // A port bound and not listening: held by this test, so that nothing else can listen on
  // it meanwhile, and refused by the kernel.
  Fd bound(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(bound);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(bound.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address), 0);
  socklen_t length = sizeof address;
  ASSERT_EQ(::getsockname(bound.get(), reinterpret_cast<sockaddr*>(&address), &length), 0);
  const std::uint16_t port = ntohs(address.sin_port);
  EXPECT_EQ(thrown([&] { Socket::connect("127.0.0.1", port, after(1s)); }), Errc::connect_failed);
}

TEST(Link, TicksAndFramesAreCountedAndASilentPeerDropped) {
  auto [peer, ours] = pair();
  Bytes hello = frame(Bytes{'p', 131, 106});
  const Bytes tick = tick_frame();
  hello.insert(hello.end(), tick.begin(), tick.end());
  peer.write_all(hello, after(1s));
  Link::Options o;
  o.tick_interval = 100ms;
  o.silence_limit = 400ms;
  // The first bytes may come as the handshake's leftover.
  Link link(Connected{std::move(ours), PeerInfo{"peer@host", 0, 0}, 0, tick_frame()}, o);
  int frames = 0;
  EXPECT_EQ(thrown([&] { link.serve_until(after(3s), [&](std::span<const std::uint8_t>) { ++frames; }); }),
            Errc::peer_silent);
  EXPECT_EQ(frames, 1);
  EXPECT_EQ(link.stats().ticks_received, 2u);
  EXPECT_GE(link.stats().ticks_sent, 2u);
  // What we sent the peer: ticks only.
  std::uint8_t buffer[64];
  const std::size_t n = peer.read_some(buffer, after(1s));
  ASSERT_GE(n, 4u);
  EXPECT_EQ(Bytes(buffer, buffer + 4), tick_frame());
}

TEST(Link, ClosedPeerAndOversizedFrame) {
  {
    auto [peer, ours] = pair();
    peer.close();
    Link link(Connected{std::move(ours), PeerInfo{"peer@host", 0, 0}, 0, {}}, Link::Options{});
    EXPECT_EQ(thrown([&] { link.serve_until(after(2s)); }), Errc::connection_closed);
  }
  {
    auto [peer, ours] = pair();
    peer.write_all(Bytes{0x7F, 0, 0, 0}, after(1s));
    Link::Options o;
    o.max_frame = 1 << 20;
    Link link(Connected{std::move(ours), PeerInfo{"peer@host", 0, 0}, 0, {}}, o);
    EXPECT_EQ(thrown([&] { link.serve_until(after(2s)); }), Errc::frame_too_long);
  }
}
