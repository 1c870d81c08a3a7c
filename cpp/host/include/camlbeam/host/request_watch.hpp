// The watch over running requests: deadlines, cancellation, heartbeats, and the end of a
// request that cannot be stopped. Every transport needs it; cpp/host/README.md explains
// the mechanism.
//
// The runtime thread tells the watch when a request begins and ends (Host::run does, and
// the request's Timeout arrives from Erl_host through camlbeam_request_hooks.h). A thread
// of the watch's own looks at the running request every tick while requests come, and
// sleeps without a timer when the worker is idle. When a request's deadline passes, the
// watch sends its cancel signal to the runtime thread: Erl_host's OCaml handler for it
// raises Erl.Cancelled at the next poll point if that request is still the one running.
// What to do about a request that runs long (heartbeats) or cannot be stopped (end the
// process) is the transport's: hooks, called on the watch thread.
#pragma once

#include <camlbeam/host/runtime.hpp>

#include <chrono>
#include <functional>
#include <memory>

namespace camlbeam::host {

struct RequestWatchOptions {
  // How often the watch looks at the running request while requests come: the precision of
  // a deadline that passes before the next look (one it knows of is met to the millisecond),
  // and the period of the `running` hook.
  std::chrono::milliseconds tick{100};
  // The `running` hook says `heartbeat` once per this much of a request's running time;
  // zero: never.
  std::chrono::milliseconds heartbeat{500};
  // How long past its deadline a request may still run before the `overdue` hook.
  std::chrono::milliseconds cancel_grace{1000};
  // With no request running and none begun for this long, the watch thread sleeps until the
  // next request begins (which then costs one wake-up).
  std::chrono::milliseconds idle_after{1000};
  // The cancel signal; 0: SIGRTMIN + 3. glibc keeps the two real-time signals below
  // SIGRTMIN for itself.
  int signal = 0;
};

struct RequestWatchHooks {
  // On the watch thread, at every tick while a request has been running for a tick or more;
  // `heartbeat` once per RequestWatchOptions::heartbeat of its running time. It must not
  // block: the watch thread also keeps the deadlines. Returns whether the heartbeat went
  // out; one that did not is due again at the next tick.
  std::function<bool(std::chrono::milliseconds running, bool heartbeat)> running;
  // On the watch thread, once per request, when it still runs cancel_grace after its
  // deadline although it was asked to stop: a loop that never polls (a native loop that
  // does not allocate). The port worker ends the process.
  std::function<void(std::chrono::milliseconds running, std::chrono::milliseconds timeout)> overdue;
};

class RequestWatch {
 public:
  // On the runtime thread, or a domain's (DomainThread), which becomes the thread it
  // watches and signals: installs Erl_host's handler for the cancel signal and, for the
  // calling thread's domain, the hooks of its request externals. At most one per signal;
  // under OCaml 5, one per domain, each with its own signal, which the other domains'
  // threads must block (an OCaml signal handler runs on whichever domain polls first
  // among the threads that do not block the signal). Throws RuntimeError on misuse
  // (another watch of the signal, a thread without the runtime, no camlbeam.host).
  RequestWatch(const Runtime& runtime, RequestWatchOptions options, RequestWatchHooks hooks);
  // On the runtime thread: stops the thread, restores the signal's default action.
  ~RequestWatch();

  // Starts the watch thread (with every signal blocked, so that signals meant for the
  // process reach the runtime thread), if it has not started yet. Until then requests are
  // not watched, except that the first one with a deadline starts it: a transport starts it
  // once its first answer is on its way, so that a worker's first answer does not wait for
  // a thread to start. Throws std::system_error if the thread cannot start.
  void start();
  RequestWatch(const RequestWatch&) = delete;
  RequestWatch& operator=(const RequestWatch&) = delete;

  // The runtime thread, around each request. No system call: atomics, and one wake-up of
  // the watch thread if it sleeps. end() after a request the watch asked to stop also makes
  // sure its signal has been delivered, so that it cannot interrupt a system call of the
  // next request.
  void begin() noexcept;
  void end() noexcept;
  // The running request's Timeout, counted from its begin(). Starts the thread if needed
  // (if it cannot start, the deadline is not kept: the transport's own caller-side timeout
  // is all that is left).
  void set_deadline(std::chrono::milliseconds timeout) noexcept;
  // The running request's deadline passed and the watch asked it to stop.
  bool cancel_requested() const noexcept;

  int signal() const noexcept;

  // begin() now, end() at the end of the scope; nothing with a null watch.
  class Running {
   public:
    explicit Running(RequestWatch* watch) noexcept : watch_(watch) {
      if (watch_ != nullptr) watch_->begin();
    }
    ~Running() {
      if (watch_ != nullptr) watch_->end();
    }
    Running(const Running&) = delete;
    Running& operator=(const Running&) = delete;

   private:
    RequestWatch* watch_;
  };

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace camlbeam::host
