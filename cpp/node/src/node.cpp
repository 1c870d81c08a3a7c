#include "node.hpp"
#include "term_request.hpp"

#include <camlbeam/dist/error.hpp>
#include <camlbeam/etf/etf.hpp>

#include <chrono>
#include <cstdio>
#include <exception>
#include <utility>


namespace camlbeam::node {

using etf::Term;

bool RateLimitedLog::admit() {
  const auto now = std::chrono::steady_clock::now();
  if (now - window_start_ >= std::chrono::minutes(1)) {
    if (in_window_ > per_minute) {
      std::fprintf(stderr, "camlbeam-node: %d more %s in the last minute\n", in_window_ - per_minute,
                   left_out_.c_str());
    }
    window_start_ = now;
    in_window_ = 0;
  }
  return ++in_window_ <= per_minute;
}

void RefusalLog::note(const std::string& peer, const std::string& why) {
  if (!log_.admit()) return;
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

bool Node::wait_for_event(std::chrono::milliseconds timeout) noexcept {
  return endpoint_.wait_for_events(timeout);
}

bool Node::take_event() {
  std::optional<dist::EndpointEvent> event = endpoint_.poll_event();
  if (!event) return false;
  try {
    handle(*event);
  } catch (const std::exception& e) {
    // std::bad_alloc from one message: that message is lost, the node goes on.
    std::fprintf(stderr, "camlbeam-node: dropped a message: %s\n", e.what());
  }
  return true;
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
      release_held_sends(event.peer, true);
      return;
    case Kind::disconnected: {
      readers_.erase(event.peer);
      Effects effects;
      processes_.disconnected(event.peer, effects);
      apply(effects);
      release_held_sends(event.peer, false);
      return;
    }
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

std::optional<std::string> Node::apply(Effects& effects) {
  std::optional<std::string> refused;
  for (Outgoing& out : effects.send) {
    const std::optional<std::uint64_t> flags = processes_.peer_flags(out.peer);
    if (!flags) continue;  // gone meanwhile
    etf::ByteBuffer body;
    std::optional<dist::Error> error;
    std::optional<Term> instead;
    if (out.payload) {
      try {
        error = dist::encode_frame(out.control, *flags, body, out.payload);
      } catch (Processes::AnswerRefused& cannot_go) {
        instead = std::move(cannot_go.instead);
      } catch (const std::exception& e) {
        // std::bad_alloc writing an outsized answer: the caller learns it, as when the
        // answer was made into a term first, and the node goes on.
        instead = error_answer("request_failed", e.what());
      }
    } else {
      error = dist::encode_frame(out.control, *flags, body);
    }
    if (instead) error = dist::encode_frame(out.with_answer(std::move(*instead)), *flags, body);
    if (!error && out.sent_by_ocaml && body.size() > config_.max_reply_size) {
      refused = "the message is larger than max_reply_size (" + std::to_string(config_.max_reply_size) + " bytes)";
      continue;
    }
    if (!error && out.with_answer && body.size() > config_.max_reply_size) {
      // As a port worker answers one over the pool's max_reply_size: the caller learns why.
      const auto size = static_cast<std::int64_t>(body.size());
      const auto limit = static_cast<std::int64_t>(config_.max_reply_size);
      body.clear();
      error = dist::encode_frame(
          out.with_answer(Term::tuple({Term::atom("error"), Term::tuple({Term::atom("reply_too_large"),
                                                                        Term::integer(size), Term::integer(limit)})})),
          *flags, body);
    }
    if (error) {
      std::fprintf(stderr, "camlbeam-node: not sent to %s: %s\n", out.peer.c_str(), error->message().c_str());
      continue;
    }
    endpoint_.send(out.peer, std::span<const std::uint8_t>(body.span()));
  }
  effects.send.clear();
  for (HostWork& work : effects.work) {
    if (queue_.size() >= config_.max_queued) {
      Effects overloaded;
      processes_.answered(work, Term::tuple({Term::atom("error"), Term::atom("overloaded")}), overloaded);
      apply(overloaded);
      continue;
    }
    work.arrived = std::chrono::steady_clock::now();
    queue_.push_back(std::move(work));
  }
  effects.work.clear();
  for (ErlCallDone& done : effects.erl_calls_done) {
    const auto waiting = erl_calls_.find(done.tag);
    if (waiting != erl_calls_.end()) waiting->second = std::move(done.result);
  }
  if (!effects.erl_calls_done.empty()) erl_call_answered_.notify_all();
  effects.erl_calls_done.clear();
  return refused;
}

bool Node::within_callers_timeout(HostWork& work) {
  if (!work.caller_timeout_ms) return true;
  const auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                            work.arrived);
  if (waited.count() >= *work.caller_timeout_ms) return false;
  // {call, Ref, Fun, Args, Timeout}: what is left of the caller's, if that is shorter.
  auto& elements = std::get<etf::Tuple>(work.request.repr()).elements;
  const auto left = static_cast<std::int64_t>(*work.caller_timeout_ms - waited.count());
  if (elements.size() == 5) {
    if (const auto* timeout = elements[4].get_if<std::int64_t>(); timeout != nullptr && *timeout > left) {
      elements[4] = Term::integer(left);
    }
  }
  return true;
}

std::optional<std::string> Node::serve(host::Host& host, const conv::Root* context) {
  std::unique_lock lock(mutex_);
  runtime_thread_ = std::this_thread::get_id();
  for (;;) {
    if (stopping_.load()) return failure_;
    if (!queue_.empty()) {
      HostWork work = std::move(queue_.front());
      queue_.pop_front();
      if (!within_callers_timeout(work)) {
        Effects effects;
        processes_.answered(work, Term::tuple({Term::atom("error"), Term::atom("timeout")}), effects);
        apply(effects);
        continue;
      }
      running_request_ = true;
      running_ = Running{work.peer, given_pids(work.request)};
      lock.unlock();
      run(host, work, context);
      host.between_requests();
      lock.lock();
      running_request_ = false;
      running_.reset();
      taken_over_ = false;
      continue;
    }
    lock.unlock();
    // Idle: after an outsized request, the heap it grew goes back to the system (a
    // compaction, then malloc_trim), as a port worker gives it back.
    host.give_back_memory();
    const bool ready = wait_for_event(std::chrono::milliseconds(200));
    lock.lock();
    // The events queued meanwhile too (a call comes with its monitor), one wait for them
    // all; a bounded number, so that a flood of events cannot hold a request back.
    for (int taken = 0; ready && taken < events_per_turn && take_event(); ++taken) {
    }
  }
}

void Node::run(host::Host& host, HostWork& work, const conv::Root* context) {
  std::optional<host::Answer> host_answer;
  std::optional<Term> answer;
  std::string cast_failure;
  try {
    TermRequest source(work.request);
    host_answer.emplace(host.run(source, context));
  } catch (const std::exception& e) {
    answer = error_answer("request_failed", e.what());
  }
  if (host_answer && host_answer->is_reply()) {
    // A gen_server call's answer goes from OCaml straight into its reply's frame.
    const std::lock_guard lock(mutex_);
    Effects effects;
    const auto write = [&host_answer](etf::Writer& writer, const KnownAtoms::PeerView& known) {
      write_answer(*host_answer, writer, known);
    };
    if (processes_.answered_in_place(work, write, effects)) {
      apply(effects);
      return;
    }
  }
  if (host_answer) {
    try {
      answer = answer_term(*host_answer, &cast_failure);
    } catch (const std::exception& e) {
      answer = error_answer("request_failed", e.what());
    }
  }
  if (!answer) {
    if (!cast_failure.empty()) std::fprintf(stderr, "camlbeam-node: a cast failed: %s\n", cast_failure.c_str());
    answer = Term::atom("ok");  // a cast: Processes counts it done, and sends nothing
  } else if (std::holds_alternative<std::monostate>(work.reply_to) && !answer->tuple_elements().empty() &&
             answer->tuple_elements()[0].is_atom("error")) {
    // A cast with a deadline ran as a call whose answer goes nowhere.
    std::fprintf(stderr, "camlbeam-node: a cast failed: %s\n", answer->to_string().c_str());
  }
  const std::lock_guard lock(mutex_);
  Effects effects;
  processes_.answered(work, std::move(*answer), effects);
  apply(effects);
}

std::string Node::send_from_ocaml(const etf::Pid& to, etf::Term message) {
  if (std::this_thread::get_id() != runtime_thread_) {
    return "only the thread that runs the node's requests may send, not a thread the plugin started";
  }
  const std::lock_guard lock(mutex_);
  if (!running_) return "Erl.send works while a request runs";
  const auto drop = [&](const char* why) {
    if (dropped_sends_.admit()) {
      std::fprintf(stderr, "camlbeam-node: Erl.send to %s dropped: %s\n", etf::Term::pid(to).to_string().c_str(), why);
    }
    return std::string();
  };
  if (!config_.policy.may_send(to, running_->given)) {
    switch (config_.policy.send) {
      case SendPolicy::none: return drop("refused by the node's policy (--send none)");
      case SendPolicy::given: return drop("refused by the node's policy (--send given: not an argument of the call)");
      case SendPolicy::any: break;
    }
  }
  // The node's own processes (Erl.self ()) have no mailbox for OCaml: dropped, as the port
  // worker's process drops what is sent to it.
  if (to.node == name()) return {};
  // As a port worker's sends pass its pool's guard: no atom the receiving VM may not have.
  if (const auto unknown = processes_.unknown_atom(to.node, message)) {
    if (dropped_sends_.admit()) {
      std::fprintf(stderr, "camlbeam-node: Erl.send to %s dropped: the atom '%s' is not known to its VM\n",
                   Term::pid(to).to_string().c_str(), unknown->c_str());
    }
    return {};
  }
  if (processes_.peer_flags(to.node)) {
    Effects effects;
    processes_.send_from_ocaml(to, std::move(message), effects);
    return apply(effects).value_or(std::string());
  }
  // Not connected (yet): held until the connection is up, as Erlang connects on a send.
  // The frame's encoding waits for the flags that connection negotiates.
  if (!held_sends_.contains(to.node)) {
    try {
      endpoint_.connect(to.node);
    } catch (const dist::DistError&) {
      return drop("its node's name is not one a node can have");  // nonode@nohost
    }
  }
  std::deque<HeldSend>& held = held_sends_[to.node];
  if (held.size() >= max_held_sends) return drop("too many sends wait for a connection to its node");
  held.push_back({to, std::move(message)});
  return {};
}

void Node::release_held_sends(const std::string& peer, bool connected) {
  const auto held = held_sends_.find(peer);
  if (held == held_sends_.end()) return;
  std::deque<HeldSend> sends = std::move(held->second);
  held_sends_.erase(held);
  Effects effects;
  for (HeldSend& send : sends) {
    if (connected && processes_.send_from_ocaml(send.to, std::move(send.message), effects)) continue;
    if (dropped_sends_.admit()) {
      std::fprintf(stderr, "camlbeam-node: Erl.send to %s dropped: its node could not be reached\n",
                   Term::pid(send.to).to_string().c_str());
    }
  }
  if (const std::optional<std::string> refused = apply(effects); refused && dropped_sends_.admit()) {
    std::fprintf(stderr, "camlbeam-node: an Erl.send held for %s dropped: %s\n", peer.c_str(), refused->c_str());
  }
}

namespace {

bool holds_fun(const Term& term) {
  std::vector<const Term*> pending{&term};
  while (!pending.empty()) {
    const Term* next = pending.back();
    pending.pop_back();
    if (next->kind() == etf::Kind::fun || next->kind() == etf::Kind::export_fun) return true;
    for (const Term& child : next->children()) pending.push_back(&child);
  }
  return false;
}

Term erl_call_error(Term reason) {
  return Term::tuple({Term::atom("error"), Term::tuple({Term::atom("error"), std::move(reason)})});
}

}  // namespace

ErlCallStart Node::start_erl_call(std::string_view module, std::string_view function, Term args) {
  using Kind = ErlCallStart::Kind;
  if (std::this_thread::get_id() != runtime_thread_) {
    return {Kind::refused, {},
            "only the thread that runs the node's requests may call Erlang, not a thread the plugin started"};
  }
  const auto answered = [](Term answer) { return ErlCallStart{Kind::answered, std::move(answer), {}}; };
  // As ocaml_policy: a fun in the arguments could make an allowed function run anything.
  if (holds_fun(args)) {
    return answered(erl_call_error(Term::tuple(
        {Term::atom("bad_erl_call"), Term::binary(std::string_view("the arguments of Erl.call_erlang hold a fun"))})));
  }
  std::size_t arity = 0;
  if (const auto* list = args.get_if<etf::List>()) arity = list->items.size() - 1;
  if (!config_.policy.may_call(module, function, arity)) {
    // The atoms stay in this error, on this node: the peer never sees what was refused.
    return answered(erl_call_error(Term::tuple(
        {Term::atom("not_allowed"),
         Term::tuple({Term::atom(module), Term::atom(function), Term::integer(static_cast<std::int64_t>(arity))})})));
  }
  const std::lock_guard lock(mutex_);
  if (!running_) return {Kind::refused, {}, "Erl.call_erlang works while a request runs"};
  if (erl_calls_.size() >= config_.policy.max_erl_calls) {
    return answered(erl_call_error(Term::atom("too_many_erl_calls")));
  }
  if (!processes_.peer_flags(running_->peer)) {
    return answered(erl_call_error(Term::tuple({Term::atom("erpc"), Term::atom("noconnection")})));
  }
  if (const auto unknown = processes_.unknown_atom(running_->peer, args)) {
    return answered(erl_call_error(Term::tuple(
        {Term::atom("bad_erl_call"),
         Term::binary("the arguments of Erl.call_erlang hold the atom '" + *unknown + "', not known to its VM")})));
  }
  // A reference of this node's: a counter, unique while it runs (its creation tells it
  // from an earlier run's). Guessable, but only the node running the call may answer it.
  const std::uint64_t number = ++next_erl_call_;
  const etf::Reference tag{name(), endpoint_.creation(),
                           {static_cast<std::uint32_t>(number), static_cast<std::uint32_t>(number >> 32), 0}};
  Effects effects;
  processes_.start_erl_call(running_->peer, tag, module, function, std::move(args), effects);
  Term tag_term = Term::reference(tag);
  erl_calls_.emplace(tag_term, std::nullopt);
  apply(effects);
  // The answer comes as an event: the dispatch thread takes them while this thread waits.
  if (!taken_over_) {
    taken_over_ = true;
    wake_dispatcher_.notify_all();
  }
  return {Kind::started, std::move(tag_term), {}};
}

std::optional<Term> Node::wait_erl_call(const Term& tag, std::chrono::milliseconds slice) {
  std::unique_lock lock(mutex_);
  const auto waiting = erl_calls_.find(tag);
  if (waiting == erl_calls_.end()) return std::nullopt;
  erl_call_answered_.wait_for(lock, slice, [&] { return waiting->second.has_value() || stopping_.load(); });
  if (!waiting->second) {
    if (!stopping_.load()) return std::nullopt;
    waiting->second = erl_call_error(Term::atom("node_stopping"));
  }
  Term answer = std::move(*waiting->second);
  erl_calls_.erase(waiting);
  return answer;
}

void Node::abandon_erl_call(const Term& tag) {
  const std::lock_guard lock(mutex_);
  Effects effects;
  processes_.abandon_erl_call(tag, effects);
  erl_calls_.erase(tag);
  apply(effects);
}

}  // namespace camlbeam::node
