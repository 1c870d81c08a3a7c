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
// minor_gc.h, unlike the runtime's other headers, has no extern "C" of its own.
extern "C" {
#include <caml/minor_gc.h>
}

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <algorithm>
#include <array>
#include <cstring>
#include <exception>
#include <new>
#include <optional>
#include <span>
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
std::atomic<Service*> the_starting_service{nullptr};
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

// The cancel signal of domain `index`'s watch. Every thread that may hold a domain blocks
// the signals of the others: OCaml runs a signal's handler on the first domain that polls
// among the threads that do not block it, and the handler cancels the request of its own
// domain.
int domain_signal(std::size_t index) noexcept { return SIGRTMIN + 3 + static_cast<int>(index); }

// Blocks the cancel signals of the domains other than `own` on the calling thread.
void block_other_domains_signals(std::size_t domains, std::size_t own) noexcept {
  sigset_t others;
  ::sigemptyset(&others);
  for (std::size_t index = 0; index < domains; ++index)
    if (index != own) ::sigaddset(&others, domain_signal(index));
  ::pthread_sigmask(SIG_BLOCK, &others, nullptr);
}

// The calling thread, domain `own`'s, takes its own cancel signal and no other's (it may
// have inherited a mask that blocks it: a domain's thread is made by domain 0's).
void take_only_own_signal(std::size_t domains, std::size_t own) noexcept {
  block_other_domains_signals(domains, own);
  sigset_t mine;
  ::sigemptyset(&mine);
  ::sigaddset(&mine, domain_signal(own));
  ::pthread_sigmask(SIG_UNBLOCK, &mine, nullptr);
}

// How many of a queue's first requests take() looks at for one it may run: requests of a
// worker whose request runs wait behind it, and a flood of them must not make each look
// cost the whole queue.
constexpr std::size_t lookahead = 64;

#if OCAML_VERSION_MAJOR >= 5
// Whether a call's arguments are small enough to convert on a scheduler: at most
// `max_terms` terms (each list cell counts, and a list's tail: [X] is three), binaries of
// `max_binary` bytes in all, no fun (its environment is not looked into), no map of more
// than 32 keys. Each term's kind is asked once (enif_term_type), and a list's elements are
// taken in a loop of their own: asking each element in turn whether it was a list cell, a
// tuple, a map, a binary or a fun was six calls of the NIF API per float of a list, 13%
// of an ocaml:call of 100 floats on a scheduler (perf).
bool is_small(ErlNifEnv* env, ERL_NIF_TERM args) {
  constexpr int max_terms = 512;
  constexpr std::size_t max_binary = 64 * 1024;
  // The containers counted and not yet looked into, with their kind: each is a term
  // counted, so there are never more than max_terms of them.
  struct Container {
    ERL_NIF_TERM term;
    ErlNifTermType type;
  };
  Container pending[max_terms];
  int waiting = 0, seen = 0;
  std::size_t bytes = 0;
  // Counts `term` and looks into it: at once if it has no children, later if it has. False
  // when the arguments are not small.
  const auto visit = [&](ERL_NIF_TERM term) {
    if (++seen > max_terms) return false;
    const ErlNifTermType type = enif_term_type(env, term);
    switch (type) {
      case ERL_NIF_TERM_TYPE_LIST:
      case ERL_NIF_TERM_TYPE_TUPLE:
      case ERL_NIF_TERM_TYPE_MAP:
        if (waiting == max_terms) return false;
        pending[waiting++] = {term, type};
        return true;
      case ERL_NIF_TERM_TYPE_BITSTRING: {
        ErlNifBinary binary;
        // A bitstring that is not whole bytes cannot be inspected, and counts no bytes.
        return !enif_inspect_binary(env, term, &binary) || (bytes += binary.size) <= max_binary;
      }
      case ERL_NIF_TERM_TYPE_FUN: return false;
      default: return true;
    }
  };
  if (!visit(args)) return false;
  while (waiting > 0) {
    const Container container = pending[--waiting];
    ERL_NIF_TERM term = container.term;
    switch (container.type) {
      case ERL_NIF_TERM_TYPE_LIST: {
        ERL_NIF_TERM head;
        if (!enif_get_list_cell(env, term, &head, &term)) break;  // []
        // Its cells (the first one counted) and their heads, in a loop of their own.
        for (;;) {
          if (!visit(head)) return false;
          if (!enif_get_list_cell(env, term, &head, &term)) break;
          if (++seen > max_terms) return false;
        }
        // What ends it, a term too: [] or an improper tail.
        if (enif_is_empty_list(env, term) ? ++seen > max_terms : !visit(term)) return false;
        break;
      }
      case ERL_NIF_TERM_TYPE_TUPLE: {
        int arity = 0;
        const ERL_NIF_TERM* elements = nullptr;
        enif_get_tuple(env, term, &arity, &elements);
        for (int i = 0; i < arity; ++i)
          if (!visit(elements[i])) return false;
        break;
      }
      default: {  // a map
        std::size_t size = 0;
        if (!enif_get_map_size(env, term, &size) || size > 32) return false;
        ErlNifMapIterator entries;
        if (!enif_map_iterator_create(env, term, &entries, ERL_NIF_MAP_ITERATOR_FIRST)) return false;
        ERL_NIF_TERM key, value;
        bool fits = true;
        while (fits && enif_map_iterator_get_pair(env, &entries, &key, &value)) {
          fits = visit(key) && visit(value);
          enif_map_iterator_next(env, &entries);
        }
        enif_map_iterator_destroy(env, &entries);
        if (!fits) return false;
        break;
      }
    }
  }
  return true;
}
#endif

