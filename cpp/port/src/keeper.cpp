#include "keeper.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace camlbeam::port {

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

void say(const std::string& message) {
  std::fprintf(stderr, "camlbeam-port keeper[%d]: %s\n", static_cast<int>(::getpid()), message.c_str());
}

[[noreturn]] void fail(const char* what) { throw std::system_error(errno, std::generic_category(), what); }

// The whole of a small /proc file, or nothing.
std::optional<std::string> read_small_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  std::string text;
  char chunk[4096];
  for (;;) {
    const ssize_t n = ::read(fd, chunk, sizeof chunk);
    if (n > 0) {
      text.append(chunk, static_cast<std::size_t>(n));
    } else if (n == 0 || errno != EINTR) {
      break;
    }
  }
  ::close(fd);
  return text;
}

std::vector<pid_t> pids_in(std::string_view text) {
  std::vector<pid_t> pids;
  const char* p = text.data();
  const char* end = p + text.size();
  while (p < end) {
    pid_t pid = 0;
    const auto [stop, error] = std::from_chars(p, end, pid);
    if (error == std::errc{}) pids.push_back(pid);
    p = stop == p ? p + 1 : stop;
  }
  return pids;
}

// The keeper's children: /proc/self/task/<tid>/children (the keeper has one thread), or,
// on a kernel without it (CONFIG_PROC_CHILDREN), every process whose parent it is.
std::vector<pid_t> children() {
  const pid_t self = ::getpid();
  if (const auto listed = read_small_file("/proc/self/task/" + std::to_string(self) + "/children")) return pids_in(*listed);
  std::vector<pid_t> found;
  DIR* proc = ::opendir("/proc");
  if (proc == nullptr) return found;
  while (const dirent* entry = ::readdir(proc)) {
    pid_t pid = 0;
    const std::string_view name(entry->d_name);
    if (std::from_chars(name.data(), name.data() + name.size(), pid).ec != std::errc{}) continue;
    const auto stat = read_small_file("/proc/" + std::string(name) + "/stat");
    if (!stat) continue;
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    const std::size_t close = stat->rfind(')');
    if (close == std::string::npos || close + 4 >= stat->size()) continue;
    pid_t parent = 0;
    const char* at = stat->data() + close + 4;
    if (std::from_chars(at, stat->data() + stat->size(), parent).ec == std::errc{} && parent == self) found.push_back(pid);
  }
  ::closedir(proc);
  return found;
}

// What Erlang's {exit_status, N} says: the exit code, or 128 + the signal.
int status_of(const siginfo_t& info) { return info.si_code == CLD_EXITED ? info.si_status : 128 + info.si_status; }

class Keeper {
 public:
  Keeper(pid_t worker, int signals, const KeeperOptions& options) : worker_(worker), signals_(signals), options_(options) {}

  int run() {
    std::optional<Clock::time_point> kill_at;  // set when Erlang hangs up
    int asked_to_end = 0;                     // SIGTERM, SIGINT or SIGHUP to the keeper
    while (!worker_exited() && asked_to_end == 0) {
      int timeout = -1;
      if (kill_at) {
        // Rounded up: truncated, the last fraction of a millisecond read as 0 and the worker
        // was killed before its grace was over (199.9 ms of 200, seen in CI).
        const auto left = std::chrono::ceil<milliseconds>(*kill_at - Clock::now()).count();
        if (left <= 0) {
          say("Erlang closed the port and the worker did not exit within " +
              std::to_string(options_.hang_up_grace.count()) + " ms; killing it");
          break;
        }
        timeout = static_cast<int>(left);
      }
      // A pipe whose writers are all gone polls POLLHUP whatever the events asked for.
      pollfd fds[2] = {{signals_, POLLIN, 0}, {options_.in_fd, 0, 0}};
      const int ready = ::poll(fds, kill_at ? 1 : 2, timeout);
      if (ready < 0 && errno != EINTR) {
        say(std::string("poll failed: ") + std::strerror(errno) + "; ending the worker");
        break;
      }
      if (ready <= 0) continue;
      if ((fds[0].revents & POLLIN) != 0) asked_to_end = drain_signals();
      if (!kill_at && (fds[1].revents & (POLLHUP | POLLERR | POLLNVAL)) != 0) {
        kill_at = Clock::now() + options_.hang_up_grace;
      }
      reap_others();
    }
    sweep();
    if (asked_to_end != 0) {
      // End as the signal would have ended the keeper, now that nothing is left behind.
      ::signal(asked_to_end, SIG_DFL);
      sigset_t one;
      ::sigemptyset(&one);
      ::sigaddset(&one, asked_to_end);
      ::sigprocmask(SIG_UNBLOCK, &one, nullptr);
      ::raise(asked_to_end);
      return 128 + asked_to_end;
    }
    return worker_status_.value_or(128 + SIGKILL);
  }

