// cpp/dist against the real thing on loopback: the machine's epmd (started on 127.0.0.1
// when none answers) and `erl -sname` nodes of Debian's OTP. Every wait is bounded; every
// node is killed (its process group) at the end of its test.
#include <camlbeam/dist/connection.hpp>
#include <camlbeam/dist/digest.hpp>
#include <camlbeam/dist/epmd.hpp>

#include "erl_node.hpp"

#include <camlbeam/etf/etf.hpp>

#include <gtest/gtest.h>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

using namespace camlbeam::dist;
using namespace camlbeam::dist::test_support;
using namespace std::chrono_literals;

namespace {

const char* const cookie = "camlbeam_dist_cookie";

HandshakeConfig our_config(const std::string& node, const std::string& our_cookie, std::uint32_t creation = 1) {
  HandshakeConfig c;
  c.node_name = node;
  c.cookie = our_cookie;
  c.creation = creation;
  c.challenge = random_challenge();
  return c;
}

Link::Options fast_ticks() {
  Link::Options o;
  o.tick_interval = 1s;  // the erl nodes run with net_ticktime 4: they tick every second
  o.silence_limit = 8s;  // twice OTP's: a loaded machine must not fail the test by a late tick
  return o;
}

class DistLive : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { ensure_local_epmd(); }
  // An erl node that reports the first node to come up (its type, and whether nodes()
  // lists it) and that node going down; started and ready.
  std::unique_ptr<ErlNode> start_watcher(const std::string& node) {
    auto erl = std::make_unique<ErlNode>(
        node.substr(0, node.find('@')), cookie,
        "net_kernel:monitor_nodes(true, [{node_type, all}]), io:format(\"ready ~s~n\", [node()]),"
        "receive {nodeup, N, [{node_type, T}]} -> io:format(\"nodeup ~s ~p ~p~n\", [N, T, lists:member(N, nodes())]) end,"
        "receive {nodedown, D, _} -> io:format(\"nodedown ~s~n\", [D]) after 30000 -> ok end, halt().");
    EXPECT_TRUE(erl->wait_for("ready " + node, 20s)) << erl->seen();
    return erl;
  }

  // An erl node (-sname `sname`, -setcookie `node_cookie`) calling our acceptor, freshly
  // registered, and our acceptor refusing it with `expected`. The node prints
  // "connect <result> <its node()>".
  std::unique_ptr<ErlNode> refused_by_our_acceptor(const std::string& sname, const std::string& node_cookie,
                                                   Errc expected) {
    const std::string alive = unique("camlbeam_ocaml");
    const std::string ours = alive + "@" + host;
    Listener listener = Listener::loopback();
    Registration reg = epmd.register_node(alive, listener.port());
    auto erl = std::make_unique<ErlNode>(
        sname, node_cookie,
        "io:format(\"connect ~p ~p~n\", [net_kernel:connect_node('" + ours + "'), node()]), timer:sleep(30000), halt().");
    Handshake hs = Handshake::acceptor(our_config(ours, cookie, reg.creation()));
    try {
      run_handshake(listener.accept(after(20s)), hs, after(10s));
      ADD_FAILURE() << "the handshake of " << sname << " completed";
    } catch (const DistError& e) {
      EXPECT_EQ(e.code(), expected) << e.what();
    }
    return erl;
  }

  EpmdClient epmd;
  const std::string host = short_host();
};

}  // namespace

TEST_F(DistLive, EpmdRegistrationLivesWithItsSocket) {
  const std::string alive = unique("camlbeam_epmd");
  std::optional<Registration> reg = epmd.register_node(alive, 40001);
  EXPECT_TRUE(reg->active());

  const auto names = epmd.names();
  EXPECT_NE(std::find(names.nodes.begin(), names.nodes.end(), NamesReply::Entry{alive, 40001}), names.nodes.end());
  // What `epmd -names` prints.
  std::string listing;
  if (FILE* p = ::popen("epmd -names", "r")) {
    char buffer[512];
    while (std::fgets(buffer, sizeof buffer, p) != nullptr && listing.size() < 1'000'000) listing += buffer;
    ::pclose(p);
  }
  EXPECT_NE(listing.find("name " + alive + " at port 40001"), std::string::npos) << listing;

  const auto info = epmd.port_please(alive);
  ASSERT_TRUE(info);
  EXPECT_EQ(info->port, 40001);
  EXPECT_EQ(info->type, 77);
  EXPECT_EQ(info->name, alive);

  try {
    epmd.register_node(alive, 40002);
    ADD_FAILURE() << "a second registration of " << alive << " was accepted";
  } catch (const DistError& e) {
    EXPECT_EQ(e.code(), Errc::name_taken);
  }

  reg->release();
  bool gone = false;
  for (int i = 0; i < 40 && !gone; ++i) {  // epmd sees the close at once; allow 2 s
    gone = !epmd.port_please(alive);
    if (!gone) std::this_thread::sleep_for(50ms);
  }
  EXPECT_TRUE(gone);
  EXPECT_FALSE(epmd.port_please(unique("camlbeam_nobody")));
}