#if OCAML_VERSION_MAJOR >= 5
// The words the domain the calling thread holds may allocate before its runtime does GC
// work: a minor collection at the heap's start, and before it a major slice at its middle
// (young_trigger; a phase change there may stop every domain). And how many a short call
// should find: an eighth of the heap (1 MB of Erl_host's 8 MB), many times what a call
// with small arguments and a short run allocates.
std::size_t young_room_words() noexcept {
  return Caml_state->young_ptr > Caml_state->young_trigger
             ? static_cast<std::size_t>(Caml_state->young_ptr - Caml_state->young_trigger)
             : 0;
}
std::size_t young_reserve_words() noexcept { return static_cast<std::size_t>(Caml_state->minor_heap_wsz) / 8; }
#endif

// A call as OCaml needs it: its Ref, which only the answer's envelope here carries, is 0.
// A reference converts through ETF (the NIF API cannot take one apart): a third of an
// in-place call's conversion.

ERL_NIF_TERM without_ref(ErlNifEnv* env, ERL_NIF_TERM request) {
  int arity = 0;
  const ERL_NIF_TERM* elements = nullptr;
  if (!enif_get_tuple(env, request, &arity, &elements) || arity != 5 || !enif_is_ref(env, elements[1]))
    return request;
  return enif_make_tuple5(env, elements[0], enif_make_int(env, 0), elements[2], elements[3], elements[4]);
}

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
          atom("warning"), atom("none"), atom("call"), atom("infinity")};
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

struct Service::Executor {
  Executor(Service& service, host::Runtime& runtime, std::size_t domain)
      : index(domain),
        watch(runtime, {.heartbeat = std::chrono::milliseconds(0), .signal = domain_signal(domain)},
              {nullptr, [&service, this](std::chrono::milliseconds ran, std::chrono::milliseconds timeout) {
                 service.overdue(*this, ran, timeout);
               }}),
        host(runtime, &watch) {
    const value* make = caml_named_value("camlbeam.nif.context");
    if (make == nullptr) throw host::RuntimeError("the nif's OCaml half (camlbeam.nif) is not linked in");
    make_context = make;
    // Looked up once: a named value stays where it is (a lookup hashes its name).
    generation = caml_named_value("camlbeam.exports_generation");
    watch.start();
  }

  // The context of a worker's requests on this domain, made at its first request here.
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

  // The export `key` names, found once by its names and again after any export changed
  // (Erl's count of them, "camlbeam.exports_generation": every load, and an Erl.export
  // made at any other time), or null if there is none. A call of an export found here runs
  // without a request tuple to convert or a look-up by names (Host::call): those were a
  // quarter of a short call on a scheduler.
  const conv::Root* export_of(ErlNifEnv* env, const ExportKey& key) {
    if (generation == nullptr) return nullptr;
    if (const auto now = static_cast<std::int64_t>(Long_val(Field(*generation, 0))); now != exports_generation) {
      exports.clear();
      exports_generation = now;
    }
    if (const auto found = exports.find(key); found != exports.end()) return &found->second;
    // OTP 25 gives atoms' texts in Latin-1 only: a name beyond ASCII, whose UTF-8 OCaml
    // knows, is left to the look-up of the request as it is.
    const auto ascii_text = [env](ERL_NIF_TERM atom, std::array<char, 256>& text) -> std::optional<std::string_view> {
      const int size = enif_get_atom(env, atom, text.data(), text.size(), ERL_NIF_LATIN1);
      if (size <= 0) return std::nullopt;
      const std::string_view chars(text.data(), static_cast<std::size_t>(size - 1));
      if (std::any_of(chars.begin(), chars.end(), [](char c) { return static_cast<unsigned char>(c) >= 0x80; }))
        return std::nullopt;
      return chars;
    };
    std::array<char, 256> module_text{}, function_text{};
    const std::optional<std::string_view> module = ascii_text(key.first, module_text);
    const std::optional<std::string_view> function = ascii_text(key.second, function_text);
    if (!module || !function) return nullptr;
    std::optional<conv::Root> found = host.find_export(*module, *function);
    if (!found) return nullptr;  // not remembered: a name that is no export costs its caller only
    return &exports.emplace(key, std::move(*found)).first->second;
  }

