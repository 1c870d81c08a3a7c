#include "processes.hpp"

#include <camlbeam/dist/flags.hpp>
#include <camlbeam/etf/etf.hpp>

#include <gtest/gtest.h>

namespace camlbeam::node {
namespace {

using etf::Term;
namespace control = dist::control;

constexpr std::uint64_t otp25 = dist::flag::offered;  // what OTP 25 and camlbeam-node agree on
constexpr std::uint64_t bare = dist::flag::offered & ~(dist::flag::alias | dist::flag::exit_payload);

Term parse(std::string_view text) { return etf::parse_term(text); }
etf::Pid pid_of(std::string_view text) { return **parse(text).get_if<etf::Boxed<etf::Pid>>(); }
etf::Reference ref_of(std::string_view text) { return **parse(text).get_if<etf::Boxed<etf::Reference>>(); }

const etf::Pid caller = pid_of("#Pid<'erl@h'.90.0.7>");
const etf::Reference alias = ref_of("#Ref<'erl@h'.7.1.2.3>");
const Term tag = parse("[alias | #Ref<'erl@h'.7.1.2.3>]");

class ProcessesTest : public ::testing::Test {
 protected:
  Processes processes{"ocaml@h", 42, std::nullopt, Processes::Limits{.max_spawned = 2, .max_watches_per_peer = 3}};
  Effects out;

