// The processes of an OCaml node as the cluster sees them, with no sockets and no OCaml:
// what a control message from a peer does (an answer to send, a request for the host), and
// what a request's answer sends back. Driven by one thread at a time (node.hpp).
//
// The node has two registered processes, which never exit while it runs:
//   `ocaml`       a gen_server: {call, F, Args[, Timeout]} and {cast, F, Args} become host
//                 requests (messages.hpp), {load, Path[, Timeout]} loads a plugin if the node allows it
//                 (allow_loads: camlbeam-node --allow-load; a binary Path loaded once answers
//                 every later load of it as it did then), `pid` answers its pid
//                 (to link to it), `in_flight` the number of requests it holds, queued or
//                 running (what a pool routes by), `info` what describe_as gave; other
//                 calls are answered
//                 {error, {bad_request, _}}, other messages dropped;
//   `net_kernel`  answers {is_auth, Node} with yes, so that net_adm:ping gives pong;
//   `rex`         the rpc server of older clients (ei_rpc, erl_call): {From, {call, M, F, A,
//                 GroupLeader}} runs export F of plugin module M, answered {rex, Result}.
// and one short-lived process per spawn request of erpc:execute_call/4 (rpc:call,
// erpc:call), which exits with the request's result once the host has answered.
//
// An answer holding an atom its peer's VM may not know is refused (known_atoms.hpp). A
// reply goes to the caller's alias where it made one: as ALTACT_SIG_SEND to a peer that
// negotiated ALTACT_SIG (OTP 28 and later; OTP 30 drops ALIAS_SEND), else as ALIAS_SEND.
//
// Signals to a process that does not exist are answered as Erlang answers them: a monitor
// gets its DOWN with noproc at once, a link its EXIT with noproc. An UNLINK_ID is
// acknowledged before anything else is sent to its sender. Everything kept per peer goes
// when the peer disconnects; what a node keeps for its peers is bounded.
#pragma once

#include "known_atoms.hpp"
#include "messages.hpp"

#include <camlbeam/dist/control.hpp>
#include <camlbeam/etf/term.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <variant>
#include <vector>

namespace camlbeam::node {

// A request for the host, and where its answer goes.
struct HostWork {
  // {Tag, Answer} to a gen_server caller.
  struct GenReply {
    etf::Pid to;
    etf::Term tag;
    bool load = false;        // a load, whose answer declares atoms (KnownAtoms::learn_declared)
    std::string loaded_path;  // a load's binary Path, whose final answer is kept
  };
  // The exit of a process erpc spawned: its reason carries the answer.
  struct ProcessExit {
    std::uint64_t process;  // Processes' number for it
  };
  // {rex, Result} to a caller of the rex server (ei_rpc, erl_call): Result as rpc:call
  // returns it.
  struct RexReply {
    etf::Pid to;
    ExecuteCall call;
  };

  std::string peer;   // the node that asked
  etf::Term request;  // {call, Ref, Fun, Args[, Timeout]} or {cast, Fun, Args}
  std::variant<std::monostate, GenReply, ProcessExit, RexReply> reply_to;  // monostate: a cast
  // A call whose caller gave its own timeout ({call, F, Args, Timeout}): it counts from when
  // the call arrived, so that a call that waited in the queue past it does not run at all
  // (its caller has given up), and one that waited less runs for what is left.
  std::optional<std::uint32_t> caller_timeout_ms;
  std::chrono::steady_clock::time_point arrived{};
};

// A control message for a peer.
struct Outgoing {
  std::string peer;
  dist::Control control;
  // For a message that carries a request's answer: the same message with another answer in
  // its place (the node's max_reply_size puts {error, {reply_too_large, ...}} there).
  std::function<dist::Control(etf::Term)> with_answer = {};
  // Writes the message in place of the control's own (Processes::answered_in_place).
  dist::PayloadWriter payload = {};
  // An Erl.send message (Processes::send_from_ocaml): over the node's max_reply_size it is
  // refused, as a port worker refuses it, and not sent.
  bool sent_by_ocaml = false;
};

// An Erl.call_erlang that ended: its tag and what OCaml gets, {ok, Value} or
// {error, {Class, Reason}} (as under the port coupling).
struct ErlCallDone {
  etf::Term tag;  // the reference start_erl_call was given
  etf::Term result;
};

struct Effects {
  std::vector<Outgoing> send;
  std::vector<HostWork> work;
  std::vector<ErlCallDone> erl_calls_done;
};

class Processes {
 public:
  struct Limits {
    // Spawned processes alive at once (their requests queued or running): past it a spawn
    // request is answered system_limit, as a VM out of processes answers.
    std::size_t max_spawned = 100000;
    // Links and monitors a peer may hold on the node's processes; past it, a new one is
    // answered as if its target did not exist.
    std::size_t max_watches_per_peer = 100000;
  };

