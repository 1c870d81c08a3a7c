#include <camlbeam/host/request_watch.hpp>

#include "ocaml_util.hpp"

#include <camlbeam_request_hooks.h>

#include <caml/alloc.h>
#include <caml/callback.h>
#include <caml/mlvalues.h>

#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <system_error>
#include <vector>

namespace camlbeam::host {

namespace {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

// One clock for the request path and the watch thread: steady_clock (CLOCK_MONOTONIC,
// 27 ns through the vDSO here). The coarse clock costs 5 ns but lags by up to a tick and
// more, which would make a deadline come early.
std::int64_t now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
}

Clock::time_point time_point_of(std::int64_t ns) { return Clock::time_point(std::chrono::nanoseconds(ns)); }

milliseconds to_ms(std::int64_t ns) { return std::chrono::duration_cast<milliseconds>(std::chrono::nanoseconds(ns)); }

std::int64_t to_ns(milliseconds ms) { return std::chrono::duration_cast<std::chrono::nanoseconds>(ms).count(); }

// The watch thread needs little stack; a default one (RLIMIT_STACK, 8 MB) would count
// against a worker's --max-memory (RLIMIT_DATA counts thread stacks).
constexpr std::size_t watch_stack_size = std::size_t{256} << 10;

// The signals of the watches alive: one watch per signal, each signalling the thread that
// made it (under OCaml 5, one per domain that runs requests, each with a signal of its own).
std::mutex signals_mutex;
std::vector<int> signals_watched;

bool claim_signal(int signal) {
  const std::lock_guard lock(signals_mutex);
  if (std::find(signals_watched.begin(), signals_watched.end(), signal) != signals_watched.end()) return false;
  signals_watched.push_back(signal);
  return true;
}

void free_signal(int signal) noexcept {
  const std::lock_guard lock(signals_mutex);
  std::erase(signals_watched, signal);
}

}  // namespace

struct RequestWatch::State {
  State(RequestWatchOptions o, RequestWatchHooks h) : options(o), hooks(std::move(h)) {}

  // The running request, as the runtime thread publishes it: a sequence lock whose word is
  // (sequence << 1) | running. begin() writes began_ns and deadline_ns while the word says
  // that nothing runs, then the word; the watch thread reads the word, the two, and the
  // word again, and keeps what it read only if the word did not change.
  std::atomic<std::uint64_t> request{0};
  std::atomic<std::int64_t> began_ns{0};
  std::atomic<std::int64_t> deadline_ns{0};  // 0: no deadline
  std::uint64_t sequence = 0;                // the runtime thread's own count

  // The sequence number of the request the watch asked to stop (it sends the signal while
  // holding `mutex`, so that end() can wait for a signal in flight).
  std::atomic<std::uint64_t> cancel_sequence{0};
  std::atomic<bool> asleep{false};

  RequestWatchOptions options;
  RequestWatchHooks hooks;
  std::mutex mutex;
  std::condition_variable wake;
  bool stopping = false;  // under mutex

  pthread_t runtime_thread{};
  pthread_t watch_thread{};
  bool started = false;  // the runtime thread's
  camlbeam_request_hooks c_hooks{};

  struct Running {
    std::uint64_t sequence;
    std::int64_t began_ns;
    std::int64_t deadline_ns;
  };

  // The running request, or nothing if none runs.
  std::optional<Running> running() const noexcept {
    for (;;) {
      const std::uint64_t word = request.load(std::memory_order_acquire);
      if ((word & 1) == 0) return std::nullopt;
      const std::int64_t began = began_ns.load(std::memory_order_relaxed);
      const std::int64_t deadline = deadline_ns.load(std::memory_order_relaxed);
      std::atomic_thread_fence(std::memory_order_acquire);
      if (request.load(std::memory_order_relaxed) == word) return Running{word >> 1, began, deadline};
    }
  }

  void wake_up() noexcept {
    {
      const std::lock_guard lock(mutex);
      asleep.store(false);
    }
    wake.notify_one();
  }

  static void* run(void* self) noexcept {
    static_cast<State*>(self)->watch();
    return nullptr;
  }

  void watch() noexcept;
};

