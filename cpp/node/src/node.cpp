#include "node.hpp"
#include "term_request.hpp"

#include <camlbeam/etf/etf.hpp>

#include <chrono>
#include <cstdio>
#include <exception>
#include <utility>

#include <poll.h>

namespace camlbeam::node {

using etf::Term;

void RefusalLog::note(const std::string& peer, const std::string& why) {
  const auto now = std::chrono::steady_clock::now();
  if (now - window_start_ >= std::chrono::minutes(1)) {
    if (in_window_ > per_minute) {
      std::fprintf(stderr, "camlbeam-node: %d more connections refused in the last minute\n", in_window_ - per_minute);
    }
    window_start_ = now;
    in_window_ = 0;
  }
  if (++in_window_ > per_minute) return;
  std::fprintf(stderr, "camlbeam-node: refused a connection%s%s: %s\n", peer.empty() ? "" : " from ", peer.c_str(),
               why.c_str());
}

Node::Node(NodeConfig config)
    : config_(std::move(config)),
      endpoint_(config_.endpoint),
      processes_(endpoint_.node_name(), endpoint_.creation(), config_.call_timeout_ms),
      dispatcher_([this] { dispatch(); }) {
  if (config_.allow_load) processes_.allow_loads();
  processes_.describe_as(config_.info);
}

Node::~Node() {
  stop();
  if (dispatcher_.joinable()) dispatcher_.join();
}

void Node::stop() noexcept {
  {
    // Under the lock: the dispatcher cannot miss the store between its check and its wait.
    const std::lock_guard lock(mutex_);
    stopping_.store(true);
  }
  wake_dispatcher_.notify_all();
}

void Node::takeover() noexcept {
  {
    const std::lock_guard lock(mutex_);
    if (!running_request_ || taken_over_) return;
    taken_over_ = true;
  }
  wake_dispatcher_.notify_all();
}

bool Node::wait_for_event(std::chrono::milliseconds timeout) const noexcept {
  pollfd ready{endpoint_.event_fd(), POLLIN, 0};
  return ::poll(&ready, 1, static_cast<int>(timeout.count())) > 0;
}

void Node::take_event() {
  std::optional<dist::EndpointEvent> event = endpoint_.poll_event();
  if (!event) return;
  try {
    handle(*event);
  } catch (const std::exception& e) {
    // std::bad_alloc from one message: that message is lost, the node goes on.
    std::fprintf(stderr, "camlbeam-node: dropped a message: %s\n", e.what());
  }
}

void Node::dispatch() noexcept {
  std::unique_lock lock(mutex_);
  while (!stopping_.load()) {
    wake_dispatcher_.wait(lock, [&] { return stopping_.load() || taken_over_; });
    while (taken_over_ && !stopping_.load()) {
      lock.unlock();
      const bool ready = wait_for_event(std::chrono::milliseconds(50));
      lock.lock();
      // The request may have ended meanwhile: then the runtime thread takes the events again.
      if (ready && taken_over_) {
        try {
          take_event();
        } catch (...) {
          std::fprintf(stderr, "camlbeam-node: dropped a message\n");
        }
      }
    }
  }
}

void Node::handle(dist::EndpointEvent& event) {
  using Kind = dist::EndpointEvent::Kind;
  switch (event.kind) {
    case Kind::connected:
      readers_.insert_or_assign(event.peer, dist::MessageReader(event.flags));
      processes_.connected(event.peer, event.flags);
      return;
    case Kind::disconnected:
      readers_.erase(event.peer);
      processes_.disconnected(event.peer);
      return;
    case Kind::refused:
      refusals_.note(event.peer, event.error.message());
      return;
    case Kind::failed:
      failure_ = event.error.message();
      stopping_.store(true);
      wake_dispatcher_.notify_all();
      return;
    case Kind::frame: {
      const auto reader = readers_.find(event.peer);
      if (reader == readers_.end()) return;
      dist::MessageReader::Outcome got = reader->second.read(event.body);
      if (got.error) {
        // The peer broke the protocol: its connection goes, nothing it sent is acted upon.
        std::fprintf(stderr, "camlbeam-node: dropping %s: %s\n", event.peer.c_str(), got.error->message().c_str());
        endpoint_.disconnect(event.peer);
        return;
      }
      if (!got.message) return;  // a fragment
      Effects effects;
      processes_.receive(event.peer, std::move(*got.message), effects);
      apply(effects);
      return;
    }
  }
}

void Node::apply(Effects& effects) {
  for (Outgoing& out : effects.send) {
    const std::optional<std::uint64_t> flags = processes_.peer_flags(out.peer);
    if (!flags) continue;  // gone meanwhile
    etf::ByteBuffer body;
    if (const auto error = dist::encode_frame(out.control, *flags, body)) {
      std::fprintf(stderr, "camlbeam-node: not sent to %s: %s\n", out.peer.c_str(), error->message().c_str());
      continue;
    }
    const auto bytes = body.span();
    endpoint_.send(out.peer, std::vector<std::uint8_t>(bytes.begin(), bytes.end()));
  }
  effects.send.clear();
  for (HostWork& work : effects.work) {
    if (queue_.size() >= config_.max_queued) {
      Effects refused;
      processes_.answered(work, Term::tuple({Term::atom("error"), Term::atom("overloaded")}), refused);
      apply(refused);
      continue;
    }
    queue_.push_back(std::move(work));
  }
  effects.work.clear();
}

std::optional<std::string> Node::serve(host::Host& host) {
  std::unique_lock lock(mutex_);
  for (;;) {
    if (stopping_.load()) return failure_;
    if (!queue_.empty()) {
      HostWork work = std::move(queue_.front());
      queue_.pop_front();
      running_request_ = true;
      lock.unlock();
      run(host, work);
      host.between_requests();
      lock.lock();
      running_request_ = false;
      taken_over_ = false;
      continue;
    }
    lock.unlock();
    const bool ready = wait_for_event(std::chrono::milliseconds(200));
    lock.lock();
    if (ready) take_event();
  }
}

void Node::run(host::Host& host, HostWork& work) {
  std::optional<Term> answer;
  std::string cast_failure;
  try {
    answer = run_request(host, work.request, &cast_failure);
  } catch (const std::exception& e) {
    answer = error_answer("request_failed", e.what());
  }
  if (!answer) {
    if (!cast_failure.empty()) std::fprintf(stderr, "camlbeam-node: a cast failed: %s\n", cast_failure.c_str());
    answer = Term::atom("ok");  // a cast: Processes counts it done, and sends nothing
  }
  const std::lock_guard lock(mutex_);
  Effects effects;
  processes_.answered(work, std::move(*answer), effects);
  apply(effects);
}

}  // namespace camlbeam::node
