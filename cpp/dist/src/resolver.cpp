#include "resolver.hpp"

#include <arpa/inet.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

namespace camlbeam::dist {

std::optional<std::string> ipv4_literal(const std::string& host) {
  in_addr parsed{};
  if (::inet_pton(AF_INET, host.c_str(), &parsed) != 1) return std::nullopt;
  return host;
}

struct Resolver::Shared {
  std::mutex mutex;
  std::condition_variable wanted;
  struct Lookup {
    std::uint64_t id;
    std::string host;
    std::chrono::steady_clock::time_point deadline;
  };
  std::deque<Lookup> queue;
  Callback callback;  // emptied when the Resolver goes
  bool thread_started = false;
};

Resolver::Resolver(Callback callback) : shared_(std::make_shared<Shared>()) {
  shared_->callback = std::move(callback);
}

Resolver::~Resolver() {
  {
    const std::lock_guard lock(shared_->mutex);
    shared_->callback = nullptr;
    shared_->queue.clear();
  }
  shared_->wanted.notify_all();
}

void Resolver::lookup(std::uint64_t id, std::string host, std::chrono::steady_clock::time_point deadline) {
  {
    const std::lock_guard lock(shared_->mutex);
    if (!shared_->thread_started) {
      // Detached, holding the shared state only: it ends once the Resolver is gone and its
      // lookup in progress (if any) has returned. Started by whichever thread runs the
      // endpoint's loop (a consumer's, whose signals are its own): with every signal
      // blocked, so that none is ever handled on it.
      sigset_t all;
      sigset_t before;
      ::sigfillset(&all);
      ::pthread_sigmask(SIG_SETMASK, &all, &before);  // inherited by the new thread
      try {
        std::thread(&Resolver::serve, shared_).detach();
      } catch (...) {
        ::pthread_sigmask(SIG_SETMASK, &before, nullptr);
        throw;
      }
      ::pthread_sigmask(SIG_SETMASK, &before, nullptr);
      shared_->thread_started = true;
    }
    shared_->queue.push_back({id, std::move(host), deadline});
  }
  shared_->wanted.notify_one();
}

void Resolver::serve(const std::shared_ptr<Shared>& shared) {
  std::unique_lock lock(shared->mutex);
  for (;;) {
    shared->wanted.wait(lock, [&] { return !shared->queue.empty() || !shared->callback; });
    if (!shared->callback) return;
    Shared::Lookup next = std::move(shared->queue.front());
    shared->queue.pop_front();
    if (std::chrono::steady_clock::now() >= next.deadline) continue;
    lock.unlock();
    Answer answer = resolve(next.id, next.host);
    lock.lock();
    // Called under the lock: the Resolver's destructor cannot complete meanwhile. A callback
    // that fails (no memory to post with) loses that answer; its caller's deadline stands.
    try {
      if (shared->callback) shared->callback(std::move(answer));
    } catch (...) {
    }
  }
}

Resolver::Answer Resolver::resolve(std::uint64_t id, const std::string& host) {
  Answer answer{id, host, ipv4_literal(host), {}};
  if (answer.address) return answer;
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const int status = ::getaddrinfo(host.c_str(), nullptr, &hints, &found);
  if (status != 0) {
    answer.failure = ::gai_strerror(status);
    return answer;
  }
  const std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> owned(found, &::freeaddrinfo);
  for (const addrinfo* a = found; a != nullptr; a = a->ai_next) {
    if (a->ai_family != AF_INET || a->ai_addr == nullptr) continue;
    char text[INET_ADDRSTRLEN] = {};
    const auto* in = reinterpret_cast<const sockaddr_in*>(a->ai_addr);
    if (::inet_ntop(AF_INET, &in->sin_addr, text, sizeof text) != nullptr) {
      answer.address = text;
      return answer;
    }
  }
  answer.failure = "no IPv4 address";
  return answer;
}

}  // namespace camlbeam::dist
