// The Linux primitives under the distribution's event loop: an epoll set and an eventfd
// (one thread wakes another, or the loop). Thin RAII wrappers; failures are DistError
// (socket_error with errno's text).
#pragma once

#include <camlbeam/dist/socket.hpp>

#include <chrono>
#include <cstdint>
#include <span>

#include <sys/epoll.h>

namespace camlbeam::dist {

// A counter that makes its descriptor readable while it is not zero (EFD_NONBLOCK).
class EventFd {
 public:
  EventFd();
  // Makes the descriptor readable; safe from any thread, never blocks.
  void signal() noexcept;
  // Makes it unreadable again.
  void clear() noexcept;
  int native_handle() const noexcept { return fd_.get(); }

 private:
  Fd fd_;
};

class Epoll {
 public:
  Epoll();
  // `key` comes back in epoll_event::data.u64.
  void add(int fd, std::uint32_t events, std::uint64_t key);
  void modify(int fd, std::uint32_t events, std::uint64_t key);
  void remove(int fd) noexcept;
  // Ready events, at most events.size(); waits at most `timeout` (EINTR: none ready).
  std::span<epoll_event> wait(std::span<epoll_event> events, std::chrono::milliseconds timeout);

 private:
  Fd fd_;
};

}  // namespace camlbeam::dist
