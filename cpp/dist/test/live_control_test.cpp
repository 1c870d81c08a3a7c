// Control messages against a real OTP node: an `erl -sname` node connects to our acceptor
// and does what Erlang programs do to a peer (ping, gen_server:call, monitor, link, unlink,
// exit, a message big enough to be fragmented, erpc); every frame must decode to the
// expected typed message with OTP's atom cache in use, and our answers (is_auth, the
// unlink ack, erpc's spawn reply and result) must be understood by the Erlang side.
#include "frame_seed.hpp"
#include "live_support.hpp"

#include <camlbeam/dist/control.hpp>
#include <camlbeam/dist/message_reader.hpp>

#include <gtest/gtest.h>

#include <string>
#include <vector>

using namespace camlbeam::dist;
using namespace camlbeam::dist::live;
namespace etf = camlbeam::etf;
using etf::Term;

namespace {

// {'$gen_call', {From, Tag}, Request}: From and Tag, or nothing.
struct GenCall {
  etf::Pid from;
  Term tag;
  Term request;
};
std::optional<GenCall> as_gen_call(const Term& message) {
  const auto call = message.tuple_elements();
  if (call.size() != 3 || !call[0].is_atom("$gen_call")) return std::nullopt;
  const auto from = call[1].tuple_elements();
  if (from.size() != 2 || from[0].get_if<etf::Boxed<etf::Pid>>() == nullptr) return std::nullopt;
  return GenCall{**from[0].get_if<etf::Boxed<etf::Pid>>(), from[1], call[2]};
}

// What the test saw, in order, and what it answered.
struct Session {
  std::vector<Control> messages;
  std::vector<std::vector<std::uint8_t>> answers;  // frame bodies to send
  std::size_t header_frames_with_cache_refs = 0;
  std::size_t fragments = 0;
  std::vector<std::vector<std::uint8_t>> small_frames;  // for the fuzzer's seeds
};

}  // namespace

class DistLiveControl : public LiveTest {};

