// camlbeam_nif.so: the Erlang module camlbeam_nif's functions (erlang/src/camlbeam_nif.erl).
// Every function here runs on a normal scheduler and returns at once: it copies a request
// into an environment of its own and queues it for the OCaml thread (service.hpp), or runs
// a short call itself, or reschedules itself on a dirty CPU scheduler for a normal one.
#include "handles.hpp"
#include "service.hpp"

#include <camlbeam/host/error.hpp>

#include <caml/version.h>
#include <dlfcn.h>
#include <erl_nif.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#ifndef CAMLBEAM_OCAML_VERSION
#error "CAMLBEAM_OCAML_VERSION: the release of the OCaml this library is built with"
#endif

// Another copy of this library (a second file, another OCaml's build) finds it through
// the dynamic linker once the first one made its symbols global: one runtime per VM.
extern "C" __attribute__((visibility("default"))) const char camlbeam_nif_runtime[] = CAMLBEAM_OCAML_VERSION;

namespace camlbeam::nif {
namespace {

ErlNifResourceType* worker_type = nullptr;
ErlNifResourceType* lane_type = nullptr;
Atoms atoms{};
ERL_NIF_TERM atom_ok, atom_closed, atom_none, atom_given, atom_any, atom_call, atom_load, atom_withdrawn,
    atom_cancelled, atom_answered, atom_queue;

struct WorkerHandle {
  std::shared_ptr<Worker> worker;
};

void destroy_worker_handle(ErlNifEnv*, void* object) noexcept {
  auto* handle = static_cast<WorkerHandle*>(object);
  try {
    if (Service* service = Service::running(); service != nullptr && handle->worker) service->close(handle->worker);
  } catch (...) {
  }
  handle->~WorkerHandle();
}

// The plugins this runtime loads (.cmxs) are shared objects that bind to the caml_*
// symbols of the runtime linked into this library; the VM opened it RTLD_LOCAL, where
// nothing can bind to them. Reopened RTLD_GLOBAL (the handle is kept for ever: the
// library must stay mapped while its thread runs, whatever happens to the module).
std::string make_symbols_global() {
  Dl_info self{};
  if (dladdr(reinterpret_cast<const void*>(&make_symbols_global), &self) == 0 || self.dli_fname == nullptr)
    return "dladdr found no file for camlbeam_nif's own code";
  if (const void* other = dlsym(RTLD_DEFAULT, "camlbeam_nif_runtime"); other != nullptr && other != camlbeam_nif_runtime) {
    return std::string("this VM runs the OCaml runtime of another camlbeam_nif library already (OCaml ") +
           static_cast<const char*>(other) + "): one OCaml runtime per VM, and it cannot be replaced";
  }
  static void* const keep = dlopen(self.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_GLOBAL);
  if (keep == nullptr) return std::string("dlopen RTLD_GLOBAL of ") + self.dli_fname + ": " + dlerror();
  return "";
}

// A pool's lane: what ocaml:call needs to run a call of the pool where it is made, with no
// worker chosen in Erlang and nothing counted or queued (lane_call/4). Its state is
// camlbeam_registry's view of the pool (ocaml_nif_transport:update_lane/3), replaced whole
// at each change, so that a caller reads it with one short lock and uses it unlocked.
struct LaneState {
  // The pool's live workers, by id: a call runs as a call of the first that is not busy.
  std::vector<std::shared_ptr<Worker>> workers;
  // Its policy is send => given: the pids among the arguments are OCaml's to send to.
  bool give_pids = false;
  // The pool's exports, {Module, Function}; and Function -> Module for the names that one
  // module of the pool exports (ocaml_nif_transport:qualify/2's, where the others fail).
  std::unordered_set<ExportKey, ExportKeyHash> exports;
  std::unordered_map<ERL_NIF_TERM, ERL_NIF_TERM> module_of;
};

struct Lane {
  std::mutex mutex;
  std::shared_ptr<const LaneState> state;
};

void destroy_lane(ErlNifEnv*, void* object) noexcept { static_cast<Lane*>(object)->~Lane(); }

int open_resources(ErlNifEnv* env, ErlNifResourceFlags flags) {
  ErlNifResourceFlags tried{};
  worker_type = enif_open_resource_type(env, nullptr, "camlbeam_worker", destroy_worker_handle, flags, &tried);
  lane_type = enif_open_resource_type(env, nullptr, "camlbeam_lane", destroy_lane, flags, &tried);
  return worker_type != nullptr && lane_type != nullptr && handles::open(env, flags) ? 0 : 1;
}

void make_atoms(ErlNifEnv* env) {
  atoms = Atoms::make(env);
  atom_ok = enif_make_atom(env, "ok");
  atom_closed = enif_make_atom(env, "closed");
  atom_none = enif_make_atom(env, "none");
  atom_given = enif_make_atom(env, "given");
  atom_any = enif_make_atom(env, "any");
  atom_call = enif_make_atom(env, "call");
  atom_load = enif_make_atom(env, "load");
  atom_withdrawn = enif_make_atom(env, "withdrawn");
  atom_cancelled = enif_make_atom(env, "cancelled");
  atom_answered = enif_make_atom(env, "answered");
  atom_queue = enif_make_atom(env, "queue");
}

// Why the runtime could not start. The library then loads all the same, so that
// runtime_info() can say why (a failed load callback gives Erlang only a number), and
// every worker refuses to start with it.
std::string load_failure;

// load_info: how many domains to run calls on (camlbeam_nif:domains/0); 0 or not an
// integer, one per scheduler.
int load(ErlNifEnv* env, void** /*priv*/, ERL_NIF_TERM load_info) noexcept {
  try {
    make_atoms(env);
    if (open_resources(env, ERL_NIF_RT_CREATE) != 0) return 1;
    load_failure = make_symbols_global();
    if (load_failure.empty()) {
      int domains = 0;
      if (!enif_get_int(env, load_info, &domains) || domains <= 0) {
        ErlNifSysInfo info{};
        enif_system_info(&info, sizeof info);
        domains = std::max(info.scheduler_threads, 1);
      }
      Service::start(atoms, static_cast<std::size_t>(domains));
    }
  } catch (const std::exception& e) {
    load_failure = e.what();
  } catch (...) {
    load_failure = "the OCaml runtime did not start";
  }
  return 0;
}

// code:load_file of a new version of camlbeam_nif: the same library, already running.
int upgrade(ErlNifEnv* env, void** /*priv*/, void** /*old_priv*/, ERL_NIF_TERM /*load_info*/) noexcept {
  try {
    make_atoms(env);
    if (open_resources(env, ERL_NIF_RT_TAKEOVER) != 0) return 1;
    return Service::running() != nullptr ? 0 : 2;
  } catch (...) {
    return 3;
  }
}

void unload(ErlNifEnv*, void*) noexcept {
  // The runtime and its thread stay: the library stays mapped (make_symbols_global).
}

template <class F>
ERL_NIF_TERM guarded(ErlNifEnv* env, F&& body) noexcept {
  try {
    return body();
  } catch (const std::bad_alloc&) {
    return enif_raise_exception(env, enif_make_atom(env, "enomem"));
  } catch (...) {
    return enif_make_badarg(env);
  }
}

WorkerHandle* get_worker(ErlNifEnv* env, ERL_NIF_TERM term) {
  void* object = nullptr;
  if (!enif_get_resource(env, term, worker_type, &object)) return nullptr;
  return static_cast<WorkerHandle*>(object);
}

Lane* get_lane(ErlNifEnv* env, ERL_NIF_TERM term) {
  void* object = nullptr;
  if (!enif_get_resource(env, term, lane_type, &object)) return nullptr;
  return static_cast<Lane*>(object);
}

// runtime_info() -> {ok, #{ocaml_version := binary(), flavour := native, domains := pos_integer(),
//                          calls_on_scheduler := N, calls_on_dirty := M}}
//                 | {error, Why :: binary()}
ERL_NIF_TERM runtime_info(ErlNifEnv* env, int, const ERL_NIF_TERM*) noexcept {
  return guarded(env, [&] {
    Service* service = Service::running();
    if (service == nullptr) return enif_make_tuple2(env, atoms.error, make_binary(env, load_failure));
    ERL_NIF_TERM keys[] = {enif_make_atom(env, "ocaml_version"), enif_make_atom(env, "flavour"),
                           enif_make_atom(env, "domains"), enif_make_atom(env, "calls_on_scheduler"),
                           enif_make_atom(env, "calls_on_dirty")};
    ERL_NIF_TERM values[] = {make_binary(env, CAMLBEAM_OCAML_VERSION), enif_make_atom(env, "native"),
                             enif_make_uint64(env, service->domains_serving()),
                             enif_make_uint64(env, service->calls_on_scheduler()),
                             enif_make_uint64(env, service->calls_on_dirty())};
    ERL_NIF_TERM map;
    enif_make_map_from_arrays(env, keys, values, 5, &map);
    return enif_make_tuple2(env, atom_ok, map);
  });
}

// new_worker(Id, WorkerPid, SendPolicy, Node :: binary(), Creation, MaxReplyBytes) -> Handle
ERL_NIF_TERM new_worker(ErlNifEnv* env, int, const ERL_NIF_TERM* argv) noexcept {
  return guarded(env, [&]() -> ERL_NIF_TERM {
    Service* service = Service::running();
    ErlNifSInt64 id = 0;
    ErlNifPid pid;
    ErlNifBinary node;
    unsigned int creation = 0;
    ErlNifUInt64 max_reply = 0;
    if (service == nullptr || !enif_get_int64(env, argv[0], &id) || !enif_get_local_pid(env, argv[1], &pid) ||
        !enif_inspect_binary(env, argv[3], &node) || !enif_get_uint(env, argv[4], &creation) ||
        !enif_get_uint64(env, argv[5], &max_reply))
      return enif_make_badarg(env);
    SendPolicy policy;
    if (enif_is_identical(argv[2], atom_none)) policy = SendPolicy::none;
    else if (enif_is_identical(argv[2], atom_given)) policy = SendPolicy::given;
    else if (enif_is_identical(argv[2], atom_any)) policy = SendPolicy::any;
    else return enif_make_badarg(env);

    auto worker = std::make_shared<Worker>();
    worker->key = service->next_worker_key();
    worker->id = id;
    worker->pid = pid;
    worker->send_policy = policy;
    worker->build.local_node.assign(reinterpret_cast<const char*>(node.data), node.size);
    worker->build.local_creation = creation;
    worker->build.max_bytes = max_reply;

    void* object = enif_alloc_resource(worker_type, sizeof(WorkerHandle));
    if (object == nullptr) throw std::bad_alloc();
    new (object) WorkerHandle{std::move(worker)};
    const ERL_NIF_TERM term = enif_make_resource(env, object);
    enif_release_resource(object);
    return term;
  });
}

ERL_NIF_TERM call_dirty(ErlNifEnv* env, int, const ERL_NIF_TERM* argv) noexcept;

// Copies a request into an environment of its own and queues it: ok | closed. A call may
// be answered here instead ({answered, Answer}): run on this scheduler, or on a dirty CPU
// scheduler the NIF reschedules itself on (`on_dirty`: it runs there).
ERL_NIF_TERM queue_request(ErlNifEnv* env, const ERL_NIF_TERM* argv, bool answered_to_caller, bool on_dirty = false) {
  WorkerHandle* handle = get_worker(env, argv[0]);
  int arity = 0;
  const ERL_NIF_TERM* elements = nullptr;
  if (handle == nullptr || !enif_get_tuple(env, argv[1], &arity, &elements) || arity < 3 ||
      !(enif_is_identical(elements[0], atom_call) || (!answered_to_caller && enif_is_identical(elements[0], atom_load))) ||
      (answered_to_caller && !enif_is_ref(env, elements[1])) || !enif_is_list(env, argv[2]))
    return enif_make_badarg(env);
  Service& service = *Service::running();
  if (answered_to_caller) {
    if (const std::optional<ERL_NIF_TERM> reply = service.run_here(env, handle->worker, argv[1], argv[2], on_dirty))
      return enif_make_tuple2(env, atom_answered, *reply);
    // Not taken there (domain 0 taken meanwhile): queued from the dirty scheduler.
    if (!on_dirty && service.worth_a_dirty_run(env, *handle->worker, argv[1]))
      return enif_schedule_nif(env, "camlbeam_nif_call_dirty", ERL_NIF_DIRTY_JOB_CPU_BOUND, call_dirty, 3, argv);
  }
  Job job;
  job.worker = handle->worker;
  if (answered_to_caller) {
    ErlNifPid self;
    if (enif_self(env, &self) == nullptr) return enif_make_badarg(env);
    job.caller = self;
  }
  job.request = enif_make_copy(job.env.get(), argv[1]);
  job.given = enif_make_copy(job.env.get(), argv[2]);
  const ERL_NIF_TERM* copied = nullptr;
  enif_get_tuple(job.env.get(), job.request, &arity, &copied);
  job.ref = copied[1];
  job.load = enif_is_identical(elements[0], atom_load);
  return service.submit(std::move(job)) ? atom_ok : atom_closed;
}

// request(Handle, Request, GivenPids) -> ok | closed. Request: {call, Ref, Fun, Args, Timeout}
// or {load, Ref, Path, Timeout} (cpp/host/README.md); its answer reaches the worker's
// process as {camlbeam_reply, Ref, Answer}.
ERL_NIF_TERM request(ErlNifEnv* env, int, const ERL_NIF_TERM* argv) noexcept {
  return guarded(env, [&] { return queue_request(env, argv, false); });
}

// call(Handle, {call, Ref, Fun, Args, Timeout}, GivenPids) -> {answered, Answer} | ok | closed:
// run here when it is short (Service::run_here), else queued, its answer coming straight to
// the calling process as {Ref, Answer}.
ERL_NIF_TERM call(ErlNifEnv* env, int, const ERL_NIF_TERM* argv) noexcept {
  return guarded(env, [&] { return queue_request(env, argv, true); });
}

// call/3 rescheduled on a dirty CPU scheduler: runs a normal export's call there.
ERL_NIF_TERM call_dirty(ErlNifEnv* env, int, const ERL_NIF_TERM* argv) noexcept {
  return guarded(env, [&] { return queue_request(env, argv, true, true); });
}

// new_lane() -> Lane | none: a lane with no workers yet, where every call goes to the
// queue. None under OCaml 4, where no call runs on a scheduler (Service::run_here).
ERL_NIF_TERM new_lane(ErlNifEnv* env, int, const ERL_NIF_TERM*) noexcept {
  return guarded(env, [&]() -> ERL_NIF_TERM {
    if (OCAML_VERSION_MAJOR < 5) return atom_none;
    void* object = enif_alloc_resource(lane_type, sizeof(Lane));
    if (object == nullptr) throw std::bad_alloc();
    new (object) Lane{};
    const ERL_NIF_TERM term = enif_make_resource(env, object);
    enif_release_resource(object);
    return term;
  });
}

// set_lane(Lane, [Handle], GivePids :: boolean(), [{Module, Function}]) -> ok: what the
// pool is now.
ERL_NIF_TERM set_lane(ErlNifEnv* env, int, const ERL_NIF_TERM* argv) noexcept {
  return guarded(env, [&]() -> ERL_NIF_TERM {
    Lane* lane = get_lane(env, argv[0]);
    if (lane == nullptr) return enif_make_badarg(env);
    auto state = std::make_shared<LaneState>();
    ERL_NIF_TERM head, rest = argv[1];
    while (enif_get_list_cell(env, rest, &head, &rest)) {
      WorkerHandle* handle = get_worker(env, head);
      if (handle == nullptr) return enif_make_badarg(env);
      state->workers.push_back(handle->worker);
    }
    char boolean[6];
    if (!enif_get_atom(env, argv[2], boolean, sizeof boolean, ERL_NIF_LATIN1)) return enif_make_badarg(env);
    state->give_pids = std::string_view(boolean) == "true";
    std::unordered_set<ERL_NIF_TERM> ambiguous;
    rest = argv[3];
    while (enif_get_list_cell(env, rest, &head, &rest)) {
      int arity = 0;
      const ERL_NIF_TERM* names = nullptr;
      if (!enif_get_tuple(env, head, &arity, &names) || arity != 2 || !enif_is_atom(env, names[0]) ||
          !enif_is_atom(env, names[1]))
        return enif_make_badarg(env);
      state->exports.emplace(names[0], names[1]);
      const auto [known, added] = state->module_of.emplace(names[1], names[0]);
      if (!added && known->second != names[0]) ambiguous.insert(names[1]);
    }
    for (const ERL_NIF_TERM name : ambiguous) state->module_of.erase(name);
    const std::lock_guard lock(lane->mutex);
    lane->state = std::move(state);
    return atom_ok;
  });
}

// The pids among a call's arguments (ocaml_policy:given_pids/1), if it has at most
// `most` of them: a call with more is not small (Service::run_here).
std::optional<ERL_NIF_TERM> given_pids(ErlNifEnv* env, ERL_NIF_TERM args, std::size_t most = 512) {
  ERL_NIF_TERM head, pids = enif_make_list(env, 0);
  for (std::size_t seen = 0; enif_get_list_cell(env, args, &head, &args); ++seen) {
    if (seen == most) return std::nullopt;
    if (enif_is_pid(env, head)) pids = enif_make_list_cell(env, head, pids);
  }
  return pids;
}

// lane_call(Lane, Fun, Args, Timeout) -> Answer | queue: a call of the pool run here, as
// call/3 runs a short one (Service::run_here), when Fun names one export of the pool and
// a worker of it is free; else queue, and the caller takes the way through a worker.
ERL_NIF_TERM lane_call(ErlNifEnv* env, int, const ERL_NIF_TERM* argv) noexcept {
  return guarded(env, [&]() -> ERL_NIF_TERM {
    Lane* lane = get_lane(env, argv[0]);
    if (lane == nullptr || !enif_is_list(env, argv[2])) return enif_make_badarg(env);
    std::shared_ptr<const LaneState> state;
    {
      const std::lock_guard lock(lane->mutex);
      state = lane->state;
    }
    if (!state) return atom_queue;
    ERL_NIF_TERM fun = argv[1];
    if (enif_is_atom(env, fun)) {
      const auto found = state->module_of.find(fun);
      if (found == state->module_of.end()) return atom_queue;
      fun = enif_make_tuple2(env, found->second, fun);
    } else {
      const std::optional<ExportKey> key = export_key(env, fun);
      if (!key || !state->exports.contains(*key)) return atom_queue;
    }
    const auto free = std::find_if(state->workers.begin(), state->workers.end(), [](const auto& worker) {
      return !worker->busy.load(std::memory_order_relaxed) && !worker->closed.load(std::memory_order_relaxed);
    });
    if (free == state->workers.end()) return atom_queue;
    const std::optional<ERL_NIF_TERM> given = state->give_pids ? given_pids(env, argv[2]) : enif_make_list(env, 0);
    if (!given) return atom_queue;
    const ERL_NIF_TERM request = enif_make_tuple5(env, atom_call, enif_make_int(env, 0), fun, argv[2], argv[3]);
    const std::optional<ERL_NIF_TERM> reply =
        Service::running()->run_here(env, *free, request, *given, false, /*in_service=*/false);
    return reply ? *reply : atom_queue;
  });
}

// cancel(Handle, Ref) -> withdrawn | cancelled | none (Service::withdraw).
ERL_NIF_TERM cancel(ErlNifEnv* env, int, const ERL_NIF_TERM* argv) noexcept {
  return guarded(env, [&]() -> ERL_NIF_TERM {
    WorkerHandle* handle = get_worker(env, argv[0]);
    if (handle == nullptr) return enif_make_badarg(env);
    switch (Service::running()->withdraw(env, *handle->worker, argv[1])) {
      case Withdrawal::withdrawn: return atom_withdrawn;
      case Withdrawal::cancelled: return atom_cancelled;
      case Withdrawal::none: break;
    }
    return atom_none;
  });
}

// close(Handle, Reason) -> ok: the worker takes no more requests; those waiting are
// dropped, and a call the NIF runs itself meanwhile is answered
// {error, {worker_crashed, Reason}}.
ERL_NIF_TERM close(ErlNifEnv* env, int, const ERL_NIF_TERM* argv) noexcept {
  return guarded(env, [&]() -> ERL_NIF_TERM {
    WorkerHandle* handle = get_worker(env, argv[0]);
    if (handle == nullptr) return enif_make_badarg(env);
    Service::running()->close(handle->worker, env, argv[1]);
    return atom_ok;
  });
}

// erl_reply(Id, Result) -> ok: the answer of the Erl.call_erlang numbered Id
// ({ok, Value} | {error, {Class, Reason}}), which the OCaml thread waits for.
ERL_NIF_TERM erl_reply(ErlNifEnv* env, int, const ERL_NIF_TERM* argv) noexcept {
  return guarded(env, [&]() -> ERL_NIF_TERM {
    ErlNifUInt64 id = 0;
    if (!enif_get_uint64(env, argv[0], &id)) return enif_make_badarg(env);
    if (Service* service = Service::running()) service->erl_reply(id, argv[1]);
    return atom_ok;
  });
}

// queued(Handle) -> non_neg_integer(): the worker's requests queued or running.
ERL_NIF_TERM queued(ErlNifEnv* env, int, const ERL_NIF_TERM* argv) noexcept {
  return guarded(env, [&]() -> ERL_NIF_TERM {
    WorkerHandle* handle = get_worker(env, argv[0]);
    if (handle == nullptr) return enif_make_badarg(env);
    return enif_make_int64(env, std::max<std::int64_t>(0, handle->worker->in_service.load()));
  });
}

// handles() -> #{live := N, unreleased := M}: the resource objects of OCaml handles the VM
// holds, and those it freed whose OCaml values the runtime's thread has not released yet
// (it is woken to).
ERL_NIF_TERM handles_info(ErlNifEnv* env, int, const ERL_NIF_TERM*) noexcept {
  return guarded(env, [&] {
    const handles::Counts counts = handles::counts();
    if (Service* service = Service::running(); service != nullptr && handles::waiting())
      service->wake_for_handles(true);
    ERL_NIF_TERM keys[] = {enif_make_atom(env, "live"), enif_make_atom(env, "unreleased")};
    ERL_NIF_TERM values[] = {enif_make_int64(env, counts.live), enif_make_int64(env, counts.unreleased)};
    ERL_NIF_TERM map;
    enif_make_map_from_arrays(env, keys, values, 2, &map);
    return map;
  });
}

ErlNifFunc functions[] = {
    {"runtime_info", 0, runtime_info, 0},
    {"new_worker", 6, new_worker, 0},
    {"request", 3, request, 0},
    {"call", 3, call, 0},
    {"cancel", 2, cancel, 0},
    {"close", 2, close, 0},
    {"erl_reply", 2, erl_reply, 0},
    {"queued", 1, queued, 0},
    {"handles", 0, handles_info, 0},
    {"new_lane", 0, new_lane, 0},
    {"set_lane", 4, set_lane, 0},
    {"lane_call", 4, lane_call, 0},
};

}  // namespace
}  // namespace camlbeam::nif

ERL_NIF_INIT(camlbeam_nif, camlbeam::nif::functions, camlbeam::nif::load, nullptr, camlbeam::nif::upgrade,
             camlbeam::nif::unload)
