// The ssl_dist_optfile reader: the files OTP's documentation shows, every option we do not
// implement refused by name, malformed terms refused with their line.
#include <camlbeam/dist/tls.hpp>

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

using namespace camlbeam::dist;

namespace {

const char* const good_file = R"(%% As in OTP's "Using SSL for Erlang Distribution".
[{server,
  [{certfile, "/etc/ssl/node.pem"},
   {keyfile, "/etc/ssl/node.key"},
   {cacertfile, "/etc/ssl/ca.pem"},
   {verify, verify_peer},
   {fail_if_no_peer_cert, true}]},
 {client,
  [{certfile, "/etc/ssl/node.pem"},
   {keyfile, "/etc/ssl/node.key"},  % a comment
   {cacertfile, "/etc/ssl/ca.pem"},
   {verify, verify_peer}]}].
)";

Error error_of(std::string_view text) {
  auto result = parse_ssl_dist_optfile(text);
  if (auto* e = std::get_if<Error>(&result)) return *e;
  ADD_FAILURE() << "accepted: " << text;
  return {};
}

std::string server_with(const std::string& option) {
  return R"([{server, [{certfile, "c.pem"}, {cacertfile, "ca.pem"}, {verify, verify_peer}, )" + option + "]}].";
}

TEST(SslOptfile, ReadsTheDocumentedFile) {
  auto result = parse_ssl_dist_optfile(good_file);
  ASSERT_TRUE(std::holds_alternative<TlsOptions>(result)) << std::get<Error>(result).message();
  const TlsOptions& o = std::get<TlsOptions>(result);
  EXPECT_EQ(o.server.certfile, "/etc/ssl/node.pem");
  EXPECT_EQ(o.server.keyfile, "/etc/ssl/node.key");
  EXPECT_EQ(o.server.cacertfile, "/etc/ssl/ca.pem");
  EXPECT_TRUE(o.server.verify_peer);
  EXPECT_TRUE(o.server.fail_if_no_peer_cert);
  EXPECT_EQ(o.client.certfile, "/etc/ssl/node.pem");
  EXPECT_TRUE(o.client.verify_peer);
  EXPECT_TRUE(o.client.check_host);
  EXPECT_FALSE(o.client.server_name);
}

TEST(SslOptfile, AQuotedAtomIsNoFileName) {
  EXPECT_EQ(error_of(R"([{server, [{certfile, '/etc/ssl/node.pem'}]}].)").code, Errc::bad_optfile);
}

TEST(SslOptfile, ServerNameIndicationDisableOrAName) {
  const std::string stem = R"([{server, [{certfile, "c.pem"}]}, {client, [{server_name_indication, )";
  auto off = parse_ssl_dist_optfile(stem + "disable}]}].");
  ASSERT_TRUE(std::holds_alternative<TlsOptions>(off));
  EXPECT_FALSE(std::get<TlsOptions>(off).client.check_host);
  auto named = parse_ssl_dist_optfile(stem + "\"node.example\"}]}].");
  ASSERT_TRUE(std::holds_alternative<TlsOptions>(named));
  EXPECT_EQ(std::get<TlsOptions>(named).client.server_name, "node.example");
  EXPECT_EQ(error_of(stem + "true}]}].").code, Errc::bad_optfile);
}

TEST(SslOptfile, EveryOptionWeDoNotImplementIsRefusedByName) {
  for (const std::string option :
       {"{verify_fun, {fun, x}}", "{depth, 2}", "{password, \"secret\"}", "{versions, ['tlsv1.3']}",
        "{ciphers, \"ALL\"}", "{crl_check, true}", "{secure_renegotiate, true}", "{reuse_sessions, false}",
        "{partial_chain, fun}", "{cacerts, []}", "{honor_cipher_order, true}", "{server_name_indication, disable}"}) {
    SCOPED_TRACE(option);
    const Error e = error_of(server_with(option));
    EXPECT_EQ(e.code, Errc::unsupported_tls_option);
    EXPECT_NE(e.detail.find(option.substr(1, option.find(',') - 1)), std::string::npos) << e.detail;
  }
  // fail_if_no_peer_cert is the server's: a client given it is told so.
  EXPECT_EQ(error_of(R"([{server, [{certfile, "c"}]}, {client, [{fail_if_no_peer_cert, true}]}].)").code,
            Errc::unsupported_tls_option);
  EXPECT_EQ(error_of(R"([{server, [{certfile, "c"}]}, {both, []}].)").code, Errc::unsupported_tls_option);
}