void RequestWatch::State::watch() noexcept {
  std::unique_lock lock(mutex);
  std::uint64_t last_word = request.load();
  std::int64_t idle_since = now_ns();
  std::uint64_t observed = 0;       // the request the counters below are about
  std::int64_t heartbeats = 0;      // heartbeats said for it
  bool overdue_reported = false;
  const std::int64_t tick = to_ns(options.tick);
  const std::int64_t heartbeat = to_ns(options.heartbeat);
  const std::int64_t grace = to_ns(options.cancel_grace);
  while (!stopping) {
    const std::int64_t now = now_ns();
    std::int64_t wake_at = now + tick;
    const std::uint64_t word = request.load();
    if (const std::optional<Running> r = running()) {
      if (r->sequence != observed) {
        observed = r->sequence;
        heartbeats = 0;
        overdue_reported = false;
      }
      const std::int64_t ran = now - r->began_ns;
      if (r->deadline_ns != 0 && now >= r->deadline_ns) {
        // Again at every tick: the export may have caught the first Erl.Cancelled. The
        // request is looked at again after cancel_sequence is stored, and end() stores the
        // word before it loads cancel_sequence (all sequentially consistent): either this
        // sees that the request ended and sends nothing, or end() sees the cancel and waits
        // for the mutex, held here until the signal is sent.
        cancel_sequence.store(r->sequence);
        if (request.load() == (r->sequence << 1 | 1)) ::pthread_kill(runtime_thread, options.signal);
        if (now >= r->deadline_ns + grace) {
          if (!overdue_reported && hooks.overdue) {
            overdue_reported = true;
            lock.unlock();
            hooks.overdue(to_ms(ran), to_ms(r->deadline_ns - r->began_ns));
            lock.lock();
            continue;
          }
        } else {
          wake_at = std::min(wake_at, r->deadline_ns + grace);
        }
      } else if (r->deadline_ns != 0) {
        wake_at = std::min(wake_at, r->deadline_ns);
      }
      bool beat = false;
      if (heartbeat > 0) {
        beat = ran >= (heartbeats + 1) * heartbeat;
        if (beat) heartbeats = ran / heartbeat;
        wake_at = std::min(wake_at, r->began_ns + (heartbeats + 1) * heartbeat);
      }
      if ((ran >= tick || beat) && hooks.running) {
        lock.unlock();
        const bool sent = hooks.running(to_ms(ran), beat);
        lock.lock();
        if (beat && !sent) --heartbeats;  // due again at the next tick
        if (beat && !sent) wake_at = std::min(wake_at, now + tick);
      }
      idle_since = now;
    } else {
      if (word != last_word) idle_since = now;  // a request began and ended since the last look
      if (now - idle_since >= to_ns(options.idle_after)) {
        // Asleep until a request begins: begin() stores its word, then reads `asleep`;
        // this stores `asleep`, then reads the word (both sequentially consistent), so
        // one of the two sees the other and no request begins unwatched.
        asleep.store(true);
        if (request.load() == word) wake.wait(lock, [&] { return stopping || !asleep.load(); });
        asleep.store(false);
        idle_since = now_ns();
        last_word = request.load();
        continue;
      }
    }
    last_word = word;
    wake.wait_until(lock, time_point_of(wake_at), [&] { return stopping; });
  }
}

namespace {

void set_deadline_hook(void* watch, intnat ms) noexcept {
  static_cast<RequestWatch*>(watch)->set_deadline(milliseconds(ms));
}

int cancel_requested_hook(void* watch) noexcept { return static_cast<const RequestWatch*>(watch)->cancel_requested() ? 1 : 0; }

// Erl_host.watch_requests hooks signal (erl_host.mli).
void attach_to_ocaml(const camlbeam_request_hooks* hooks, int signal) {
  const value* watch_requests = caml_named_value("camlbeam.host.watch_requests");
  if (watch_requests == nullptr) {
    throw RuntimeError("camlbeam.host.watch_requests is missing: link the executable's OCaml with camlbeam.host");
  }
  const value address = caml_copy_nativeint(reinterpret_cast<intnat>(hooks));
  const value result = caml_callback2_exn(*watch_requests, address, Val_int(signal));
  if (Is_exception_result(result)) {
    throw RuntimeError("Erl_host.watch_requests raised " + detail::exception_text(Extract_exception(result)));
  }
}

}  // namespace

