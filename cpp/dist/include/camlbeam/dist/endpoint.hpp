// The node's distribution endpoint: one epoll loop owns the listening socket, the EPMD
// registration and every connection (handshakes in both roles, simultaneous-connect
// arbitration as OTP's net_kernel does it, the connected phase with its ticks and silence
// limit). No thread per connection.
//
// The rest of the node (which runs OCaml on its own thread) talks to it through a
// thread-safe interface: it drains events (connected, frame, disconnected) and sends frames
// by peer name. Frames are bytes here: control messages are the layer above.
//
// Who runs the loop: the endpoint's network thread, or, while it waits for events, the
// consumer itself (EndpointOptions::consumer_reads), so that a frame is read by the thread
// that handles it. The network thread takes the loop back once no consumer has run it for
// a few milliseconds, so a long OCaml call never stops ticks.
#pragma once

#include <camlbeam/dist/epmd.hpp>
#include <camlbeam/dist/error.hpp>
#include <camlbeam/dist/flags.hpp>
#include <camlbeam/dist/framing.hpp>
#include <camlbeam/dist/tls.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace camlbeam::dist {

struct EndpointOptions {
  std::string node_name;  // ours: alive@host
  std::string cookie;
  std::uint64_t flags = flag::offered;  // what we offer; without PUBLISHED the node is hidden
  std::string listen_address = "127.0.0.1";
  std::uint16_t listen_port = 0;  // 0: the kernel picks (Endpoint::port() tells which)
  // Registers the alive part and the listening port in EPMD (as hidden without PUBLISHED).
  // Ignored when the caller hands a Registration in.
  bool register_in_epmd = true;
  EpmdEndpoint epmd;  // for the registration and for looking peers up
  std::uint32_t creation = 1;  // when there is no registration to give one
  // Unset, as OTP does: a peer's host part is resolved (an IPv4 literal, or a name, off the
  // network thread), its EPMD asked there for its port, and it called there. Set: every peer
  // is on this address and looked up in `epmd` (one host's loopback, for tests).
  std::optional<std::string> peer_address;
  // OTP's net_ticktime: a tick after net_ticktime/4 without writing; a peer silent for
  // net_ticktime is dropped.
  std::chrono::milliseconds net_ticktime{60'000};
  // OTP's net_setuptime: EPMD lookup, TCP connect and handshake together.
  std::chrono::milliseconds setup_timeout{7'000};
  // Bytes queued for one peer (written or waiting for its connection) past which the
  // connection is dropped rather than grown: a peer that does not read costs a bound.
  std::size_t max_queued_bytes = std::size_t{64} << 20;
  std::size_t max_frame = default_max_frame;  // a longer incoming frame drops its connection
  // Set: every connection, both ways, is TLS first, as OTP's `-proto_dist inet_tls` (EPMD
  // stays plain). A TLS handshake that fails is `refused` (incoming) or `disconnected`
  // (ours) with tls_failed; one that stalls is bounded by setup_timeout like the rest.
  std::shared_ptr<const TlsContext> tls;
  // A thread in wait_event or wait_for_events runs the loop itself while it waits (not with
  // TLS, whose writes the network thread alone makes). Frames then reach it with no hand-off
  // from the network thread, which takes the loop back 2 to 4 ms after the consumer left it
  // (at once when the consumer left bytes unwritten, or when a frame or a connect is posted
  // meanwhile): until then, ticks, timers and incoming frames wait. Off: the network thread
  // alone runs it.
  bool consumer_reads = true;
};

// For one peer, events come in order: connected, its frames in the order they arrived,
// disconnected; a later connection starts again with connected.
struct EndpointEvent {
  enum class Kind : std::uint8_t {
    connected,     // peer, flags (negotiated), creation
    frame,         // peer, body (a whole frame; ticks are not reported)
    disconnected,  // peer, error: a connection went down, or an attempt to connect failed
                   // (then the frames queued for it are dropped)
    failed,        // error: the loop stopped on an unexpected error (out of memory, epoll
                   // failing); nothing moves any more: destroy the Endpoint
    refused,       // peer (the name it gave, or empty), error: an incoming connection's
                   // handshake failed (a wrong cookie, bytes that are no handshake, a
                   // stall); nothing it sent was acted upon. A caller that only hangs up
                   // is not reported
  };
  Kind kind = Kind::failed;
  std::string peer;
  std::vector<std::uint8_t> body;
  std::uint64_t flags = 0;
  std::uint32_t creation = 0;
  Error error;
};

class Endpoint {
 public:
  struct Stats {
    std::uint64_t ticks_sent = 0;
    std::uint64_t ticks_received = 0;
    std::uint64_t frames_received = 0;
    std::uint64_t frames_sent = 0;
    std::uint64_t accepted = 0;           // TCP connections accepted
    std::uint64_t handshakes_failed = 0;  // both roles, arbitration losses included
  };

  // Binds the listener, registers in EPMD if asked (blocking, bounded by epmd.timeout) and
  // starts the network thread. Throws DistError (bad_name, socket_error, epmd_*).
  explicit Endpoint(EndpointOptions options);
  // With a registration the caller made (for options.listen_port, which must not be 0).
  Endpoint(EndpointOptions options, Registration registration);
  // Stops the thread and closes everything (no events are reported for that). No other
  // thread may be in wait_event or wait_for_events meanwhile.
  ~Endpoint();
  Endpoint(const Endpoint&) = delete;
  Endpoint& operator=(const Endpoint&) = delete;

  const std::string& node_name() const noexcept;
  std::uint16_t port() const noexcept;
  std::uint32_t creation() const noexcept;

  // From any thread; none blocks on the network. A peer name that is not alive@host throws
  // DistError(bad_name); so does our own name.
  // Queues a frame body; connects first if there is no connection (as OTP does), the
  // frames waiting until it is up or dropped with a `disconnected` event. Past
  // max_queued_bytes for the peer, its connection (or attempt) goes: send_queue_full.
  void send(std::string_view peer, std::vector<std::uint8_t> body);
  // The same, the bytes copied only if they must wait (a frame written at once is not).
  void send(std::string_view peer, std::span<const std::uint8_t> body);
  // Starts a call unless a connection (or an attempt, ours or the peer's) exists already.
  void connect(std::string_view peer);
  // Drops the connection (or the attempt): `disconnected` with closed_locally. Nothing for
  // a peer we have nothing with.
  void disconnect(std::string_view peer);

  // The next event if there is one.
  std::optional<EndpointEvent> poll_event();
  // Waits at most `timeout` for the next event (running the loop meanwhile: consumer_reads).
  std::optional<EndpointEvent> wait_event(std::chrono::milliseconds timeout);
  // Waits at most `timeout` until an event is queued, taking none: true if one is.
  bool wait_for_events(std::chrono::milliseconds timeout);
  // Readable while events are queued: for a consumer that polls other things too.
  int event_fd() const noexcept;

  // Peers with a connection up now (a snapshot).
  std::vector<std::string> connected_peers() const;
  Stats stats() const noexcept;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace camlbeam::dist
