// TLS distribution against real `erl -proto_dist inet_tls -ssl_dist_optfile F` nodes on
// loopback. A CA, a second CA nobody trusts, and node certificates are made with the
// `openssl` command at the start of the suite, in a directory of its own.
#include <camlbeam/dist/endpoint.hpp>
#include <camlbeam/dist/tls.hpp>

#include "endpoint_events.hpp"
#include "live_frames.hpp"
#include "live_support.hpp"

#include <camlbeam/etf/etf.hpp>

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <thread>

using namespace camlbeam::dist;
using namespace camlbeam::dist::live;
using namespace camlbeam::dist::test_support;
using namespace std::chrono_literals;
namespace etf = camlbeam::etf;

namespace {

// The shell's status of `command`, its output kept in `log`.
int run(const std::string& command, const std::string& log) {
  const int status = std::system((command + " >>" + log + " 2>&1").c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

class TlsLive : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ensure_local_epmd();
    char dir_template[] = "/tmp/camlbeam_tls_XXXXXX";
    ASSERT_NE(::mkdtemp(dir_template), nullptr);
    dir = dir_template;
    log = dir + "/openssl.log";
    const std::string host = short_host();
    // P-256 keys: quick to make, and OTP's ssl takes them.
    const std::string new_key = "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    for (const std::string ca : {"ca", "rogue_ca"}) {
      ASSERT_EQ(run(new_key + " -x509 -days 2 -subj /CN=camlbeam-test-" + ca + " -keyout " + dir + "/" + ca +
                        ".key -out " + dir + "/" + ca + ".pem -addext basicConstraints=critical,CA:TRUE"
                        " -addext keyUsage=critical,keyCertSign,cRLSign",
                    log),
                0)
          << log;
    }
    // OTP's client checks that the server's certificate names the host part of the node it
    // calls (as ours does): the short host name, as -sname gives it.
    {
      std::ofstream ext(dir + "/node.ext");
      ext << "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
          << "extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=DNS:" << host << ",DNS:localhost,IP:127.0.0.1\n";
    }
    for (const auto& [node, ca] : {std::pair{"ours", "ca"}, {"erl", "ca"}, {"rogue", "rogue_ca"}}) {
      const std::string stem = dir + "/" + node;
      ASSERT_EQ(run(new_key + " -subj /CN=" + host + " -keyout " + stem + ".key -out " + stem + ".csr", log), 0) << log;
      ASSERT_EQ(run("openssl x509 -req -days 2 -in " + stem + ".csr -CA " + dir + "/" + ca + ".pem -CAkey " + dir + "/" +
                        ca + ".key -CAcreateserial -extfile " + dir + "/node.ext -out " + stem + ".pem",
                    log),
                0)
          << log;
      // Every node trusts the one CA only: the rogue node's certificate is what is refused.
      std::ofstream optfile(stem + ".conf");
      const std::string files = "{certfile, \"" + stem + ".pem\"}, {keyfile, \"" + stem + ".key\"}, {cacertfile, \"" +
                                dir + "/ca.pem\"}, {verify, verify_peer}";
      optfile << "[{server, [" << files << ", {fail_if_no_peer_cert, true}]},\n {client, [" << files << "]}].\n";
    }
  }
  static void TearDownTestSuite() {
    std::error_code ignored;
    std::filesystem::remove_all(dir, ignored);
  }

  static std::string optfile(const std::string& node) { return dir + "/" + node + ".conf"; }
  static std::vector<std::string> tls_flags(const std::string& node) {
    return {"-proto_dist", "inet_tls", "-ssl_dist_optfile", optfile(node)};
  }

  EndpointOptions options(const std::function<void(TlsOptions&)>& change_tls = {}) {
    EndpointOptions o;
    o.node_name = unique("camlbeam_tls") + "@" + host;
    o.cookie = cookie;
    o.flags = flag::offered & ~(flag::dist_hdr_atom_cache | flag::fragments);  // 'p' frames, as live_frames.hpp reads
    o.net_ticktime = 4s;
    auto tls = read_ssl_dist_optfile(optfile("ours"));
    if (auto* e = std::get_if<Error>(&tls)) throw DistError(*e);
    if (change_tls) change_tls(std::get<TlsOptions>(tls));
    o.tls = std::make_shared<const TlsContext>(std::get<TlsOptions>(tls));
    return o;
  }

