// The handshake machines driven over a Socket, and the connected phase of this first
// layer: 4-byte frames read and counted, ticks sent and the peer's silence watched.
// Control messages are not interpreted here (the layer above does that).
#pragma once

#include <camlbeam/dist/epmd.hpp>
#include <camlbeam/dist/framing.hpp>
#include <camlbeam/dist/handshake.hpp>
#include <camlbeam/dist/socket.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

namespace camlbeam::dist {

struct Connected {
  Socket socket;
  PeerInfo peer;
  std::uint64_t flags = 0;              // negotiated
  std::vector<std::uint8_t> leftover;   // first bytes of the 4-byte framing, if any
};

// Runs `handshake` over `socket` until connected, or throws the machine's error (or the
// transport's) as a DistError; the socket is closed then.
Connected run_handshake(Socket socket, Handshake& handshake, Clock::time_point deadline);

// Looks `peer` (alive@host; the host part is not resolved: EPMD is `epmd`'s) up and runs
// the initiator's handshake. config.peer_name is set to `peer`.
Connected connect_node(const std::string& peer, HandshakeConfig config, EpmdClient& epmd, Clock::time_point deadline,
                       const std::string& address = "127.0.0.1");

// The connected phase, as far as this layer goes.
class Link {
 public:
  struct Options {
    std::chrono::milliseconds tick_interval{15000};    // net_ticktime / 4 of the default 60 s
    std::chrono::milliseconds silence_limit{60000};    // peer_silent past this
    std::size_t max_frame = default_max_frame;
  };
  struct Stats {
    std::uint64_t ticks_received = 0;
    std::uint64_t frames_received = 0;
    std::uint64_t ticks_sent = 0;
  };

  Link(Connected connected, Options options);

  // Reads and ticks until `until`; each data frame goes to on_frame (if any). Throws
  // DistError: connection_closed, peer_silent, frame_too_long, socket_error.
  void serve_until(Clock::time_point until,
                   const std::function<void(std::span<const std::uint8_t>)>& on_frame = {});
  void send_frame(std::span<const std::uint8_t> body, Clock::time_point deadline);

  const Stats& stats() const noexcept { return stats_; }
  const PeerInfo& peer() const noexcept { return peer_; }
  std::uint64_t flags() const noexcept { return flags_; }
  void close() noexcept { socket_.close(); }

 private:
  void drain(const std::function<void(std::span<const std::uint8_t>)>& on_frame);

  Socket socket_;
  PeerInfo peer_;
  std::uint64_t flags_;
  Options options_;
  FrameReader reader_;
  Stats stats_;
  Clock::time_point last_read_;
  Clock::time_point last_write_;
};

}  // namespace camlbeam::dist
