// camlbeam-node's threads and what passes between them:
//
//   network thread   dist::Endpoint: sockets, handshakes, ticks while the others are busy
//                    (it never waits for them)
//   runtime thread   the OCaml runtime. While idle it runs the endpoint's loop and takes its
//                    events itself (dist::EndpointOptions::consumer_reads):
//                    frames -> typed messages (one dist::MessageReader per peer) ->
//                    Processes -> answers sent at once, host requests run there and then,
//                    one at a time, in the order they came
//   dispatch thread  asleep, unless a request has run for a tick of the request watch
//                    (takeover()): then it takes the events instead, answers what needs no
//                    OCaml (ping, monitors, links, spawn replies) and queues the requests,
//                    until the long request ends
//
// A call thus crosses no thread: its frame is read, and its answer written (dist::Endpoint's
// lanes), by the runtime thread. A long OCaml call stops neither ticks (the network thread
// takes the endpoint's loop back within milliseconds, the dispatch thread from the request
// watch's first tick) nor the answers the node gives without OCaml (the dispatch thread).
// Events are taken and handled under one lock, by one thread at a time, so each peer's
// frames are read in order (its atom cache and fragments depend on it). The queue of requests is bounded
// (max_queued): past it a call is answered {error, overloaded} without running.
//
// OCaml talks to the cluster from the runtime thread, inside a request (Erl.send,
// Erl.call_erlang: ocaml_transport.hpp): under the node's policy (policy.hpp), a send is
// encoded and queued on the endpoint at once (bounded per peer by the endpoint), or held
// while the endpoint connects to its node, and an
// Erl.call_erlang hands the events to the dispatch thread at once, which routes its
// answer back to the waiting runtime thread.
#pragma once

#include "policy.hpp"
#include "processes.hpp"

#include <camlbeam/dist/endpoint.hpp>
#include <camlbeam/dist/message_reader.hpp>
#include <camlbeam/conv/conv.hpp>
#include <camlbeam/host/host.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace camlbeam::node {

struct NodeConfig {
  dist::EndpointOptions endpoint;
  std::optional<std::uint32_t> call_timeout_ms;
  std::size_t max_queued = 100000;
  // The largest frame that carries a request's answer; a larger answer is replaced by
  // {error, {reply_too_large, Size, Limit}}. Keep endpoint.max_queued_bytes above it.
  std::size_t max_reply_size = std::size_t{64} << 20;
  bool allow_load = false;  // {load, Path} from peers (Processes::allow_loads)
  etf::Term info = etf::Term::map({});  // what the ocaml process answers `info` (Processes::describe_as)
  Policy policy;
};

// A log that a flood cannot flood: every line while they are few, then a count per
// minute of those left out.
class RateLimitedLog {
 public:
  // `left_out`: what the count is of, "connections refused".
  explicit RateLimitedLog(std::string left_out) : left_out_(std::move(left_out)) {}
  // Whether to write one more line now.
  bool admit();

 private:
  static constexpr int per_minute = 20;
  std::string left_out_;
  std::chrono::steady_clock::time_point window_start_{};
  int in_window_ = 0;
};

// The log of refused callers (a wrong cookie, garbage).
class RefusalLog {
 public:
  void note(const std::string& peer, const std::string& why);

 private:
  RateLimitedLog log_{"connections refused"};
};

// How an Erl.call_erlang began: answered at once (refused by the policy, a fun in its
// arguments, no connection), started (to wait for with its tag), or not possible from the
// calling thread (raised into OCaml as Failure, as the NIF coupling does).
struct ErlCallStart {
  enum class Kind : std::uint8_t { answered, started, refused };
  Kind kind;
  etf::Term term;   // answered: the answer; started: the tag
  std::string why;  // refused
};

class Node {
 public:
  // Listens, registers in EPMD and starts the network and dispatch threads. Throws
  // dist::DistError when the node cannot listen or register.
  explicit Node(NodeConfig config);
  ~Node();
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  const std::string& name() const noexcept { return endpoint_.node_name(); }
  std::uint16_t port() const noexcept { return endpoint_.port(); }