  std::optional<EndpointEvent> next(Endpoint& ep, EndpointEvent::Kind kind, std::chrono::milliseconds within) {
    return next_event(ep, kind, within, skipped);
  }

  // Answers erl's ping with pong; false if no is_auth call came within 10 s.
  bool answer_ping(Endpoint& ep) {
    for (const auto deadline = Clock::now() + 10s; Clock::now() < deadline;) {
      const auto f = next(ep, EndpointEvent::Kind::frame, 500ms);
      if (!f) continue;
      const auto parsed = parse_frame(f->body);
      if (!parsed) return false;
      if (const auto reply = answer_is_auth(*parsed)) {
        ep.send(f->peer, *reply);
        return true;
      }
    }
    return false;
  }

  static inline std::string dir;
  static inline std::string log;
  const std::string host = short_host();
  std::vector<EndpointEvent> skipped;
};

TEST_F(TlsLive, ErlPingsUsOverTlsAndGetsPong) {
  Endpoint ep(options());
  ErlNode erl(unique("camlbeam_tls_erl"), cookie,
              "io:format(\"ping ~p~n\", [net_adm:ping('" + ep.node_name() + "')]),"
              "timer:sleep(30000), halt().",
              tls_flags("erl"));
  const auto up = next(ep, EndpointEvent::Kind::connected, 20s);
  ASSERT_TRUE(up) << erl.seen();
  EXPECT_TRUE(up->peer.starts_with("camlbeam_tls_erl_")) << up->peer;
  EXPECT_TRUE(answer_ping(ep));
  EXPECT_TRUE(erl.wait_for("ping pong", 10s)) << erl.seen();
  for (const auto& e : skipped) EXPECT_NE(e.kind, EndpointEvent::Kind::refused) << e.error.message();
}

TEST_F(TlsLive, WeCallErlOverTlsAndItGetsOurMessage) {
  Endpoint ep(options());
  const std::string erl_node = unique("camlbeam_tls_erl") + "@" + host;
  // The erl node reports that its connection to us is TLS: its dist controller is an ssl
  // connection handler's process, not a port.
  ErlNode erl(erl_node.substr(0, erl_node.find('@')), cookie,
              std::string(erl_inbox_greeting) +
              "[{_, C} | _] = erlang:system_info(dist_ctrl),"
              "io:format(\"controller ~p~n\", [if is_pid(C) -> pid; true -> port end]),"
              "{inbox, N} ! {big, binary:copy(<<7>>, 8000000)},"
              "receive {big, B} -> io:format(\"big ~p ~p~n\", [byte_size(B), B =:= binary:copy(<<9>>, 8000000)]) end,"
              "timer:sleep(30000), halt().",
              tls_flags("erl"));
  ASSERT_TRUE(erl.wait_for("ready", 20s)) << erl.seen();
  const etf::Term from = etf::Term::pid(etf::Pid{ep.node_name(), 1, 0, ep.creation()});
  ep.send(erl_node, reg_send_frame(from, "inbox", etf::Term::atom("hello_over_tls")));
  const auto up = next(ep, EndpointEvent::Kind::connected, 10s);
  ASSERT_TRUE(up) << (skipped.empty() ? "" : skipped.back().error.message()) << erl.seen();
  EXPECT_EQ(up->peer, erl_node);
  EXPECT_TRUE(erl.wait_for("nodeup " + ep.node_name(), 10s)) << erl.seen();
  EXPECT_TRUE(erl.wait_for("got hello_over_tls", 10s)) << erl.seen();
  EXPECT_TRUE(erl.wait_for("controller pid", 10s)) << erl.seen();

  // 8 MB each way: some 500 TLS records, more than the socket takes at once (OpenSSL's
  // partial writes resumed on writable), reads cut by the loop's turns.
  // Other frames come too (global's sync): the one to `inbox` is the erl node's.
  std::optional<PassThrough> to_inbox;
  for (const auto deadline = Clock::now() + 10s; !to_inbox && Clock::now() < deadline;) {
    const auto f = next(ep, EndpointEvent::Kind::frame, 500ms);
    if (!f) continue;
    auto parsed = parse_frame(f->body);
    ASSERT_TRUE(parsed);
    const auto control = parsed->control.tuple_elements();
    if (control.size() == 4 && control[0].as_int64() == 6 && control[3].is_atom("inbox")) to_inbox = std::move(parsed);
  }
  ASSERT_TRUE(to_inbox && to_inbox->message);
  const std::vector<std::uint8_t> sevens(8000000, 7);
  EXPECT_TRUE(*to_inbox->message == etf::Term::tuple({etf::Term::atom("big"), etf::Term::binary(sevens)}))
      << to_inbox->message->to_string().substr(0, 200);
  const std::vector<std::uint8_t> nines(8000000, 9);
  ep.send(erl_node, reg_send_frame(from, "inbox", etf::Term::tuple({etf::Term::atom("big"), etf::Term::binary(nines)})));
  EXPECT_TRUE(erl.wait_for("big 8000000 true", 10s)) << erl.seen();
  // Ticks flow both ways inside TLS for longer than net_ticktime.
  std::this_thread::sleep_for(5s);
  EXPECT_EQ(ep.connected_peers(), std::vector<std::string>{erl_node});
  EXPECT_GE(ep.stats().ticks_received, 3u);
}

