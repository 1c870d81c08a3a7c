// Blocking-style TCP over IPv4 with a deadline on every operation (non-blocking sockets
// and poll underneath). The first layer of cpp/dist; the non-blocking try_ calls serve the
// Endpoint's event loop (endpoint.hpp). Every failure is a DistError with a code.
#pragma once

#include <camlbeam/dist/error.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace camlbeam::dist {

using Clock = std::chrono::steady_clock;

// An owned file descriptor.
class Fd {
 public:
  Fd() noexcept = default;
  explicit Fd(int fd) noexcept : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(other.release()) {}
  Fd& operator=(Fd&& other) noexcept;
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }
  int get() const noexcept { return fd_; }
  int release() noexcept;
  void reset() noexcept;
  explicit operator bool() const noexcept { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

class Socket {
 public:
  Socket() = default;
  explicit Socket(Fd fd) : fd_(std::move(fd)) {}

  // TCP connect to an IPv4 address in dotted form. connect_failed, timeout.
  static Socket connect(const std::string& ipv4, std::uint16_t port, Clock::time_point deadline);

  // Some bytes (at least one) into `buffer`; 0 when the peer closed. timeout, socket_error.
  std::size_t read_some(std::span<std::uint8_t> buffer, Clock::time_point deadline);
  // Exactly buffer.size() bytes. connection_closed, timeout.
  void read_exact(std::span<std::uint8_t> buffer, Clock::time_point deadline);
  // Everything until the peer closes, at most `max` bytes (epmd_bad_reply past it).
  std::vector<std::uint8_t> read_to_end(std::size_t max, Clock::time_point deadline);
  void write_all(std::span<const std::uint8_t> bytes, Clock::time_point deadline);
  // Whether a read would not block before `deadline` (data or end of stream).
  bool wait_readable(Clock::time_point deadline);

  // For an event loop, which waits itself and must never block in a call:
  // A connect under way; the socket turns writable when it is done, finish_connect() says how.
  static Socket start_connect(const std::string& ipv4, std::uint16_t port);
  // connect_failed with the reason, or nothing when connected.
  void finish_connect();
  // Bytes read (0: the peer closed), nullopt when none are there now. socket_error.
  std::optional<std::size_t> try_read(std::span<std::uint8_t> buffer);
  // Bytes written, 0 when the socket's buffer is full. connection_closed, socket_error.
  std::size_t try_write(std::span<const std::uint8_t> bytes);

  bool is_open() const noexcept { return static_cast<bool>(fd_); }
  void close() noexcept { fd_.reset(); }
  int native_handle() const noexcept { return fd_.get(); }

 private:
  Fd fd_;
};

// A listening socket on 127.0.0.1 (the first layer listens on loopback only).
class Listener {
 public:
  // port 0: the kernel picks one (port() tells which).
  static Listener loopback(std::uint16_t port = 0);
  // On an IPv4 address in dotted form.
  static Listener bind(const std::string& ipv4, std::uint16_t port = 0);
  std::uint16_t port() const noexcept { return port_; }
  // The next connection; timeout when none comes before `deadline`.
  Socket accept(Clock::time_point deadline);
  // A pending connection, nullopt when none waits now.
  std::optional<Socket> try_accept();
  int native_handle() const noexcept { return fd_.get(); }

 private:
  Fd fd_;
  std::uint16_t port_ = 0;
};

// Deadline helper: now + d.
inline Clock::time_point after(Clock::duration d) { return Clock::now() + d; }

}  // namespace camlbeam::dist
