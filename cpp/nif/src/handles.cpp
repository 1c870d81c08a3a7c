// Erl.Term.Handle as NIF resources (handles.hpp).
#include "handles.hpp"

#include "service.hpp"

#include <caml/callback.h>
#include <caml/memory.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <new>
#include <utility>
#include <vector>

namespace camlbeam::nif::handles {
namespace {

// One Erlang resource object's hold on an OCaml handle. Heap-allocated so that the root's
// address stays put; freed only by drain (the runtime's thread).
struct Cell {
  value handle = Val_unit;  // a generational global root from make to drain
  Cell* next = nullptr;     // the release queue's link: pushing never allocates
};

std::atomic<std::int64_t> live{0};
std::atomic<std::int64_t> unreleased{0};
std::atomic<bool> pending{false};  // something for drain: waiting() without the lock

std::mutex queue_mutex;
Cell* released = nullptr;                       // cells the VM let go of
std::vector<std::shared_ptr<Cell>> downs;       // handles whose monitored process is gone

ErlNifResourceType* handle_type = nullptr;

void wake() noexcept {
  pending.store(true, std::memory_order_release);
  // The destructor may run under the service's own lock (a request's env freed in
  // Service::withdraw): wake without it.
  if (Service* service = Service::running()) service->wake_for_handles(false);
}

// A cell's last owner let go of it (a scheduler, or the runtime's thread): queued for drain.
struct Release {
  void operator()(Cell* cell) const noexcept {
    try {
      const std::lock_guard lock(queue_mutex);
      cell->next = released;
      released = cell;
    } catch (...) {
      return;  // the lock failed: the cell and its value stay for the VM's life
    }
    unreleased.fetch_add(1, std::memory_order_relaxed);
    wake();
  }
};

// What the VM holds: the object enif_alloc_resource made, constructed in place.
struct Object {
  std::shared_ptr<Cell> cell;
};

void destroy(ErlNifEnv*, void* object) noexcept {
  static_cast<Object*>(object)->~Object();
  live.fetch_sub(1, std::memory_order_relaxed);
}

void queue_down(const std::shared_ptr<Cell>& cell) noexcept {
  try {
    const std::lock_guard lock(queue_mutex);
    downs.push_back(cell);
  } catch (...) {
    // No memory for the queue: this object's news is lost (another of the handle's may
    // still bring it).
    return;
  }
  wake();
}

void down(ErlNifEnv*, void* object, ErlNifPid*, ErlNifMonitor*) noexcept {
  queue_down(static_cast<Object*>(object)->cell);
}

}  // namespace

bool open(ErlNifEnv* env, ErlNifResourceFlags flags) noexcept {
  ErlNifResourceTypeInit init{};
  init.dtor = destroy;
  init.down = down;
  ErlNifResourceFlags tried{};
  handle_type = enif_open_resource_type_x(env, "camlbeam_handle", &init, flags, &tried);
  return handle_type != nullptr;
}

ERL_NIF_TERM make(ErlNifEnv* env, value handle, const std::optional<ErlNifPid>& monitor) {
  auto owned = std::make_unique<Cell>();
  owned->handle = handle;
  caml_register_generational_global_root(&owned->handle);
  // From here on the cell goes back through Release, also if the shared_ptr's own
  // allocation fails (which calls the deleter).
  std::shared_ptr<Cell> cell(owned.release(), Release{});
  void* memory = enif_alloc_resource(handle_type, sizeof(Object));
  if (memory == nullptr) throw std::bad_alloc();
  auto* object = new (memory) Object{std::move(cell)};
  live.fetch_add(1, std::memory_order_relaxed);
  if (monitor) {
    ErlNifPid pid = *monitor;
    // caller_env: the calling process's on a scheduler (Service::run_here), none on the
    // runtime's own thread.
    ErlNifEnv* caller = enif_thread_type() == ERL_NIF_THR_UNDEFINED ? nullptr : env;
    // > 0: the process is gone already; < 0 cannot happen (the type has a down callback).
    if (enif_monitor_process(caller, memory, &pid, nullptr) > 0) queue_down(object->cell);
  }
  const ERL_NIF_TERM term = enif_make_resource(env, memory);
  enif_release_resource(memory);
  return term;
}

std::optional<value> get(ErlNifEnv* env, ERL_NIF_TERM term) noexcept {
  void* object = nullptr;
  if (handle_type == nullptr || !enif_get_resource(env, term, handle_type, &object)) return std::nullopt;
  return static_cast<Object*>(object)->cell->handle;
}

void drain() noexcept {
  if (!pending.exchange(false, std::memory_order_acq_rel)) return;
  std::vector<std::shared_ptr<Cell>> gone;
  {
    const std::lock_guard lock(queue_mutex);
    gone.swap(downs);
  }
  if (!gone.empty()) {
    static const value* const on_down = caml_named_value("camlbeam.handle_down");
    // Term.Handle.monitor_down catches on_down's exceptions; one raised here is
    // asynchronous (a signal's), and dropped.
    if (on_down != nullptr)
      for (const auto& cell : gone) (void)caml_callback_exn(*on_down, cell->handle);
    gone.clear();  // may release cells: taken below
  }
  Cell* cells = nullptr;
  {
    const std::lock_guard lock(queue_mutex);
    cells = std::exchange(released, nullptr);
  }
  while (cells != nullptr) {
    std::unique_ptr<Cell> cell(cells);
    cells = cell->next;
    caml_remove_generational_global_root(&cell->handle);
    unreleased.fetch_sub(1, std::memory_order_relaxed);
  }
}

bool waiting() noexcept { return pending.load(std::memory_order_acquire); }

Counts counts() noexcept {
  return {live.load(std::memory_order_relaxed), unreleased.load(std::memory_order_relaxed)};
}

}  // namespace camlbeam::nif::handles
