// The one OCaml runtime of a VM and the threads that run the requests of the nif
// transport on it (README.md): under OCaml 5 one per domain of its pool, under OCaml 4 one.
// Callers on the VM's schedulers hand them requests through a queue and never wait for
// them; answers go back by enif_send.
#pragma once

#include "export_times.hpp"
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

namespace camlbeam::host {
class Answer;
class Runtime;
}  // namespace camlbeam::host

namespace camlbeam::nif {

// Where Erl.send may deliver: the pool's policy (erlang/src/ocaml_policy.erl).
enum class SendPolicy : std::uint8_t { none, given, any };

// The atoms of the messages the service sends, made once at load.
struct Atoms {
  ERL_NIF_TERM camlbeam_reply, camlbeam_reply_etf, camlbeam_send, camlbeam_send_etf, camlbeam_erl_call,
      camlbeam_send_refused, camlbeam_log, camlbeam_overdue;
  ERL_NIF_TERM ok, error, timeout, request_failed, bad_reply, reply_too_large, warning, none, call, infinity;
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
  // Why its process ended (close/2), for a call the NIF runs itself meanwhile: answered
  // {error, {worker_crashed, Reason}}, as a queued call's caller is by the DOWN. Guarded by
  // the service's queue lock.
  std::optional<OwnedEnv> end_env;
  ERL_NIF_TERM end_reason = 0;
    // One of its requests runs (guarded by the service's queue lock): a worker's requests
  // run one at a time and in order, as a port worker's do, on whichever domain is free.
  // Atomic for a lane's look (read without the lock: which worker to try).
  std::atomic<bool> busy{false};
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
  // Answered to its caller: its worker's next request may run (Worker::busy cleared, under
  // the queue's lock, before the answer is sent, so that the next call finds it free).
  bool released = false;
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

std::optional<ExportKey> export_key(ErlNifEnv* env, ERL_NIF_TERM fun) noexcept;

class Service {
 public:
  // The most domains the pool has (each watched with a cancel signal of its own, from
  // SIGRTMIN + 3 up).
  static constexpr std::size_t max_domains = 16;

  // Starts the runtime on a thread of its own and waits until it is up, with `domains`
  // domains running requests under OCaml 5 (at most max_domains; one under OCaml 4).
  // Throws host::RuntimeError with the reason when it cannot start.
  static Service& start(Atoms atoms, std::size_t domains);
  // The running service, or null.
  static Service* running() noexcept;
  // The service being started or running, or null: its domains start before it runs.
  static Service* starting() noexcept;

  std::uint64_t next_worker_key() noexcept { return next_key_.fetch_add(1) + 1; }
  // Queues a request; false when the worker is closed. Never waits for OCaml.
  bool submit(Job job);
  // A call ({call, Ref, Fun, Args, Timeout}, terms of the calling process's `env`) run on
  // the calling scheduler, its answer made in `env`: under OCaml 5, when its export is
  // short (ExportTimes) and its arguments small, and the OCaml thread sleeps with nothing
  // queued. Else nullopt, and the caller queues it. `dirty`: the caller runs on a dirty CPU
  // scheduler (call_dirty), where a normal export's call may run too. `in_service`: the
  // call counts in the worker's in_service while it runs, as its caller counted it in its
  // worker's counter (a call of a pool's lane is counted in neither).
  std::optional<ERL_NIF_TERM> run_here(ErlNifEnv* env, const std::shared_ptr<Worker>& worker, ERL_NIF_TERM request,
                                       ERL_NIF_TERM given, bool dirty = false, bool in_service = true);
  // Whether a call run_here did not take is worth the hop to a dirty CPU scheduler: under
  // OCaml 5, its export normal (ExportTimes), its arguments small, and domain 0 free now
  // (else the hop would end in the queue all the same, 6 us later).
  bool worth_a_dirty_run(ErlNifEnv* env, const Worker& worker, ERL_NIF_TERM request);
  // Calls answered by the NIF itself: on the calling scheduler, on a dirty one.
  std::uint64_t calls_on_scheduler() const noexcept { return calls_on_scheduler_.load(std::memory_order_relaxed); }
  std::uint64_t calls_on_dirty() const noexcept { return calls_on_dirty_.load(std::memory_order_relaxed); }
  // The caller of `worker`'s request carrying `ref` gave up on it. A call answered straight
  // to its caller is taken out of the queue, or its answer dropped if it runs: after this,
  // its answer is in the caller's mailbox already or never will be. A request answered
  // through the worker's process is taken out of the queue if it has not started, and
  // answered {error, timeout} there.
  Withdrawal withdraw(ErlNifEnv* caller_env, const Worker& worker, ERL_NIF_TERM ref);
  // Drops the queued requests of a closed worker and, on the OCaml thread, its context.
  // `reason` (a term of `reason_env`): why its process ends, if it says.
  void close(const std::shared_ptr<Worker>& worker, ErlNifEnv* reason_env = nullptr, ERL_NIF_TERM reason = 0);

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

  // camlbeam_nif_serve_domain, on the thread of domain `index` (Nif_domains): runs its
  // share of the requests for ever. Returns why, if it could not start.
  std::string serve_domain(std::size_t index) noexcept;

