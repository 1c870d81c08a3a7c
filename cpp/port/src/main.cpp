// camlbeam-port: an OCaml worker that the Erlang application camlbeam starts with
// open_port({spawn_executable, ...}, [{packet, 4}, binary, nouse_stdio, exit_status]).
// See cpp/port/README.md.
#include "keeper.hpp"
#include "port_worker.hpp"

#include <camlbeam/host/error.hpp>
#include <camlbeam/host/runtime.hpp>

#include <fcntl.h>
#include <getopt.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <new>
#include <optional>
#include <string>

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

std::chrono::milliseconds grace_from_environment() {
  const char* text = std::getenv("CAMLBEAM_PORT_GRACE_MS");
  if (text == nullptr) return std::chrono::milliseconds(2000);
  char* end = nullptr;
  const long ms = std::strtol(text, &end, 10);
  return std::chrono::milliseconds(end != text && *end == '\0' && ms >= 0 ? ms : 2000);
}

constexpr const char* usage =
    "usage: camlbeam-port [--max-request-size BYTES] [--max-reply-size BYTES] [--max-memory BYTES]\n"
    "                     [--heartbeat MS] [--cancel-grace MS]\n"
    "An OCaml worker of the Erlang application camlbeam, started by ocaml:start_link/1\n"
    "(open_port with nouse_stdio): requests on fd 3, replies on fd 4 (cpp/port/README.md).\n"
    "  --max-request-size BYTES  largest request frame (default 1 GiB, at most 4294967291)\n"
    "  --max-reply-size BYTES    largest reply or message frame (default 64 MiB, at most\n"
    "                            4294967291); a larger answer becomes\n"
    "                            {error, {reply_too_large, Size, Limit}}\n"
    "  --max-memory BYTES        the worker's data memory (RLIMIT_DATA): a request that\n"
    "                            needs more fails with Out_of_memory (default: no limit)\n"
    "  --heartbeat MS            a {heartbeat, RunningMs} frame every MS of a request's\n"
    "                            running time (default 500; 0: none)\n"
    "  --cancel-grace MS         a request still running MS after its deadline ends the\n"
    "                            worker, status 124 (default 1000)\n"
    "  --version, --help\n"
    "Exit status: 0 after Erlang closed the port, 2 when the framing broke, 64 on bad\n"
    "arguments, 70 on an internal error, 124 when a request could not be interrupted,\n"
    "128 + N when the worker was killed by signal N, or the code a plugin exited with.\n";

// A size in bytes, 1 to `most`.
bool parse_size(const char* text, std::size_t most, std::size_t& size) {
  const char* end = text + std::strlen(text);
  std::size_t parsed = 0;
  const auto [stop, error] = std::from_chars(text, end, parsed);
  if (error != std::errc{} || stop != end || parsed == 0 || parsed > most) return false;
  size = parsed;
  return true;
}

// Milliseconds, 0 or more.
bool parse_ms(const char* text, std::chrono::milliseconds& ms) {
  const char* end = text + std::strlen(text);
  std::int64_t parsed = 0;
  const auto [stop, error] = std::from_chars(text, end, parsed);
  if (error != std::errc{} || stop != end || parsed < 0) return false;
  ms = std::chrono::milliseconds(parsed);
  return true;
}

struct Arguments {
  camlbeam::port::PortOptions port;
  std::optional<std::size_t> max_memory;
};