TEST(SslOptfile, IncompleteOrContradictoryOptionsAreRefused) {
  for (const std::string text : {
           "[].",                                                             // no server
           R"([{client, [{certfile, "c"}]}].)",                               // no server
           R"([{server, [{keyfile, "k"}]}].)",                                // a server with no certificate
           R"([{server, [{certfile, "c"}, {fail_if_no_peer_cert, true}]}].)",  // without verify_peer
           R"([{server, [{certfile, "c"}, {verify, verify_peer}]}].)",         // verify against nothing
           R"([{server, [{certfile, "c"}, {certfile, "d"}]}].)",               // given twice
           R"([{server, [{certfile, "c"}]}, {server, [{certfile, "c"}]}].)",   // the role twice
           R"([{server, [{certfile, "c"}, {verify, maybe}]}].)",
           R"([{server, [{certfile, "c"}, {verify, verify_peer}, {cacertfile, ""}]}].)",
           R"([{server, [{certfile, "c"}, {fail_if_no_peer_cert, "yes"}]}].)",
           R"([{server, [certfile]}].)",
           R"([{server, {certfile, "c"}}].)",
       }) {
    SCOPED_TRACE(text);
    EXPECT_EQ(error_of(text).code, Errc::bad_optfile);
  }
}

TEST(SslOptfile, MalformedTermsAreRefusedWithTheirLine) {
  for (const std::string text : {
           "",
           R"([{server, [{certfile, "c"}]}])",          // no dot
           R"([{server, [{certfile, "c"}]}]. extra.)",  // two terms
           R"([{server, [{certfile, "c}]}].)",          // unclosed string
           R"([{server, [{certfile, "c"}]].)",          // unbalanced
           R"([{server, [{certfile, "c"},]}].)",        // trailing comma
           R"([{server, [{certfile, "c\q"}]}].)",       // unknown escape
           R"([{server, [{Certfile, "c"}]}].)",         // a variable
           R"([{server, [{certfile, <<"c">>}]}].)",     // a binary
           R"({server, [{certfile, "c"}]}.)",           // not a list
       }) {
    SCOPED_TRACE(text);
    EXPECT_EQ(error_of(text).code, Errc::bad_optfile);
  }
  const Error e = error_of("[{server,\n  [{certfile, \"c\"}\n   {keyfile, \"k\"}]}].");
  EXPECT_NE(e.detail.find("line 3"), std::string::npos) << e.detail;
  // Deep nesting is bounded, not recursed into.
  EXPECT_EQ(error_of(std::string(100000, '[') + std::string(100000, ']') + ".").code, Errc::bad_optfile);
}

TEST(SslOptfile, ReadsAFileAndNamesOneItCannotRead) {
  const std::string path = ::testing::TempDir() + "/camlbeam_ssl_optfile_test.conf";
  {
    std::ofstream out(path);
    out << R"([{server, [{certfile, "c.pem"}, {verify, verify_none}]}].)" << '\n';
  }
  auto read = read_ssl_dist_optfile(path);
  ASSERT_TRUE(std::holds_alternative<TlsOptions>(read));
  EXPECT_FALSE(std::get<TlsOptions>(read).server.verify_peer);
  std::remove(path.c_str());
  auto missing = read_ssl_dist_optfile(path);
  ASSERT_TRUE(std::holds_alternative<Error>(missing));
  EXPECT_EQ(std::get<Error>(missing).code, Errc::bad_optfile);
  EXPECT_NE(std::get<Error>(missing).detail.find(path), std::string::npos);
}

TEST(TlsContextTest, AFileOpenSslCannotUseIsNamed) {
  TlsOptions o;
  o.server.certfile = "/nonexistent/camlbeam.pem";
  try {
    TlsContext context(o);
    FAIL() << "a missing certificate was accepted";
  } catch (const DistError& e) {
    EXPECT_EQ(e.code(), Errc::tls_config);
    EXPECT_NE(e.error().detail.find("/nonexistent/camlbeam.pem"), std::string::npos) << e.what();
  }
}

}  // namespace