  void connect(std::uint64_t flags = otp25) { processes.connected("erl@h", flags); }
  void receive(dist::Control message) { processes.receive("erl@h", message, out); }
  Term gen_call(std::string_view request) {
    return Term::tuple({Term::atom("$gen_call"), Term::tuple({Term::pid(caller), tag}), parse(request)});
  }
  template <class T>
  const T& sent(std::size_t index = 0) {
    EXPECT_GT(out.send.size(), index);
    EXPECT_EQ(out.send.at(index).peer, "erl@h");
    const T* message = std::get_if<T>(&out.send.at(index).control);
    EXPECT_NE(message, nullptr) << "sent operation " << dist::name_of(dist::op_of(out.send.at(index).control));
    return *message;
  }
};

TEST_F(ProcessesTest, PingIsAnsweredYesToTheCallersAlias) {
  connect();
  receive(control::RegSend{caller, etf::Atom{"net_kernel"}, gen_call("{is_auth, 'erl@h'}")});
  ASSERT_EQ(out.send.size(), 1U);
  const auto& reply = sent<control::AliasSend>();
  EXPECT_EQ(Term::reference(reply.alias), Term::reference(alias));
  EXPECT_EQ(reply.message, Term::tuple({tag, Term::atom("yes")}));
  EXPECT_TRUE(out.work.empty());
}

TEST_F(ProcessesTest, WithoutAliasesTheReplyGoesToThePid) {
  connect(bare);
  receive(control::RegSend{caller, etf::Atom{"net_kernel"}, gen_call("{is_auth, 'erl@h'}")});
  const auto& reply = sent<control::Send>();
  EXPECT_EQ(Term::pid(reply.to), Term::pid(caller));
  EXPECT_EQ(reply.message, Term::tuple({tag, Term::atom("yes")}));
}

TEST_F(ProcessesTest, WithAltactSigTheReplyToAnAliasIsAnAltactSigSend) {
  connect(otp25 | dist::flag::altact_sig);  // OTP 28 and later
  receive(control::RegSend{caller, etf::Atom{"net_kernel"}, gen_call("{is_auth, 'erl@h'}")});
  const auto& reply = sent<control::AltactSigSend>();
  EXPECT_EQ(reply.flags, dist::altact::alias);
  EXPECT_EQ(reply.from.node, "ocaml@h");
  ASSERT_TRUE(std::holds_alternative<etf::Reference>(reply.to));
  EXPECT_EQ(Term::reference(std::get<etf::Reference>(reply.to)), Term::reference(alias));
  EXPECT_FALSE(reply.trace_token);
  EXPECT_EQ(reply.message, Term::tuple({tag, Term::atom("yes")}));
}

TEST_F(ProcessesTest, AltactSigSendsArriveByNameOrPidAndToAnAliasAreDropped) {
  connect(otp25 | dist::flag::altact_sig);
  const auto altact = [&](std::uint64_t flags, dist::SignalTarget to, Term message) {
    receive(control::AltactSigSend{flags, caller, std::move(to), std::nullopt, std::move(message)});
  };
  altact(dist::altact::name, etf::Atom{"ocaml"}, gen_call("{call, f, [1]}"));
  altact(dist::altact::prio, processes.ocaml_pid(), gen_call("{call, f, [2]}"));  // a priority message
  ASSERT_EQ(out.work.size(), 2U);
  EXPECT_EQ(out.work[1].request.tuple_elements()[3], parse("[2]"));
  // To an alias (the node makes none), or an exit signal: nothing happens.
  altact(dist::altact::alias, alias, gen_call("{call, f, [3]}"));
  altact(dist::altact::exit | dist::altact::name, etf::Atom{"ocaml"}, Term::atom("kill"));
  EXPECT_EQ(out.work.size(), 2U);
  EXPECT_TRUE(out.send.empty());
}

TEST_F(ProcessesTest, AGenServerCallBecomesAHostRequestAndItsAnswerTheReply) {
  connect();
  receive(control::RegSend{caller, etf::Atom{"ocaml"}, gen_call("{call, {mathlib, fib}, [30]}")});
  EXPECT_TRUE(out.send.empty());
  ASSERT_EQ(out.work.size(), 1U);
  const HostWork work = out.work[0];
  // The host's Ref is 0: the reply's tag stays with the node.
  EXPECT_EQ(work.request, Term::tuple({Term::atom("call"), Term::integer(0), parse("{mathlib, fib}"), parse("[30]")}));
  out.work.clear();
  processes.answered(work, parse("{ok, 832040}"), out);
  const auto& reply = sent<control::AliasSend>();
  EXPECT_EQ(Term::pid(reply.from), Term::pid(processes.ocaml_pid()));
  EXPECT_EQ(reply.message, Term::tuple({tag, parse("{ok, 832040}")}));
  // The node's max_reply_size may put another answer in its place: the same message.
  ASSERT_TRUE(out.send.back().with_answer);
  const auto again = std::get<control::AliasSend>(out.send.back().with_answer(parse("{error, too_large}")));
  EXPECT_EQ(again.message, Term::tuple({tag, parse("{error, too_large}")}));
  EXPECT_EQ(Term::reference(again.alias), Term::reference(reply.alias));
}

TEST_F(ProcessesTest, AnAnswerWrittenInPlaceIsTheSameReplyAndKnowsThePeersAtoms) {
  connect();
  receive(control::RegSend{caller, etf::Atom{"ocaml"}, gen_call("{call, identity, [apple]}")});
  receive(control::RegSend{caller, etf::Atom{"ocaml"}, gen_call("in_flight")});
  ASSERT_EQ(out.work.size(), 1U);
  EXPECT_EQ(sent<control::AliasSend>().message, Term::tuple({tag, Term::integer(1)}));
  const HostWork work = out.work[0];
  out = {};
  const Term answer = parse("{ok, apple}");
  std::vector<bool> knew;
  HostWork taken = work;  // answered_in_place takes its reply
  ASSERT_TRUE(processes.answered_in_place(
      taken,
      [&](etf::Writer& writer, const KnownAtoms::PeerView& known) {
        knew = {known.knows("apple"), known.knows("ok"), known.knows("pear")};
        etf::walk(answer, writer);
      },
      out));
  ASSERT_EQ(out.send.size(), 1U);
  ASSERT_TRUE(out.send[0].payload);
  etf::ByteBuffer in_place;
  ASSERT_FALSE(dist::encode_frame(out.send[0].control, otp25, in_place, out.send[0].payload));
  EXPECT_EQ(knew, (std::vector<bool>{true, true, false}));  // what it sent, camlbeam's own, neither
  // The same frame answered() makes of the term.
  Effects as_term;
  processes.answered(work, answer, as_term);
  etf::ByteBuffer expected;
  ASSERT_FALSE(dist::encode_frame(as_term.send.at(0).control, otp25, expected));
  EXPECT_EQ(in_place.to_vector(), expected.to_vector());
  // Another answer may take its place (a refusal, max_reply_size's).
  const auto again = std::get<control::AliasSend>(out.send[0].with_answer(parse("{error, too_large}")));
  EXPECT_EQ(again.message, Term::tuple({tag, parse("{error, too_large}")}));
  // Answered, it no longer counts in flight.
  out = {};
  receive(control::RegSend{caller, etf::Atom{"ocaml"}, gen_call("in_flight")});
  EXPECT_EQ(sent<control::AliasSend>().message, Term::tuple({tag, Term::integer(0)}));
  // A cast has no reply to write into: answered() takes it.
  out = {};
  receive(control::RegSend{caller, etf::Atom{"ocaml"}, Term::tuple({Term::atom("$gen_cast"), parse("{cast, f, []}")})});
  ASSERT_EQ(out.work.size(), 1U);
  EXPECT_FALSE(processes.answered_in_place(out.work[0], [](etf::Writer&, const KnownAtoms::PeerView&) {}, out));
}

TEST_F(ProcessesTest, TheOcamlProcessIsReachedByItsPidAndCastsRunWithoutAnswer) {
  connect();
  receive(control::Send{processes.ocaml_pid(), gen_call("{call, fib, []}")});
  receive(control::Send{processes.ocaml_pid(), parse("{'$gen_cast', {cast, fib, [1]}}")});
  ASSERT_EQ(out.work.size(), 2U);
  EXPECT_TRUE(std::holds_alternative<std::monostate>(out.work[1].reply_to));
  EXPECT_EQ(out.work[1].request, parse("{cast, fib, [1]}"));
  processes.answered(out.work[1], parse("{ok, 1}"), out);
  EXPECT_TRUE(out.send.empty());
}

TEST_F(ProcessesTest, ARequestOfAnotherShapeIsAnsweredAtOnce) {
  connect();
  for (const char* request : {"{load, \"/tmp/evil.cmxs\"}", "{load, <<\"/tmp/evil.cmxs\">>}", "{call, f}", "hello"}) {
    out = {};
    receive(control::RegSend{caller, etf::Atom{"ocaml"}, gen_call(request)});
    EXPECT_TRUE(out.work.empty()) << request;
    const auto& reply = sent<control::AliasSend>();
    EXPECT_EQ(reply.message.tuple_elements()[1].tuple_elements()[1].tuple_elements()[0], Term::atom("bad_request"))
        << request;
  }
}

TEST_F(ProcessesTest, LoadsAllowedRunOnceAPathAndThenAnswerAsTheFirstDid) {
  processes.allow_loads();
  connect();
  receive(control::RegSend{caller, etf::Atom{"ocaml"}, gen_call("{load, <<\"/p/m.cmxs\">>}")});
  ASSERT_EQ(out.work.size(), 1U);
  const HostWork first = out.work[0];
  EXPECT_EQ(first.request, Term::tuple({Term::atom("load"), tag, parse("<<\"/p/m.cmxs\">>")}));
  out = {};
  // Asked again before the first answers: a second load, which the host answers itself.
  receive(control::RegSend{caller, etf::Atom{"ocaml"}, gen_call("{load, <<\"/p/m.cmxs\">>}")});
  ASSERT_EQ(out.work.size(), 1U);
  const HostWork second = out.work[0];
  out = {};
  const Term loaded = parse("{ok, #{atoms => [], exports => [{<<\"m\">>, <<\"f\">>, 1, <<\"s\">>}]}}");
  processes.answered(first, loaded, out);
  processes.answered(second, parse("{error, {load_failed, already_loaded, <<\"m\">>}}"), out);
  out = {};
  receive(control::RegSend{caller, etf::Atom{"ocaml"}, gen_call("{load, <<\"/p/m.cmxs\">>}")});
  EXPECT_TRUE(out.work.empty());
  EXPECT_EQ(sent<control::AliasSend>().message, Term::tuple({tag, loaded}));
  // With a deadline, for an initialiser that does not end.
  out = {};
  receive(control::RegSend{caller, etf::Atom{"ocaml"}, gen_call("{load, <<\"/p/other.cmxs\">>, 1000}")});
  ASSERT_EQ(out.work.size(), 1U);
  EXPECT_EQ(out.work[0].request,
            Term::tuple({Term::atom("load"), tag, parse("<<\"/p/other.cmxs\">>"), Term::integer(1000)}));
  // A failure that may not last (the file is missing) is not kept.
  out = {};
  receive(control::RegSend{caller, etf::Atom{"ocaml"}, gen_call("{load, <<\"/p/gone.cmxs\">>}")});
  ASSERT_EQ(out.work.size(), 1U);
  const HostWork missing = out.work[0];
  processes.answered(missing, parse("{error, {load_failed, enoent, <<\"no\">>}}"), out);
  out = {};
  receive(control::RegSend{caller, etf::Atom{"ocaml"}, gen_call("{load, <<\"/p/gone.cmxs\">>}")});
  EXPECT_EQ(out.work.size(), 1U);
}

TEST_F(ProcessesTest, InFlightCountsTheRequestsNotAnsweredYetCastsIncluded) {
  connect();
  const auto in_flight = [&] {
    out.send.clear();
    receive(control::RegSend{caller, etf::Atom{"ocaml"}, gen_call("in_flight")});
    return sent<control::AliasSend>().message.tuple_elements()[1];
  };
  EXPECT_EQ(in_flight(), Term::integer(0));
  receive(control::RegSend{caller, etf::Atom{"ocaml"}, gen_call("{call, fib, [1], 500}")});
  receive(control::RegSend{caller, etf::Atom{"ocaml"}, parse("{'$gen_cast', {cast, fib, [1]}}")});
  ASSERT_EQ(out.work.size(), 2U);
  EXPECT_EQ(out.work[0].request, parse("{call, 0, fib, [1], 500}"));
  EXPECT_EQ(in_flight(), Term::integer(2));
  const std::vector<HostWork> works = out.work;
  for (const HostWork& work : works) processes.answered(work, parse("{ok, 1}"), out);
  EXPECT_EQ(in_flight(), Term::integer(0));
  EXPECT_EQ(processes.outstanding(), 0U);
}

TEST_F(ProcessesTest, AnAnswerMayHoldOnlyAtomsItsVmHas) {
  connect();
  receive(control::RegSend{caller, etf::Atom{"ocaml"}, gen_call("{call, identity, [apple], 700}")});
  ASSERT_EQ(out.work.size(), 1U);
  const HostWork work = out.work[0];
  EXPECT_EQ(work.caller_timeout_ms, 700U);  // counted from its arrival (Node::within_callers_timeout)
  out = {};
  // What the peer sent, and the node's own name (the peer is connected to it): sent.
  processes.answered(work, Term::tuple({Term::atom("ok"), Term::tuple({Term::atom("apple"),
                                                                        Term::pid(processes.ocaml_pid())})}),
                     out);
  EXPECT_EQ(sent<control::AliasSend>().message.tuple_elements()[1].tuple_elements()[0], Term::atom("ok"));
  out = {};
  processes.answered(work, parse("{ok, pear}"), out);
  EXPECT_EQ(sent<control::AliasSend>().message.tuple_elements()[1], KnownAtoms::refusal("pear"));
  EXPECT_EQ(processes.unknown_atom("erl@h", parse("[apple, pear]")), "pear");
  EXPECT_EQ(processes.unknown_atom("erl@h", parse("[apple]")), std::nullopt);
  // The names of the caller's tag are the peer's too, though OCaml is not given the tag.
  EXPECT_EQ(processes.unknown_atom("erl@h", parse("[alias, 'erl@h']")), std::nullopt);
}

TEST_F(ProcessesTest, InfoIsWhatTheNodeSaysOfItself) {
  processes.describe_as(parse("#{os_pid => 7, ocaml_version => <<\"4.13.1\">>, flavour => native}"));
  connect();
  receive(control::RegSend{caller, etf::Atom{"ocaml"}, gen_call("info")});
  EXPECT_TRUE(out.work.empty());
  EXPECT_EQ(sent<control::AliasSend>().message,
            Term::tuple({tag, parse("#{os_pid => 7, ocaml_version => <<\"4.13.1\">>, flavour => native}")}));
}

TEST_F(ProcessesTest, TheOcamlProcessGivesItsPidToLinkTo) {
  connect();
  receive(control::RegSend{caller, etf::Atom{"ocaml"}, gen_call("pid")});
  EXPECT_EQ(sent<control::AliasSend>().message, Term::tuple({tag, Term::pid(processes.ocaml_pid())}));
  EXPECT_TRUE(out.work.empty());
}

TEST_F(ProcessesTest, MessagesToNobodyAndPlainMessagesAreDropped) {
  connect();
  receive(control::RegSend{caller, etf::Atom{"nobody"}, gen_call("{call, fib, []}")});
  receive(control::RegSend{caller, etf::Atom{"ocaml"}, parse("hello")});
  receive(control::Send{pid_of("#Pid<'ocaml@h'.5000.0.42>"), gen_call("{call, fib, []}")});
  EXPECT_TRUE(out.send.empty());
  EXPECT_TRUE(out.work.empty());
}

TEST_F(ProcessesTest, TheRexServerRunsOldStyleRpcs) {
  connect(bare);
  receive(control::RegSend{caller, etf::Atom{"rex"},
                           Term::tuple({Term::pid(caller), parse("{call, mathlib, fib, [10], user}")})});
  ASSERT_EQ(out.work.size(), 1U);
  EXPECT_EQ(out.work[0].request, parse("{call, rex, {mathlib, fib}, [10]}"));
  const HostWork work = out.work[0];
  processes.answered(work, parse("{ok, 55}"), out);
  processes.answered(work, parse("{error, {undef, {mathlib, fib}}}"), out);
  EXPECT_EQ(sent<control::Send>(0).message, parse("{rex, 55}"));
  EXPECT_EQ(sent<control::Send>(1).message, parse("{rex, {badrpc, {'EXIT', {undef, [{mathlib, fib, [10], []}]}}}}"));
  out = {};
  for (const char* junk : {"{call, m, f, [], user}", "{x, {call, m, f, [], user}}", "{x}"}) {
    receive(control::RegSend{caller, etf::Atom{"rex"}, parse(junk)});
  }
  receive(control::RegSend{caller, etf::Atom{"rex"}, Term::tuple({Term::pid(caller), parse("{call, m, f, x, user}")})});
  EXPECT_TRUE(out.work.empty());
  EXPECT_TRUE(out.send.empty());
}

TEST_F(ProcessesTest, MonitorsOfWhatDoesNotExistGetNoprocAtOnce) {
  connect();
  const etf::Reference ref = ref_of("#Ref<'erl@h'.7.9.9.9>");
  receive(control::MonitorP{caller, etf::Atom{"ocaml"}, ref});
  receive(control::MonitorP{caller, etf::Atom{"net_kernel"}, ref});
  EXPECT_TRUE(out.send.empty());
  EXPECT_EQ(processes.watches(), 2U);
  receive(control::DemonitorP{caller, etf::Atom{"ocaml"}, ref});
  EXPECT_EQ(processes.watches(), 1U);
  receive(control::MonitorP{caller, etf::Atom{"code_server"}, ref});
  const auto& down = sent<control::PayloadMonitorPExit>();
  EXPECT_EQ(std::get<etf::Atom>(down.from).name, "code_server");
  EXPECT_EQ(Term::pid(down.to), Term::pid(caller));
  EXPECT_EQ(down.reason, Term::atom("noproc"));
  out.send.clear();
  processes.connected("erl@h", bare);
  receive(control::MonitorP{caller, pid_of("#Pid<'ocaml@h'.77.0.42>"), ref});
  EXPECT_EQ(sent<control::MonitorPExit>().reason, Term::atom("noproc"));
}

TEST_F(ProcessesTest, LinksAreKeptUnlinkIdAcknowledgedAndAPeersWatchesBounded) {
  connect();
  receive(control::Link{caller, processes.ocaml_pid()});
  EXPECT_TRUE(out.send.empty());
  EXPECT_EQ(processes.watches(), 1U);
  receive(control::UnlinkId{7, caller, processes.ocaml_pid()});
  const auto& ack = sent<control::UnlinkIdAck>();
  EXPECT_EQ(ack.id, 7U);
  EXPECT_EQ(Term::pid(ack.from), Term::pid(processes.ocaml_pid()));
  EXPECT_EQ(Term::pid(ack.to), Term::pid(caller));
  EXPECT_EQ(processes.watches(), 0U);
  out.send.clear();
  receive(control::Link{caller, pid_of("#Pid<'ocaml@h'.77.0.42>")});
  const auto& exit = sent<control::PayloadExit>();
  EXPECT_EQ(exit.reason, Term::atom("noproc"));
  out.send.clear();
  // The limit is 3 watches per peer: the fourth is answered as if there were no process.
  for (int i = 0; i < 4; ++i) {
    receive(control::MonitorP{caller, etf::Atom{"ocaml"}, ref_of("#Ref<'erl@h'.7.1.1." + std::to_string(i) + ">")});
  }
  EXPECT_EQ(processes.watches(), 3U);
  EXPECT_EQ(sent<control::PayloadMonitorPExit>().reason, Term::atom("noproc"));
  processes.disconnected("erl@h");
  EXPECT_EQ(processes.watches(), 0U);
}

TEST_F(ProcessesTest, ErpcsSpawnRunsTheCallAndExitsWithItsResult) {
  connect();
  const etf::Reference request_id = ref_of("#Ref<'erl@h'.7.4.4.4>");
  receive(control::SpawnRequest{request_id, caller, caller, dist::Mfa{{"erpc"}, {"execute_call"}, 4},
                                parse("[{reply, error_only}, monitor]"), parse("[res, mathlib, fib, [30]]")});
  const auto& reply = sent<control::SpawnReply>();
  EXPECT_EQ(reply.flags, 2U);
  const etf::Pid spawned = std::get<etf::Pid>(reply.result);
  EXPECT_EQ(spawned.node, "ocaml@h");
  EXPECT_EQ(spawned.creation, 42U);
  ASSERT_EQ(out.work.size(), 1U);
  EXPECT_EQ(out.work[0].request,
            Term::tuple({Term::atom("call"), Term::reference(request_id), parse("{mathlib, fib}"), parse("[30]")}));
  EXPECT_EQ(processes.spawned(), 1U);
  // The caller's monitor on it: a DEMONITOR and such find it alive.
  receive(control::MonitorP{caller, spawned, ref_of("#Ref<'erl@h'.7.5.5.5>")});
  EXPECT_EQ(out.send.size(), 1U);
  const HostWork work = out.work[0];
  out.send.clear();
  processes.answered(work, parse("{ok, 832040}"), out);
  const auto& down = sent<control::PayloadMonitorPExit>();
  EXPECT_EQ(Term::pid(std::get<etf::Pid>(down.from)), Term::pid(spawned));
  EXPECT_EQ(Term::reference(down.ref), Term::reference(request_id));
  EXPECT_EQ(down.reason, parse("{res, return, 832040}"));
  const auto refused = std::get<control::PayloadMonitorPExit>(out.send.back().with_answer(parse("{error, x}")));
  ASSERT_EQ(refused.reason.tuple_elements().size(), 4U);  // {Ref, error, Reason, Stack}
  EXPECT_EQ(refused.reason.tuple_elements()[1], Term::atom("error"));
  EXPECT_EQ(processes.spawned(), 0U);
  EXPECT_EQ(processes.watches(), 0U);
}

TEST_F(ProcessesTest, ACallerThatGivesUpDemonitorsAndGetsNoExit) {
  connect();
  const etf::Reference request_id = ref_of("#Ref<'erl@h'.7.4.4.4>");
  const auto spawn = [&] {
    receive(control::SpawnRequest{request_id, caller, caller, dist::Mfa{{"erpc"}, {"execute_call"}, 4},
                                  parse("[{reply, error_only}, monitor]"), parse("[res, mathlib, fib, [30]]")});
    const etf::Pid spawned = std::get<etf::Pid>(sent<control::SpawnReply>().result);
    const HostWork work = out.work.at(0);
    out = {};
    return std::pair{spawned, work};
  };
  // Another process's demonitor, or another reference, changes nothing: the exit is sent.
  const auto [kept, kept_work] = spawn();
  receive(control::DemonitorP{pid_of("#Pid<'erl@h'.91.0.7>"), kept, request_id});
  receive(control::DemonitorP{caller, kept, ref_of("#Ref<'erl@h'.7.6.6.6>")});
  processes.answered(kept_work, parse("{ok, 1}"), out);
  EXPECT_EQ(sent<control::PayloadMonitorPExit>().reason, parse("{res, return, 1}"));
  out = {};
  // The caller's own demonitor (erpc's call_abandon): the call runs on, its exit goes nowhere.
  const auto [abandoned, abandoned_work] = spawn();
  receive(control::DemonitorP{caller, abandoned, request_id});
  processes.answered(abandoned_work, parse("{ok, 1}"), out);
  EXPECT_TRUE(out.send.empty());
  EXPECT_EQ(processes.spawned(), 0U);
}

TEST_F(ProcessesTest, ALinkedSpawnExitsThroughItsLinkAndOthersAreRefused) {
  connect(bare);
  const etf::Reference request_id = ref_of("#Ref<'erl@h'.7.4.4.4>");
  receive(control::SpawnRequest{request_id, caller, caller, dist::Mfa{{"erpc"}, {"execute_call"}, 4},
                                parse("[link]"), parse("[r, m, f, []]")});
  EXPECT_EQ(sent<control::SpawnReply>().flags, 1U);
  const HostWork work = out.work.at(0);
  out.send.clear();
  processes.answered(work, parse("{error, {undef, {m, f}}}"), out);
  EXPECT_EQ(sent<control::Exit>().reason, parse("{r, error, undef, [{m, f, [], []}]}"));
  out.send.clear();
  receive(control::SpawnRequest{request_id, caller, caller, dist::Mfa{{"os"}, {"cmd"}, 1}, parse("[]"),
                                parse("[\"rm -rf /\"]")});
  EXPECT_EQ(std::get<etf::Atom>(sent<control::SpawnReply>().result).name, "notsup");
  EXPECT_TRUE(out.work.size() == 1U);
}

TEST_F(ProcessesTest, SpawnedProcessesAreBoundedAndForgottenWithTheirPeer) {
  connect();
  const auto spawn = [&] {
    receive(control::SpawnRequest{ref_of("#Ref<'erl@h'.7.4.4.4>"), caller, caller,
                                  dist::Mfa{{"erpc"}, {"execute_call"}, 4}, parse("[monitor]"), parse("[r, m, f, []]")});
  };
  spawn();
  spawn();
  spawn();
  EXPECT_EQ(processes.spawned(), 2U);
  EXPECT_EQ(std::get<etf::Atom>(sent<control::SpawnReply>(2).result).name, "system_limit");
  const std::vector<HostWork> work = out.work;
  processes.disconnected("erl@h");
  EXPECT_EQ(processes.spawned(), 0U);
  out.send.clear();
  for (const HostWork& w : work) processes.answered(w, parse("{ok, 1}"), out);
  EXPECT_TRUE(out.send.empty());
}

TEST_F(ProcessesTest, AnErlSendGoesFromTheOcamlProcessOnlyToAConnectedNode) {
  EXPECT_FALSE(processes.send_from_ocaml(caller, parse("hello"), out));
  EXPECT_TRUE(out.send.empty());
  connect();
  ASSERT_TRUE(processes.send_from_ocaml(caller, parse("hello"), out));
  const auto& sent_sender = sent<control::SendSender>();
  EXPECT_EQ(Term::pid(sent_sender.from), Term::pid(processes.ocaml_pid()));
  EXPECT_EQ(Term::pid(sent_sender.to), Term::pid(caller));
  EXPECT_EQ(sent_sender.message, parse("hello"));
  out = {};
  connect(otp25 & ~dist::flag::send_sender);
  ASSERT_TRUE(processes.send_from_ocaml(caller, parse("hello"), out));
  EXPECT_EQ(sent<control::Send>().message, parse("hello"));
}

const etf::Reference erl_call_tag = ref_of("#Ref<'ocaml@h'.42.1.0.0>");

TEST_F(ProcessesTest, AnErlCallAsksTheCallersRexAndKeepsTheClassOfItsResult) {
  connect();
  processes.start_erl_call("erl@h", erl_call_tag, "lists", "reverse", parse("[[1, 2]]"), out);
  ASSERT_EQ(out.send.size(), 2U);
  const auto& monitor = sent<control::MonitorP>(0);
  EXPECT_EQ(Term::pid(monitor.from), Term::pid(processes.ocaml_pid()));
  EXPECT_EQ(Term::reference(monitor.ref), Term::reference(erl_call_tag));
  const auto& call = sent<control::RegSend>(1);
  EXPECT_EQ(call.to_name.name, "rex");
  const Term tag_term = Term::reference(erl_call_tag);
  EXPECT_EQ(call.message,
            Term::tuple({Term::atom("$gen_call"), Term::tuple({Term::pid(processes.ocaml_pid()), tag_term}),
                         Term::tuple({Term::atom("call"), Term::atom("erpc"), Term::atom("execute_call"),
                                      Term::list({tag_term, Term::atom("lists"), Term::atom("reverse"),
                                                  parse("[[1, 2]]")}),
                                      Term::atom("user")})}));
  EXPECT_EQ(processes.erl_calls(), 1U);
  out.send.clear();
  // What rex answers: erpc:execute_call/4's exit, caught.
  const auto answer = [&](Term reason) {
    return Term::tuple({tag_term, Term::tuple({Term::atom("badrpc"), Term::tuple({Term::atom("EXIT"), reason})})});
  };
  // Another node cannot answer it.
  processes.receive(
      "other@h", control::Send{processes.ocaml_pid(), answer(Term::tuple({tag_term, Term::atom("return"), parse("x")}))},
      out);
  EXPECT_TRUE(out.erl_calls_done.empty());
  receive(control::Send{processes.ocaml_pid(), answer(Term::tuple({tag_term, Term::atom("return"), parse("[2, 1]")}))});
  ASSERT_EQ(out.erl_calls_done.size(), 1U);
  EXPECT_EQ(out.erl_calls_done[0].tag, tag_term);
  EXPECT_EQ(out.erl_calls_done[0].result, parse("{ok, [2, 1]}"));
  EXPECT_EQ(sent<control::DemonitorP>(0).ref.ids, erl_call_tag.ids);  // its monitor goes
  EXPECT_EQ(processes.erl_calls(), 0U);
  // A late copy is an ordinary message to ocaml, dropped.
  out = {};
  receive(control::Send{processes.ocaml_pid(), answer(Term::tuple({tag_term, Term::atom("return"), parse("y")}))});
  EXPECT_TRUE(out.erl_calls_done.empty());

  const std::vector<std::pair<Term, Term>> classes{
      {Term::tuple({tag_term, Term::atom("throw"), parse("t")}), parse("{error, {throw, t}}")},
      {Term::tuple({tag_term, Term::atom("exit"), parse("e")}), parse("{error, {exit, e}}")},
      {Term::tuple({tag_term, Term::atom("error"), parse("{erpc, undef}")}), parse("{error, {error, undef}}")},
      {Term::tuple({tag_term, Term::atom("error"), parse("badarith"), parse("[]")}),
       parse("{error, {error, badarith}}")},
      {parse("system_limit"), parse("{error, {exit, system_limit}}")},
  };
  for (const auto& [reason, expected] : classes) {
    out = {};
    processes.start_erl_call("erl@h", erl_call_tag, "m", "f", Term::nil(), out);
    receive(control::Send{processes.ocaml_pid(), answer(reason)});
    ASSERT_EQ(out.erl_calls_done.size(), 1U) << reason.to_string();
    EXPECT_EQ(out.erl_calls_done[0].result, expected) << reason.to_string();
  }
}

TEST_F(ProcessesTest, AnErlCallEndsAtOnceWhenItsNodeGoesOrHasNoRex) {
  connect();
  const Term tag_term = Term::reference(erl_call_tag);
  processes.start_erl_call("erl@h", erl_call_tag, "m", "f", Term::nil(), out);
  receive(control::MonitorPExit{etf::Atom{"rex"}, processes.ocaml_pid(), erl_call_tag, Term::atom("noproc")});
  ASSERT_EQ(out.erl_calls_done.size(), 1U);
  EXPECT_EQ(out.erl_calls_done[0].result, parse("{error, {error, {erpc, noproc}}}"));
  out = {};
  processes.start_erl_call("erl@h", erl_call_tag, "m", "f", Term::nil(), out);
  processes.disconnected("erl@h", out);
  ASSERT_EQ(out.erl_calls_done.size(), 1U);
  EXPECT_EQ(out.erl_calls_done[0].tag, tag_term);
  EXPECT_EQ(out.erl_calls_done[0].result, parse("{error, {error, {erpc, noconnection}}}"));
  EXPECT_EQ(processes.erl_calls(), 0U);
}

TEST_F(ProcessesTest, AnAbandonedErlCallTakesItsMonitorOff) {
  connect();
  processes.start_erl_call("erl@h", erl_call_tag, "m", "f", Term::nil(), out);
  out = {};
  processes.abandon_erl_call(Term::reference(erl_call_tag), out);
  EXPECT_EQ(sent<control::DemonitorP>(0).ref.ids, erl_call_tag.ids);
  EXPECT_EQ(processes.erl_calls(), 0U);
}

}  // namespace
}  // namespace camlbeam::node