  // The domains that run requests (fewer than asked for if some could not start).
  std::size_t domains_serving();

  // handles.hpp queued work for the runtime's thread. `may_lock`: the caller does not hold
  // the service's lock (a resource destructor may).
  void wake_for_handles(bool may_lock) noexcept;

  Service(const Service&) = delete;
  Service& operator=(const Service&) = delete;

 private:
  explicit Service(Atoms atoms, std::size_t domains) : atoms_(atoms), domains_(domains) {}
  struct Executor;  // what lives on the thread of each domain

  void thread_main(std::promise<std::string>* started) noexcept;
  // Spawns domains 1 and up from domain 0, and waits until they serve (or could not start).
  void spawn_domains();
  [[noreturn]] void serve_for_ever(Executor& executor) noexcept;
  void serve(Executor& executor);
  // The request an idle domain may run next, taken out of the queue; the caller holds
  // mutex_.
  std::optional<Job> take();
  // Whether take() would find one, without taking it; the caller holds mutex_.
  bool can_take() const;
  // The request take() takes, or queue_.end(): a worker's requests run one at a time, a
  // load alone, looking at most `lookahead` requests deep.
  std::deque<Job>::const_iterator first_takeable() const;
  void run(Executor& executor, Job& job);
  // Sends a request's answer: {Ref, Reply} to its caller (unless withdrawn), or
  // {camlbeam_reply, Ref, Reply} to its worker's process.
  void answer(Job& job, ERL_NIF_TERM ref, ERL_NIF_TERM reply) noexcept;
  void tell_worker(const Worker& worker, ErlNifEnv* env, ERL_NIF_TERM message) noexcept;
  void log(const Worker& worker, const std::string& text) noexcept;
  // A domain's watch's thread: the request running there ignored its deadline's cancel.
  void overdue(Executor& executor, std::chrono::milliseconds running, std::chrono::milliseconds timeout) noexcept;

  // What the request running now may do, on the thread that holds the runtime for it
  // (thread-local: a thread or domain the plugin started has none).
  struct Current {
    Executor* executor;      // null on a scheduler, dirty or not (run_here)
    const Worker* worker;
    ErlNifEnv* env;          // where `given` lives
    ERL_NIF_TERM given;      // the pids its arguments give OCaml (a list)
    std::optional<ExportKey> export_key;  // a call's export, for ExportTimes
  };
  // Reads which exports the plugins declare short (Erl's "camlbeam.declared_short") into
  // export_times_; on a thread holding the runtime, after a load and at start.
  void read_declared_short() noexcept;

  // The request running on the calling thread, if it runs one.
  static thread_local const Current* current_;
  // Runs a request on a thread holding the runtime, with `executor`'s host and contexts:
  // its reply (a term of `env`), or nullopt for a request without one (a cast; its failure
  // logged).
  std::optional<ERL_NIF_TERM> execute(Executor& executor, const Worker& worker, ErlNifEnv* env, ERL_NIF_TERM request,
                                      ERL_NIF_TERM ref, const Current& current);
  // execute()'s run of the request in the worker's context, by the host.
  host::Answer run_request(Executor& executor, ErlNifEnv* env, ERL_NIF_TERM request, const conv::Root& context);

  const Atoms atoms_;
  const std::size_t domains_;
  std::atomic<std::uint64_t> next_key_{0};
  host::Runtime* runtime_ = nullptr;  // lives on domain 0's thread, for ever

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Job> queue_;
  std::vector<Executor*> executors_;     // by domain; each lives on its thread for ever
  Executor* first_ = nullptr;            // domain 0's, set before the service is published
  std::size_t failed_domains_ = 0;       // domains spawned that could not serve
  std::size_t sleepers_ = 0;             // executors waiting on wake_
  std::size_t running_requests_ = 0;     // requests running on the executors
  bool loading_ = false;                 // a load runs, alone (plugins change the export tables)
  bool idle_ = false;                    // domain 0's thread has released it, with nothing to do
  std::atomic<std::size_t> pending_{0};  // queue_.size(), read without the lock
  std::atomic<bool> spinning_{false};    // a domain looks for work before it sleeps
  // A scheduler runs a call on domain 0 (run_here): domain 0's thread sleeps until it is
  // done, and no load starts.
  bool borrowed_ = false;
  // A scheduler found domain 0's minor heap nearly full: domain 0's thread empties it.
  std::atomic<bool> young_low_{false};

  std::atomic<std::uint64_t> erl_calls_{0};  // the numbers of Erl.call_erlang's calls

  // Every pool of the VM loads its plugins into this one runtime, where a file loads once:
  // the answer of each plugin loaded (or whose initialiser failed), by its real path, is
  // the answer to any later load of it (its atoms and exports, which each pool creates and
  // lists). Touched by loads only, which run alone.
  struct Loaded {
    OwnedEnv env;
    ERL_NIF_TERM answer;
  };
  std::unordered_map<std::string, Loaded> loaded_;

  ExportTimes export_times_;
  std::atomic<std::uint64_t> calls_on_scheduler_{0};
  std::atomic<std::uint64_t> calls_on_dirty_{0};
  std::thread thread_;
};

}  // namespace camlbeam::nif
