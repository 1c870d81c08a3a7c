// Test support shared by the live tests: `erl -sname` nodes on loopback, each in a process
// group of its own that is killed (SIGKILL) when the object goes.
#pragma once

#include <camlbeam/dist/socket.hpp>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <stdexcept>
#include <string>
#include <vector>

extern char** environ;

namespace camlbeam::dist::test_support {

inline std::string short_host() {
  char buffer[256] = {};
  ::gethostname(buffer, sizeof buffer - 1);
  std::string host(buffer);
  return host.substr(0, host.find('.'));
}

// A name no other run uses at the same time.
inline std::string unique(const std::string& stem) {
  static int counter = 0;
  return stem + "_" + std::to_string(::getpid()) + "_" + std::to_string(++counter);
}

// An `erl` node in a process group of its own, its stdout and stderr on a pipe.
class ErlNode {
 public:
  ErlNode(const std::string& sname, const std::string& node_cookie, const std::string& script) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe");
    read_end_ = fds[0];
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, fds[1], 1);
    posix_spawn_file_actions_adddup2(&actions, fds[1], 2);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
    posix_spawnattr_setpgroup(&attr, 0);
    std::vector<std::string> args{"erl", "-sname", sname, "-setcookie", node_cookie, "-noinput",
                                  "-kernel", "net_ticktime", "4", "-eval", script};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const int rc = ::posix_spawnp(&pid_, "erl", &actions, &attr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
    ::close(fds[1]);
    if (rc != 0) throw std::runtime_error("cannot run erl");
  }
  ~ErlNode() {
    kill_now();
    ::close(read_end_);
  }
  // SIGKILL to the node's process group, and reaped: the node dies without a word.
  void kill_now() {
    if (pid_ <= 0) return;
    ::kill(-pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  ErlNode(const ErlNode&) = delete;
  ErlNode& operator=(const ErlNode&) = delete;

  // Waits for a line holding `text`; false at the deadline or when the node's output ends.
  bool wait_for(const std::string& text, std::chrono::milliseconds within) {
    const auto deadline = Clock::now() + within;
    for (;;) {
      for (std::size_t end; (end = pending_.find('\n')) != std::string::npos;) {
        const std::string line = pending_.substr(0, end);
        pending_.erase(0, end + 1);
        seen_ += line + "\n";
        if (line.find(text) != std::string::npos) return true;
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
      if (left <= 0) return false;
      pollfd p{read_end_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left)) <= 0) continue;
      char buffer[1024];
      const ssize_t n = ::read(read_end_, buffer, sizeof buffer);
      if (n <= 0) return false;
      pending_.append(buffer, static_cast<std::size_t>(n));
    }
  }
  const std::string& seen() const { return seen_; }

 private:
  pid_t pid_ = -1;
  int read_end_ = -1;
  std::string pending_;
  std::string seen_;
};

}  // namespace camlbeam::dist::test_support
