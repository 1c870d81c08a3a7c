// camlbeam-node's threads and what passes between them:
//
//   network thread   dist::Endpoint: sockets, handshakes, ticks (never waits for the rest)
//   runtime thread   the OCaml runtime. While idle it takes the endpoint's events itself:
//                    frames -> typed messages (one dist::MessageReader per peer) ->
//                    Processes -> answers sent at once, host requests run there and then,
//                    one at a time, in the order they came
//   dispatch thread  asleep, unless a request has run for a tick of the request watch
//                    (takeover()): then it takes the events instead, answers what needs no
//                    OCaml (ping, monitors, links, spawn replies) and queues the requests,
//                    until the long request ends
//
// A call thus costs one hand-off from the network thread and one back, and a long OCaml
// call stops neither ticks nor the answers the node gives without OCaml. Events are taken
// and handled under one lock, by one thread at a time, so each peer's frames are read in
// order (its atom cache and fragments depend on it). The queue of requests is bounded
// (max_queued): past it a call is answered {error, overloaded} without running.
#pragma once

#include "processes.hpp"

#include <camlbeam/dist/endpoint.hpp>
#include <camlbeam/dist/message_reader.hpp>
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

namespace camlbeam::node {

struct NodeConfig {
  dist::EndpointOptions endpoint;
  std::optional<std::uint32_t> call_timeout_ms;
  std::size_t max_queued = 100000;
  bool allow_load = false;  // {load, Path} from peers (Processes::allow_loads)
  etf::Term info = etf::Term::map({});  // what the ocaml process answers `info` (Processes::describe_as)
};

// The log of refused callers (a wrong cookie, garbage): every one while they are few, then
// a count per minute, so that a flood of bad connections cannot flood the log.
class RefusalLog {
 public:
  void note(const std::string& peer, const std::string& why);

 private:
  static constexpr int per_minute = 20;
  std::chrono::steady_clock::time_point window_start_{};
  int in_window_ = 0;
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
  std::optional<std::string> serve(host::Host& host);
  // From any thread (a signal's waiter): serve() returns after the request it runs.
  void stop() noexcept;
  // From the request watch's thread, while a request has run for a tick: the dispatch
  // thread takes the events until it ends.
  void takeover() noexcept;

 private:
  void dispatch() noexcept;
  // Takes one event, if there is one, and handles it; the caller holds mutex_.
  void take_event();
  void handle(dist::EndpointEvent& event);
  // Sends what Processes decided and queues its host requests; the caller holds mutex_.
  void apply(Effects& effects);
  void run(host::Host& host, HostWork& work);
  // Waits until the endpoint has an event or `timeout` passes.
  bool wait_for_event(std::chrono::milliseconds timeout) const noexcept;

  NodeConfig config_;
  dist::Endpoint endpoint_;
  std::mutex mutex_;  // everything below but the thread
  Processes processes_;
  std::map<std::string, dist::MessageReader> readers_;
  std::deque<HostWork> queue_;
  std::optional<std::string> failure_;
  RefusalLog refusals_;
  bool running_request_ = false;
  bool taken_over_ = false;
  std::condition_variable wake_dispatcher_;
  std::atomic<bool> stopping_{false};
  std::thread dispatcher_;
};

}  // namespace camlbeam::node
