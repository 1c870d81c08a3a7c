#include "service.hpp"

#include "handles.hpp"

#include <camlbeam/conv/conv.hpp>
#include <camlbeam/host/error.hpp>
#include <camlbeam/host/host.hpp>
#include <camlbeam/host/request_watch.hpp>
#include <camlbeam/host/runtime.hpp>

#include <caml/alloc.h>
#include <caml/callback.h>
#include <caml/memory.h>
#include <caml/mlvalues.h>
#include <caml/fail.h>
#include <caml/signals.h>
#include <caml/version.h>

#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <algorithm>
#include <cstring>
#include <exception>
#include <new>
#include <optional>
#include <string_view>
#include <unordered_map>
#include <utility>

namespace camlbeam::nif {

namespace {

constexpr std::chrono::microseconds idle_spin{20};

inline void pause() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// The service lives as long as the VM: the OCaml runtime cannot be stopped and started
// again, and static destructors that run at the VM's exit must not destroy a running
// thread or a condition variable another thread waits on (halt() would hang or abort).
alignas(Service) unsigned char service_storage[sizeof(Service)];
std::atomic<Service*> the_service{nullptr};
std::mutex start_mutex;


bool is_atom(ErlNifEnv* env, ERL_NIF_TERM term, std::string_view name) {
  char text[16];
  return enif_get_atom(env, term, text, sizeof text, ERL_NIF_LATIN1) > 0 && std::string_view(text) == name;
}

// Whether a load's answer is what every later load of the same file gets: ok, {ok, _}, or
// {error, {load_failed, init_failed, _}} (Dynlink counts a plugin whose initialiser raised
// as loaded: loading it again would answer already_loaded). Not the other failures: the
// file may appear, or be replaced by a plugin that loads.
bool is_final_load_answer(ErlNifEnv* env, ERL_NIF_TERM answer) {
  int arity = 0;
  const ERL_NIF_TERM* elements = nullptr;
  if (!enif_get_tuple(env, answer, &arity, &elements)) return is_atom(env, answer, "ok");
  if (arity != 2) return false;
  if (is_atom(env, elements[0], "ok")) return true;
  const ERL_NIF_TERM* failure = nullptr;
  return is_atom(env, elements[0], "error") && enif_get_tuple(env, elements[1], &arity, &failure) && arity == 3 &&
         is_atom(env, failure[0], "load_failed") && is_atom(env, failure[1], "init_failed");
}

// An answer as ETF, for the worker's process to make on a scheduler (BuildError's
// needs_scheduler).
ERL_NIF_TERM etf_binary(ErlNifEnv* env, value term) {
  etf::ByteBuffer bytes;
  conv::ocaml_to_etf(term, bytes);
  return make_binary(env, {reinterpret_cast<const char*>(bytes.data()), bytes.size()});
}

// The environment of the process whose NIF call this thread, a scheduler, runs (run_here):
// the NIF API's sends want it there, and null on the OCaml thread.
thread_local ErlNifEnv* calling_env = nullptr;

#if OCAML_VERSION_MAJOR >= 5
// Whether a call's arguments are small enough to convert on a scheduler: at most
// `max_terms` terms, and binaries of `max_binary` bytes in all, looked at in that budget.
bool is_small(ErlNifEnv* env, ERL_NIF_TERM args) {
  constexpr int max_terms = 512;
  constexpr std::size_t max_binary = 64 * 1024;
  ERL_NIF_TERM pending[max_terms];
  int waiting = 0, seen = 0;
  std::size_t bytes = 0;
  pending[waiting++] = args;
  while (waiting > 0) {
    if (++seen > max_terms) return false;
    const ERL_NIF_TERM term = pending[--waiting];
    const auto push = [&](ERL_NIF_TERM inner) {
      if (waiting == max_terms) return false;
      pending[waiting++] = inner;
      return true;
    };
    int arity = 0;
    const ERL_NIF_TERM* elements = nullptr;
    ERL_NIF_TERM head, tail;
    ErlNifBinary binary;
    if (enif_get_list_cell(env, term, &head, &tail)) {
      if (!push(head) || !push(tail)) return false;
    } else if (enif_get_tuple(env, term, &arity, &elements)) {
      for (int i = 0; i < arity; ++i)
        if (!push(elements[i])) return false;
    } else if (enif_is_map(env, term)) {
      std::size_t size = 0;
      if (!enif_get_map_size(env, term, &size) || size > 32) return false;
      ErlNifMapIterator entries;
      if (!enif_map_iterator_create(env, term, &entries, ERL_NIF_MAP_ITERATOR_FIRST)) return false;
      ERL_NIF_TERM key, value;
      bool fits = true;
      while (fits && enif_map_iterator_get_pair(env, &entries, &key, &value)) {
        fits = push(key) && push(value);
        enif_map_iterator_next(env, &entries);
      }
      enif_map_iterator_destroy(env, &entries);
      if (!fits) return false;
    } else if (enif_is_binary(env, term) && enif_inspect_binary(env, term, &binary)) {
      if ((bytes += binary.size) > max_binary) return false;
    } else if (enif_is_fun(env, term)) {
      return false;  // its environment is not looked into
    }
  }
  return true;
}
#endif

std::string shortened(std::string text, std::size_t limit = 200) {
  if (text.size() > limit) text.resize(limit), text += "...";
  return text;
}

}  // namespace

Atoms Atoms::make(ErlNifEnv* env) {
  const auto atom = [env](const char* name) { return enif_make_atom(env, name); };
  return {atom("camlbeam_reply"), atom("camlbeam_reply_etf"), atom("camlbeam_send"), atom("camlbeam_send_etf"),
          atom("camlbeam_erl_call"), atom("camlbeam_send_refused"), atom("camlbeam_log"), atom("camlbeam_overdue"),
          atom("ok"), atom("error"), atom("timeout"), atom("request_failed"), atom("bad_reply"), atom("reply_too_large"),
          atom("warning"), atom("none")};
}

std::optional<ExportKey> export_key(ErlNifEnv* env, ERL_NIF_TERM fun) noexcept {
  if (enif_is_atom(env, fun)) return ExportKey{0, fun};
  int arity = 0;
  const ERL_NIF_TERM* elements = nullptr;
  if (enif_get_tuple(env, fun, &arity, &elements) && arity == 2 && enif_is_atom(env, elements[0]) &&
      enif_is_atom(env, elements[1]))
    return ExportKey{elements[0], elements[1]};
  return std::nullopt;
}

bool ExportTimes::is_short(const ExportKey& key) {
  const std::lock_guard lock(mutex_);
  const auto found = times_.find(key);
  return found != times_.end() && !found->second.never && found->second.short_runs >= runs_to_trust;
}

ExportTimes::Times* ExportTimes::followed(const ExportKey& key) {
  const auto found = times_.find(key);
  if (found != times_.end()) return &found->second;
  if (times_.size() >= max_exports) return nullptr;
  return &times_.emplace(key, Times{}).first->second;
}

void ExportTimes::ran(const ExportKey& key, std::chrono::nanoseconds took) {
  const std::lock_guard lock(mutex_);
  Times* times = followed(key);
  if (times == nullptr || times->never) return;
  times->short_runs = took < short_run ? std::min(times->short_runs + 1, runs_to_trust) : 0;
}

bool ExportTimes::ran_on_scheduler(const ExportKey& key, std::chrono::nanoseconds took) {
  if (took <= scheduler_budget) return false;
  const std::lock_guard lock(mutex_);
  if (const auto found = times_.find(key); found != times_.end()) {
    found->second.short_runs = 0;
    found->second.never = found->second.never || ++found->second.overruns >= overruns_to_distrust;
  }
  return true;
}

void ExportTimes::never_short(const ExportKey& key) {
  const std::lock_guard lock(mutex_);
  if (Times* times = followed(key)) times->never = true;
}

struct Service::Ocaml {
  explicit Ocaml(Service& service)
      : runtime(std::vector<std::string>{"camlbeam_nif"}),
        watch(runtime, {.heartbeat = std::chrono::milliseconds(0)},
              {nullptr, [&service](std::chrono::milliseconds running, std::chrono::milliseconds timeout) {
                 service.overdue(running, timeout);
               }}),
        host(runtime, &watch) {
    const value* make = caml_named_value("camlbeam.nif.context");
    if (make == nullptr) throw host::RuntimeError("the nif's OCaml half (camlbeam.nif) is not linked in");
    make_context = make;
    watch.start();
  }

