// dist::Endpoint against a real epmd and real `erl -sname` nodes (net_ticktime 4 s, OTP's
// least) on loopback. Every wait is bounded; every node is killed at the end of its test.
#include <camlbeam/dist/endpoint.hpp>

#include "endpoint_events.hpp"

#include "live_frames.hpp"
#include "live_support.hpp"

#include <camlbeam/etf/etf.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <thread>

using namespace camlbeam::dist;
using namespace camlbeam::dist::live;
using namespace camlbeam::dist::test_support;
using namespace std::chrono_literals;
namespace etf = camlbeam::etf;

namespace {

class EndpointLive : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { ensure_local_epmd(); }

  EndpointOptions options() {
    EndpointOptions o;
    o.node_name = unique("camlbeam_ocaml") + "@" + host;
    o.cookie = cookie;
    // Frames without the atom cache header: 'p' frames both ways, simple to script here.
    o.flags = flag::offered & ~(flag::dist_hdr_atom_cache | flag::fragments);
    o.net_ticktime = 4s;  // as the erl nodes' (ErlNode)
    return o;
  }

  std::optional<EndpointEvent> next(Endpoint& ep, EndpointEvent::Kind kind, std::chrono::milliseconds within) {
    return test_support::next_event(ep, kind, within, skipped);
  }

  const std::string host = short_host();
  std::vector<EndpointEvent> skipped;
};

}  // namespace

TEST_F(EndpointLive, ErlPingsUsAndGetsPong) {
  Endpoint ep(options());
  ErlNode erl(unique("camlbeam_erl"), cookie,
              "io:format(\"ping ~p~n\", [net_adm:ping('" + ep.node_name() + "')]), timer:sleep(30000), halt().");
  const auto up = next(ep, EndpointEvent::Kind::connected, 20s);
  ASSERT_TRUE(up) << erl.seen();
  EXPECT_TRUE(up->peer.starts_with("camlbeam_erl_")) << up->peer;
  EXPECT_EQ(up->flags & flag::dist_hdr_atom_cache, 0u);

  bool answered = false;
  int frames = 0;
  for (const auto deadline = Clock::now() + 10s; !answered && Clock::now() < deadline;) {
    const auto f = next(ep, EndpointEvent::Kind::frame, 500ms);
    if (!f) continue;
    ++frames;
    const auto parsed = parse_frame(f->body);
    ASSERT_TRUE(parsed) << "not a 'p' frame of two terms";
    if (const auto reply = answer_is_auth(*parsed)) {
      ep.send(f->peer, *reply);
      answered = true;
    }
  }
  EXPECT_TRUE(answered) << frames << " frames, none an is_auth call";
  EXPECT_TRUE(erl.wait_for("ping pong", 10s)) << erl.seen();
}

TEST_F(EndpointLive, WeCallErlSurviveABusyConsumerAndSeeItKilled) {
  Endpoint ep(options());
  const std::string erl_node = unique("camlbeam_erl") + "@" + host;
  ErlNode erl(erl_node.substr(0, erl_node.find('@')), cookie,
              std::string(erl_inbox_greeting) +
              "receive {nodedown, D} -> io:format(\"nodedown ~s~n\", [D]) after 30000 -> ok end, halt().");
  ASSERT_TRUE(erl.wait_for("ready", 20s)) << erl.seen();

  // The first send connects (lazily, as OTP does): a REG_SEND {6, From, '', inbox} + Msg.
  const etf::Term from = etf::Term::pid(etf::Pid{ep.node_name(), 1, 0, ep.creation()});
  ep.send(erl_node, reg_send_frame(from, "inbox", etf::Term::atom("hello_from_the_endpoint")));
  const auto up = next(ep, EndpointEvent::Kind::connected, 10s);
  ASSERT_TRUE(up);
  EXPECT_EQ(up->peer, erl_node);
  EXPECT_TRUE(erl.wait_for("nodeup " + ep.node_name(), 10s)) << erl.seen();
  EXPECT_TRUE(erl.wait_for("got hello_from_the_endpoint", 10s)) << erl.seen();

  // A long OCaml call: nobody drains the events for 1.5 net_ticktime. The network thread
  // ticks on its own, and neither side drops the other.
  const auto ticks_before = ep.stats().ticks_received;
  std::this_thread::sleep_for(6s);
  EXPECT_EQ(ep.connected_peers(), std::vector<std::string>{erl_node});
  EXPECT_GE(ep.stats().ticks_received - ticks_before, 4u);
  EXPECT_GE(ep.stats().ticks_sent, 4u);
  EXPECT_FALSE(erl.wait_for("nodedown", 10ms)) << erl.seen();
  EXPECT_FALSE(next(ep, EndpointEvent::Kind::disconnected, 10ms));

  const auto killed = Clock::now();
  erl.kill_now();
  const auto down = next(ep, EndpointEvent::Kind::disconnected, 10s);
  ASSERT_TRUE(down);
  EXPECT_EQ(down->peer, erl_node);
  EXPECT_EQ(down->error.code, Errc::connection_closed) << down->error.message();
  EXPECT_LT(Clock::now() - killed, 2s);  // the kernel closes the socket: no need to wait for silence
  EXPECT_TRUE(ep.connected_peers().empty());
}