TEST_F(TlsLive, ANodeWithACertificateOfAnotherCaIsRefusedBothWays) {
  Endpoint ep(options());
  const std::string rogue = unique("camlbeam_tls_rogue");
  ErlNode erl(rogue, cookie,
              "io:format(\"ready~n\"), io:format(\"ping ~p~n\", [net_adm:ping('" + ep.node_name() + "')]),"
              "timer:sleep(30000), halt().",
              tls_flags("rogue"));
  // It calls us: our server refuses its certificate.
  const auto refused = next(ep, EndpointEvent::Kind::refused, 20s);
  ASSERT_TRUE(refused) << erl.seen();
  EXPECT_EQ(refused->error.code, Errc::tls_failed) << refused->error.message();
  EXPECT_NE(refused->error.detail.find("certificate"), std::string::npos) << refused->error.message();
  std::printf("refused: %s\n", refused->error.message().c_str());
  EXPECT_TRUE(erl.wait_for("ping pang", 10s)) << erl.seen();

  // We call it: our client refuses its certificate.
  ep.connect(rogue + "@" + host);
  const auto down = next(ep, EndpointEvent::Kind::disconnected, 10s);
  ASSERT_TRUE(down);
  EXPECT_EQ(down->peer, rogue + "@" + host);
  EXPECT_EQ(down->error.code, Errc::tls_failed) << down->error.message();
  EXPECT_NE(down->error.detail.find("certificate"), std::string::npos) << down->error.message();
  std::printf("disconnected: %s\n", down->error.message().c_str());
  EXPECT_TRUE(ep.connected_peers().empty());
  for (const auto& e : skipped) EXPECT_NE(e.kind, EndpointEvent::Kind::connected) << e.peer;
}

// As OTP's client, ours checks that the server's certificate names the host it calls.
TEST_F(TlsLive, OurClientRefusesACertificateForAnotherHost) {
  Endpoint ep(options([](TlsOptions& tls) { tls.client.server_name = "elsewhere.invalid"; }));
  const std::string erl_alive = unique("camlbeam_tls_erl");
  ErlNode erl(erl_alive, cookie, "io:format(\"ready~n\"), timer:sleep(30000), halt().", tls_flags("erl"));
  ASSERT_TRUE(erl.wait_for("ready", 20s)) << erl.seen();
  ep.connect(erl_alive + "@" + host);
  const auto down = next(ep, EndpointEvent::Kind::disconnected, 10s);
  ASSERT_TRUE(down);
  EXPECT_EQ(down->error.code, Errc::tls_failed) << down->error.message();
  EXPECT_NE(down->error.detail.find("hostname mismatch"), std::string::npos) << down->error.message();
  EXPECT_TRUE(ep.connected_peers().empty());
}

