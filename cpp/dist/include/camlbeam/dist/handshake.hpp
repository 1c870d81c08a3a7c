// The version-6 distribution handshake (OTP 23+, erl_dist_protocol "Distribution
// Handshake") in both roles, as I/O-free state machines: feed() them the bytes read from
// the peer, write what take_output() returns. They do the 2-byte packet framing of the
// handshake themselves; bytes after the last handshake message (the first 4-byte frames)
// are handed back by take_leftover(). No sockets, no clocks, no OCaml: the caller owns the
// transport and the deadline, and the tests and the fuzzer feed them crafted bytes.
#pragma once

#include <camlbeam/dist/digest.hpp>
#include <camlbeam/dist/error.hpp>
#include <camlbeam/dist/flags.hpp>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace camlbeam::dist {

// The longest node name accepted: an atom holds at most 255 characters, 4 bytes each in
// UTF-8.
inline constexpr std::size_t max_node_name = 255 * 4;
// The longest handshake packet accepted: a challenge ('N', flags, challenge, creation,
// name length, name) with the longest name, rounded up. A longer declared length fails at
// once, before its bytes are awaited.
inline constexpr std::size_t max_handshake_packet = 1 + 8 + 4 + 4 + 2 + max_node_name + 32;

// alive@host, both parts non-empty, exactly one '@', no control characters, at most
// max_node_name bytes.
bool valid_node_name(std::string_view name) noexcept;

// The statuses an acceptor sends after the name ("named:" only answers NAME_ME, which we
// refuse).
enum class Status : std::uint8_t { ok, ok_simultaneous, nok, not_allowed, alive };
std::string_view to_string(Status status) noexcept;

struct PeerInfo {
  std::string name;             // alive@host
  std::uint64_t flags = 0;      // as sent, mandatory_25_digest expanded
  std::uint32_t creation = 0;
};

struct HandshakeConfig {
  std::string node_name;                    // ours: alive@host
  std::string cookie;
  std::uint64_t flags = flag::offered;      // what we offer (`& ~flag::published`: hidden)
  std::uint64_t required_flags = flag::required;  // what the peer must offer
  std::uint32_t creation = 0;               // from EPMD's ALIVE2_X_RESP
  std::uint32_t challenge = 0;              // ours: random_challenge(), fixed in tests
  std::string peer_name;                    // initiator: the node called; its challenge must name it
  // Acceptor: the status to answer a well-formed name with (the node decides on
  // simultaneous connects); unset: ok.
  std::function<Status(const PeerInfo&)> decide;
  bool continue_if_alive = true;            // initiator: the answer to status "alive"
  // Bytes of each packet's length: 2 over TCP (inet_tcp_dist); 4 over TLS, where OTP's
  // inet_tls_dist runs the handshake on an ssl socket in {packet, 4} mode [seen].
  std::uint8_t length_bytes = 2;
};

class Handshake {
 public:
  enum class Role : std::uint8_t { initiator, acceptor };
  enum class State : std::uint8_t {
    await_status,        // initiator: sent the name
    await_challenge,     // initiator: status ok
    await_ack,           // initiator: sent the challenge reply
    await_name,          // acceptor: nothing received yet
    await_alive_answer,  // acceptor: sent "alive"
    await_reply,         // acceptor: sent the challenge
    connected,
    failed,
  };

  // The initiator's first packet (send_name) is in take_output() at once.
  static Handshake initiator(HandshakeConfig config);
  static Handshake acceptor(HandshakeConfig config);

  // Bytes from the peer, any split. After connected they go to the leftover; after failed
  // they are dropped. A declared length above max_handshake_packet fails at once.
  void feed(std::span<const std::uint8_t> bytes);
  // The peer closed the connection: failed (connection_closed) unless connected.
  void peer_closed();

  // What to send to the peer now (may be empty); the machine forgets it.
  std::vector<std::uint8_t> take_output();
  // Bytes that came after the handshake, for the 4-byte framing.
  std::vector<std::uint8_t> take_leftover();

  Role role() const noexcept { return role_; }
  State state() const noexcept { return state_; }
  bool done() const noexcept { return state_ == State::connected || state_ == State::failed; }
  const std::optional<Error>& error() const noexcept { return error_; }
  // Valid once the peer's name (acceptor) or challenge (initiator) has been read.
  const PeerInfo& peer() const noexcept { return peer_; }
  // The flags in force once connected: ours AND the peer's (PUBLISHED only if both).
  std::uint64_t negotiated_flags() const noexcept;

 private:
  Handshake(Role role, HandshakeConfig config);
  void on_packet(std::span<const std::uint8_t> packet);
  void on_status(std::span<const std::uint8_t> packet);
  void on_challenge(std::span<const std::uint8_t> packet);
  void on_ack(std::span<const std::uint8_t> packet);
  void on_name(std::span<const std::uint8_t> packet);
  void on_alive_answer(std::span<const std::uint8_t> packet);
  void on_reply(std::span<const std::uint8_t> packet);
  // Whether the packet has this tag (and, if exact_size is not 0, that size); fails if not.
  bool expect(std::span<const std::uint8_t> packet, std::uint8_t tag, std::string_view what, std::size_t exact_size = 0);
  void send_challenge();
  void send_packet(std::span<const std::uint8_t> body);
  void send_status(Status status);
  void fail(Errc code, std::string detail);

  Role role_;
  State state_;
  HandshakeConfig config_;
  PeerInfo peer_;
  std::optional<Error> error_;
  std::vector<std::uint8_t> input_;     // bytes fed and not yet handled (one partial packet between feeds)
  std::vector<std::uint8_t> output_;
  std::vector<std::uint8_t> leftover_;
};

std::string_view to_string(Handshake::State state) noexcept;

}  // namespace camlbeam::dist
