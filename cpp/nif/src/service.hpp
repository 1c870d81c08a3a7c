// The one OCaml runtime of a VM and the thread that runs every request of the nif
// transport on it (README.md). Callers on the VM's schedulers hand it requests through a
// queue and never wait for it; answers go back by enif_send.
#pragma once

#include "nif_env.hpp"
#include "nif_terms.hpp"

#include <erl_nif.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

namespace camlbeam::nif {

// Where Erl.send may deliver: the pool's policy (erlang/src/ocaml_policy.erl).
enum class SendPolicy : std::uint8_t { none, given, any };

// The atoms of the messages the service sends, made once at load.
struct Atoms {
  ERL_NIF_TERM camlbeam_reply, camlbeam_reply_etf, camlbeam_send, camlbeam_send_etf, camlbeam_erl_call,
      camlbeam_send_refused, camlbeam_log, camlbeam_overdue;
  ERL_NIF_TERM ok, error, timeout, request_failed, bad_reply, reply_too_large, warning, none;
  static Atoms make(ErlNifEnv* env);
};

// One worker of a pool: what its requests are answered to and what they may do. Shared by
// its Erlang handle (a resource) and its requests in the queue.
struct Worker {
  std::uint64_t key = 0;  // never reused: OCaml code may keep a context past its worker
  std::int64_t id = 0;    // the worker's number in its pool
  ErlNifPid pid{};        // its Erlang process, which the answers go to
  SendPolicy send_policy = SendPolicy::given;
  BuildOptions build;     // how answers become terms of this VM
  std::atomic<bool> closed{false};
  // Its requests queued or running: what its process sets its counter of calls in flight
  // right against (ocaml_nif_worker), as a port worker against its table. Counted down
  // once a request's answer is sent.
  std::atomic<std::int64_t> in_service{0};
};

struct Job {
  std::shared_ptr<Worker> worker;
  OwnedEnv env;               // holds the request, then its answer
  ERL_NIF_TERM request = 0;   // {call, Ref, ...} | {cast, ...} | {load, Ref, ...}
  ERL_NIF_TERM ref = 0;       // its Ref, 0 for a cast
  ERL_NIF_TERM given = 0;     // the pids its arguments give OCaml (a list)
  bool load = false;          // {load, ...}: its plugin's answer may be known (Service::run)
  // A call answered straight to the process that made it, as {Ref, Answer}, rather than
  // through the worker's process (camlbeam_nif:call/3). Its caller counts it out.
  std::optional<ErlNifPid> caller;
  // Its caller gave up on it (Service::withdraw): its answer is not sent. Guarded by the
  // queue's lock, under which the answer is sent.
  bool withdrawn = false;
};

// What Service::withdraw did with a caller's request.
enum class Withdrawal : std::uint8_t {
  // A call answered straight to its caller, queued or running: no answer will come.
  withdrawn,
  // A request answered through the worker's process, taken out of the queue: answered
  // {error, timeout} there.
  cancelled,
  // None of the worker's requests carries the Ref: answered already, or never made.
  none
};

// An export as a call names it: Function alone ({0, Function}) or {Module, Function}, both
// atoms (immediate terms, the same in every environment).
using ExportKey = std::pair<ERL_NIF_TERM, ERL_NIF_TERM>;
std::optional<ExportKey> export_key(ErlNifEnv* env, ERL_NIF_TERM fun) noexcept;

// Which exports are short enough to run on the scheduler that calls them (Service::run_here):
// those whose last `runs_to_trust` runs each took less than `short_run`, from the request's
// arguments to its answer. A run on a scheduler over `scheduler_budget` sends the export's
// calls back to the OCaml thread until it has run short that many times again (wall-clock
// time: the OS may have taken the thread away, or a major GC slice fallen into the call);
// after `overruns_to_distrust` of them, or once it calls Erlang (Erl.call_erlang waits for a
// process), it never runs on a scheduler again.
class ExportTimes {
 public:
  static constexpr std::uint32_t runs_to_trust = 8;
  static constexpr std::chrono::microseconds short_run{50};
  static constexpr std::chrono::microseconds scheduler_budget{1000};
  static constexpr std::uint32_t overruns_to_distrust = 8;
  // Exports followed at most: names beyond are never short.
  static constexpr std::size_t max_exports = 4096;

  bool is_short(const ExportKey& key);
  // A run on the OCaml thread. Returns nothing to do.
  void ran(const ExportKey& key, std::chrono::nanoseconds took);
  // A run on a scheduler: whether it overran the budget (and the export's calls go to the
  // OCaml thread again).
  bool ran_on_scheduler(const ExportKey& key, std::chrono::nanoseconds took);
  void never_short(const ExportKey& key);

 private:
  struct Times {
    std::uint32_t short_runs = 0;  // in a row
    std::uint32_t overruns = 0;    // on a scheduler
    bool never = false;
  };
  struct Hash {
    std::size_t operator()(const ExportKey& key) const noexcept {
      return std::hash<ERL_NIF_TERM>()(key.first) * 31 + std::hash<ERL_NIF_TERM>()(key.second);
    }
  };
  // The export's entry, made if there is room (max_exports); the caller holds mutex_.
  Times* followed(const ExportKey& key);

  std::mutex mutex_;
  std::unordered_map<ExportKey, Times, Hash> times_;
};

class Service {
 public:
  // Starts the runtime on a thread of its own and waits until it is up. Throws
  // host::RuntimeError with the reason when it cannot start.
  static Service& start(Atoms atoms);
  // The running service, or null.
  static Service* running() noexcept;

