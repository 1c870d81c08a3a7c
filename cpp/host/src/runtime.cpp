#include <camlbeam/host/runtime.hpp>

#include "ocaml_util.hpp"

#include <caml/callback.h>
#include <caml/mlvalues.h>
#include <caml/signals.h>
#include <caml/threads.h>

#include <atomic>

namespace camlbeam::host {

namespace {

// One runtime per process and per program run: OCaml 4.13 cannot start twice, nor start
// again after caml_shutdown.
std::atomic<bool> started{false};

// Set while this thread is inside a BlockingSection.
thread_local bool released = false;

}  // namespace

namespace detail {
// Set while this thread, not the runtime thread, holds the runtime: a borrow
// (borrowed_runtime.cpp, which alone needs OCaml's systhreads: the executables that do not
// borrow link without) or a domain's own thread (DomainThread).
thread_local bool borrowed = false;
}  // namespace detail

Runtime::Runtime(std::span<const std::string> args) : args_(args.begin(), args.end()) {
  if (args_.empty()) args_.emplace_back("camlbeam-host");
  start();
}

Runtime::Runtime(int argc, char** argv) {
  for (int i = 0; i < argc; ++i) args_.emplace_back(argv[i]);
  if (args_.empty()) args_.emplace_back("camlbeam-host");
  start();
}

void Runtime::start() {
  bool expected = false;
  if (!started.compare_exchange_strong(expected, true)) {
    throw RuntimeError(
        "the OCaml runtime was already started in this process: create one camlbeam::host::Runtime, "
        "once, and keep it for the life of the program");
  }
  argv_.reserve(args_.size() + 1);
  for (std::string& arg : args_) argv_.push_back(arg.data());
  argv_.push_back(nullptr);
  thread_ = std::this_thread::get_id();
  // The _exn form: an exception from a unit's initialiser comes back as a value instead of
  // ending the process from inside the runtime.
  const value result = caml_startup_exn(argv_.data());
  if (Is_exception_result(result)) {
    throw RuntimeError("an OCaml module initialiser raised at start-up: " +
                       detail::exception_text(Extract_exception(result)));
  }
}

Runtime::~Runtime() {
  // Only the runtime thread may shut the runtime down; from any other thread the runtime is
  // left as it is (the process is ending anyway) rather than touched without its lock.
  if (held_by_this_thread()) caml_shutdown();
}

bool Runtime::is_runtime_thread() const noexcept { return std::this_thread::get_id() == thread_; }

bool Runtime::held_by_this_thread() const noexcept { return (detail::borrowed || is_runtime_thread()) && !released; }

DomainThread::DomainThread(const Runtime& runtime) {
  if (runtime.held_by_this_thread()) throw RuntimeError("DomainThread: this thread holds the OCaml runtime already");
  detail::borrowed = true;
}

DomainThread::~DomainThread() { detail::borrowed = false; }

BlockingSection::BlockingSection(const Runtime& runtime) {
  if (!runtime.held_by_this_thread()) {
    throw RuntimeError(
        "BlockingSection: this thread does not hold the OCaml runtime (not the runtime thread, "
        "or already inside a BlockingSection)");
  }
  caml_enter_blocking_section_no_pending();
  released = true;
}

BlockingSection::~BlockingSection() {
  released = false;
  // Takes the runtime back; pending signals are only flagged here, to be handled by OCaml
  // code at its next poll.
  caml_acquire_runtime_system();
}

}  // namespace camlbeam::host
