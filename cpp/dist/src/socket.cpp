#include <camlbeam/dist/socket.hpp>

#include <arpa/inet.h>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <utility>

namespace camlbeam::dist {

namespace {

[[noreturn]] void throw_errno(Errc code, const char* what) {
  throw DistError(code, std::string(what) + ": " + std::strerror(errno));
}

Fd new_socket() {
  Fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) throw_errno(Errc::socket_error, "socket");
  return fd;
}

void set_nodelay(int fd) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  // best effort: latency only
}

// Waits for `events` on fd until the deadline. False on timeout.
bool wait_for(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left < 0) return false;
    pollfd p{fd, events, 0};
    const int timeout = static_cast<int>(std::min<long long>(left, 60'000)) + 1;
    const int rc = ::poll(&p, 1, timeout);
    if (rc > 0) return true;
    if (rc < 0 && errno != EINTR) throw_errno(Errc::socket_error, "poll");
    if (rc == 0 && Clock::now() >= deadline) return false;
  }
}

sockaddr_in ipv4_address(const std::string& ipv4, std::uint16_t port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  if (::inet_pton(AF_INET, ipv4.c_str(), &addr.sin_addr) != 1) {
    throw DistError(Errc::connect_failed, "not an IPv4 address: '" + ipv4 + "'");
  }
  return addr;
}

}  // namespace

Fd& Fd::operator=(Fd&& other) noexcept {
  if (this != &other) {
    reset();
    fd_ = other.release();
  }
  return *this;
}

int Fd::release() noexcept { return std::exchange(fd_, -1); }

void Fd::reset() noexcept {
  if (fd_ >= 0) ::close(std::exchange(fd_, -1));
}

Socket Socket::connect(const std::string& ipv4, std::uint16_t port, Clock::time_point deadline) {
  Socket socket = start_connect(ipv4, port);
  if (!wait_for(socket.native_handle(), POLLOUT, deadline)) {
    throw DistError(Errc::timeout, "connect " + ipv4 + ":" + std::to_string(port));
  }
  try {
    socket.finish_connect();
  } catch (const DistError& e) {
    throw DistError(e.code(), "connect " + ipv4 + ":" + std::to_string(port) + ": " + e.error().detail);
  }
  return socket;
}

Socket Socket::start_connect(const std::string& ipv4, std::uint16_t port) {
  const sockaddr_in addr = ipv4_address(ipv4, port);
  Fd fd = new_socket();
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0 && errno != EINPROGRESS) {
    throw_errno(Errc::connect_failed, ("connect " + ipv4 + ":" + std::to_string(port)).c_str());
  }
  set_nodelay(fd.get());
  return Socket(std::move(fd));
}

void Socket::finish_connect() {
  int error = 0;
  socklen_t size = sizeof error;
  if (::getsockopt(fd_.get(), SOL_SOCKET, SO_ERROR, &error, &size) != 0) throw_errno(Errc::socket_error, "getsockopt");
  if (error != 0) throw DistError(Errc::connect_failed, std::strerror(error));
}

std::optional<std::size_t> Socket::try_read(std::span<std::uint8_t> buffer) {
  if (!fd_) throw DistError(Errc::bad_state, "read on a closed socket");
  for (;;) {
    const ssize_t n = ::recv(fd_.get(), buffer.data(), buffer.size(), 0);
    if (n >= 0) return static_cast<std::size_t>(n);
    if (errno == EINTR) continue;
    if (errno == ECONNRESET) return 0;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return std::nullopt;
    throw_errno(Errc::socket_error, "recv");
  }
}

std::size_t Socket::try_write(std::span<const std::uint8_t> bytes) {
  if (!fd_) throw DistError(Errc::bad_state, "write on a closed socket");
  for (;;) {
    const ssize_t n = ::send(fd_.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n >= 0) return static_cast<std::size_t>(n);
    if (errno == EINTR) continue;
    if (errno == EPIPE || errno == ECONNRESET) throw DistError(Errc::connection_closed, "while writing");
    if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
    throw_errno(Errc::socket_error, "send");
  }
}

bool Socket::wait_readable(Clock::time_point deadline) { return wait_for(fd_.get(), POLLIN, deadline); }

std::size_t Socket::read_some(std::span<std::uint8_t> buffer, Clock::time_point deadline) {
  for (;;) {
    if (const auto n = try_read(buffer)) return *n;
    if (!wait_for(fd_.get(), POLLIN, deadline)) throw DistError(Errc::timeout, "waiting for the peer");
  }
}

void Socket::read_exact(std::span<std::uint8_t> buffer, Clock::time_point deadline) {
  std::size_t got = 0;
  while (got < buffer.size()) {
    const std::size_t n = read_some(buffer.subspan(got), deadline);
    if (n == 0) {
      throw DistError(Errc::connection_closed,
                      "after " + std::to_string(got) + " of " + std::to_string(buffer.size()) + " bytes");
    }
    got += n;
  }
}

std::vector<std::uint8_t> Socket::read_to_end(std::size_t max, Clock::time_point deadline) {
  std::vector<std::uint8_t> out;
  std::uint8_t chunk[4096];
  for (;;) {
    const std::size_t n = read_some(chunk, deadline);
    if (n == 0) return out;
    if (out.size() + n > max) throw DistError(Errc::epmd_bad_reply, "reply over " + std::to_string(max) + " bytes");
    out.insert(out.end(), chunk, chunk + n);
  }
}

void Socket::write_all(std::span<const std::uint8_t> bytes, Clock::time_point deadline) {
  std::size_t sent = 0;
  while (sent < bytes.size()) {
    const std::size_t n = try_write(bytes.subspan(sent));
    sent += n;
    if (n == 0 && !wait_for(fd_.get(), POLLOUT, deadline)) throw DistError(Errc::timeout, "writing to the peer");
  }
}

Listener Listener::loopback(std::uint16_t port) { return bind("127.0.0.1", port); }

Listener Listener::bind(const std::string& ipv4, std::uint16_t port) {
  Listener l;
  l.fd_ = new_socket();
  int one = 1;
  ::setsockopt(l.fd_.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  const sockaddr_in addr = ipv4_address(ipv4, port);
  if (::bind(l.fd_.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) throw_errno(Errc::socket_error, "bind");
  if (::listen(l.fd_.get(), 16) != 0) throw_errno(Errc::socket_error, "listen");
  sockaddr_in bound{};
  socklen_t size = sizeof bound;
  if (::getsockname(l.fd_.get(), reinterpret_cast<sockaddr*>(&bound), &size) != 0) {
    throw_errno(Errc::socket_error, "getsockname");
  }
  l.port_ = ntohs(bound.sin_port);
  return l;
}

Socket Listener::accept(Clock::time_point deadline) {
  for (;;) {
    if (auto socket = try_accept()) return std::move(*socket);
    if (!wait_for(fd_.get(), POLLIN, deadline)) throw DistError(Errc::timeout, "no connection to accept");
  }
}

std::optional<Socket> Listener::try_accept() {
  for (;;) {
    Fd fd(::accept4(fd_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (fd) {
      set_nodelay(fd.get());
      return Socket(std::move(fd));
    }
    if (errno == EINTR || errno == ECONNABORTED) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return std::nullopt;
    throw_errno(Errc::socket_error, "accept");
  }
}

}  // namespace camlbeam::dist
