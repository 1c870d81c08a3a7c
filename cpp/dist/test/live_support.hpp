// What the live tests share: `erl -sname` nodes run in a process group of their own and
// killed with it, unique node names, our handshake configuration, fast ticks.
#pragma once

#include <camlbeam/dist/connection.hpp>
#include <camlbeam/dist/digest.hpp>
#include <camlbeam/dist/epmd.hpp>

#include <gtest/gtest.h>

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

namespace camlbeam::dist::live {

using namespace std::chrono_literals;

inline const char* const cookie = "camlbeam_dist_cookie";

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
  // `extra`: more of erl's flags, before -eval (-proto_dist inet_tls, say).
  ErlNode(const std::string& sname, const std::string& node_cookie, const std::string& script,
          const std::vector<std::string>& extra = {}) {
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
                                  "-kernel", "net_ticktime", "4"};
    args.insert(args.end(), extra.begin(), extra.end());
    args.insert(args.end(), {"-eval", script});
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

inline HandshakeConfig our_config(const std::string& node, const std::string& our_cookie, std::uint32_t creation = 1) {
  HandshakeConfig c;
  c.node_name = node;
  c.cookie = our_cookie;
  c.creation = creation;
  c.challenge = random_challenge();
  return c;
}

inline Link::Options fast_ticks() {
  Link::Options o;
  o.tick_interval = 1s;  // the erl nodes run with net_ticktime 4: they tick every second
  o.silence_limit = 8s;  // twice OTP's: a loaded machine must not fail the test by a late tick
  return o;
}

// A node of ours for an erl node to call: a fresh name registered in EPMD, a loopback
// listener behind it, and the acceptor's handshake.
struct OurAcceptor {
  OurAcceptor(EpmdClient& epmd, const std::string& stem)
      : alive(unique(stem)), name(alive + "@" + short_host()), registration(epmd.register_node(alive, listener.port())) {}

  // Accepts one node and runs the handshake; throws DistError.
  Connected accept() {
    Handshake hs = Handshake::acceptor(our_config(name, cookie, registration.creation()));
    return run_handshake(listener.accept(after(20s)), hs, after(10s));
  }

  std::string alive;
  std::string name;  // alive@host
  Listener listener = Listener::loopback();
  Registration registration;
};

// The live tests' fixture: an epmd on loopback (started when none answers), a client of it.
class LiveTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { ensure_local_epmd(); }
  EpmdClient epmd;
  const std::string host = short_host();
};

}  // namespace camlbeam::dist::live