  // The context of a worker's requests, made at its first request.
  const conv::Root& context_of(const Worker& worker) {
    const auto found = contexts.find(worker.key);
    if (found != contexts.end()) return found->second;
    OwnedEnv env;
    const conv::UnrootedDecode pid = nif_to_ocaml(env.get(), enif_make_pid(env.get(), &worker.pid));
    if (!pid.term || pid.error || pid.raised) throw host::RuntimeError("a worker's pid could not be converted");
    const value context = caml_callback3_exn(*make_context, Val_long(worker.key), Val_long(worker.id), Field(pid.term, 0));
    if (Is_exception_result(context)) throw host::RuntimeError("camlbeam.nif.context raised");
    return contexts.emplace(worker.key, conv::Root(context)).first->second;
  }

  host::Runtime runtime;
  host::RequestWatch watch;
  host::Host host;
  const value* make_context;
  std::unordered_map<std::uint64_t, conv::Root> contexts;

  // Every pool of the VM loads its plugins into this one runtime, where a file loads
  // once: the answer of each plugin loaded (or whose initialiser failed), by its real
  // path, is the answer to any later load of it (its atoms and exports, which each pool
  // creates and lists).
  struct Loaded {
    OwnedEnv env;
    ERL_NIF_TERM answer;
  };
  std::unordered_map<std::string, Loaded> loaded;
};

namespace {

// The real path of a load request's Path (a binary, or a string of bytes), or "" when it
// has none (the request then runs as it is, and Erl_host says what is wrong with it).
std::string load_key(ErlNifEnv* env, ERL_NIF_TERM request) {
  int arity = 0;
  const ERL_NIF_TERM* elements = nullptr;
  if (!enif_get_tuple(env, request, &arity, &elements) || arity < 3) return "";
  ErlNifBinary path;
  if (!enif_inspect_iolist_as_binary(env, elements[2], &path) || path.size == 0 || path.size >= PATH_MAX ||
      std::memchr(path.data, 0, path.size) != nullptr)
    return "";
  const std::string given(reinterpret_cast<const char*>(path.data), path.size);
  char real[PATH_MAX];
  return ::realpath(given.c_str(), real) != nullptr ? std::string(real) : "";
}

}  // namespace

Service& Service::start(Atoms atoms) {
  const std::lock_guard lock(start_mutex);
  if (Service* service = the_service.load()) return *service;
  auto* service = new (service_storage) Service(atoms);
  std::promise<std::string> started;
  std::future<std::string> result = started.get_future();
  service->thread_ = std::thread([service, &started] { service->thread_main(&started); });
  const std::string failure = result.get();
  if (!failure.empty()) {
    // The thread has ended, and with it any chance of a runtime in this VM.
    service->thread_.join();
    throw host::RuntimeError(failure);
  }
  the_service.store(service);
  return *service;
}

Service* Service::running() noexcept { return the_service.load(); }

void Service::thread_main(std::promise<std::string>* started) noexcept {
  std::optional<Ocaml> ocaml;
  try {
    ocaml.emplace(*this);
  } catch (const std::exception& e) {
    started->set_value(std::string("the OCaml runtime did not start: ") + e.what());
    return;
  } catch (...) {
    started->set_value("the OCaml runtime did not start");
    return;
  }
  ocaml_ = &*ocaml;
  started->set_value("");
  // Never returns: the runtime serves the VM until it exits.
  for (;;) {
    try {
      serve(*ocaml);
    } catch (...) {
      // std::bad_alloc between requests: drop nothing, try again.
    }
  }
}

void Service::serve(Ocaml& ocaml) {
  for (;;) {
    handles::drain();
    std::optional<Job> job;
    std::vector<std::uint64_t> forgotten;
    {
      const std::lock_guard lock(mutex_);
      forgotten.swap(forgotten_);
      if (!queue_.empty()) {
        job.emplace(std::move(queue_.front()));
        queue_.pop_front();
        pending_.fetch_sub(1, std::memory_order_relaxed);
        active_ = &*job;
      }
    }
    for (const std::uint64_t key : forgotten) ocaml.contexts.erase(key);
    if (job) {
      run(ocaml, *job);
      ocaml.host.between_requests();
      continue;
    }
    if (!forgotten.empty()) continue;
    // Idle. A compaction can take tens of milliseconds: never while holding the queue's
    // lock, which callers take on the VM's schedulers.
    ocaml.host.give_back_memory();
    // Idle without the runtime, which a scheduler may borrow meanwhile (run_here).
    const host::BlockingSection released(ocaml.runtime);
    {
      const std::lock_guard lock(mutex_);
      idle_ = true;
    }
    // A caller waiting for its answer sends its next request within microseconds: look
    // for it a little before sleeping. Waking this thread costs more than the spin (an
    // identity call through ocaml:call: 19 us with no spin, 11.5 us with 20 us of it).
    const auto until = std::chrono::steady_clock::now() + idle_spin;
    while (pending_.load(std::memory_order_acquire) == 0 && std::chrono::steady_clock::now() < until) pause();
    std::unique_lock lock(mutex_);
    sleeping_ = true;
    // Not while a scheduler borrows the runtime: this thread would wait for it, holding the
    // queue's lock.
    wake_.wait(lock, [this] { return (!queue_.empty() || !forgotten_.empty() || handles::waiting()) && !borrowed_; });
    sleeping_ = false;
    idle_ = false;
  }
}

void Service::run(Ocaml& ocaml, Job& job) {
  Worker& worker = *job.worker;
  ErlNifEnv* env = job.env.get();
  {
    const std::lock_guard lock(running_mutex_);
    running_ = job.worker;
  }
  struct Done {
    Service& service;
    Job& job;
    ~Done() {
      job.worker->in_service.fetch_sub(1);
      {
        // Unanswered (std::bad_alloc): its caller waits for its timeout.
        const std::lock_guard lock(service.mutex_);
        if (service.active_ == &job) service.active_ = nullptr;
      }
      const std::lock_guard lock(service.running_mutex_);
      service.running_.reset();
    }
  } done{*this, job};

  // A call never is a load: its tag was read when it was queued.
  const std::string loading = job.load ? load_key(env, job.request) : std::string();
  if (!loading.empty()) {
    if (const auto found = ocaml.loaded.find(loading); found != ocaml.loaded.end()) {
      answer(job, job.ref, enif_make_copy(env, found->second.answer));
      return;
    }
  }

  const auto started = std::chrono::steady_clock::now();
  Current current{&worker, env, job.given, std::this_thread::get_id(), std::nullopt};
#if OCAML_VERSION_MAJOR >= 5
  // Timed for run_here, which takes calls with small arguments only: a call of the same
  // export with larger ones says nothing about those.
  if (job.caller) {
    int arity = 0;
    const ERL_NIF_TERM* elements = nullptr;
    if (enif_get_tuple(env, job.request, &arity, &elements) && arity == 5 && is_small(env, elements[3]))
      current.export_key = export_key(env, elements[2]);
  }
#endif
  const std::optional<ERL_NIF_TERM> reply = execute(ocaml, worker, env, job.request, job.ref, current);
  if (!reply) return;
  if (!loading.empty() && is_final_load_answer(env, *reply)) {
    OwnedEnv keep;
    const ERL_NIF_TERM kept = enif_make_copy(keep.get(), *reply);
    ocaml.loaded.insert_or_assign(loading, Ocaml::Loaded{std::move(keep), kept});
  }
  answer(job, job.ref, *reply);
  if (current.export_key) export_times_.ran(*current.export_key, std::chrono::steady_clock::now() - started);
}

std::optional<ERL_NIF_TERM> Service::execute(Ocaml& ocaml, const Worker& worker, ErlNifEnv* env, ERL_NIF_TERM request,
                                             ERL_NIF_TERM ref, const Current& current) {
  current_ = &current;
  struct Over {
    const Current*& current;
    ~Over() { current = nullptr; }
  } over{current_};

  const conv::Root& context = ocaml.context_of(worker);
  NifRequestSource source(env, request);
  const host::Answer outcome = ocaml.host.run(source, &context);
  switch (outcome.kind()) {
    case host::Answer::Kind::reply: {
      const BuiltTerm built = ocaml_to_nif(env, outcome.term(), worker.build);
      if (built.error && built.error->kind == BuildError::Kind::needs_scheduler) {
        // Its receiver makes it, on a scheduler, with the port's guard
        // (ocaml_nif_transport:decode_answer/2).
        return enif_make_tuple2(env, atoms_.camlbeam_reply_etf, etf_binary(env, outcome.term()));
      }
      if (built.error && built.error->kind == BuildError::Kind::too_large) {
        return enif_make_tuple2(env, atoms_.error,
                                enif_make_tuple3(env, atoms_.reply_too_large, enif_make_uint64(env, built.error->size),
                                                 enif_make_uint64(env, worker.build.max_bytes)));
      }
      if (built.error) {
        // In the words of the port: its guard's for atoms and references
        // (ocaml_etf_guard), its host's for the rest (cpp/host: write_etf_reply).
        const bool guards = built.error->kind == BuildError::Kind::unknown_atom ||
                            built.error->kind == BuildError::Kind::forged_reference;
        const std::string why = guards ? built.error->message : "the answer cannot be encoded: " + built.error->message;
        return enif_make_tuple2(env, atoms_.error, enif_make_tuple2(env, atoms_.bad_reply, make_binary(env, why)));
      }
      return built.term;
    }
    case host::Answer::Kind::no_reply:
      if (!outcome.diagnostic().empty()) log(worker, "OCaml worker: cast failed: " + outcome.diagnostic());
      return std::nullopt;
    case host::Answer::Kind::refused: {
      const host::Error& error = *outcome.error();
      if (ref == 0) {
        log(worker, "OCaml worker: request refused: " + shortened(error.message));
        return std::nullopt;
      }
      const ERL_NIF_TERM why =
          error.code == host::Errc::cancelled
              ? atoms_.timeout
              : enif_make_tuple2(env, atoms_.request_failed, make_binary(env, shortened(error.message, 1000)));
      return enif_make_tuple2(env, atoms_.error, why);
    }
  }
  return std::nullopt;
}

std::optional<ERL_NIF_TERM> Service::run_here(ErlNifEnv* env, const std::shared_ptr<Worker>& worker,
                                              ERL_NIF_TERM request, ERL_NIF_TERM given) {
#if OCAML_VERSION_MAJOR < 5
  // OCaml 4.13 runs OCaml code on the system stack: a scheduler's is a fraction of the
  // OCaml thread's, and an export that recurses deep would answer Stack_overflow there
  // (or end the VM, without an alternate signal stack) where it succeeds on its thread.
  (void)env, (void)worker, (void)request, (void)given;
  return std::nullopt;
#else
  int arity = 0;
  const ERL_NIF_TERM* elements = nullptr;
  if (!enif_get_tuple(env, request, &arity, &elements) || arity != 5) return std::nullopt;
  const std::optional<ExportKey> key = export_key(env, elements[2]);
  if (!key || !export_times_.is_short(*key) || !is_small(env, elements[3])) return std::nullopt;
  {
    const std::lock_guard lock(mutex_);
    // The OCaml thread is idle in its BlockingSection, and does not leave it while
    // borrowed_: this thread takes the runtime at once.
    if (!idle_ || borrowed_ || !queue_.empty() || !forgotten_.empty() || worker->closed.load()) return std::nullopt;
    borrowed_ = true;
  }
  struct GiveBack {
    Service& service;
    ~GiveBack() {
      calling_env = nullptr;
      bool wake = false;
      {
        const std::lock_guard lock(service.mutex_);
        service.borrowed_ = false;
        wake = service.sleeping_ && (!service.queue_.empty() || !service.forgotten_.empty() || handles::waiting());
      }
      if (wake) service.wake_.notify_one();
    }
  } give_back{*this};
  calling_env = env;

  worker->in_service.fetch_add(1);
  {
    const std::lock_guard lock(running_mutex_);
    running_ = worker;  // for overdue()
  }
  struct Counted {
    Service& service;
    Worker& worker;
    ~Counted() {
      worker.in_service.fetch_sub(1);
      const std::lock_guard lock(service.running_mutex_);
      service.running_.reset();
    }
  } counted{*this, *worker};
  std::optional<ERL_NIF_TERM> reply;
  std::chrono::steady_clock::duration took{};
  {
    // A scheduler's first borrow registers it with OCaml, once: not the export's time. One
    // that cannot register leaves the call to the OCaml thread.
    std::optional<host::BorrowedRuntime> held;
    try {
      held.emplace(ocaml_->runtime);
    } catch (const std::exception&) {
      return std::nullopt;
    }
    const auto started = std::chrono::steady_clock::now();
    const Current current{worker.get(), env, given, std::this_thread::get_id(), key};
    try {
      reply = execute(*ocaml_, *worker, env, request, elements[1], current);
    } catch (const std::bad_alloc&) {
      // The call has run, or begun to: it is answered, never queued again.
      reply = enif_make_tuple2(env, atoms_.error,
                               enif_make_tuple2(env, atoms_.request_failed, make_binary(env, "out of memory")));
    }
    took = std::chrono::steady_clock::now() - started;
  }
  // The share of a scheduler's time slice (a millisecond, as the NIF docs count it) used.
  const auto percent = std::chrono::duration_cast<std::chrono::microseconds>(took).count() / 10;
  (void)enif_consume_timeslice(env, static_cast<int>(std::clamp<std::int64_t>(percent, 1, 100)));
  if (export_times_.ran_on_scheduler(*key, took)) {
    log(*worker, "OCaml worker: a call of an export that had run short took " +
                     std::to_string(std::chrono::duration_cast<std::chrono::microseconds>(took).count()) +
                     " us on an Erlang scheduler; its calls run on the OCaml thread until they run short again");
  }
  if (!reply) reply = enif_make_tuple2(env, atoms_.error, enif_make_tuple2(env, atoms_.request_failed, make_binary(env, "no answer")));
  return reply;
#endif
}

bool Service::submit(Job job) {
  bool sleeping = false;
  {
    const std::lock_guard lock(mutex_);
    if (job.worker->closed.load()) return false;
    job.worker->in_service.fetch_add(1);
    queue_.push_back(std::move(job));
    pending_.fetch_add(1, std::memory_order_release);
    sleeping = sleeping_;
  }
  // A system call only when the OCaml thread waits: while it works, it takes the request
  // from the queue when it is done.
  if (sleeping) wake_.notify_one();
  return true;
}

Withdrawal Service::withdraw(ErlNifEnv* caller_env, const Worker& worker, ERL_NIF_TERM ref) {
  std::optional<Job> cancelled;
  {
    const std::lock_guard lock(mutex_);
    const auto carries = [&](const Job& job) {
      return job.worker.get() == &worker && job.ref != 0 && enif_compare(job.ref, ref) == 0;
    };
    const auto found = std::find_if(queue_.begin(), queue_.end(), carries);
    if (found == queue_.end()) {
      // Its answer is sent under this lock: not sent yet, it never will be.
      if (active_ == nullptr || !active_->caller || !carries(*active_)) return Withdrawal::none;
      active_->withdrawn = true;
      return Withdrawal::withdrawn;
    }
    cancelled.emplace(std::move(*found));
    queue_.erase(found);
    pending_.fetch_sub(1, std::memory_order_relaxed);
    cancelled->worker->in_service.fetch_sub(1);
  }
  if (cancelled->caller) return Withdrawal::withdrawn;
  // Counted out by the worker's process, as every answer it gets.
  ErlNifEnv* env = cancelled->env.get();
  const ERL_NIF_TERM message = enif_make_tuple3(env, atoms_.camlbeam_reply, cancelled->ref,
                                                enif_make_tuple2(env, atoms_.error, atoms_.timeout));
  ErlNifPid to = worker.pid;
  enif_send(caller_env, &to, env, message);
  return Withdrawal::cancelled;
}

void Service::close(const std::shared_ptr<Worker>& worker) {
  // Freed after the lock: their callers learn of the worker's end from its process.
  std::deque<Job> dropped;
  {
    const std::lock_guard lock(mutex_);
    worker->closed.store(true);
    for (auto job = queue_.begin(); job != queue_.end();) {
      if (job->worker == worker) {
        worker->in_service.fetch_sub(1);
        pending_.fetch_sub(1, std::memory_order_relaxed);
        dropped.push_back(std::move(*job));
        job = queue_.erase(job);
      } else {
        ++job;
      }
    }
    forgotten_.push_back(worker->key);
    if (!sleeping_) return;
  }
  wake_.notify_one();
}

void Service::wake_for_handles(bool may_lock) noexcept {
  // Without the lock, a wake that comes as the thread goes to sleep is lost: the release
  // then waits for the next request, or the next handles/0 (which may lock).
  if (may_lock) {
    const std::lock_guard lock(mutex_);  // the thread is asleep, or sees handles::waiting()
  }
  wake_.notify_one();
}

void Service::answer(Job& job, ERL_NIF_TERM ref, ERL_NIF_TERM reply) noexcept {
  ErlNifEnv* env = job.env.get();
  if (!job.caller) {
    tell_worker(*job.worker, env, enif_make_tuple3(env, atoms_.camlbeam_reply, ref, reply));
    return;
  }
  // Under the lock withdraw() takes: once a caller that gave up has withdrawn its call,
  // no answer can reach its mailbox later.
  const std::lock_guard lock(mutex_);
  if (!job.withdrawn) (void)enif_send(nullptr, &*job.caller, env, enif_make_tuple2(env, ref, reply));
  if (active_ == &job) active_ = nullptr;
}

void Service::tell_worker(const Worker& worker, ErlNifEnv* env, ERL_NIF_TERM message) noexcept {
  ErlNifPid to = worker.pid;
  // Fails only when the worker's process is gone: its callers saw it die.
  (void)enif_send(calling_env, &to, env, message);
}

void Service::log(const Worker& worker, const std::string& text) noexcept {
  try {
    OwnedEnv env;
    tell_worker(worker, env.get(),
                enif_make_tuple3(env.get(), atoms_.camlbeam_log, atoms_.warning, make_binary(env.get(), shortened(text, 2000))));
  } catch (...) {
    // No memory for a log line: it is lost.
  }
}

void Service::overdue(std::chrono::milliseconds running, std::chrono::milliseconds timeout) noexcept {
  std::shared_ptr<Worker> worker;
  {
    const std::lock_guard lock(running_mutex_);
    worker = running_;
  }
  if (!worker) return;
  try {
    OwnedEnv env;
    tell_worker(*worker, env.get(),
                enif_make_tuple3(env.get(), atoms_.camlbeam_overdue, enif_make_int64(env.get(), running.count()),
                                 enif_make_int64(env.get(), timeout.count())));
  } catch (...) {
  }
}

Service::ErlCallOutcome Service::call_erlang(std::uint64_t key, value request) {
  using Kind = ErlCallOutcome::Kind;
  if (current_ == nullptr || current_->thread != std::this_thread::get_id()) {
    return {Kind::refused, Val_unit,
            "only the thread that runs the worker's requests may call Erlang, not a thread or domain the plugin "
            "started"};
  }
  if (current_->worker->key != key)
    return {Kind::refused, Val_unit, "the worker's request is over: Erl.call_erlang works while one of its requests runs"};
  // An export that calls Erlang waits for a process: never one to run on a scheduler.
  if (current_->export_key) export_times_.never_short(*current_->export_key);
  if (calling_env != nullptr) {
    return {Kind::refused, Val_unit,
            "Erl.call_erlang from a call run on an Erlang scheduler (its export had always run short, and never "
            "called Erlang): the export's calls run on the OCaml thread from now on, where it may"};
  }
  const Worker& worker = *current_->worker;
  OwnedEnv env;
  const BuiltTerm built = ocaml_to_nif(env.get(), request, worker.build);
  if (built.error) return {Kind::refused, Val_unit, built.error->message};
  const std::uint64_t id = ++erl_calls_;
  {
    const std::lock_guard lock(erl_mutex_);
    erl_awaited_ = id;
    erl_reply_env_.reset();
  }
  tell_worker(worker, env.get(),
              enif_make_tuple3(env.get(), atoms_.camlbeam_erl_call, enif_make_uint64(env.get(), id), built.term));
  struct Done {
    Service& service;
    ~Done() {
      const std::lock_guard lock(service.erl_mutex_);
      service.erl_awaited_ = 0;
    }
  } done{*this};
  for (;;) {
    std::optional<OwnedEnv> answer;
    ERL_NIF_TERM result = 0;
    {
      const host::BlockingSection released(ocaml_->runtime);
      std::unique_lock lock(erl_mutex_);
      // Looks at the runtime's pending signals every 10 ms: the cancel signal at the
      // request's deadline does not end a wait on a condition variable.
      erl_answered_.wait_for(lock, std::chrono::milliseconds(10), [this] { return erl_reply_env_.has_value(); });
      if (erl_reply_env_) {
        answer = std::move(erl_reply_env_);
        erl_reply_env_.reset();
        result = erl_reply_;
      }
    }
    if (answer) {
      const conv::UnrootedDecode decoded = nif_to_ocaml(answer->get(), result);
      if (decoded.raised) return {Kind::raised, *decoded.raised, {}};
      if (decoded.error) return {Kind::refused, Val_unit, "Erlang's answer could not be converted"};
      return {Kind::reply, decoded.term, {}};
    }
    if (caml_check_pending_actions()) {
      // Its OCaml handler runs now; what it raises (Erl.Cancelled at the deadline) reaches
      // the caller as a value, never as an OCaml exception through these C++ frames.
      const value raised = caml_process_pending_actions_exn();
      if (Is_exception_result(raised)) return {Kind::raised, Extract_exception(raised), {}};
    }
  }
}

void Service::erl_reply(std::uint64_t id, ERL_NIF_TERM result) {
  {
    const std::lock_guard lock(erl_mutex_);
    // An answer to a call given up (its request's deadline passed) is dropped.
    if (id == 0 || id != erl_awaited_ || erl_reply_env_) return;
    OwnedEnv env;
    erl_reply_ = enif_make_copy(env.get(), result);
    erl_reply_env_ = std::move(env);
  }
  erl_answered_.notify_one();
}

std::string Service::send_from_ocaml(std::uint64_t key, value pid_term, value message) {
  if (current_ == nullptr || current_->thread != std::this_thread::get_id()) {
    return "only the thread that runs the worker's requests may send to Erlang, not a thread or domain the plugin "
           "started";
  }
  if (current_->worker->key != key) {
    return "the worker's request is over: Erl.send works while one of its requests runs";
  }
  const Worker& worker = *current_->worker;
  OwnedEnv env;
  const BuiltTerm to = ocaml_to_nif(env.get(), pid_term, worker.build);
  if (to.error) return to.error->message;
  bool allowed = worker.send_policy == SendPolicy::any;
  if (worker.send_policy == SendPolicy::given) {
    ERL_NIF_TERM list = current_->given, head;
    while (!allowed && enif_get_list_cell(current_->env, list, &head, &list))
      allowed = enif_compare(head, to.term) == 0;
  }
  if (!allowed) {
    // As under the port: a refused send is dropped, and the worker's process logs it with
    // the pid it was for (erlang/src/ocaml_policy.erl).
    tell_worker(worker, env.get(), enif_make_tuple2(env.get(), atoms_.camlbeam_send_refused, to.term));
    return "";
  }
  const BuiltTerm built = ocaml_to_nif(env.get(), message, worker.build);
  if (built.error && built.error->kind == BuildError::Kind::needs_scheduler) {
    tell_worker(worker, env.get(),
                enif_make_tuple3(env.get(), atoms_.camlbeam_send_etf, to.term, etf_binary(env.get(), message)));
    return "";
  }
  if (built.error) return built.error->message;
  ErlNifPid local;
  if (enif_get_local_pid(env.get(), to.term, &local)) {
    // On a scheduler the NIF API wants the calling process's environment.
    (void)enif_send(calling_env, &local, env.get(), built.term);
  } else {
    // A pid of another node: the worker's process sends it (enif_send reaches local ones).
    tell_worker(worker, env.get(), enif_make_tuple3(env.get(), atoms_.camlbeam_send, to.term, built.term));
  }
  return "";
}

}  // namespace camlbeam::nif

