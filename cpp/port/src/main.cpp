// camlbeam-port: an OCaml worker that the Erlang application camlbeam starts with
// open_port({spawn_executable, ...}, [{packet, 4}, binary, nouse_stdio, exit_status]).
// See cpp/port/README.md.
#include "port_worker.hpp"

#include <camlbeam/host/error.hpp>
#include <camlbeam/host/runtime.hpp>

#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <unistd.h>

#include <charconv>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <exception>
#include <string>
#include <thread>

namespace {

constexpr int exit_ok = 0;
constexpr int exit_protocol = 2;    // the peer broke the framing
constexpr int exit_usage = 64;      // EX_USAGE: bad arguments, or not started as a port
constexpr int exit_internal = 70;   // EX_SOFTWARE

void report(const std::string& message) { std::fprintf(stderr, "camlbeam-port[%d]: %s\n", static_cast<int>(::getpid()), message.c_str()); }

bool is_open(int fd) { return ::fcntl(fd, F_GETFD) != -1; }

// What a plugin reads or prints must not touch the protocol: stdin becomes /dev/null,
// stdout a copy of stderr, and the protocol's pipes are not inherited by programs a plugin
// starts (they would keep Erlang's end from seeing this process exit).
bool isolate_protocol_fds(int in_fd, int out_fd) {
  const int null = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (null < 0 || ::dup2(null, STDIN_FILENO) < 0 || ::dup2(STDERR_FILENO, STDOUT_FILENO) < 0) return false;
  if (null != STDIN_FILENO) ::close(null);
  return ::fcntl(in_fd, F_SETFD, FD_CLOEXEC) == 0 && ::fcntl(out_fd, F_SETFD, FD_CLOEXEC) == 0;
}

// Ends the process when Erlang hung up and the request running then does not finish
// within the grace period: a worker whose VM is gone must not compute on as an orphan.
// It sleeps in poll() until then, so an idle worker costs no wake-ups.
class Watchdog {
 public:
  Watchdog(int in_fd, std::chrono::milliseconds grace) : in_fd_(in_fd), grace_(grace) {
    if (::pipe2(stop_, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
  }
  // Starting a thread takes a tenth of a worker's start-up: it is done once the first
  // answer is on its way (PortOptions::after_first_reply), not before.
  void start() {
    if (!thread_.joinable()) thread_ = std::thread([this] { watch(in_fd_, grace_); });
  }
  ~Watchdog() {
    if (thread_.joinable()) {
      const char byte = 0;
      while (::write(stop_[1], &byte, 1) < 0 && errno == EINTR) {
      }
      thread_.join();
    }
    ::close(stop_[0]);
    ::close(stop_[1]);
  }
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

 private:
  // True if the stop pipe became readable within `timeout_ms` (-1: no limit).
  bool wait(int in_fd, int timeout_ms, bool watch_input) {
    pollfd fds[2] = {{stop_[0], POLLIN, 0}, {in_fd, 0, 0}};
    for (;;) {
      const int n = ::poll(fds, watch_input ? 2 : 1, timeout_ms);
      if (n < 0 && errno == EINTR) continue;
      return n > 0 && (fds[0].revents & POLLIN) != 0;
    }
  }

  void watch(int in_fd, std::chrono::milliseconds grace) {
    // poll() reports POLLHUP on a pipe whose writers are all gone, whatever the events.
    if (wait(in_fd, -1, true)) return;
    if (wait(in_fd, static_cast<int>(grace.count()), false)) return;
    report("Erlang closed the port and the running request did not finish within " +
           std::to_string(grace.count()) + " ms; exiting");
    std::_Exit(exit_ok);
  }

  int in_fd_;
  std::chrono::milliseconds grace_;
  int stop_[2] = {-1, -1};
  std::thread thread_;
};

std::chrono::milliseconds grace_from_environment() {
  const char* text = std::getenv("CAMLBEAM_PORT_GRACE_MS");
  if (text == nullptr) return std::chrono::milliseconds(2000);
  char* end = nullptr;
  const long ms = std::strtol(text, &end, 10);
  return std::chrono::milliseconds(end != text && *end == '\0' && ms >= 0 ? ms : 2000);
}

constexpr const char* usage =
    "usage: camlbeam-port [--max-request-size BYTES] [--max-reply-size BYTES]\n"
    "An OCaml worker of the Erlang application camlbeam, started by ocaml:start_link/1\n"
    "(open_port with nouse_stdio): requests on fd 3, replies on fd 4.\n"
    "  --max-request-size BYTES  largest request frame (default 1 GiB)\n"
    "  --max-reply-size BYTES    largest reply or message frame (default 64 MiB); a larger\n"
    "                            answer becomes {error, {reply_too_large, Size, Limit}}\n"
    "  --version, --help\n";

bool parse_size(const char* text, std::size_t& size) {
  const char* end = text + std::strlen(text);
  const auto [stop, error] = std::from_chars(text, end, size);
  return error == std::errc{} && stop == end && size > 0;
}

// getopt_long rather than CLI11: CLI11 brings iostreams, whose static initialisation made
// every worker 1.25 MB larger in memory and slower to start (bench/port, worker cost).
// nullopt: go on; otherwise the exit status.
std::optional<int> parse_arguments(int argc, char** argv, camlbeam::port::PortOptions& options) {
  enum : int { request_size = 1, reply_size, version, help };
  const option long_options[] = {{"max-request-size", required_argument, nullptr, request_size},
                                 {"max-reply-size", required_argument, nullptr, reply_size},
                                 {"version", no_argument, nullptr, version},
                                 {"help", no_argument, nullptr, help},
                                 {nullptr, 0, nullptr, 0}};
  for (int opt; (opt = ::getopt_long(argc, argv, "", long_options, nullptr)) != -1;) {
    switch (opt) {
      case request_size:
      case reply_size: {
        std::size_t& size = opt == request_size ? options.max_request_size : options.host.max_reply_size;
        if (!parse_size(optarg, size)) {
          std::fprintf(stderr, "camlbeam-port: not a size in bytes: %s\n%s", optarg, usage);
          return exit_usage;
        }
        break;
      }
      case version: std::fputs("camlbeam-port 0.1.0 (protocol 1)\n", stdout); return exit_ok;
      case help: std::fputs(usage, stdout); return exit_ok;
      default: std::fputs(usage, stderr); return exit_usage;
    }
  }
  if (optind < argc) {
    std::fprintf(stderr, "camlbeam-port: unexpected argument %s\n%s", argv[optind], usage);
    return exit_usage;
  }
  return std::nullopt;
}

}  // namespace

int main(int argc, char** argv) {
  camlbeam::port::PortOptions options;
  if (const std::optional<int> exit_now = parse_arguments(argc, argv, options)) return *exit_now;

  if (!is_open(options.in_fd) || !is_open(options.out_fd)) {
    report("file descriptors 3 and 4 are not open: this program is started by the Erlang application camlbeam "
           "(open_port with nouse_stdio), not by hand; try camlbeam-call to run an export from a shell");
    return exit_usage;
  }
  if (!isolate_protocol_fds(options.in_fd, options.out_fd)) {
    report("cannot set up the standard file descriptors");
    return exit_internal;
  }
  // Erlang closing its end while a reply is written is an EPIPE to handle, not a signal.
  std::signal(SIGPIPE, SIG_IGN);

  try {
    camlbeam::host::Runtime runtime(argc, argv);
    Watchdog watchdog(options.in_fd, grace_from_environment());
    options.after_first_reply = [&watchdog] { watchdog.start(); };
    camlbeam::port::PortWorker worker(runtime, options);
    worker.run();
    return exit_ok;
  } catch (const camlbeam::port::ProtocolError& e) {
    report(std::string("protocol error: ") + e.what());
    return exit_protocol;
  } catch (const std::exception& e) {
    report(e.what());
    return exit_internal;
  }
}