  std::uint64_t next_worker_key() noexcept { return next_key_.fetch_add(1) + 1; }
  // Queues a request; false when the worker is closed. Never waits for OCaml.
  bool submit(Job job);
  // A call ({call, Ref, Fun, Args, Timeout}, terms of the calling process's `env`) run on
  // the calling scheduler, its answer made in `env`: under OCaml 5, when its export is
  // short (ExportTimes) and its arguments small, and the OCaml thread sleeps with nothing
  // queued. Else nullopt, and the caller queues it.
  std::optional<ERL_NIF_TERM> run_here(ErlNifEnv* env, const std::shared_ptr<Worker>& worker, ERL_NIF_TERM request,
                                       ERL_NIF_TERM given);
  // The caller of `worker`'s request carrying `ref` gave up on it. A call answered straight
  // to its caller is taken out of the queue, or its answer dropped if it runs: after this,
  // its answer is in the caller's mailbox already or never will be. A request answered
  // through the worker's process is taken out of the queue if it has not started, and
  // answered {error, timeout} there.
  Withdrawal withdraw(ErlNifEnv* caller_env, const Worker& worker, ERL_NIF_TERM ref);
  // Drops the queued requests of a closed worker and, on the OCaml thread, its context.
  void close(const std::shared_ptr<Worker>& worker);

  // What Erl.call_erlang got: its Erlang answer ({ok, V} | {error, {Class, Reason}}), an
  // exception a signal handler raised while it waited (Erl.Cancelled at the deadline), or
  // why it could not ask.
  struct ErlCallOutcome {
    enum class Kind : std::uint8_t { reply, raised, refused } kind;
    value term = Val_unit;  // reply: the answer; raised: the exception (unrooted)
    std::string why;
  };
  // camlbeam_nif_call_erlang, on the OCaml thread: asks the worker's process to run
  // {M, F, A} (under the pool's policy) and waits for erl_reply.
  ErlCallOutcome call_erlang(std::uint64_t key, value request);
  // erl_reply/3, on a scheduler: the answer to call `id`, if it is the one waiting.
  void erl_reply(std::uint64_t id, ERL_NIF_TERM result);

  // camlbeam_nif_send: Erl.send of the request running on the OCaml thread. "" when
  // sent or dropped under the pool's policy (and logged), else why it could not be sent.
  std::string send_from_ocaml(std::uint64_t key, value pid_term, value message);

  // handles.hpp queued work for the runtime's thread. `may_lock`: the caller does not hold
  // the service's lock (a resource destructor may).
  void wake_for_handles(bool may_lock) noexcept;

  Service(const Service&) = delete;
  Service& operator=(const Service&) = delete;

 private:
  explicit Service(Atoms atoms) : atoms_(atoms) {}
  struct Ocaml;  // what lives on the OCaml thread

  void thread_main(std::promise<std::string>* started) noexcept;
  void serve(Ocaml& ocaml);
  void run(Ocaml& ocaml, Job& job);
  // Sends a request's answer: {Ref, Reply} to its caller (unless withdrawn), or
  // {camlbeam_reply, Ref, Reply} to its worker's process.
  void answer(Job& job, ERL_NIF_TERM ref, ERL_NIF_TERM reply) noexcept;
  void tell_worker(const Worker& worker, ErlNifEnv* env, ERL_NIF_TERM message) noexcept;
  void log(const Worker& worker, const std::string& text) noexcept;
  // The watch's thread: the running request ignored its deadline's cancel.
  void overdue(std::chrono::milliseconds running, std::chrono::milliseconds timeout) noexcept;

  // What the request running now may do, on whichever thread holds the runtime for it.
  struct Current {
    const Worker* worker;
    ErlNifEnv* env;          // where `given` lives
    ERL_NIF_TERM given;      // the pids its arguments give OCaml (a list)
    std::thread::id thread;  // the thread running it: the only one that may send
    std::optional<ExportKey> export_key;  // a call's export, for ExportTimes
  };
  // Runs a request on the thread holding the runtime: its reply (a term of `env`), or
  // nullopt for a request without one (a cast; its failure logged).
  std::optional<ERL_NIF_TERM> execute(Ocaml& ocaml, const Worker& worker, ErlNifEnv* env, ERL_NIF_TERM request,
                                      ERL_NIF_TERM ref, const Current& current);

  const Atoms atoms_;
  std::atomic<std::uint64_t> next_key_{0};

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Job> queue_;
  std::vector<std::uint64_t> forgotten_;  // workers whose contexts the OCaml thread drops
  bool sleeping_ = false;                 // the OCaml thread waits on wake_
  bool idle_ = false;                     // it has released the runtime, with nothing to do
  Job* active_ = nullptr;                 // the request running, until it is answered
  std::atomic<std::size_t> pending_{0};   // queue_.size(), read without the lock

  // Erl.call_erlang's wait: the call awaited (0: none) and its answer once it came.
  std::mutex erl_mutex_;
  std::condition_variable erl_answered_;
  std::uint64_t erl_awaited_ = 0;
  std::optional<OwnedEnv> erl_reply_env_;
  ERL_NIF_TERM erl_reply_ = 0;
  std::uint64_t erl_calls_ = 0;  // OCaml thread only
  Ocaml* ocaml_ = nullptr;       // OCaml thread only

  // The worker whose request runs, for the watch's thread (overdue).
  std::mutex running_mutex_;
  std::shared_ptr<Worker> running_;
  const Current* current_ = nullptr;  // the thread holding the runtime only
  // A scheduler runs a call (run_here): the OCaml thread sleeps until it is done.
  bool borrowed_ = false;  // guarded by mutex_
  ExportTimes export_times_;
  std::thread thread_;
};

}  // namespace camlbeam::nif