extern "C" value camlbeam_nif_call_erlang(value key, value request) noexcept {
  CAMLparam2(key, request);
  CAMLlocal2(payload, result);
  using Kind = camlbeam::nif::Service::ErlCallOutcome::Kind;
  // type awaited = Reply of Term.t | Raised of exn | Refused of string (erl_nif_transport.ml)
  camlbeam::nif::Service::ErlCallOutcome outcome{Kind::refused, Val_unit, "the nif transport is not running"};
  try {
    if (camlbeam::nif::Service* service = camlbeam::nif::Service::running())
      outcome = service->call_erlang(static_cast<std::uint64_t>(Long_val(key)), request);
  } catch (const std::bad_alloc&) {
    outcome = {Kind::refused, Val_unit, "out of memory"};
  } catch (...) {
    outcome = {Kind::refused, Val_unit, "the call could not be made"};
  }
  payload = outcome.kind == Kind::refused ? caml_copy_string(outcome.why.c_str()) : outcome.term;
  result = caml_alloc_small(1, static_cast<tag_t>(outcome.kind));
  Field(result, 0) = payload;
  CAMLreturn(result);
}

extern "C" value camlbeam_nif_send(value key, value pid, value message) noexcept {
  CAMLparam3(key, pid, message);
  std::string why;
  try {
    camlbeam::nif::Service* service = camlbeam::nif::Service::running();
    why = service != nullptr ? service->send_from_ocaml(static_cast<std::uint64_t>(Long_val(key)), pid, message)
                             : "the nif transport is not running";
  } catch (const std::bad_alloc&) {
    why = "out of memory";
  } catch (...) {
    why = "the message could not be sent";
  }
  CAMLreturn(caml_copy_string(why.c_str()));
}

// Stdlib.exit from a plugin would end the VM: the runtime's caml_sys_exit calls exit(3).
// The library is linked with --wrap=caml_sys_exit, so the OCaml code linked into it
// (Stdlib.exit, and whatever plugins call it through) reaches this instead, which raises
// Failure in the request: its caller gets {error, {ocaml_exception, ...}}. In a process
// the plugin forked, exiting is the child's own business: there it exits.
namespace {
const pid_t vm_pid = ::getpid();
}  // namespace

extern "C" value __real_caml_sys_exit(value status);

extern "C" value __wrap_caml_sys_exit(value status) {
  if (::getpid() != vm_pid) return __real_caml_sys_exit(status);
  // Raises: no C++ object with a destructor is alive in this frame.
  caml_failwith("Stdlib.exit inside the Erlang VM (transport nif): a plugin may not end the VM; raise an exception instead");
}
