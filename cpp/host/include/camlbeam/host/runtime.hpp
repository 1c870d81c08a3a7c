// The OCaml runtime of a host process, and the rule of who may touch it.
//
// OCaml code, OCaml values and the runtime's functions are used only by a thread that holds
// the runtime. Here that is the thread that started it, outside any BlockingSection. These
// are OCaml 5's rules as well (a domain's lock instead of OCaml 4's master lock), so moving
// to domains changes how the lock is taken, not the shape of the code that uses it.
#pragma once

#include <camlbeam/host/error.hpp>

#include <span>
#include <string>
#include <thread>
#include <vector>

namespace camlbeam::host {

class Runtime {
 public:
  // Starts OCaml on the calling thread, which becomes the runtime thread. args are
  // Sys.argv (args[0] the program name). Runs the initialisers of every OCaml unit linked
  // in: Erl and Erl_host register their callbacks then.
  //
  // Throws RuntimeError if a Runtime was started before in this process (OCaml 4.13 cannot
  // start twice, nor restart after shutdown), or if an initialiser raised (its exception is
  // in the message; the runtime is then unusable and cannot be started again).
  explicit Runtime(std::span<const std::string> args);
  Runtime(int argc, char** argv);

  // caml_shutdown: OCaml's at_exit functions run and its channels are flushed.
  ~Runtime();

  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;
  Runtime(Runtime&&) = delete;
  Runtime& operator=(Runtime&&) = delete;

  // The calling thread started the runtime (it may hold it or have released it).
  bool is_runtime_thread() const noexcept;
  // The calling thread may use OCaml now: it started the runtime, borrows it
  // (BorrowedRuntime) or is a domain's own (DomainThread), and has not released it
  // (BlockingSection).
  bool held_by_this_thread() const noexcept;

 private:
  void start();

  // caml_startup keeps argv for Sys.argv: both vectors live as long as the runtime.
  std::vector<std::string> args_;
  std::vector<char*> argv_;
  std::thread::id thread_;
};

// Takes the runtime, for its lifetime, on a thread that did not start it: a thread of the
// embedding program (the nif transport's schedulers, cpp/nif) runs a request while the
// runtime thread waits inside a BlockingSection. The caller makes sure that the runtime
// thread does not take the runtime back meanwhile: this takes the runtime's lock and waits
// for it. The thread is registered with OCaml at its first borrow (caml_c_thread_register)
// and stays registered, blocked outside OCaml, between borrows. Under OCaml 4.13 OCaml code
// then runs on this thread's own stack: see README.md, "Threads", for what that takes.
class BorrowedRuntime {
 public:
  // Throws RuntimeError if this thread holds the runtime already (the runtime thread, or a
  // borrow), or OCaml cannot register it.
  explicit BorrowedRuntime(const Runtime& runtime);
  ~BorrowedRuntime();
  BorrowedRuntime(const BorrowedRuntime&) = delete;
  BorrowedRuntime& operator=(const BorrowedRuntime&) = delete;
  BorrowedRuntime(BorrowedRuntime&&) = delete;
  BorrowedRuntime& operator=(BorrowedRuntime&&) = delete;
};

// Marks the calling thread, for its lifetime, as one that holds the runtime: the thread of
// an OCaml 5 domain the program spawned (Domain.spawn) and whose function called into C++,
// which runs requests there (the nif transport's pool of domains, cpp/nif). It holds its
// domain's lock, as the runtime thread holds domain 0's: Host, RequestWatch and
// BlockingSection work there as on the runtime thread.
class DomainThread {
 public:
  // Throws RuntimeError if this thread holds the runtime already.
  explicit DomainThread(const Runtime& runtime);
  ~DomainThread();
  DomainThread(const DomainThread&) = delete;
  DomainThread& operator=(const DomainThread&) = delete;
  DomainThread(DomainThread&&) = delete;
  DomainThread& operator=(DomainThread&&) = delete;
};

// Releases the runtime for its lifetime, so that other threads can run OCaml (OCaml 4
// systhreads now; other domains' threads under OCaml 5) while this one waits in C++.
// Transports wrap their blocking reads and writes in one. In between, this thread must not
// touch OCaml values or call the runtime; Host refuses to (Errc::runtime_released).
//
// Pending OCaml signal handlers are left for the next poll in OCaml code: running them
// here (as caml_release_runtime_system does in OCaml 4.13) could raise an OCaml exception
// into C++ frames that have no OCaml handler.
class BlockingSection {
 public:
  // Throws RuntimeError unless the calling thread holds the runtime (also when nested).
  explicit BlockingSection(const Runtime& runtime);
  ~BlockingSection();

  BlockingSection(const BlockingSection&) = delete;
  BlockingSection& operator=(const BlockingSection&) = delete;
  BlockingSection(BlockingSection&&) = delete;
  BlockingSection& operator=(BlockingSection&&) = delete;
};

}  // namespace camlbeam::host