// getopt_long rather than CLI11: CLI11 brings iostreams, whose static initialisation made
// every worker 1.25 MB larger in memory and slower to start (bench/port, worker cost).
// nullopt: go on; otherwise the exit status.
std::optional<int> parse_arguments(int argc, char** argv, Arguments& arguments) {
  enum : int { request_size = 1, reply_size, max_memory, heartbeat, cancel_grace, version, help };
  const option long_options[] = {{"max-request-size", required_argument, nullptr, request_size},
                                 {"max-reply-size", required_argument, nullptr, reply_size},
                                 {"max-memory", required_argument, nullptr, max_memory},
                                 {"heartbeat", required_argument, nullptr, heartbeat},
                                 {"cancel-grace", required_argument, nullptr, cancel_grace},
                                 {"version", no_argument, nullptr, version},
                                 {"help", no_argument, nullptr, help},
                                 {nullptr, 0, nullptr, 0}};
  camlbeam::port::PortOptions& options = arguments.port;
  const auto refuse = [](const char* what, const char* text) {
    std::fprintf(stderr, "camlbeam-port: not %s: %s\n%s", what, text, usage);
    return exit_usage;
  };
  for (int opt; (opt = ::getopt_long(argc, argv, "", long_options, nullptr)) != -1;) {
    switch (opt) {
      case request_size:
        if (!parse_size(optarg, camlbeam::port::max_frame_limit, options.max_request_size)) {
          return refuse("a frame size in bytes (1 to 4294967291)", optarg);
        }
        break;
      case reply_size:
        if (!parse_size(optarg, camlbeam::port::max_frame_limit, options.etf.max_reply_size)) {
          return refuse("a frame size in bytes (1 to 4294967291)", optarg);
        }
        break;
      case max_memory: {
        std::size_t bytes = 0;
        if (!parse_size(optarg, SIZE_MAX, bytes)) return refuse("a size in bytes", optarg);
        arguments.max_memory = bytes;
        break;
      }
      case heartbeat:
        if (!parse_ms(optarg, options.heartbeat)) return refuse("milliseconds", optarg);
        break;
      case cancel_grace:
        if (!parse_ms(optarg, options.cancel_grace)) return refuse("milliseconds", optarg);
        break;
      case version: std::fputs("camlbeam-port 0.1.0 (protocol 2)\n", stdout); return exit_ok;
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

// The data memory the process has mapped (VmData: what RLIMIT_DATA counts), in bytes.
std::optional<std::size_t> data_in_use() {
  std::FILE* status = std::fopen("/proc/self/status", "re");
  if (status == nullptr) return std::nullopt;
  std::optional<std::size_t> bytes;
  char line[256];
  unsigned long kb = 0;
  while (std::fgets(line, sizeof line, status) != nullptr) {
    if (std::sscanf(line, "VmData: %lu kB", &kb) == 1) {
      bytes = std::size_t{kb} << 10;
      break;
    }
  }
  std::fclose(status);
  return bytes;
}

// RLIMIT_DATA, soft and hard (a plugin cannot raise it again): see cpp/port/README.md for
// why not RLIMIT_AS. Empty on success, else why not.
std::string limit_memory(std::size_t bytes) {
  if (const std::optional<std::size_t> used = data_in_use(); used && *used >= bytes) {
    return "--max-memory " + std::to_string(bytes) + " is below what the worker already uses (" + std::to_string(*used) +
           " bytes of data); give it room for its requests too";
  }
  const rlimit limit{bytes, bytes};
  if (::setrlimit(RLIMIT_DATA, &limit) != 0) return std::string("setrlimit(RLIMIT_DATA): ") + std::strerror(errno);
  return {};
}

// The worker: the child of the keeper, which runs OCaml.
int run_worker(int argc, char** argv, const Arguments& arguments) {
  const camlbeam::port::PortOptions& options = arguments.port;
  if (!isolate_protocol_fds(options.in_fd, options.out_fd)) {
    report("cannot set up the standard file descriptors");
    return exit_internal;
  }
  // Erlang closing its end while a reply is written is an EPIPE to handle, not a signal.
  std::signal(SIGPIPE, SIG_IGN);
  try {
    camlbeam::host::Runtime runtime(argc, argv);
    camlbeam::port::PortWorker worker(runtime, options);
    if (arguments.max_memory) {
      if (const std::string why = limit_memory(*arguments.max_memory); !why.empty()) {
        report(why);
        return exit_usage;
      }
    }
    worker.run();
    return exit_ok;
  } catch (const camlbeam::port::ProtocolError& e) {
    report(std::string("protocol error: ") + e.what());
    return exit_protocol;
  } catch (const std::bad_alloc&) {
    // Outside any request's conversions (those are answered): a request frame, or a batch
    // of replies, larger than the memory left (--max-memory).
    report("out of memory while reading or writing frames");
    return exit_internal;
  } catch (const std::exception& e) {
    report(e.what());
    return exit_internal;
  }
}

}  // namespace

int main(int argc, char** argv) {
  Arguments arguments;
  if (const std::optional<int> exit_now = parse_arguments(argc, argv, arguments)) return *exit_now;
  const camlbeam::port::PortOptions& options = arguments.port;
  if (!is_open(options.in_fd) || !is_open(options.out_fd)) {
    report("file descriptors 3 and 4 are not open: this program is started by the Erlang application camlbeam "
           "(open_port with nouse_stdio), not by hand; try camlbeam-call to run an export from a shell");
    return exit_usage;
  }
  try {
    const camlbeam::port::KeeperOptions keeper{
        .in_fd = options.in_fd, .out_fd = options.out_fd, .hang_up_grace = grace_from_environment()};
    if (const std::optional<int> keeper_status = camlbeam::port::fork_worker_under_keeper(keeper)) return *keeper_status;
  } catch (const std::exception& e) {
    report(std::string("cannot start the worker under its keeper: ") + e.what());
    return exit_internal;
  }
  return run_worker(argc, argv, arguments);
}
