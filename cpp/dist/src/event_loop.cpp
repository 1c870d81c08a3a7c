#include <camlbeam/dist/event_loop.hpp>

#include <cerrno>
#include <algorithm>
#include <cstring>
#include <string>

#include <sys/eventfd.h>
#include <unistd.h>

namespace camlbeam::dist {

namespace {

[[noreturn]] void throw_errno(const char* what) { throw DistError(Errc::socket_error, std::string(what) + ": " + std::strerror(errno)); }

}  // namespace

EventFd::EventFd() : fd_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {
  if (!fd_) throw_errno("eventfd");
}

void EventFd::signal() noexcept {
  const std::uint64_t one = 1;
  // Only fails when the counter would overflow, and then it is readable anyway.
  [[maybe_unused]] const auto n = ::write(fd_.get(), &one, sizeof one);
}

void EventFd::clear() noexcept {
  std::uint64_t value = 0;
  [[maybe_unused]] const auto n = ::read(fd_.get(), &value, sizeof value);
}

Epoll::Epoll() : fd_(::epoll_create1(EPOLL_CLOEXEC)) {
  if (!fd_) throw_errno("epoll_create1");
}

void Epoll::add(int fd, std::uint32_t events, std::uint64_t key) {
  epoll_event e{};
  e.events = events;
  e.data.u64 = key;
  if (::epoll_ctl(fd_.get(), EPOLL_CTL_ADD, fd, &e) != 0) throw_errno("epoll_ctl add");
}

void Epoll::modify(int fd, std::uint32_t events, std::uint64_t key) {
  epoll_event e{};
  e.events = events;
  e.data.u64 = key;
  if (::epoll_ctl(fd_.get(), EPOLL_CTL_MOD, fd, &e) != 0) throw_errno("epoll_ctl mod");
}

void Epoll::remove(int fd) noexcept { ::epoll_ctl(fd_.get(), EPOLL_CTL_DEL, fd, nullptr); }

std::span<epoll_event> Epoll::wait(std::span<epoll_event> events, std::chrono::milliseconds timeout) {
  const auto ms = static_cast<int>(std::clamp<long long>(timeout.count(), 0, 60'000));
  const int n = ::epoll_wait(fd_.get(), events.data(), static_cast<int>(events.size()), ms);
  if (n < 0) {
    if (errno == EINTR) return {};
    throw_errno("epoll_wait");
  }
  return events.first(static_cast<std::size_t>(n));
}

}  // namespace camlbeam::dist