  // On the runtime thread: takes events and runs requests with `host` until stop() (or a
  // failure of the network thread, which it returns).
  // `context`: the Erl.Private.context of its requests (ocaml_transport.hpp).
  std::optional<std::string> serve(host::Host& host, const conv::Root* context = nullptr);
  // From any thread (a signal's waiter): serve() returns after the request it runs.
  void stop() noexcept;
  // From the request watch's thread, while a request has run for a tick: the dispatch
  // thread takes the events until it ends.
  void takeover() noexcept;

  // Erl.send from OCaml, on the runtime thread while a request runs: "" when sent or
  // dropped (a refusal of the policy, logged; a pid of this node, which has no mailbox
  // for OCaml), held while the node connects to a node it has no connection to (in order,
  // at most max_held_sends per node; dropped and logged if it cannot connect), else why
  // it cannot be (another thread).
  std::string send_from_ocaml(const etf::Pid& to, etf::Term message);
  // Erl.call_erlang from OCaml, on the runtime thread while a request runs; a started call
  // is then waited for (wait_erl_call) until answered, or abandoned.
  ErlCallStart start_erl_call(std::string_view module, std::string_view function, etf::Term args);
  // Its answer, if it came within `slice`.
  std::optional<etf::Term> wait_erl_call(const etf::Term& tag, std::chrono::milliseconds slice);
  void abandon_erl_call(const etf::Term& tag);
  const etf::Pid& ocaml_pid() const noexcept { return processes_.ocaml_pid(); }

 private:
  void dispatch() noexcept;
  // Takes one event, if there is one, and handles it: false when there was none. The
  // caller holds mutex_.
  bool take_event();
  static constexpr int events_per_turn = 64;
  void handle(dist::EndpointEvent& event);
  // Sends the Erl.send held for `peer` now that its connection is up, or drops them when
  // it could not be made; the caller holds mutex_.
  void release_held_sends(const std::string& peer, bool connected);
  // Sends what Processes decided and queues its host requests; the caller holds mutex_.
  // Why an Erl.send message among them was refused (over max_reply_size), if one was.
  std::optional<std::string> apply(Effects& effects);
  // Whether a queued call's caller still waits for it (HostWork::caller_timeout_ms); if so
  // its deadline becomes what is left of the caller's timeout.
  bool within_callers_timeout(HostWork& work);
  void run(host::Host& host, HostWork& work, const conv::Root* context);
  // Waits until the endpoint has an event or `timeout` passes.
  bool wait_for_event(std::chrono::milliseconds timeout) noexcept;

  NodeConfig config_;
  dist::Endpoint endpoint_;
  std::mutex mutex_;  // everything below but the thread
  Processes processes_;
  std::map<std::string, dist::MessageReader> readers_;
  std::deque<HostWork> queue_;
  std::optional<std::string> failure_;
  RefusalLog refusals_;
  RateLimitedLog dropped_sends_{"Erl.send dropped"};
  struct HeldSend {
    etf::Pid to;
    etf::Term message;
  };
  static constexpr std::size_t max_held_sends = 10000;
  std::map<std::string, std::deque<HeldSend>> held_sends_;
  // The request running on the runtime thread: who asked, and the pids it was given.
  struct Running {
    std::string peer;
    std::vector<etf::Pid> given;
  };
  std::optional<Running> running_;
  std::thread::id runtime_thread_;
  // Erl.call_erlang waiting, by tag: their answers once they came.
  std::map<etf::Term, std::optional<etf::Term>> erl_calls_;
  std::condition_variable erl_call_answered_;
  std::uint64_t next_erl_call_ = 0;
  bool running_request_ = false;
  bool taken_over_ = false;
  std::condition_variable wake_dispatcher_;
  std::atomic<bool> stopping_{false};
  std::thread dispatcher_;
};

}  // namespace camlbeam::node