 private:
  // True once the worker has exited. Its zombie is not reaped until the sweep is over: its
  // pid is also its process group's id, which then cannot be reused by another process
  // while the keeper kills that group.
  bool worker_exited() {
    if (worker_status_) return true;
    siginfo_t info{};
    if (::waitid(P_PID, static_cast<id_t>(worker_), &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid == worker_) {
      worker_status_ = status_of(info);
    }
    return worker_status_.has_value();
  }

  std::vector<pid_t> others() {
    std::vector<pid_t> pids = children();
    std::erase(pids, worker_);
    return pids;
  }

  // Orphans of the worker's (a plugin's forks) are reparented to the keeper, the subreaper:
  // it reaps them as they exit.
  void reap_others() {
    for (const pid_t pid : others()) ::waitpid(pid, nullptr, WNOHANG);
  }

  // The signal that asks the keeper to end, if one came; SIGCHLDs are only read.
  int drain_signals() {
    int ending = 0;
    signalfd_siginfo info{};
    while (::read(signals_, &info, sizeof info) == static_cast<ssize_t>(sizeof info)) {
      if (info.ssi_signo != SIGCHLD) ending = static_cast<int>(info.ssi_signo);
    }
    return ending;
  }

  // Kills the worker's process group and every child of the keeper (orphans a plugin made,
  // a setsid'ed one too, reparented here when their parent died), reaps them, and again,
  // until only the worker's zombie is left, or the time is up.
  void sweep() {
    const Clock::time_point give_up = Clock::now() + options_.sweep_limit;
    for (;;) {
      ::kill(-worker_, SIGKILL);
      for (const pid_t pid : others()) ::kill(pid, SIGKILL);
      reap_others();
      if (worker_exited() && others().empty()) break;
      if (Clock::now() >= give_up) {
        say("processes the worker started are still there after " + std::to_string(options_.sweep_limit.count()) +
            " ms of SIGKILL; leaving them");
        break;
      }
      pollfd child_exited{signals_, POLLIN, 0};
      if (::poll(&child_exited, 1, 10) > 0) drain_signals();
    }
    ::waitpid(worker_, nullptr, WNOHANG);
  }

  pid_t worker_;
  int signals_;
  KeeperOptions options_;
  std::optional<int> worker_status_;
};

}  // namespace

std::optional<int> fork_worker_under_keeper(const KeeperOptions& options) {
  // Blocked before the fork, so that no SIGCHLD is lost; read through a signalfd.
  sigset_t handled;
  ::sigemptyset(&handled);
  for (const int signal : {SIGCHLD, SIGTERM, SIGINT, SIGHUP}) ::sigaddset(&handled, signal);
  sigset_t before;
  ::sigprocmask(SIG_BLOCK, &handled, &before);
  const int signals = ::signalfd(-1, &handled, SFD_CLOEXEC | SFD_NONBLOCK);
  if (signals < 0) {
    ::sigprocmask(SIG_SETMASK, &before, nullptr);
    fail("signalfd");
  }
  // Orphans of the worker's descendants become the keeper's children, not init's.
  if (::prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) {
    ::close(signals);
    ::sigprocmask(SIG_SETMASK, &before, nullptr);
    fail("prctl(PR_SET_CHILD_SUBREAPER)");
  }
  const pid_t keeper = ::getpid();
  const pid_t worker = ::fork();
  if (worker < 0) {
    ::close(signals);
    ::sigprocmask(SIG_SETMASK, &before, nullptr);
    fail("fork");
  }
  if (worker == 0) {
    ::close(signals);
    ::sigprocmask(SIG_SETMASK, &before, nullptr);
    // A group of its own: the keeper kills it whole. SIGKILL if the keeper dies (Erlang
    // killed it, say); if it died before this line, the worker has no one to answer to.
    ::setpgid(0, 0);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != keeper) ::_exit(128 + SIGKILL);
    return std::nullopt;
  }
  ::setpgid(worker, worker);  // as the worker does: whichever runs first
  ::close(options.out_fd);
  return Keeper(worker, signals, options).run();
}

}  // namespace camlbeam::port
