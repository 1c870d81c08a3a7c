// The keeper: the process Erlang spawned stays a small parent that never runs OCaml, so
// that nothing the worker or its plugins start outlives the worker, its pool or its VM.
// See cpp/port/README.md ("The keeper").
#pragma once

#include <chrono>
#include <optional>

namespace camlbeam::port {

struct KeeperOptions {
  int in_fd = 3;   // kept only to see Erlang hang up
  int out_fd = 4;  // closed in the keeper, so that Erlang sees end of file when the worker is gone
  // After Erlang hung up, how long the worker may take to finish and exit by itself.
  std::chrono::milliseconds hang_up_grace{2000};
  // How long the keeper keeps killing and reaping what is left before it gives up.
  std::chrono::milliseconds sweep_limit{2000};
};

// Forks. In the child, the worker, returns nullopt: it is in a process group of its own and
// dies with the keeper (PR_SET_PDEATHSIG), and goes on to run OCaml. In the parent, the
// keeper, returns the status to exit with once the worker and everything it started are
// gone: the worker's exit status, or 128 + the signal that killed it. Throws
// std::system_error if the keeper cannot be set up (nothing is forked then).
std::optional<int> fork_worker_under_keeper(const KeeperOptions& options);

}  // namespace camlbeam::port
