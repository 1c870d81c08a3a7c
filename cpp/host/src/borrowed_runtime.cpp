// BorrowedRuntime (runtime.hpp), apart from runtime.cpp: it needs OCaml's systhreads
// (caml_c_thread_register), which only the executables and libraries that borrow link.
#include <camlbeam/host/runtime.hpp>

#include <caml/signals.h>
#include <caml/threads.h>

namespace camlbeam::host {

namespace detail {
extern thread_local bool borrowed;
}  // namespace detail

namespace {
// This thread is known to OCaml's systhreads, for good: registering is costly, and the
// threads that borrow (a VM's schedulers) live as long as the runtime.
thread_local bool registered = false;
}  // namespace

BorrowedRuntime::BorrowedRuntime(const Runtime& runtime) {
  if (runtime.held_by_this_thread()) throw RuntimeError("BorrowedRuntime: this thread holds the OCaml runtime already");
  if (runtime.is_runtime_thread()) {
    throw RuntimeError("BorrowedRuntime: the runtime thread takes the runtime back by ending its BlockingSection");
  }
  if (!registered) {
    if (caml_c_thread_register() == 0) throw RuntimeError("BorrowedRuntime: OCaml could not register this thread");
    registered = true;
  }
  caml_acquire_runtime_system();
  detail::borrowed = true;
}

BorrowedRuntime::~BorrowedRuntime() {
  detail::borrowed = false;
  // As BlockingSection: pending signals stay flagged for the next OCaml code to handle,
  // wherever it runs, rather than raising into this thread's C++ frames.
  caml_enter_blocking_section_no_pending();
}

}  // namespace camlbeam::host