  Processes(std::string node_name, std::uint32_t creation, std::optional<std::uint32_t> call_timeout_ms,
            Limits limits);
  Processes(std::string node_name, std::uint32_t creation, std::optional<std::uint32_t> call_timeout_ms)
      : Processes(std::move(node_name), creation, call_timeout_ms, Limits{}) {}

  // From now on {load, Path} loads a plugin: any node with the cookie may then run code of
  // its choice here (as on an Erlang node, where the cookie is all the trust there is).
  void allow_loads() noexcept { loads_allowed_ = true; }
  // What `info` answers: the node's OS process and OCaml (`#{os_pid, ocaml_version, flavour}`).
  void describe_as(etf::Term info) { info_ = std::move(info); }

  // A peer connected with these negotiated flags (what may be sent to it).
  void connected(const std::string& peer, std::uint64_t flags);
  // The peer is gone: its links, monitors and the processes it spawned are forgotten (the
  // requests of those still run; their answers go nowhere).
  // Erl.call_erlang's waiting on it end with {error, {error, {erpc, noconnection}}}.
  void disconnected(const std::string& peer, Effects& out);
  void disconnected(const std::string& peer) {
    Effects ignored;
    disconnected(peer, ignored);
  }

  // A message from `peer`.
  void receive(const std::string& peer, dist::Control message, Effects& out);

  // The host's answer ({ok, _} or {error, _}) to `work`, or to a cast that it ran (the cast's
  // answer goes nowhere): every work Processes made is answered once, by the runtime or as
  // refused.
  void answered(const HostWork& work, etf::Term answer, Effects& out);

  // Thrown by an answer's writer (answered_in_place) for an answer that cannot go as it
  // is: `instead` goes in its place (Outgoing::with_answer).
  struct AnswerRefused {
    etf::Term instead;
  };
  // The answer to a gen_server call (not a load), written by `write_answer` straight into
  // the frame that carries it (Outgoing::payload), with no etf::Term between: as answered()
  // sends it, the caller's Tag and then the answer. write_answer is given the peer's
  // known atoms, and throws AnswerRefused with KnownAtoms::refusal for an atom the peer may
  // not know. False, and nothing done, for any other work: answered() is the way. True: the
  // work's reply and peer were taken.
  using AnswerWriter = std::function<void(etf::Writer&, const KnownAtoms::PeerView&)>;
  bool answered_in_place(HostWork& work, AnswerWriter write_answer, Effects& out);

  // The first atom of `term` that `peer`'s VM may not have (known_atoms.hpp): an answer, a
  // message or arguments holding one are not sent there.
  std::optional<std::string> unknown_atom(const std::string& peer, const etf::Term& term) const {
    return known_atoms_.first_unknown(peer, term);
  }

  // The flags negotiated with a connected peer; nullopt once it is gone.
  std::optional<std::uint64_t> peer_flags(const std::string& peer) const noexcept;

  // Erl.send from OCaml (the policy checked) to a process of a connected peer: SEND_SENDER
  // from the ocaml process where the peer takes it, else SEND. False, and nothing sent,
  // while `to`'s node is not connected: the frame's encoding depends on its flags.
  bool send_from_ocaml(const etf::Pid& to, etf::Term message, Effects& out) const;

  // Erl.call_erlang(module, function, args) from OCaml, run on `peer` (the node whose
  // process made the running request) with Erlang's own tools, so that nothing of
  // camlbeam's is needed there: a gen_server call of the peer's rex server,
  //   {'$gen_call', {Ocaml, Tag}, {call, erpc, execute_call, [Tag, M, F, Args], user}}
  // which runs apply(M, F, Args) in a process of its own (group leader `user`) and
  // answers with erpc's exit reason, {Tag, Class, ...}, so that the class of an exception
  // is kept; and a monitor of rex under the same Tag, so that a peer that goes (or has
  // no rex) answers at once. The end comes as an ErlCallDone in a later Effects. Throws
  // etf::EncodeError when module or function cannot be atoms. The caller checked the
  // policy: the atoms of M and F reach the peer only here.
  void start_erl_call(const std::string& peer, const etf::Reference& tag, std::string_view module,
                      std::string_view function, etf::Term args, Effects& out);
  // OCaml no longer waits for it (its request was cancelled): the monitor goes, a late
  // answer is dropped.
  void abandon_erl_call(const etf::Term& tag, Effects& out);
  std::size_t erl_calls() const noexcept { return erl_calls_.size(); }

