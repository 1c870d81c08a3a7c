// The EPMD encoders and reply parsers, without a daemon.
#include <camlbeam/dist/epmd.hpp>

#include <gtest/gtest.h>

#include <string>
#include <vector>

using namespace camlbeam::dist;
using Bytes = std::vector<std::uint8_t>;

namespace {
Errc code_of(auto&& f) {
  try {
    f();
  } catch (const DistError& e) {
    return e.code();
  }
  ADD_FAILURE() << "no DistError";
  return Errc::bad_state;
}
}  // namespace

TEST(Epmd, Requests) {
  EXPECT_EQ(alive2_request("ab", 0x1234, NodeType::normal),
            (Bytes{0, 15, 120, 0x12, 0x34, 77, 0, 0, 6, 0, 6, 0, 2, 'a', 'b', 0, 0}));
  EXPECT_EQ(port_please2_request("ab"), (Bytes{0, 3, 122, 'a', 'b'}));
  EXPECT_EQ(names_request(), (Bytes{0, 1, 110}));
  EXPECT_EQ(code_of([] { alive2_request("a@b", 1, NodeType::normal); }), Errc::bad_name);
  EXPECT_EQ(code_of([] { port_please2_request(""); }), Errc::bad_name);
  EXPECT_EQ(code_of([] { port_please2_request(std::string(2000, 'a')); }), Errc::bad_name);
}

TEST(Epmd, AliveReplies) {
  EXPECT_EQ(parse_alive2_reply(Bytes{118, 0, 0x65, 0x43, 0x21, 0x0f}), 0x6543210fu);
  EXPECT_EQ(parse_alive2_reply(Bytes{121, 0, 0, 3}), 3u);
  EXPECT_EQ(code_of([] { parse_alive2_reply(Bytes{118, 1}); }), Errc::name_taken);
  EXPECT_EQ(code_of([] { parse_alive2_reply(Bytes{118, 0, 1}); }), Errc::epmd_bad_reply);
  EXPECT_EQ(code_of([] { parse_alive2_reply(Bytes{118, 0, 0, 0, 0, 1, 9}); }), Errc::epmd_bad_reply);
  EXPECT_EQ(code_of([] { parse_alive2_reply(Bytes{}); }), Errc::epmd_bad_reply);
  EXPECT_EQ(code_of([] { parse_alive2_reply(Bytes{1, 0, 0, 0, 0, 0}); }), Errc::epmd_bad_reply);
}

TEST(Epmd, PortReplies) {
  const Bytes good{119, 0, 0x9c, 0x40, 77, 0, 0, 6, 0, 5, 0, 3, 'a', 'b', 'c', 0, 1, 'x'};
  const auto info = parse_port2_reply(good);
  ASSERT_TRUE(info);
  EXPECT_EQ(info->port, 40000);
  EXPECT_EQ(info->type, 77);
  EXPECT_EQ(info->highest, 6);
  EXPECT_EQ(info->lowest, 5);
  EXPECT_EQ(info->name, "abc");
  EXPECT_EQ(info->extra, Bytes{'x'});
  EXPECT_FALSE(parse_port2_reply(Bytes{119, 1}));
  for (std::size_t n = 2; n < good.size(); ++n) {
    EXPECT_EQ(code_of([&] { parse_port2_reply(std::span(good).first(n)); }), Errc::epmd_bad_reply) << n;
  }
  Bytes huge = good;
  huge[10] = 0xFF;  // name length 65283: past the reply
  EXPECT_EQ(code_of([&] { parse_port2_reply(huge); }), Errc::epmd_bad_reply);
  EXPECT_EQ(code_of([] { parse_port2_reply(Bytes{120, 0}); }), Errc::epmd_bad_reply);
}

TEST(Epmd, NamesReplies) {
  std::string text = "name foo at port 4000\nname bar baz at port 65535\n";
  Bytes reply{0, 0, 0x11, 0x11};
  reply.insert(reply.end(), text.begin(), text.end());
  const auto names = parse_names_reply(reply);
  EXPECT_EQ(names.epmd_port, 0x1111u);
  ASSERT_EQ(names.nodes.size(), 2u);
  EXPECT_EQ(names.nodes[0], (NamesReply::Entry{"foo", 4000}));
  EXPECT_EQ(names.nodes[1], (NamesReply::Entry{"bar baz", 65535}));
  EXPECT_TRUE(parse_names_reply(Bytes{0, 0, 0x11, 0x11}).nodes.empty());
  for (std::string bad : {"name foo at port 4000", "name foo at port 70000\n", "name foo at port \n",
                          "junk\n", "name foo at port 4x\n"}) {
    Bytes r{0, 0, 0, 0};
    r.insert(r.end(), bad.begin(), bad.end());
    EXPECT_EQ(code_of([&] { parse_names_reply(r); }), Errc::epmd_bad_reply) << bad;
  }
  EXPECT_EQ(code_of([] { parse_names_reply(Bytes{0, 0}); }), Errc::epmd_bad_reply);
}
