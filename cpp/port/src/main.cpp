// camlbeam-port: an OCaml worker that the Erlang application camlbeam starts with
// open_port({spawn_executable, ...}, [{packet, 4}, binary, nouse_stdio, exit_status]).
// See cpp/port/README.md.
#include "port_worker.hpp"

#include <camlbeam/host/error.hpp>
#include <camlbeam/host/runtime.hpp>

#include <CLI/CLI.hpp>

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <thread>

namespace {

constexpr int exit_ok = 0;
constexpr int exit_protocol = 2;    // the peer broke the framing
constexpr int exit_usage = 64;      // EX_USAGE: not started as a port
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

}  // namespace

int main(int argc, char** argv) {
  camlbeam::port::PortOptions options;
  CLI::App app{"camlbeam-port: an OCaml worker of the Erlang application camlbeam.\n"
               "Started by ocaml:start_link/1 (open_port with nouse_stdio): requests on fd 3, replies on fd 4."};
  app.add_option("--max-request-size", options.max_request_size, "largest request frame, in bytes")
      ->capture_default_str();
  app.add_option("--max-reply-size", options.host.max_reply_size,
                 "largest reply or message frame, in bytes; a larger answer becomes {error, {reply_too_large, ...}}")
      ->capture_default_str();
  app.set_version_flag("--version", "camlbeam-port 0.1.0 (protocol 1)");
  CLI11_PARSE(app, argc, argv);

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
