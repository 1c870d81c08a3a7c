// Host names to IPv4 addresses, off the network thread: getaddrinfo(3) blocks for as long as
// the system's resolver takes (a DNS server that does not answer: several seconds), and the
// Endpoint's loop must keep ticking meanwhile. One thread, started at the first lookup,
// answers lookups in order through a callback; the Endpoint bounds each by its setup time
// and ignores an answer that comes after it. A host whose DNS does not answer delays the
// lookups queued behind it (they may miss their setup time); a lookup whose time is up
// before it begins is dropped. The thread holds only shared state: destroying
// the Resolver never waits for a lookup in progress (that lookup's answer goes nowhere).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

namespace camlbeam::dist {

// The dotted IPv4 address in `host` (an IPv4 literal), else nothing.
std::optional<std::string> ipv4_literal(const std::string& host);

class Resolver {
 public:
  struct Answer {
    std::uint64_t id = 0;
    std::string host;
    std::optional<std::string> address;  // dotted IPv4; none when the host resolves to none
    std::string failure;                 // why not: gai_strerror's text
  };
  // Called on the resolver's thread, once per lookup, never after the Resolver is gone.
  using Callback = std::function<void(Answer)>;

  explicit Resolver(Callback callback);
  ~Resolver();
  Resolver(const Resolver&) = delete;
  Resolver& operator=(const Resolver&) = delete;

  // Queues a lookup of `host`; its answer carries `id`. One not begun by `deadline` is
  // dropped unanswered (its caller has given up). Throws std::system_error when the thread
  // cannot be started.
  void lookup(std::uint64_t id, std::string host, std::chrono::steady_clock::time_point deadline);

  // The first IPv4 address of `host`, blocking (the resolver's thread, and tests).
  static Answer resolve(std::uint64_t id, const std::string& host);

 private:
  struct Shared;
  static void serve(const std::shared_ptr<Shared>& shared);
  std::shared_ptr<Shared> shared_;
};

}  // namespace camlbeam::dist