RequestWatch::RequestWatch(const Runtime& runtime, RequestWatchOptions options, RequestWatchHooks hooks) {
  if (!runtime.held_by_this_thread()) throw RuntimeError("camlbeam::host::RequestWatch: create it on the runtime thread");
  if (options.signal == 0) options.signal = SIGRTMIN + 3;
  if (options.tick <= milliseconds(0)) options.tick = milliseconds(1);
  if (!claim_signal(options.signal)) {
    throw RuntimeError("camlbeam::host::RequestWatch: one per signal (a signal's OCaml handler is global)");
  }
  try {
    state_ = std::make_unique<State>(options, std::move(hooks));
    state_->runtime_thread = ::pthread_self();
    state_->c_hooks = {&set_deadline_hook, &cancel_requested_hook, this};
    attach_to_ocaml(&state_->c_hooks, options.signal);
  } catch (...) {
    free_signal(options.signal);
    throw;
  }
}

void RequestWatch::start() {
  if (state_->started) return;
  pthread_attr_t attributes;
  ::pthread_attr_init(&attributes);
  ::pthread_attr_setstacksize(&attributes, watch_stack_size);
  sigset_t all;
  sigset_t before;
  ::sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &before);  // inherited by the new thread
  const int failed = ::pthread_create(&state_->watch_thread, &attributes, &State::run, state_.get());
  ::pthread_sigmask(SIG_SETMASK, &before, nullptr);
  ::pthread_attr_destroy(&attributes);
  if (failed != 0) throw std::system_error(failed, std::generic_category(), "pthread_create (the request watch)");
  state_->started = true;
}

RequestWatch::~RequestWatch() {
  if (state_->started) {
    {
      const std::lock_guard lock(state_->mutex);
      state_->stopping = true;
    }
    state_->wake.notify_one();
    ::pthread_join(state_->watch_thread, nullptr);
  }
  try {
    attach_to_ocaml(nullptr, state_->options.signal);
  } catch (const RuntimeError&) {
    // The process is ending; the hooks point at nothing that is freed before it does
    // only if they were detached, so leave the handler answering "not cancelled".
  }
  free_signal(state_->options.signal);
}

void RequestWatch::begin() noexcept {
  State& s = *state_;
  const std::uint64_t sequence = ++s.sequence;
  // The word says that nothing runs (end() left it so) while the two are written.
  std::atomic_thread_fence(std::memory_order_release);
  s.deadline_ns.store(0, std::memory_order_relaxed);
  s.began_ns.store(now_ns(), std::memory_order_relaxed);
  s.request.store(sequence << 1 | 1);
  if (s.asleep.load()) s.wake_up();
}

void RequestWatch::set_deadline(milliseconds timeout) noexcept {
  State& s = *state_;
  try {
    start();
  } catch (const std::system_error&) {
    return;  // no thread to keep it (see the header)
  }
  const std::int64_t began = s.began_ns.load(std::memory_order_relaxed);
  // Saturated: a deadline past the clock's range never comes.
  const std::int64_t room = INT64_MAX - began;
  const std::int64_t after = timeout.count() >= room / 1'000'000 ? room : to_ns(timeout);
  // The word does not change: whether the watch reads the deadline now or at its next
  // look, it belongs to this request (begin() cleared it before publishing the request).
  s.deadline_ns.store(std::max<std::int64_t>(began + after, 1), std::memory_order_relaxed);
}

void RequestWatch::end() noexcept {
  State& s = *state_;
  s.request.store(s.sequence << 1);
  if (s.cancel_sequence.load() == s.sequence) {
    // The watch may be signalling this request right now: it does so holding the mutex.
    // Once that is done, any system call delivers the signal here, between requests, where
    // its OCaml handler is only recorded (and finds no request to stop when it runs).
    { const std::lock_guard lock(s.mutex); }
    sigset_t pending;
    ::sigpending(&pending);
  }
}

bool RequestWatch::cancel_requested() const noexcept {
  const std::uint64_t word = state_->request.load(std::memory_order_relaxed);
  return (word & 1) != 0 && state_->cancel_sequence.load() == (word >> 1);
}

int RequestWatch::signal() const noexcept { return state_->options.signal; }

}  // namespace camlbeam::host