// A TLS handshake that stops halfway costs the setup time and no more, in both roles.
TEST_F(TlsLive, AStalledTlsHandshakeIsDroppedAtTheSetupTimeoutBothWays) {
  EndpointOptions o = options();
  o.setup_timeout = 500ms;
  Endpoint ep(o);

  // A caller that sends the start of a TLS record (a handshake record of 80 bytes) and stops.
  Socket stalled = Socket::connect("127.0.0.1", ep.port(), after(1s));
  const std::vector<std::uint8_t> part_of_a_hello{0x16, 0x03, 0x01, 0x00, 0x50, 0x01, 0x00};
  stalled.write_all(part_of_a_hello, after(1s));
  const auto start = Clock::now();
  std::uint8_t buffer[64];
  EXPECT_EQ(stalled.read_some(buffer, after(5s)), 0u);  // we close it
  EXPECT_GE(Clock::now() - start, 400ms);
  const auto refused = next(ep, EndpointEvent::Kind::refused, 1s);
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->error.code, Errc::timeout) << refused->error.message();

  // A node that takes our call and never answers our ClientHello.
  EpmdClient epmd;
  Listener mute = Listener::loopback();
  const std::string alive = unique("camlbeam_mute");
  Registration registration = epmd.register_node(alive, mute.port());
  ep.connect(alive + "@" + host);
  Socket called = mute.accept(after(5s));
  const auto down = next(ep, EndpointEvent::Kind::disconnected, 5s);
  ASSERT_TRUE(down);
  EXPECT_EQ(down->peer, alive + "@" + host);
  EXPECT_EQ(down->error.code, Errc::timeout) << down->error.message();
  // What came was a ClientHello (a TLS handshake record), and then we closed.
  std::vector<std::uint8_t> hello;
  for (int i = 0; i < 100; ++i) {
    const std::size_t n = called.read_some(buffer, after(2s));
    if (n == 0) break;
    hello.insert(hello.end(), buffer, buffer + n);
  }
  ASSERT_GE(hello.size(), 6u);
  EXPECT_EQ(hello[0], 0x16);  // handshake record
  EXPECT_EQ(hello[5], 0x01);  // ClientHello
}

TEST_F(TlsLive, PlainTcpAndTlsDoNotMeet) {
  EndpointOptions o = options();
  o.setup_timeout = 3s;  // a plain node may wait for the rest of what it takes for a long packet
  Endpoint ep(o);
  // A plain erl node calls our TLS endpoint: its handshake is no TLS, and is refused.
  const std::string plain = unique("camlbeam_plain_erl");
  ErlNode erl(plain, cookie,
              "io:format(\"ready~n\"), io:format(\"ping ~p~n\", [net_adm:ping('" + ep.node_name() + "')]),"
              "timer:sleep(30000), halt().");
  const auto refused = next(ep, EndpointEvent::Kind::refused, 20s);
  ASSERT_TRUE(refused) << erl.seen();
  EXPECT_EQ(refused->error.code, Errc::tls_failed) << refused->error.message();
  std::printf("refused: %s\n", refused->error.message().c_str());
  EXPECT_TRUE(erl.wait_for("ping pang", 15s)) << erl.seen();

  // Our TLS endpoint calls the plain node. It reads our ClientHello's first bytes as a long
  // packet's length and waits for the rest, or hangs up: never a connection.
  ep.connect(plain + "@" + host);
  const auto down = next(ep, EndpointEvent::Kind::disconnected, 10s);
  ASSERT_TRUE(down);
  EXPECT_TRUE(down->error.code == Errc::tls_failed || down->error.code == Errc::connection_closed ||
              down->error.code == Errc::timeout)
      << down->error.message();
  std::printf("disconnected: %s\n", down->error.message().c_str());
  EXPECT_TRUE(ep.connected_peers().empty());
}

}  // namespace