TEST_F(EndpointLive, RegistersInEpmdForItsLifetimeOrUsesTheRegistrationGiven) {
  EpmdClient epmd;
  EndpointOptions hidden = options();
  hidden.flags &= ~flag::published;
  const std::string alive = hidden.node_name.substr(0, hidden.node_name.find('@'));
  {
    Endpoint ep(hidden);
    const auto info = epmd.port_please(alive);
    ASSERT_TRUE(info);
    EXPECT_EQ(info->port, ep.port());
    EXPECT_EQ(info->type, static_cast<std::uint8_t>(NodeType::hidden));
  }
  bool gone = false;
  for (int i = 0; i < 40 && !gone; ++i) {  // epmd sees the close at once; allow 2 s
    gone = !epmd.port_please(alive);
    if (!gone) std::this_thread::sleep_for(50ms);
  }
  EXPECT_TRUE(gone);

  EndpointOptions given = options();
  given.listen_port = Listener::loopback().port();  // free a moment ago
  Registration reg = epmd.register_node(given.node_name.substr(0, given.node_name.find('@')), given.listen_port);
  const std::uint32_t creation = reg.creation();
  Endpoint ep(given, std::move(reg));
  EXPECT_EQ(ep.port(), given.listen_port);
  EXPECT_EQ(ep.creation(), creation);
  given.listen_port = 0;
  EXPECT_THROW(Endpoint(given, epmd.register_node(unique("camlbeam_ocaml"), 40005)), DistError);
}

// Both sides call at the same moment, several rounds, with our name below and above the erl
// node's: whoever wins the arbitration, both end with the one same connection.
TEST_F(EndpointLive, SimultaneousConnectsWithErlEndWithOneConnection) {
  constexpr int rounds = 5;
  for (const std::string stem : {"camlbeam_a", "camlbeam_z"}) {  // below and above "camlbeam_erl"
    SCOPED_TRACE(stem);
    EndpointOptions o = options();
    o.node_name = unique(stem) + "@" + host;
    Endpoint ep(o);
    const std::string erl_alive = unique("camlbeam_erl");
    const std::string erl_node = erl_alive + "@" + host;
    const std::string go = ::testing::TempDir() + "/" + erl_alive + "_go";
    // Round I: wait for the file go_I, call us, report, keep the connection 300 ms, say
    // whether it is still up, then drop it.
    ErlNode erl(erl_alive, cookie,
                "N = '" + ep.node_name() + "', io:format(\"ready~n\"),"
                "Wait = fun W(F, 0) -> F; W(F, K) -> case filelib:is_file(F) of true -> F;"
                "  false -> timer:sleep(1), W(F, K - 1) end end,"
                "Round = fun R(I) when I > " + std::to_string(rounds) + " -> ok; R(I) ->"
                "  Wait(\"" + go + "\" ++ integer_to_list(I), 20000),"
                "  C = net_kernel:connect_node(N), timer:sleep(300),"
                "  io:format(\"round ~p ~p ~p~n\", [I, C, lists:member(N, nodes())]),"
                "  erlang:disconnect_node(N), R(I + 1) end,"
                "Round(1), timer:sleep(30000), halt().");
    ASSERT_TRUE(erl.wait_for("ready", 20s)) << erl.seen();
    for (int round = 1; round <= rounds; ++round) {
      SCOPED_TRACE("round " + std::to_string(round));
      std::FILE* f = std::fopen((go + std::to_string(round)).c_str(), "w");
      ASSERT_NE(f, nullptr);
      std::fclose(f);
      // erl sees the file within a millisecond or two; a varying head start for it makes the
      // calls cross at different points of the two handshakes.
      std::this_thread::sleep_for(std::chrono::milliseconds(3 * (round - 1)));
      ep.connect(erl_node);
      const auto up = next(ep, EndpointEvent::Kind::connected, 10s);
      ASSERT_TRUE(up);
      EXPECT_EQ(up->peer, erl_node);
      EXPECT_TRUE(erl.wait_for("round " + std::to_string(round) + " true true", 10s)) << erl.seen();
      const auto down = next(ep, EndpointEvent::Kind::disconnected, 10s);
      ASSERT_TRUE(down);
      EXPECT_EQ(down->error.code, Errc::connection_closed) << down->error.message();
      for (const auto& e : skipped) {  // frames come (global's sync): any other event is wrong
        EXPECT_EQ(e.kind, EndpointEvent::Kind::frame) << e.peer << " " << e.error.message();
      }
      skipped.clear();
      std::remove((go + std::to_string(round)).c_str());
    }
    RecordProperty(stem + "_arbitrations_lost", static_cast<int>(ep.stats().handshakes_failed));
    std::printf("%s: %llu of our handshakes lost an arbitration\n", stem.c_str(),
                static_cast<unsigned long long>(ep.stats().handshakes_failed));
  }
}
