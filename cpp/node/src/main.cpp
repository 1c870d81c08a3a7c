// camlbeam-node: an OCaml node that Erlang's own tools treat as a node (README.md).
//
//   camlbeam-node --sname ocaml --cookie C --load mathlib.cmxs
//
// Exit statuses: 0 after SIGTERM, SIGINT or SIGHUP (or, with --stop-on-eof, at once at the
// end of standard input); 64 for a usage error (an unusable ssl_dist_optfile or its certificates
// included); 69 when the node
// cannot join (EPMD unreachable, the name taken, a plugin that does not load); 70 when its
// network thread fails; 124 when a request overran its deadline and could not be stopped.
#include "node.hpp"
#include "ocaml_transport.hpp"
#include "options.hpp"

#include <camlbeam/dist/cookie.hpp>
#include <camlbeam/dist/epmd.hpp>
#include <camlbeam/dist/error.hpp>
#include <camlbeam/dist/tls.hpp>
#include <camlbeam/host/host.hpp>
#include <camlbeam/host/request_watch.hpp>
#include <camlbeam/host/runtime.hpp>

#include <caml/version.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include <malloc.h>
#include <pthread.h>
#include <sys/prctl.h>
#include <signal.h>
#include <unistd.h>

namespace {

namespace dist = camlbeam::dist;
namespace etf = camlbeam::etf;
namespace host = camlbeam::host;
namespace node = camlbeam::node;

constexpr int exit_usage = 64;
constexpr int exit_unavailable = 69;
constexpr int exit_software = 70;
constexpr int exit_overdue = 124;

std::string host_name(bool short_name) {
  std::vector<char> buffer(256, '\0');
  if (gethostname(buffer.data(), buffer.size() - 1) != 0) return "localhost";
  std::string name(buffer.data());
  if (short_name) name = name.substr(0, name.find('.'));
  return name;
}

// A call's terms are trees of malloc'd nodes (a list of 100,000 integers is a few MB of
// them) made and freed on every call. Past glibc's default thresholds they were mmap'd, or
// trimmed off the heap's top, at every call, and faulted in again at the next: 12% of the
// node's time on that list, 30% more calls per second once kept. malloc now keeps up to
// kept_free_memory at the heap's top; more, and anything after an outsized request, goes
// back to the system (serve: Host::give_back_memory while idle).
void keep_call_sized_memory() noexcept {
  constexpr int kept_free_memory = 64 << 20;
  ::mallopt(M_MMAP_THRESHOLD, 32 << 20);  // glibc's largest
  ::mallopt(M_TRIM_THRESHOLD, kept_free_memory);
}

int run(int argc, char** argv) {
  keep_call_sized_memory();
  const std::vector<std::string> args(argv + 1, argv + argc);
  auto parsed = node::parse_options(args, host_name(true), host_name(false));
  if (const auto* usage = std::get_if<node::UsageError>(&parsed)) {
    std::fprintf(stderr, "camlbeam-node: %s\n%s", usage->message.c_str(), node::usage().c_str());
    return exit_usage;
  }
  const node::Options options = std::get<node::Options>(std::move(parsed));

  // The signals that end the node are taken by a thread of their own (sigwait): blocked
  // here, before any thread starts, so that every thread inherits the mask. The request
  // watch's cancel signal is sent to the runtime thread itself and stays unblocked there.
  sigset_t ending;
  sigemptyset(&ending);
  for (const int signal : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&ending, signal);
  pthread_sigmask(SIG_BLOCK, &ending, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  node::NodeConfig config;
  try {
    config.endpoint.cookie = dist::find_cookie(options.cookie ? std::optional<std::string_view>(*options.cookie)
                                                              : std::nullopt);
  } catch (const dist::DistError& e) {
    std::fprintf(stderr, "camlbeam-node: %s\n", e.what());
    return exit_unavailable;
  }
  config.endpoint.node_name = options.node_name;
  config.endpoint.listen_port = options.port;
  config.endpoint.listen_address = options.listen_address;
  config.max_reply_size = options.max_reply_size;
  // One answer of the largest size always fits in a peer's send queue.
  config.endpoint.max_queued_bytes = std::max(config.endpoint.max_queued_bytes, 2 * options.max_reply_size);
  config.endpoint.net_ticktime = options.net_ticktime;
  // ALTACT_SIG too (OTP 28): replies to an alias then go as OTP 30, which drops ALIAS_SEND,
  // will want them (Processes::send_message), and what such a peer sends that way arrives.
  config.endpoint.flags = dist::flag::offered | dist::flag::altact_sig;
  if (options.hidden) config.endpoint.flags &= ~dist::flag::published;
  config.call_timeout_ms = options.call_timeout_ms;
  config.allow_load = options.allow_load;
  config.info = etf::Term::map({{etf::Term::atom("os_pid"), etf::Term::integer(::getpid())},
                                {etf::Term::atom("ocaml_version"), etf::Term::binary(OCAML_VERSION_STRING)},
                                {etf::Term::atom("flavour"), etf::Term::atom("native")}});
  config.policy = options.policy;
  if (options.ssl_dist_optfile) {
    auto tls = dist::read_ssl_dist_optfile(*options.ssl_dist_optfile);
    if (const auto* error = std::get_if<dist::Error>(&tls)) {
      std::fprintf(stderr, "camlbeam-node: %s\n", error->message().c_str());
      return exit_usage;
    }
    try {
      config.endpoint.tls = std::make_shared<const dist::TlsContext>(std::get<dist::TlsOptions>(tls));
    } catch (const dist::DistError& e) {
      std::fprintf(stderr, "camlbeam-node: %s\n", e.what());
      return exit_usage;
    }
  }

  // Declared before the watch, whose hook reaches it, so that it outlives the watch's thread.
  std::optional<node::Node> the_node;
  // Sys.argv of the plugins: the program name only.
  host::Runtime runtime(1, argv);
  // A tick of 20 ms: how long a request runs before the node's other thread takes over the
  // answers that need no OCaml (node.hpp), and the precision of a missed deadline.
  host::RequestWatch watch(runtime, host::RequestWatchOptions{.tick = std::chrono::milliseconds(20)},
                           host::RequestWatchHooks{
                               .running =
                                   [&the_node](std::chrono::milliseconds, bool) {
                                     if (the_node) the_node->takeover();
                                     return true;
                                   },
                               .overdue =
                                   [](std::chrono::milliseconds running, std::chrono::milliseconds timeout) {
                                     std::fprintf(stderr,
                                                  "camlbeam-node: a request has run %lld ms, past its %lld ms "
                                                  "deadline, and cannot be stopped: the node exits\n",
                                                  static_cast<long long>(running.count()),
                                                  static_cast<long long>(timeout.count()));
                                     std::_Exit(exit_overdue);
                                   },
                           });
  host::Host host(runtime, &watch);
  for (const std::string& plugin : options.plugins) {
    if (const std::optional<host::Error> e = host.load(plugin)) {
      std::fprintf(stderr, "camlbeam-node: %s: %s\n", plugin.c_str(), e->message.c_str());
      return exit_unavailable;
    }
  }

  try {
    // Reachable from other hosts, the node's EPMD must be too: one it starts listens there.
    dist::ensure_local_epmd(config.endpoint.epmd, std::chrono::seconds(5), options.listen_address);
    the_node.emplace(std::move(config));
  } catch (const dist::DistError& e) {
    std::fprintf(stderr, "camlbeam-node: cannot join as %s: %s\n", options.node_name.c_str(), e.what());
    return exit_unavailable;
  }
  watch.start();

  std::thread signals([&ending, &the_node] {
    int signal = 0;
    sigwait(&ending, &signal);
    the_node->stop();
  });
  if (options.stop_on_eof) {
    // A node its VM started must also go when it is stopped (SIGSTOP) as its VM dies: it
    // reads no end of file then, but the kernel's SIGKILL at its parent's death (the VM's
    // erl_child_setup) ends even a stopped process.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() == 1) std::_Exit(0);  // the parent died before prctl took effect
    // Started by an Erlang port (transport => node): when the port closes, or the VM that
    // owns it dies, standard input ends. The node's owner is gone, and nobody waits for
    // what it still holds: it exits at once, even in the middle of a long call (SIGTERM
    // would let that call end first). Detached: it blocks in read() to the end.
    std::thread([] {
      char buffer[256];
      for (;;) {
        const ssize_t got = ::read(STDIN_FILENO, buffer, sizeof buffer);
        if (got == 0 || (got < 0 && errno != EINTR)) break;
      }
      std::_Exit(0);
    }).detach();
  }
  std::fprintf(stderr, "camlbeam-node: %s listening on port %u\n", the_node->name().c_str(),
               static_cast<unsigned>(the_node->port()));
  const camlbeam::conv::Root context = node::make_ocaml_context(*the_node, runtime, options.worker_id);
  const std::optional<std::string> failure = the_node->serve(host, &context);
  if (failure) {
    std::fprintf(stderr, "camlbeam-node: the network thread failed: %s\n", failure->c_str());
    std::_Exit(exit_software);  // the signal thread still waits
  }
  signals.join();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "camlbeam-node: %s\n", e.what());
    return exit_software;
  }
}