TEST_F(DistLive, AnEpmdIsStartedWhenNoneAnswers) {
  // A port nothing listens on (the kernel's pick, released), for an epmd of our own.
  const std::uint16_t port = Listener::loopback().port();
  EpmdEndpoint endpoint;
  endpoint.port = port;
  EpmdClient mine(endpoint);
  ASSERT_FALSE(mine.answers());
  ensure_local_epmd(endpoint);
  EXPECT_TRUE(mine.answers());
  {
    Registration reg = mine.register_node(unique("camlbeam_epmd"), 40003);
    EXPECT_EQ(mine.names().nodes.size(), 1u);
    EXPECT_EQ(mine.names().epmd_port, port);
  }
  // Stop the epmd we started (it refuses while a name is registered; none is now).
  const std::string kill = "epmd -port " + std::to_string(port) + " -kill >/dev/null 2>&1";
  EXPECT_EQ(std::system(kill.c_str()), 0);
  bool stopped = false;
  for (int i = 0; i < 40 && !stopped; ++i) {
    stopped = !mine.answers();
    if (!stopped) std::this_thread::sleep_for(50ms);
  }
  EXPECT_TRUE(stopped);
}

TEST_F(DistLive, OurInitiatorConnectsToErlAndTicks) {
  const std::string erl_node = unique("camlbeam_erl") + "@" + host;
  const std::string ours = unique("camlbeam_ocaml") + "@" + host;
  auto erl = start_watcher(erl_node);

  Connected c = connect_node(erl_node, our_config(ours, cookie), epmd, after(10s));
  EXPECT_EQ(c.peer.name, erl_node);
  EXPECT_EQ(c.flags & flag::required, flag::required);
  EXPECT_NE(c.flags & flag::published, 0u);
  EXPECT_TRUE(erl->wait_for("nodeup " + ours + " visible true", 10s)) << erl->seen();

  Link link(std::move(c), fast_ticks());
  link.serve_until(after(3500ms));  // throws if the node closes or falls silent
  EXPECT_GE(link.stats().ticks_received, 2u);
  EXPECT_GE(link.stats().ticks_sent, 2u);
  EXPECT_FALSE(erl->wait_for("nodedown", 10ms)) << erl->seen();

  link.close();
  EXPECT_TRUE(erl->wait_for("nodedown " + ours, 10s)) << erl->seen();
}

TEST_F(DistLive, HiddenWhenWeDoNotPublish) {
  const std::string erl_node = unique("camlbeam_erl") + "@" + host;
  const std::string ours = unique("camlbeam_ocaml") + "@" + host;
  auto erl = start_watcher(erl_node);
  HandshakeConfig config = our_config(ours, cookie);
  config.flags &= ~flag::published;
  Connected c = connect_node(erl_node, std::move(config), epmd, after(10s));
  EXPECT_EQ(c.flags & flag::published, 0u);
  EXPECT_TRUE(erl->wait_for("nodeup " + ours + " hidden false", 10s)) << erl->seen();
}