  const std::size_t index;
  host::RequestWatch watch;
  host::Host host;
  const value* make_context;
  const value* generation = nullptr;  // Erl's count of export changes (an int ref)
  std::unordered_map<std::uint64_t, conv::Root> contexts;
  std::unordered_map<ExportKey, conv::Root, ExportKeyHash> exports;
  std::int64_t exports_generation = -1;

  // Guarded by the service's mutex_.
  Job* active = nullptr;                  // the request running here, until it is answered
  std::vector<std::uint64_t> forgotten;   // workers whose contexts this domain drops

  // The worker whose request runs here, for the watch's thread (overdue). Guarded by the
  // service's mutex_, with `active`, at no lock of its own.
  std::shared_ptr<Worker> running;

  // Erl.call_erlang's wait: the call awaited (0: none) and its answer once it came.
  std::mutex erl_mutex;
  std::condition_variable erl_answered;
  std::uint64_t erl_awaited = 0;
  std::optional<OwnedEnv> erl_reply_env;
  ERL_NIF_TERM erl_reply = 0;
};

thread_local const Service::Current* Service::current_ = nullptr;

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

Service& Service::start(Atoms atoms, std::size_t domains) {
  const std::lock_guard lock(start_mutex);
  if (Service* service = the_service.load()) return *service;
#if OCAML_VERSION_MAJOR >= 5
  domains = std::clamp<std::size_t>(domains, 1, max_domains);
#else
  domains = 1;
#endif
  auto* service = new (service_storage) Service(atoms, domains);
  the_starting_service.store(service);
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

Service* Service::starting() noexcept { return the_starting_service.load(); }

std::size_t Service::domains_serving() {
  const std::lock_guard lock(mutex_);
  return executors_.size();
}

void Service::thread_main(std::promise<std::string>* started) noexcept {
  // Domain 0's thread; the domains it spawns inherit its signal mask.
  take_only_own_signal(domains_, 0);
  std::optional<host::Runtime> runtime;
  std::optional<Executor> executor;
  try {
    runtime.emplace(std::vector<std::string>{"camlbeam_nif"});
    executor.emplace(*this, *runtime, 0);
  } catch (const std::exception& e) {
    started->set_value(std::string("the OCaml runtime did not start: ") + e.what());
    return;
  } catch (...) {
    started->set_value("the OCaml runtime did not start");
    return;
  }
  runtime_ = &*runtime;
  first_ = &*executor;
  read_declared_short();  // the exports of the code linked in
  {
    const std::lock_guard lock(mutex_);
    executors_.push_back(&*executor);
  }
  spawn_domains();
  started->set_value("");
  serve_for_ever(*executor);
}

void Service::spawn_domains() {
#if OCAML_VERSION_MAJOR >= 5
  const value* spawn = caml_named_value("camlbeam.nif.spawn_domain");
  if (spawn == nullptr) return;
  for (std::size_t index = 1; index < domains_; ++index) {
    // Domain.spawn returns once the domain exists; its thread then sets up its executor.
    if (Is_exception_result(caml_callback_exn(*spawn, Val_long(index)))) break;
    const host::BlockingSection released(*runtime_);
    std::unique_lock lock(mutex_);
    // A domain that cannot start says so and ends (serve_domain): the pool has fewer.
    wake_.wait(lock, [this, index] { return executors_.size() + failed_domains_ > index; });
    if (failed_domains_ != 0) break;
  }
#endif
}

std::string Service::serve_domain(std::size_t index) noexcept {
  take_only_own_signal(domains_, index);
  // Said to spawn_domains, which waits for this domain: it serves, or it has failed.
  const auto failed = [this] {
    {
      const std::lock_guard lock(mutex_);
      ++failed_domains_;
    }
    wake_.notify_all();
  };
  try {
    const host::DomainThread domain(*runtime_);
    Executor executor(*this, *runtime_, index);
    {
      const std::lock_guard lock(mutex_);
      executors_.push_back(&executor);
    }
    wake_.notify_all();
    serve_for_ever(executor);
  } catch (const std::exception& e) {
    failed();
    return std::string("domain ") + std::to_string(index) + " of the nif transport did not start: " + e.what();
  } catch (...) {
    failed();
    return "domain " + std::to_string(index) + " of the nif transport did not start";
  }
}

void Service::serve_for_ever(Executor& executor) noexcept {
  for (;;) {
    try {
      serve(executor);
    } catch (...) {
      // std::bad_alloc between requests: drop nothing, try again.
    }
  }
}

std::deque<Job>::const_iterator Service::first_takeable() const {
  if (loading_) return queue_.end();
  std::size_t looked = 0;
  for (auto job = queue_.begin(); job != queue_.end() && ++looked <= lookahead; ++job) {
    // A load runs alone, and what was queued after it waits: plugins change the export
    // tables that every domain reads.
    if (job->load) return running_requests_ == 0 && !borrowed_ ? job : queue_.end();
    if (!job->worker->busy) return job;
  }
  return queue_.end();
}

bool Service::can_take() const { return first_takeable() != queue_.end(); }

std::optional<Job> Service::take() {
  const auto found = first_takeable();
  if (found == queue_.end()) return std::nullopt;
  const auto job = queue_.begin() + (found - queue_.cbegin());
  std::optional<Job> taken(std::move(*job));
  queue_.erase(job);
  pending_.fetch_sub(1, std::memory_order_relaxed);
  taken->worker->busy = true;
  loading_ = taken->load;
  ++running_requests_;
  return taken;
}

void Service::serve(Executor& executor) {
  for (;;) {
    // A scheduler found domain 0's minor heap nearly full (run_here): emptied here, where
    // the collection stops no scheduler.
    if (executor.index == 0 && young_low_.exchange(false)) caml_minor_collection();
    handles::drain();
    std::optional<Job> job;
    std::vector<std::uint64_t> forgotten;
    {
      const std::lock_guard lock(mutex_);
      forgotten.swap(executor.forgotten);
      job = take();
      if (job) {
        executor.active = &*job;
        executor.running = job->worker;
      }
    }
    for (const std::uint64_t key : forgotten) executor.contexts.erase(key);
    if (job) {
      run(executor, *job);
      executor.host.between_requests();
      continue;
    }
    if (!forgotten.empty()) continue;
    // Idle. A compaction can take tens of milliseconds: never while holding the queue's
    // lock, which callers take on the VM's schedulers.
    executor.host.give_back_memory();
    // Idle without the runtime, which a scheduler may borrow meanwhile (run_here).
    const host::BlockingSection released(*runtime_);
    const bool first = executor.index == 0;
    if (first) {
      const std::lock_guard lock(mutex_);
      idle_ = true;
    }
    // A caller waiting for its answer sends its next request within microseconds: look
    // for it a little before sleeping. Waking this thread costs more than the spin (an
    // identity call through ocaml:call: 19 us with no spin, 11.5 us with 20 us of it).
    // One domain spins at a time: the others' spins would take cores from the schedulers.
    if (!spinning_.exchange(true, std::memory_order_acquire)) {
      const auto until = std::chrono::steady_clock::now() + idle_spin;
      while (pending_.load(std::memory_order_acquire) == 0 && std::chrono::steady_clock::now() < until) pause();
      spinning_.store(false, std::memory_order_release);
    }
    std::unique_lock lock(mutex_);
    ++sleepers_;
    // Domain 0 not while a scheduler borrows it: this thread would wait for it, holding the
    // queue's lock.
    wake_.wait(lock, [&] {
      return (can_take() || !executor.forgotten.empty() || handles::waiting() || (first && young_low_.load())) &&
             !(first && borrowed_);
    });
    --sleepers_;
    if (first) idle_ = false;
  }
}

void Service::run(Executor& executor, Job& job) {
  Worker& worker = *job.worker;
  ErlNifEnv* env = job.env.get();
  struct Done {
    Service& service;
    Executor& executor;
    Job& job;
    ~Done() {
      job.worker->in_service.fetch_sub(1);
      bool wake = false;
      {
        // Unanswered (std::bad_alloc): its caller waits for its timeout.
        const std::lock_guard lock(service.mutex_);
        if (executor.active == &job) executor.active = nullptr;
        executor.running.reset();
        if (!job.released) job.worker->busy = false;
        service.loading_ = false;
        --service.running_requests_;
        // The worker's next request, or a load waiting for the others, may go elsewhere.
        wake = service.sleepers_ != 0 && service.can_take();
      }
      if (wake) service.wake_.notify_all();
    }
  } done{*this, executor, job};

  // A call never is a load: its tag was read when it was queued.
  const std::string loading = job.load ? load_key(env, job.request) : std::string();
  if (!loading.empty()) {
    if (const auto found = loaded_.find(loading); found != loaded_.end()) {
      answer(job, job.ref, enif_make_copy(env, found->second.answer));
      return;
    }
  }

  const auto started = std::chrono::steady_clock::now();
  Current current{&executor, &worker, env, job.given, std::nullopt};
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
  const std::optional<ERL_NIF_TERM> reply = execute(executor, worker, env, job.request, job.ref, current);
  // Loads run alone: no call is run, on a scheduler or a domain, while this reads.
  if (job.load) read_declared_short();
  if (!reply) return;
  if (!loading.empty() && is_final_load_answer(env, *reply)) {
    OwnedEnv keep;
    const ERL_NIF_TERM kept = enif_make_copy(keep.get(), *reply);
    loaded_.insert_or_assign(loading, Loaded{std::move(keep), kept});
  }
  answer(job, job.ref, *reply);
  if (current.export_key) {
    const auto took = std::chrono::steady_clock::now() - started;
    const std::lock_guard lock(mutex_);
    export_times_.ran(*current.export_key, took);
  }
}

void Service::read_declared_short() noexcept {
#if OCAML_VERSION_MAJOR >= 5
  try {
    const value* declared = caml_named_value("camlbeam.declared_short");
    if (declared == nullptr) return;
    const value pairs = caml_callback_exn(*declared, Val_unit);
    if (Is_exception_result(pairs)) return;
    // Nothing below allocates on OCaml's heap: `pairs` stays where it is. The atoms exist
    // already (the pool made them from the load's answer) and are the same in every
    // environment. OTP 25 looks atoms up by Latin-1 text only: a name beyond ASCII is not
    // declared here, and its calls are measured as any other's.
    OwnedEnv env;
    const auto atom = [&env](value text, ERL_NIF_TERM& out) {
      const std::string_view chars(String_val(text), caml_string_length(text));
      if (std::any_of(chars.begin(), chars.end(), [](char c) { return static_cast<unsigned char>(c) >= 0x80; }))
        return false;
      return enif_make_existing_atom_len(env.get(), chars.data(), chars.size(), &out, ERL_NIF_LATIN1) != 0;
    };
    std::vector<ExportKey> keys;
    for (value cell = pairs; cell != Val_emptylist; cell = Field(cell, 1)) {
      const value pair = Field(cell, 0);
      ExportKey key{0, 0};
      // ("", Name): a call naming no module ({0, Name} in ExportKey).
      const bool unqualified = caml_string_length(Field(pair, 0)) == 0;
      if ((unqualified || atom(Field(pair, 0), key.first)) && atom(Field(pair, 1), key.second)) keys.push_back(key);
    }
    const std::lock_guard lock(mutex_);
    export_times_.declare_short(keys);
  } catch (...) {
    // No memory: the declarations are not read, and those exports are measured.
  }
#endif
}

host::Answer Service::run_request(Executor& executor, ErlNifEnv* env, ERL_NIF_TERM request, const conv::Root& context) {
  // {call, Ref, {Module, Function}, Args, Timeout} of an export this domain found: only its
  // Args converted (Executor::export_of). Anything else as the host reads any request.
  int arity = 0;
  const ERL_NIF_TERM* elements = nullptr;
  if (enif_get_tuple(env, request, &arity, &elements) && arity == 5 && enif_is_identical(elements[0], atoms_.call)) {
    const std::optional<ExportKey> key = export_key(env, elements[2]);
    std::optional<std::chrono::milliseconds> timeout;
    ErlNifSInt64 ms = 0;
    const bool timeout_read = enif_is_identical(elements[4], atoms_.infinity) ||
                              (enif_get_int64(env, elements[4], &ms) && ms >= 0 && (timeout = std::chrono::milliseconds(ms)));
    if (key && key->first != 0 && timeout_read && enif_is_list(env, elements[3])) {
      if (const conv::Root* found = executor.export_of(env, *key)) {
        NifRequestSource args(env, elements[3]);
        return executor.host.call(*found, args, timeout, &context);
      }
    }
  }
  NifRequestSource source(env, without_ref(env, request));
  return executor.host.run(source, &context);
}

std::optional<ERL_NIF_TERM> Service::execute(Executor& executor, const Worker& worker, ErlNifEnv* env,
                                             ERL_NIF_TERM request, ERL_NIF_TERM ref, const Current& current) {
  current_ = &current;
  struct Over {
    ~Over() { current_ = nullptr; }
  } over;

  const conv::Root& context = executor.context_of(worker);
  const host::Answer outcome = run_request(executor, env, request, context);
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
                                              ERL_NIF_TERM request, ERL_NIF_TERM given, bool dirty,
                                              bool in_service) {
#if OCAML_VERSION_MAJOR < 5
  // OCaml 4.13 runs OCaml code on the system stack: a scheduler's is a fraction of the
  // OCaml thread's, and an export that recurses deep would answer Stack_overflow there
  // (or end the VM, without an alternate signal stack) where it succeeds on its thread.
  (void)env, (void)worker, (void)request, (void)given, (void)dirty, (void)in_service;
  return std::nullopt;
#else
  int arity = 0;
  const ERL_NIF_TERM* elements = nullptr;
  if (!enif_get_tuple(env, request, &arity, &elements) || arity != 5) return std::nullopt;
  const std::optional<ExportKey> key = export_key(env, elements[2]);
  if (!key || !is_small(env, elements[3])) return std::nullopt;
  Executor& first = *first_;
  {
    const std::lock_guard lock(mutex_);
    // Domain 0's thread is idle in its BlockingSection, and does not leave it while
    // borrowed_: this thread takes the runtime at once. Not while a load runs (it changes
    // the export tables), nor beside a request of the same worker (they run in order).
    if (!(export_times_.is_short(*key) || (dirty && export_times_.is_normal(*key))) || !idle_ || borrowed_ ||
        loading_ || !queue_.empty() || !first.forgotten.empty() || worker->busy || worker->closed.load())
      return std::nullopt;
    borrowed_ = true;
    worker->busy = true;
    first.running = worker;  // for overdue()
  }
  // Gives domain 0 back, once: with the run's own bookkeeping in the same critical section
  // (`also`), or however run_here leaves (given_back_anyway).
  bool given_back = false;
  const auto give_back = [&](auto&& also) {
    calling_env = nullptr;
    bool wake = false;
    {
      const std::lock_guard lock(mutex_);
      also();
      borrowed_ = false;
      worker->busy = false;
      first.running.reset();
      wake = sleepers_ != 0 && (can_take() || !first.forgotten.empty() || handles::waiting() || young_low_.load());
    }
    given_back = true;
    if (wake) wake_.notify_all();
  };
  struct GivenBackAnyway {
    const decltype(give_back)& release;
    const bool& released;
    ~GivenBackAnyway() {
      if (!released) release([] {});
    }
  } given_back_anyway{give_back, given_back};
  calling_env = env;
  // The cancel signals of the other domains are theirs (block_other_domains_signals).
  static thread_local bool signals_blocked = false;
  if (!signals_blocked) {
    block_other_domains_signals(domains_, 0);
    signals_blocked = true;
  }

  struct Counted {
    Worker& worker;
    bool in_service;
    Counted(Worker& w, bool counted) : worker(w), in_service(counted) {
      if (in_service) worker.in_service.fetch_add(1);
    }
    Counted(const Counted&) = delete;
    Counted& operator=(const Counted&) = delete;
    ~Counted() {
      if (in_service) worker.in_service.fetch_sub(1);
    }
  } counted{*worker, in_service};
  std::optional<ERL_NIF_TERM> reply;
  std::chrono::steady_clock::duration took{};
  {
    // A scheduler's first borrow registers it with OCaml, once: not the export's time. One
    // that cannot register leaves the call to the OCaml thread.
    std::optional<host::BorrowedRuntime> held;
    try {
      held.emplace(*runtime_);
    } catch (const std::exception&) {
      return std::nullopt;
    }
    // A minor collection on a scheduler stops it until every domain has taken part: 0.5 to
    // 3.5 ms measured here (2 cores, each domain's thread first needs one), which also sent
    // the export off the schedulers as an overrun. When what a call may allocate could fill
    // domain 0's minor heap, domain 0's thread empties it instead, and the call is queued.
    if (!dirty && young_room_words() < young_reserve_words()) {
      young_low_.store(true);
      return std::nullopt;
    }
    const auto started = std::chrono::steady_clock::now();
    const Current current{nullptr, worker.get(), env, given, key};
    try {
      reply = execute(first, *worker, env, request, elements[1], current);
    } catch (const std::bad_alloc&) {
      // The call has run, or begun to: it is answered, never queued again.
      reply = enif_make_tuple2(env, atoms_.error,
                               enif_make_tuple2(env, atoms_.request_failed, make_binary(env, "out of memory")));
    }
    took = std::chrono::steady_clock::now() - started;
  }
  ExportTimes::Overrun overrun = ExportTimes::Overrun::none;
  bool declared = false;
  give_back([&] {
    // Its pool stopped it meanwhile: its caller is answered as a queued call's would be by
    // the worker's DOWN (ocaml:stop/1 answers the calls in flight worker_crashed). A lane's
    // call was never in flight for the pool: it gets the answer it ran to.
    if (worker->end_env && in_service) {
      reply = enif_make_tuple2(env, atoms_.error,
                               enif_make_tuple2(env, enif_make_atom(env, "worker_crashed"),
                                                enif_make_copy(env, worker->end_reason)));
    }
    // A dirty scheduler has no time slice to account for, nor a millisecond to keep to: the
    // run counts as one on the OCaml thread would (past normal_run, back to the queue).
    if (dirty) {
      export_times_.ran(*key, took);
    } else {
      overrun = export_times_.ran_on_scheduler(*key, took);
      // For the log: an overrun leaves the declaration as it was.
      if (overrun == ExportTimes::Overrun::first) declared = export_times_.is_declared(*key);
    }
  });
  if (!reply) reply = enif_make_tuple2(env, atoms_.error, enif_make_tuple2(env, atoms_.request_failed, make_binary(env, "no answer")));
  if (dirty) {
    calls_on_dirty_.fetch_add(1, std::memory_order_relaxed);
    return reply;
  }
  calls_on_scheduler_.fetch_add(1, std::memory_order_relaxed);
  // The share of a scheduler's time slice (a millisecond, as the NIF docs count it) used.
  const auto percent = std::chrono::duration_cast<std::chrono::microseconds>(took).count() / 10;
  (void)enif_consume_timeslice(env, static_cast<int>(std::clamp<std::int64_t>(percent, 1, 100)));
  if (overrun == ExportTimes::Overrun::first) {
    log(*worker, std::string("OCaml worker: a call of an export ") +
                     (declared ? "declared short (Erl.export ~short:true)" : "that had run short") + " took " +
                     std::to_string(std::chrono::duration_cast<std::chrono::microseconds>(took).count()) +
                     " us on an Erlang scheduler; its calls run off the schedulers until they run short again "
                     "(logged once per export)");
  }
  return reply;
#endif
}

bool Service::worth_a_dirty_run(ErlNifEnv* env, const Worker& worker, ERL_NIF_TERM request) {
#if OCAML_VERSION_MAJOR < 5
  // OCaml 4.13 would run the call on the dirty scheduler's small stack, where it catches no
  // Stack_overflow (README.md, "The dirty-scheduler path").
  (void)env, (void)worker, (void)request;
  return false;
#else
  int arity = 0;
  const ERL_NIF_TERM* elements = nullptr;
  if (!enif_get_tuple(env, request, &arity, &elements) || arity != 5) return false;
  const std::optional<ExportKey> key = export_key(env, elements[2]);
  if (!key || !is_small(env, elements[3])) return false;
  const std::lock_guard lock(mutex_);
  return export_times_.is_normal(*key) && idle_ && !borrowed_ && !loading_ && queue_.empty() && !worker.busy && !worker.closed.load();
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
    sleeping = sleepers_ != 0;
  }
  // A system call only when a domain's thread waits: one that works takes the request from
  // the queue when it is done. All of them: the one woken may not run it (its worker's
  // request runs elsewhere, or domain 0 is borrowed).
  if (sleeping) wake_.notify_all();
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
      for (Executor* executor : executors_) {
        Job* active = executor->active;
        if (active != nullptr && active->caller && carries(*active)) {
          active->withdrawn = true;
          return Withdrawal::withdrawn;
        }
      }
      return Withdrawal::none;
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

void Service::close(const std::shared_ptr<Worker>& worker, ErlNifEnv* reason_env, ERL_NIF_TERM reason) {
  // Freed after the lock: their callers learn of the worker's end from its process.
  std::deque<Job> dropped;
  std::optional<OwnedEnv> end_env;
  ERL_NIF_TERM end_reason = 0;
  if (reason_env != nullptr) {
    end_env.emplace();
    end_reason = enif_make_copy(end_env->get(), reason);
  }
  {
    const std::lock_guard lock(mutex_);
    worker->closed.store(true);
    if (end_env && !worker->end_env) {
      worker->end_env = std::move(end_env);
      worker->end_reason = end_reason;
    }
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
    for (Executor* executor : executors_) executor->forgotten.push_back(worker->key);
    if (sleepers_ == 0) return;
  }
  wake_.notify_all();
}

void Service::wake_for_handles(bool may_lock) noexcept {
  // Without the lock, a wake that comes as the thread goes to sleep is lost: the release
  // then waits for the next request, or the next handles/0 (which may lock).
  if (may_lock) {
    const std::lock_guard lock(mutex_);  // the thread is asleep, or sees handles::waiting()
  }
  // Any domain drains; domain 0 may not wake (a scheduler borrows it).
  wake_.notify_all();
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
  // Before the answer, which its caller may follow with the worker's next call at once.
  job.worker->busy = false;
  job.released = true;
  if (!job.withdrawn) (void)enif_send(nullptr, &*job.caller, env, enif_make_tuple2(env, ref, reply));
  for (Executor* executor : executors_)
    if (executor->active == &job) executor->active = nullptr;
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

void Service::overdue(Executor& executor, std::chrono::milliseconds running, std::chrono::milliseconds timeout) noexcept {
  std::shared_ptr<Worker> worker;
  {
    const std::lock_guard lock(mutex_);
    worker = executor.running;
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
  if (current_ == nullptr) {
    return {Kind::refused, Val_unit,
            "only the thread that runs the worker's requests may call Erlang, not a thread or domain the plugin "
            "started"};
  }
  if (current_->worker->key != key)
    return {Kind::refused, Val_unit, "the worker's request is over: Erl.call_erlang works while one of its requests runs"};
  // An export that calls Erlang waits for a process: never one to run on a scheduler.
  if (current_->export_key) {
    const std::lock_guard lock(mutex_);
    export_times_.never_short(*current_->export_key);
  }
  if (calling_env != nullptr || current_->executor == nullptr) {
    return {Kind::refused, Val_unit,
            "Erl.call_erlang from a call run on an Erlang scheduler (its export had always run short, and never "
            "called Erlang): the export's calls run on the OCaml thread from now on, where it may"};
  }
  const Worker& worker = *current_->worker;
  Executor& executor = *current_->executor;
  OwnedEnv env;
  const BuiltTerm built = ocaml_to_nif(env.get(), request, worker.build);
  if (built.error) return {Kind::refused, Val_unit, built.error->message};
  const std::uint64_t id = erl_calls_.fetch_add(1) + 1;
  {
    const std::lock_guard lock(executor.erl_mutex);
    executor.erl_awaited = id;
    executor.erl_reply_env.reset();
  }
  tell_worker(worker, env.get(),
              enif_make_tuple3(env.get(), atoms_.camlbeam_erl_call, enif_make_uint64(env.get(), id), built.term));
  struct Done {
    Executor& executor;
    ~Done() {
      const std::lock_guard lock(executor.erl_mutex);
      executor.erl_awaited = 0;
    }
  } done{executor};
  for (;;) {
    std::optional<OwnedEnv> answer;
    ERL_NIF_TERM result = 0;
    {
      const host::BlockingSection released(*runtime_);
      std::unique_lock lock(executor.erl_mutex);
      // Looks at the runtime's pending signals every 10 ms: the cancel signal at the
      // request's deadline does not end a wait on a condition variable.
      executor.erl_answered.wait_for(lock, std::chrono::milliseconds(10),
                                     [&executor] { return executor.erl_reply_env.has_value(); });
      if (executor.erl_reply_env) {
        answer = std::move(executor.erl_reply_env);
        executor.erl_reply_env.reset();
        result = executor.erl_reply;
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
  if (id == 0) return;
  // Copied out without allocating: the answer may come on a scheduler, often.
  std::array<Executor*, max_domains> executors{};
  std::size_t count = 0;
  {
    const std::lock_guard lock(mutex_);
    count = std::min(executors_.size(), executors.size());
    std::copy_n(executors_.begin(), count, executors.begin());
  }
  for (Executor* executor : std::span(executors.data(), count)) {
    {
      const std::lock_guard lock(executor->erl_mutex);
      // An answer to a call given up (its request's deadline passed) is dropped.
      if (id != executor->erl_awaited || executor->erl_reply_env) continue;
      OwnedEnv env;
      executor->erl_reply = enif_make_copy(env.get(), result);
      executor->erl_reply_env = std::move(env);
    }
    executor->erl_answered.notify_one();
    return;
  }
}

std::string Service::send_from_ocaml(std::uint64_t key, value pid_term, value message) {
  if (current_ == nullptr) {
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

// Nif_domains' domain function (ocaml/nif/nif_domains.ml.ocaml5): serves for ever, or
// returns why its domain could not start.
extern "C" value camlbeam_nif_serve_domain(value index) noexcept {
  CAMLparam1(index);
  std::string why = "the nif transport is not starting";
  if (camlbeam::nif::Service* service = camlbeam::nif::Service::starting())
    why = service->serve_domain(static_cast<std::size_t>(Long_val(index)));
  CAMLreturn(caml_copy_string(why.c_str()));
}

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
