#include "options.hpp"
#include "policy.hpp"

#include <camlbeam/etf/etf.hpp>

#include <gtest/gtest.h>

namespace camlbeam::node {
namespace {

using etf::Term;

etf::Pid pid_of(std::string_view text) { return **etf::parse_term(text).get_if<etf::Boxed<etf::Pid>>(); }

std::variant<Options, UsageError> parse(std::vector<std::string> args) {
  args.insert(args.begin(), {"--sname", "ocaml"});
  return parse_options(args, "h", "h.example");
}

Policy policy_of(std::vector<std::string> args) {
  auto parsed = parse(std::move(args));
  EXPECT_TRUE(std::holds_alternative<Options>(parsed)) << std::get<UsageError>(parsed).message;
  return std::get<Options>(parsed).policy;
}

std::string mistake(std::vector<std::string> args) {
  auto parsed = parse(std::move(args));
  return std::holds_alternative<UsageError>(parsed) ? std::get<UsageError>(parsed).message : "(accepted)";
}

TEST(NodePolicy, DeniesByDefaultAsThePortCouplingDoes) {
  const Policy policy = policy_of({});
  EXPECT_EQ(policy.send, SendPolicy::given);
  EXPECT_FALSE(policy.may_call("erlang", "node", 0));
  EXPECT_EQ(policy.max_erl_calls, 8U);
}

TEST(NodePolicy, ErlCallTakesEntriesRepeatedOrCommaSeparated) {
  const Policy policy = policy_of({"--erl-call", "lists:reverse/1,erlang:node", "--erl-call", "logger:info",
                                   "--send", "any", "--max-erl-calls", "3"});
  EXPECT_TRUE(policy.may_call("lists", "reverse", 1));
  EXPECT_FALSE(policy.may_call("lists", "reverse", 2));
  EXPECT_TRUE(policy.may_call("erlang", "node", 0));
  EXPECT_TRUE(policy.may_call("erlang", "node", 1));
  EXPECT_TRUE(policy.may_call("logger", "info", 2));
  EXPECT_FALSE(policy.may_call("erlang", "halt", 0));
  EXPECT_EQ(policy.send, SendPolicy::any);
  EXPECT_EQ(policy.max_erl_calls, 3U);
  EXPECT_TRUE(policy_of({"--erl-call", "all"}).may_call("erlang", "halt", 0));
  EXPECT_FALSE(policy_of({"--erl-call", "none"}).may_call("erlang", "node", 0));
}

TEST(NodePolicy, MistakesAreUsageErrors) {
  EXPECT_NE(mistake({"--send", "some"}).find("none, given or any"), std::string::npos);
  EXPECT_NE(mistake({"--erl-call", "lists"}).find("'lists'"), std::string::npos);
  EXPECT_NE(mistake({"--erl-call", "lists:reverse/x"}).find("'lists:reverse/x'"), std::string::npos);
  EXPECT_NE(mistake({"--erl-call", ":f"}).find("':f'"), std::string::npos);
  EXPECT_NE(mistake({"--erl-call", "a:b,"}).find("''"), std::string::npos);
  EXPECT_NE(mistake({"--erl-call", "all", "--erl-call", "a:b"}).find("stand alone"), std::string::npos);
  EXPECT_NE(mistake({"--erl-call", "none", "--erl-call", "all"}).find("stand alone"), std::string::npos);
  EXPECT_NE(mistake({"--max-erl-calls", "0"}).find("1 to 1000000"), std::string::npos);
  EXPECT_NE(mistake({"--erl-call"}).find("needs a value"), std::string::npos);
}

TEST(NodePolicy, GivenMeansAPidArgumentOfTheRunningRequest) {
  const etf::Pid caller = pid_of("#Pid<'erl@h'.90.0.7>");
  const etf::Pid other = pid_of("#Pid<'erl@h'.91.0.7>");
  const Term call = etf::parse_term(
      "{call, [alias | #Ref<'erl@h'.7.1.2.3>], send, [#Pid<'erl@h'.90.0.7>, {#Pid<'erl@h'.91.0.7>}], 5000}");
  const std::vector<etf::Pid> given = given_pids(call);
  ASSERT_EQ(given.size(), 1U);  // the pid inside a tuple is not given
  Policy policy;
  EXPECT_TRUE(policy.may_send(caller, given));
  EXPECT_FALSE(policy.may_send(other, given));
  EXPECT_EQ(given_pids(etf::parse_term("{cast, send, [#Pid<'erl@h'.91.0.7>, x]}")).size(), 1U);
  EXPECT_TRUE(given_pids(etf::parse_term("{call, r, send, not_a_list}")).empty());
  policy.send = SendPolicy::none;
  EXPECT_FALSE(policy.may_send(caller, given));
  policy.send = SendPolicy::any;
  EXPECT_TRUE(policy.may_send(other, {}));
}

}  // namespace
}  // namespace camlbeam::node