TEST_F(DistLiveControl, WhatErlangSendsDecodesAndOurAnswersAreUnderstood) {
  OurAcceptor acceptor(epmd, "camlbeam_ctl");
  const std::string& ours = acceptor.name;

  ErlNode erl(unique("camlbeam_erl"), cookie,
              "N = '" + ours +
                  "', register(tester, self()),"
                  "io:format(\"ping ~p~n\", [net_adm:ping(N)]),"
                  "io:format(\"call ~p~n\", [catch gen_server:call({foo, N}, x, 500)]),"
                  "erlang:monitor(process, {foo, N}),"
                  "receive {pid, P, Big} -> io:format(\"got ~p~n\", [byte_size(Big)]),"
                  " link(P), unlink(P), exit(P, kill), io:format(\"linked~n\")"
                  " after 10000 -> io:format(\"no pid~n\") end,"
                  "{foo, N} ! {big, binary:copy(<<\"x\">>, 300000)},"
                  "io:format(\"erpc ~p~n\", [catch erpc:call(N, erlang, node, [], 3000)]),"
                  "io:format(\"done~n\"), timer:sleep(30000), halt().");

  Connected c = acceptor.accept();
  const std::uint64_t flags = c.flags;
  EXPECT_NE(flags & flag::dist_hdr_atom_cache, 0u);
  EXPECT_NE(flags & flag::fragments, 0u);
  Link link(std::move(c), fast_ticks());
  MessageReader reader(flags);
  const etf::Pid our_pid{ours, 1, 0, acceptor.registration.creation()};
  Session session;

  std::uint64_t sequence = 0;
  auto answer = [&](const Control& message) {
    const auto error = encode_frames(message, flags, ++sequence, session.answers);
    ASSERT_FALSE(error) << error->message();
  };
  // Answers what needs an answer for the script to go on.
  auto on_message = [&](const Control& message) {
    using namespace camlbeam::dist::control;
    if (const auto* reg_send = std::get_if<RegSend>(&message)) {
      const auto call = as_gen_call(reg_send->message);
      if (reg_send->to_name.name == "net_kernel" && call)
        answer(Send{call->from, Term::tuple({call->tag, Term::atom("yes")})});
    } else if (const auto* monitor = std::get_if<MonitorP>(&message)) {
      // The second monitor of foo is erlang:monitor's: the script now waits for our pid.
      const auto monitors = std::count_if(session.messages.begin(), session.messages.end(),
                                          [](const Control& m) { return std::holds_alternative<MonitorP>(m); });
      if (std::holds_alternative<etf::Atom>(monitor->to) && std::get<etf::Atom>(monitor->to).name == "foo" &&
          monitors == 2)  // before it: net_kernel (ping), foo (call)
        // With 200 KB: OTP must take our fragments.
        answer(RegSend{our_pid, etf::Atom{"tester"},
                       Term::tuple({Term::atom("pid"), Term::pid(our_pid), Term::binary(std::string(200'000, 'z'))})});
    } else if (const auto* unlink = std::get_if<UnlinkId>(&message)) {
      answer(UnlinkIdAck{unlink->id, unlink->to, unlink->from});
    } else if (const auto* spawn = std::get_if<SpawnRequest>(&message)) {
      // erpc:call: spawned and monitored, then the monitor fires with {Ref, return, Result}.
      const etf::Pid worker{ours, 2, 0, acceptor.registration.creation()};
      const auto args = spawn->args.get_if<etf::List>();
      ASSERT_NE(args, nullptr);
      answer(SpawnReply{spawn->request_id, spawn->from, 2, worker});
      answer(PayloadMonitorPExit{worker, spawn->from, spawn->request_id,
                                 Term::tuple({args->items[0], Term::atom("return"), Term::atom(ours)})});
    }
  };

  // Served until the script prints "done" (it waits for our answers on the way): the
  // link must keep ticking meanwhile, or the node drops us.
  const auto deadline = after(45s);
  bool done = false;
  while (Clock::now() < deadline && !done) {
    link.serve_until(after(200ms), [&](std::span<const std::uint8_t> body) {
      if (body.size() >= 3 && body[0] == 131 && body[1] == 68 && body[2] > 0) ++session.header_frames_with_cache_refs;
      if (body.size() >= 2 && body[0] == 131 && (body[1] == 69 || body[1] == 70))
        ++session.fragments;
      else if (body.size() < 4096)
        session.small_frames.emplace_back(body.begin(), body.end());
      auto got = reader.read(body);
      ASSERT_FALSE(got.error) << got.error->message();
      if (!got.message) return;
      on_message(*got.message);
      session.messages.push_back(std::move(*got.message));
    });
    for (const auto& body : session.answers) link.send_frame(body, after(5s));
    session.answers.clear();
    done = erl.wait_for("done", 50ms);
  }

  std::string trace;
  for (const auto& m : session.messages)
    trace += std::string(name_of(op_of(m))) + " " + control_tuple(m).to_string() + "\n";
  const std::string& said = erl.seen();
  ASSERT_TRUE(done) << said << trace;
  EXPECT_NE(said.find("ping pong"), std::string::npos) << said << trace;
  EXPECT_NE(said.find("call {'EXIT',{timeout"), std::string::npos) << said << trace;
  EXPECT_NE(said.find("got 200000"), std::string::npos) << said << trace;
  EXPECT_NE(said.find("linked"), std::string::npos) << said << trace;
  EXPECT_NE(said.find("erpc " + ours + "\n"), std::string::npos) << said << trace;

  // The expected operations, in the order the script sends them.
  auto position = [&](Op op, std::size_t from) {
    for (std::size_t i = from; i < session.messages.size(); ++i)
      if (op_of(session.messages[i]) == op) return i;
    return session.messages.size();
  };
  std::size_t at = 0;
  for (Op op : {Op::monitor_p, Op::reg_send, Op::monitor_p, Op::reg_send, Op::demonitor_p, Op::monitor_p, Op::link,
                Op::unlink_id, Op::payload_exit2, Op::reg_send, Op::spawn_request}) {
    at = position(op, at);
    ASSERT_LT(at, session.messages.size()) << name_of(op) << " missing or out of order in\n" << trace;
    ++at;
  }
  using namespace camlbeam::dist::control;
  for (const auto& m : session.messages) {
    if (const auto* exit = std::get_if<PayloadExit2>(&m)) {
      EXPECT_EQ(exit->to.id, our_pid.id);
      EXPECT_TRUE(exit->reason.is_atom("kill"));
    } else if (const auto* l = std::get_if<control::Link>(&m)) {
      EXPECT_EQ(l->to.id, our_pid.id);
    } else if (const auto* reg_send = std::get_if<RegSend>(&m); reg_send && reg_send->to_name.name == "foo") {
      const auto elements = reg_send->message.tuple_elements();
      if (elements.size() == 2 && elements[0].is_atom("big")) {
        const auto* big = elements[1].get_if<etf::Binary>();
        ASSERT_NE(big, nullptr);
        EXPECT_EQ(big->bytes.size(), 300000u);
      }
    } else if (const auto* spawn = std::get_if<SpawnRequest>(&m)) {
      EXPECT_EQ(spawn->mfa.module.name, "erpc");
      EXPECT_EQ(spawn->mfa.function.name, "execute_call");
      EXPECT_EQ(spawn->mfa.arity, 4);
    }
  }
  EXPECT_GT(session.header_frames_with_cache_refs, 0u) << "OTP used no atom cache";
  EXPECT_GE(session.fragments, 4u) << "300 KB should come in 64 KB fragments";
  EXPECT_EQ(reader.partial_sequences(), 0u);
  frame_seed::write("otp25-session", flags, session.small_frames);
  link.close();
}
