#include "messages.hpp"
#include "options.hpp"

#include <camlbeam/etf/etf.hpp>

#include <gtest/gtest.h>

namespace camlbeam::node {
namespace {

using etf::Term;

Term parse(std::string_view text) { return etf::parse_term(text); }

TEST(GenMessage, ACallKeepsItsTagAsItCame) {
  // OTP 25's tag: the improper list [alias | Ref].
  const Term message = parse("{'$gen_call', {#Pid<'a@h'.90.0.1>, [alias | #Ref<'a@h'.1.2.3.4>]}, {call, fib, [30]}}");
  const auto gen = gen_message(message);
  ASSERT_TRUE(gen);
  const auto* call = std::get_if<GenCall>(&*gen);
  ASSERT_NE(call, nullptr);
  EXPECT_EQ(Term::pid(call->from), parse("#Pid<'a@h'.90.0.1>"));
  EXPECT_EQ(call->tag, parse("[alias | #Ref<'a@h'.1.2.3.4>]"));
  EXPECT_EQ(call->request, parse("{call, fib, [30]}"));
}

TEST(GenMessage, ACast) {
  const auto gen = gen_message(parse("{'$gen_cast', {cast, log, [x]}}"));
  ASSERT_TRUE(gen);
  ASSERT_TRUE(std::holds_alternative<GenCast>(*gen));
  EXPECT_EQ(std::get<GenCast>(*gen).request, parse("{cast, log, [x]}"));
}

TEST(GenMessage, AnythingElseIsAPlainMessage) {
  for (const char* text : {"hello", "{'$gen_call', x, y}", "{'$gen_call', {not_a_pid, t}, r}",
                           "{'$gen_call', {#Pid<'a@h'.1.0.1>}, r}", "{'$gen_cast', a, b}", "{'$gen_call', {#Pid<'a@h'.1.0.1>, t}}"}) {
    EXPECT_FALSE(gen_message(parse(text))) << text;
  }
}

TEST(HostRequest, CallsBecomeTheHostsCallsWithTheTagAsRef) {
  const Term tag = parse("[alias | #Ref<'a@h'.1.2.3.4>]");
  EXPECT_EQ(host_call(parse("{call, fib, [30]}"), tag, std::nullopt),
            parse("{call, [alias | #Ref<'a@h'.1.2.3.4>], fib, [30]}"));
  EXPECT_EQ(host_call(parse("{call, {mathlib, fib}, []}"), tag, 5000),
            parse("{call, [alias | #Ref<'a@h'.1.2.3.4>], {mathlib, fib}, [], 5000}"));
  EXPECT_EQ(host_cast(parse("{cast, {m, f}, [1, 2]}"), std::nullopt), parse("{cast, {m, f}, [1, 2]}"));
}

TEST(HostRequest, ACallersTimeoutIsTheDeadlineUnlessTheNodesIsShorter) {
  const Term tag = Term::atom("t");
  EXPECT_EQ(host_call(parse("{call, fib, [1], 300}"), tag, std::nullopt), parse("{call, t, fib, [1], 300}"));
  EXPECT_EQ(host_call(parse("{call, fib, [1], 300}"), tag, 100), parse("{call, t, fib, [1], 100}"));
  EXPECT_EQ(host_call(parse("{call, fib, [1], 300}"), tag, 900), parse("{call, t, fib, [1], 300}"));
  EXPECT_EQ(host_call(parse("{call, fib, [1], infinity}"), tag, std::nullopt), parse("{call, t, fib, [1]}"));
  EXPECT_EQ(host_call(parse("{call, fib, [1], infinity}"), tag, 100), parse("{call, t, fib, [1], 100}"));
  for (const char* text : {"{call, fib, [1], -1}", "{call, fib, [1], 4294967296}", "{call, fib, [1], 1.5}",
                           "{call, fib, [1], never}"}) {
    EXPECT_FALSE(host_call(parse(text), tag, std::nullopt)) << text;
  }
  EXPECT_EQ(host_cast(parse("{cast, fib, [1], 300}"), std::nullopt), parse("{call, cast, fib, [1], 300}"));
  EXPECT_EQ(host_cast(parse("{cast, fib, [1], infinity}"), 100), parse("{call, cast, fib, [1], 100}"));
  EXPECT_EQ(host_cast(parse("{cast, fib, [1]}"), 100), parse("{call, cast, fib, [1], 100}"));
  EXPECT_EQ(host_cast(parse("{cast, fib, [1], infinity}"), std::nullopt), parse("{cast, fib, [1]}"));
  EXPECT_FALSE(host_cast(parse("{cast, fib, [1], -5}"), std::nullopt));
}

TEST(HostRequest, OtherShapesAreRefused) {
  const Term tag = Term::atom("t");
  for (const char* text : {"{call, fib}", "{call, \"fib\", []}", "{call, fib, [1 | 2]}", "{call, fib, x}",
                           "{call, {m, f, g}, []}", "{cast, fib, []}", "ping", "{load, \"/tmp/x.cmxs\"}"}) {
    EXPECT_FALSE(host_call(parse(text), tag, std::nullopt)) << text;
  }
  EXPECT_FALSE(host_cast(parse("{call, fib, []}"), std::nullopt));
  EXPECT_EQ(bad_request("no"), parse("{error, {bad_request, <<\"no\">>}}"));
}

TEST(ExecuteCall, OnlyErpcsExecuteCallIsSpawned) {
  const auto call = execute_call(parse("erpc"), parse("execute_call"), parse("[#Ref<'a@h'.1.2.3.4>, mathlib, fib, [30]]"));
  ASSERT_TRUE(call);
  EXPECT_EQ(call->module, parse("mathlib"));
  EXPECT_EQ(call->function, parse("fib"));
  EXPECT_EQ(call->args, parse("[30]"));
  EXPECT_FALSE(execute_call(parse("erlang"), parse("apply"), parse("[a, b]")));
  EXPECT_FALSE(execute_call(parse("erpc"), parse("execute_call"), parse("[r, m, f]")));
  EXPECT_FALSE(execute_call(parse("erpc"), parse("execute_call"), parse("[r, \"m\", f, []]")));
  EXPECT_FALSE(execute_call(parse("erpc"), parse("execute_call"), parse("[r, m, f, [a | b]]")));
  EXPECT_FALSE(execute_call(parse("erpc"), parse("execute_call"), parse("[r, m, f, [] | x]")));
}

TEST(ExecuteCall, TheExitReasonIsWhatErpcExpects) {
  const ExecuteCall call{parse("r"), parse("mathlib"), parse("fib"), parse("[30]")};
  EXPECT_EQ(execute_call_exit(call, parse("{ok, 832040}")), parse("{r, return, 832040}"));
  EXPECT_EQ(execute_call_exit(call, parse("{error, {undef, {mathlib, fib}}}")),
            parse("{r, error, undef, [{mathlib, fib, [30], []}]}"));
  EXPECT_EQ(execute_call_exit(call, parse("{error, {ocaml_exception, <<\"Failure\">>, <<\"x\">>, <<>>}}")),
            parse("{r, error, {ocaml_exception, <<\"Failure\">>, <<\"x\">>, <<>>}, [{mathlib, fib, [30], []}]}"));
}

std::variant<Options, UsageError> parse_args(std::vector<std::string> args) {
  return parse_options(args, "box", "box.example.org");
}

TEST(NodeOptions, NamesAreCompletedAsErlCompletesThem) {
  const auto options = std::get<Options>(parse_args({"--sname", "ocaml", "--load", "a.cmxs", "--load", "b.cmxs"}));
  EXPECT_EQ(options.node_name, "ocaml@box");
  EXPECT_EQ(options.plugins, (std::vector<std::string>{"a.cmxs", "b.cmxs"}));
  EXPECT_FALSE(options.hidden);
  EXPECT_EQ(std::get<Options>(parse_args({"--name", "ocaml"})).node_name, "ocaml@box.example.org");
  EXPECT_EQ(std::get<Options>(parse_args({"--sname", "ocaml@other"})).node_name, "ocaml@other");
  const auto all = std::get<Options>(parse_args({"--sname", "n", "--cookie", "c", "--hidden", "--port", "4370",
                                                 "--net-ticktime", "8", "--call-timeout", "250"}));
  EXPECT_EQ(all.cookie, "c");
  EXPECT_TRUE(all.hidden);
  EXPECT_EQ(all.port, 4370);
  EXPECT_EQ(all.net_ticktime, std::chrono::seconds(8));
  EXPECT_EQ(all.call_timeout_ms, 250U);
  EXPECT_FALSE(all.allow_load);
  EXPECT_FALSE(all.stop_on_eof);
  EXPECT_EQ(all.worker_id, 0U);
  const auto owned =
      std::get<Options>(parse_args({"--sname", "n", "--allow-load", "--stop-on-eof", "--worker-id", "3"}));
  EXPECT_TRUE(owned.allow_load);
  EXPECT_TRUE(owned.stop_on_eof);
  EXPECT_EQ(owned.worker_id, 3U);
  EXPECT_EQ(all.listen_address, "127.0.0.1");
  EXPECT_EQ(std::get<Options>(parse_args({"--sname", "n", "--listen-address", "0.0.0.0"})).listen_address, "0.0.0.0");
  EXPECT_FALSE(all.ssl_dist_optfile);
  const auto tls = std::get<Options>(parse_args({"--sname", "n", "--proto-dist", "inet_tls", "--ssl-dist-optfile", "f"}));
  EXPECT_EQ(tls.ssl_dist_optfile, "f");
  EXPECT_FALSE(std::get<Options>(parse_args({"--sname", "n", "--proto-dist", "inet_tcp"})).ssl_dist_optfile);
}

TEST(NodeOptions, MistakesAreSaid) {
  for (const auto& args : std::vector<std::vector<std::string>>{
           {}, {"--sname"}, {"--sname", "a", "--name", "b"}, {"--sname", "a b"}, {"--sname", "a@h.x"},
           {"--sname", "a", "--port", "70000"}, {"--sname", "a", "--net-ticktime", "1"}, {"--sname", "a", "--bogus"},
           {"--sname", "@h"}, {"--name", "a@"}, {"--sname", "a", "--call-timeout", "-1"},
           {"--sname", "a", "--worker-id", "x"}, {"--sname", "a", "--proto-dist", "inet6_tls"}, {"--sname", "a", "--proto-dist", "inet_tls"},
           {"--sname", "a", "--ssl-dist-optfile", "f"}, {"--sname", "a", "--listen-address", "myhost"},
           {"--sname", "a", "--listen-address", "10.0.0.256"}, {"--sname", "a", "--listen-address"},
           {"--sname", "a", "--proto-dist", "inet_tcp", "--ssl-dist-optfile", "f"}}) {
    EXPECT_TRUE(std::holds_alternative<UsageError>(parse_args(args))) << (args.empty() ? "" : args[0]);
  }
}

}  // namespace
}  // namespace camlbeam::node
