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

  const Atoms atoms_;
  std::atomic<std::uint64_t> next_key_{0};

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Job> queue_;
  std::vector<std::uint64_t> forgotten_;  // workers whose contexts the OCaml thread drops
  bool sleeping_ = false;                 // the OCaml thread waits on wake_
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
  Job* current_ = nullptr;  // OCaml thread only
  std::thread::id ocaml_thread_;
  std::thread thread_;
};

}  // namespace camlbeam::nif