TEST_F(DistLive, ErlConnectsToOurAcceptor) {
  const std::string alive = unique("camlbeam_ocaml");
  const std::string ours = alive + "@" + host;
  Listener listener = Listener::loopback();
  Registration reg = epmd.register_node(alive, listener.port());

  ErlNode erl(unique("camlbeam_erl"), cookie,
              "net_kernel:monitor_nodes(true), N = '" + ours + "',"
              "spawn(fun() -> io:format(\"ping ~p~n\", [net_adm:ping(N)]) end),"
              "receive {nodeup, N} -> io:format(\"nodeup~n\") after 15000 -> io:format(\"no nodeup~n\") end,"
              "timer:sleep(3000), io:format(\"still ~p~n\", [lists:member(N, nodes())]),"
              "receive {nodedown, N} -> io:format(\"nodedown~n\") after 30000 -> ok end, halt().");

  Handshake hs = Handshake::acceptor(our_config(ours, cookie, reg.creation()));
  Connected c = run_handshake(listener.accept(after(20s)), hs, after(10s));
  EXPECT_TRUE(c.peer.name.starts_with("camlbeam_erl_")) << c.peer.name;
  EXPECT_EQ(c.peer.flags & flag::required, flag::required);
  EXPECT_TRUE(erl.wait_for("nodeup", 10s)) << erl.seen();

  Link link(std::move(c), fast_ticks());
  // The control messages, read with cpp/etf: a distribution header (we offered
  // DIST_HDR_ATOM_CACHE) and the control tuple after it; nothing is answered yet.
  namespace etf = camlbeam::etf;
  etf::AtomCache cache;
  std::vector<std::string> controls;
  link.serve_until(after(4s), [&](std::span<const std::uint8_t> f) {
    etf::AtomCacheRefs refs;
    const auto header = etf::parse_dist_header(f, etf::AtomTextEncoding::utf8, cache, refs);
    ASSERT_TRUE(header) << header.error->message();
    if (header.header.kind == etf::DistHeader::Kind::fragment_continuation) return;
    etf::TermBuilder builder;  // terms after a header have no version byte
    const auto decoded =
        etf::decode_body(f.subspan(header.end), builder, etf::DecodeOptions{.atom_cache_refs = &refs});
    ASSERT_TRUE(decoded) << decoded.error->message();
    controls.push_back(builder.take().to_string());
  });
  // ping monitors net_kernel (MONITOR_P, 19) and asks it {is_auth, Node} (REG_SEND, 6);
  // answering is the next layer's, so ping itself waits.
  std::string all;
  for (const auto& m : controls) all += m + "\n";
  EXPECT_NE(all.find("{19,"), std::string::npos) << all;
  EXPECT_NE(all.find("{6,"), std::string::npos) << all;
  EXPECT_NE(all.find("net_kernel"), std::string::npos) << all;
  EXPECT_GE(link.stats().ticks_received, 2u);
  EXPECT_TRUE(erl.wait_for("still true", 5s)) << erl.seen();
  link.close();
  EXPECT_TRUE(erl.wait_for("nodedown", 10s)) << erl.seen();
}

TEST_F(DistLive, WrongCookieRefusedWhenWeCall) {
  const std::string erl_alive = unique("camlbeam_erl");
  ErlNode erl(erl_alive, cookie, "io:format(\"ready~n\"), timer:sleep(30000), halt().");
  ASSERT_TRUE(erl.wait_for("ready", 20s)) << erl.seen();
  try {
    connect_node(erl_alive + "@" + host, our_config(unique("camlbeam_ocaml") + "@" + host, "not_the_cookie"), epmd,
                 after(10s));
    ADD_FAILURE() << "handshake with a wrong cookie completed";
  } catch (const DistError& e) {
    // OTP closes without a challenge_ack.
    EXPECT_EQ(e.code(), Errc::connection_closed) << e.what();
  }
  EXPECT_TRUE(erl.wait_for("Connection attempt from", 5s)) << erl.seen();
}

TEST_F(DistLive, WrongCookieRefusedWhenErlCalls) {
  auto erl = refused_by_our_acceptor(unique("camlbeam_erl"), "not_the_cookie", Errc::bad_digest);
  EXPECT_TRUE(erl->wait_for("connect false", 10s)) << erl->seen();
}

TEST_F(DistLive, ADynamicallyNamedNodeIsRefusedClearly) {
  // `-sname undefined@host`: the node has no name until an acceptor gives it one (NAME_ME).
  auto erl = refused_by_our_acceptor("undefined@" + host, cookie, Errc::name_me_refused);
  EXPECT_TRUE(erl->wait_for("connect false nonode@nohost", 10s)) << erl->seen();
}