  const etf::Pid& ocaml_pid() const noexcept { return ocaml_; }
  std::size_t spawned() const noexcept { return spawned_.size(); }
  // The works made and not answered yet: what `in_flight` answers.
  std::size_t outstanding() const noexcept { return outstanding_; }
  std::size_t watches() const noexcept;

 private:
  struct Spawned {
    std::string peer;
    etf::Pid caller;
    etf::Reference request_id;  // the monitor's reference too
    bool link = false;
    bool monitor = false;
    ExecuteCall call;
  };
  // A link or a monitor a peer's process holds on one of ours.
  struct Watch {
    enum class Kind : std::uint8_t { link, monitor };
    Kind kind;
    std::uint64_t target;  // our process: its pid's id and serial, as make_pid makes them
    etf::Pid watcher;          // the peer's process
    etf::Reference reference;  // a monitor's; none (no ids) for a link
    // Any order that tells watches apart: the cheap fields first.
    friend bool operator<(const Watch& a, const Watch& b) noexcept {
      return std::tie(a.kind, a.target, a.watcher.id, a.watcher.serial, a.watcher.creation, a.reference.ids,
                      a.reference.creation, a.watcher.node, a.reference.node) <
             std::tie(b.kind, b.target, b.watcher.id, b.watcher.serial, b.watcher.creation, b.reference.ids,
                      b.reference.creation, b.watcher.node, b.reference.node);
    }
  };

  enum class Registered : std::uint8_t { ocaml, net_kernel, rex };

  std::optional<Registered> registered(const dist::ProcessRef& to) const noexcept;
  bool is_ours(const etf::Pid& pid) const noexcept;
  bool exists(const etf::Pid& pid) const noexcept;

  static std::uint64_t registered_number(Registered process) noexcept;
  void deliver(const std::string& peer, Registered to, etf::Term message, Effects& out);
  void serve_ocaml_call(const std::string& peer, GenCall& call, Effects& out);
  void add_work(HostWork work, Effects& out);
  void deliver_to_rex(const std::string& peer, etf::Term message, Effects& out);
  // A reply of rex to one of our Erl.call_erlang, {Tag, Reply}: whether it was one.
  bool erl_call_replied(const std::string& peer, etf::Term& message, Effects& out);
  // A DOWN of the monitor of an Erl.call_erlang.
  void erl_call_down(const etf::Reference& ref, etf::Term reason, Effects& out);
  void spawn(const std::string& peer, const etf::Reference& request_id, const etf::Pid& from, const dist::Mfa& mfa,
             const etf::Term& options, etf::Term args, Effects& out);
  void watch(const std::string& peer, Watch watch);
  void unwatch(const std::string& peer, const Watch& watch);
  void send_message(const std::string& peer, const etf::Pid& from, const etf::Pid& to, const etf::Term& tag,
                    etf::Term message, Effects& out) const;
  // {Tag, Answer} to a gen_server caller.
  void send_reply(const std::string& peer, const HostWork::GenReply& reply, etf::Term answer, Effects& out) const;
  void send_down(const std::string& peer, dist::ProcessRef from, const etf::Pid& to, const etf::Reference& ref,
                 etf::Term reason, Effects& out) const;
  void send_exit(const std::string& peer, const etf::Pid& from, const etf::Pid& to, etf::Term reason,
                 Effects& out) const;
  etf::Pid make_pid(std::uint64_t number) const;

  std::string node_name_;
  std::uint32_t creation_;
  std::optional<std::uint32_t> call_timeout_ms_;
  Limits limits_;
  etf::Pid ocaml_;
  etf::Pid net_kernel_;
  etf::Pid rex_;
  std::map<std::string, std::uint64_t> flags_;
  std::map<std::uint64_t, Spawned> spawned_;
  std::uint64_t next_spawned_ = first_spawned;
  std::map<std::string, std::set<Watch>> watches_;
  std::size_t outstanding_ = 0;
  KnownAtoms known_atoms_;
  bool loads_allowed_ = false;
  etf::Term info_ = etf::Term::map({});
  // The answer of each plugin loaded (or whose initialiser failed), by the Path it was loaded
  // as: loading it again would answer already_loaded. Bounded by the plugins loaded.
  std::map<std::string, etf::Term, std::less<>> loaded_;
  // Erl.call_erlang waiting: tag (a reference) -> the peer that runs it.
  std::map<etf::Term, std::string> erl_calls_;

  static constexpr std::uint64_t first_spawned = 1000;
};

}  // namespace camlbeam::node
