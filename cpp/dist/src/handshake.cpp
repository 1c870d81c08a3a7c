#include "bytes.hpp"

#include <camlbeam/dist/handshake.hpp>

#include <algorithm>
#include <utility>

namespace camlbeam::dist {

using detail::printable;
using detail::put_bytes;
using detail::put_u16;
using detail::put_u32;
using detail::put_u64;
using detail::put_u8;
using detail::Reader;

namespace {

constexpr std::uint8_t tag_name = 'N';       // send_name and send_challenge (version 6)
constexpr std::uint8_t tag_old_name = 'n';   // version 5: OTP 25+ refuse it, so do we
constexpr std::uint8_t tag_status = 's';
constexpr std::uint8_t tag_reply = 'r';
constexpr std::uint8_t tag_ack = 'a';

std::string hex64(std::uint64_t v) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out = "0x";
  bool started = false;
  for (int shift = 60; shift >= 0; shift -= 4) {
    const auto d = static_cast<unsigned>((v >> shift) & 0xF);
    if (d != 0 || started || shift == 0) {
      out += digits[d];
      started = true;
    }
  }
  return out;
}

std::string_view as_text(std::span<const std::uint8_t> bytes) {
  return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

std::span<const std::uint8_t> as_bytes(std::string_view s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

}  // namespace

namespace detail {

std::string printable(std::span<const std::uint8_t> bytes, std::size_t max) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  for (std::size_t i = 0; i < bytes.size() && i < max; ++i) {
    const std::uint8_t b = bytes[i];
    if (b >= 0x20 && b < 0x7F && b != '\\') {
      out += static_cast<char>(b);
    } else {
      out += "\\x";
      out += digits[b >> 4];
      out += digits[b & 0xF];
    }
  }
  if (bytes.size() > max) out += "...";
  return out;
}

}  // namespace detail

bool valid_node_name(std::string_view name) noexcept {
  if (name.size() < 3 || name.size() > max_node_name) return false;
  const auto at = name.find('@');
  if (at == std::string_view::npos || at == 0 || at + 1 == name.size()) return false;
  if (name.find('@', at + 1) != std::string_view::npos) return false;
  return std::none_of(name.begin(), name.end(), [](char c) {
    const auto b = static_cast<unsigned char>(c);
    return b < 0x20 || b == 0x7F;
  });
}

std::string_view to_string(Status status) noexcept {
  switch (status) {
    case Status::ok: return "ok";
    case Status::ok_simultaneous: return "ok_simultaneous";
    case Status::nok: return "nok";
    case Status::not_allowed: return "not_allowed";
    case Status::alive: return "alive";
  }
  return "nok";
}

std::string_view to_string(Handshake::State state) noexcept {
  switch (state) {
    case Handshake::State::await_status: return "await_status";
    case Handshake::State::await_challenge: return "await_challenge";
    case Handshake::State::await_ack: return "await_ack";
    case Handshake::State::await_name: return "await_name";
    case Handshake::State::await_alive_answer: return "await_alive_answer";
    case Handshake::State::await_reply: return "await_reply";
    case Handshake::State::connected: return "connected";
    case Handshake::State::failed: return "failed";
  }
  return "failed";
}

Handshake::Handshake(Role role, HandshakeConfig config)
    : role_(role),
      state_(role == Role::initiator ? State::await_status : State::await_name),
      config_(std::move(config)) {
  // Our own configuration is checked like a peer's: a name the peer would refuse fails here.
  if (!valid_node_name(config_.node_name)) {
    fail(Errc::bad_name, "own name '" + config_.node_name + "'");
  } else if ((config_.flags & flag::name_me) != 0) {
    fail(Errc::name_me_refused, "NAME_ME in our own flags");
  }
}

Handshake Handshake::initiator(HandshakeConfig config) {
  Handshake hs(Role::initiator, std::move(config));
  if (hs.state_ == State::failed) return hs;
  if (!hs.config_.peer_name.empty() && !valid_node_name(hs.config_.peer_name)) {
    hs.fail(Errc::bad_name, "peer name '" + hs.config_.peer_name + "'");
    return hs;
  }
  // send_name: 'N', flags, creation, name length, name.
  std::vector<std::uint8_t> body;
  put_u8(body, tag_name);
  put_u64(body, hs.config_.flags | flag::handshake_23);
  put_u32(body, hs.config_.creation);
  put_u16(body, static_cast<std::uint16_t>(hs.config_.node_name.size()));
  put_bytes(body, hs.config_.node_name);
  hs.send_packet(body);
  return hs;
}

Handshake Handshake::acceptor(HandshakeConfig config) { return Handshake(Role::acceptor, std::move(config)); }

void Handshake::fail(Errc code, std::string detail) {
  state_ = State::failed;
  error_ = Error{code, std::move(detail)};
  input_.clear();
  leftover_.clear();
}

bool Handshake::expect(std::span<const std::uint8_t> packet, std::uint8_t tag, std::string_view what,
                       std::size_t exact_size) {
  if (packet[0] != tag) {
    fail(Errc::unexpected_message, "expected " + std::string(what) + " '" + static_cast<char>(tag) + "', got '" +
                                       printable(packet.first(1)) + "'");
    return false;
  }
  if (exact_size != 0 && packet.size() != exact_size) {
    fail(Errc::truncated, std::string(what) + " of " + std::to_string(packet.size()) + " bytes, not " +
                              std::to_string(exact_size));
    return false;
  }
  return true;
}

void Handshake::send_packet(std::span<const std::uint8_t> body) {
  if (config_.length_bytes == 4) {
    put_u32(output_, static_cast<std::uint32_t>(body.size()));
  } else {
    put_u16(output_, static_cast<std::uint16_t>(body.size()));
  }
  put_bytes(output_, body);
}

void Handshake::send_status(Status status) {
  std::vector<std::uint8_t> body;
  put_u8(body, tag_status);
  put_bytes(body, to_string(status));
  send_packet(body);
}

std::vector<std::uint8_t> Handshake::take_output() { return std::exchange(output_, {}); }
std::vector<std::uint8_t> Handshake::take_leftover() { return std::exchange(leftover_, {}); }

std::uint64_t Handshake::negotiated_flags() const noexcept {
  return (config_.flags | flag::handshake_23) & peer_.flags;
}

void Handshake::peer_closed() {
  if (!done()) fail(Errc::connection_closed, std::string("in state ") + std::string(to_string(state_)));
}

void Handshake::feed(std::span<const std::uint8_t> bytes) {
  if (state_ == State::failed) return;
  if (state_ == State::connected) {
    put_bytes(leftover_, bytes);
    return;
  }
  put_bytes(input_, bytes);
  std::size_t at = 0;
  const std::size_t prefix = config_.length_bytes == 4 ? 4 : 2;
  while (state_ != State::failed && state_ != State::connected && input_.size() - at >= prefix) {
    std::size_t length = 0;
    for (std::size_t i = 0; i < prefix; ++i) length = (length << 8) | input_[at + i];
    if (length > max_handshake_packet) {
      fail(Errc::frame_too_long, std::to_string(length) + " bytes in state " + std::string(to_string(state_)));
      return;
    }
    if (length == 0) {
      fail(Errc::truncated, "empty handshake packet");
      return;
    }
    if (input_.size() - at - prefix < length) break;
    // The packet is copied out: on_packet may fail, which clears input_.
    const std::vector<std::uint8_t> packet(input_.begin() + static_cast<std::ptrdiff_t>(at + prefix),
                                           input_.begin() + static_cast<std::ptrdiff_t>(at + prefix + length));
    at += prefix + length;
    on_packet(packet);
  }
  if (state_ == State::failed) return;
  if (state_ == State::connected) {
    leftover_.insert(leftover_.end(), input_.begin() + static_cast<std::ptrdiff_t>(at), input_.end());
    input_.clear();
  } else {
    input_.erase(input_.begin(), input_.begin() + static_cast<std::ptrdiff_t>(at));
  }
}

void Handshake::on_packet(std::span<const std::uint8_t> packet) {
  switch (state_) {
    case State::await_status: return on_status(packet);
    case State::await_challenge: return on_challenge(packet);
    case State::await_ack: return on_ack(packet);
    case State::await_name: return on_name(packet);
    case State::await_alive_answer: return on_alive_answer(packet);
    case State::await_reply: return on_reply(packet);
    case State::connected:
    case State::failed: return;
  }
}

// --- initiator -------------------------------------------------------------------------

void Handshake::on_status(std::span<const std::uint8_t> packet) {
  if (!expect(packet, tag_status, "status")) return;
  const std::string_view text = as_text(packet.subspan(1));
  if (text == "ok" || text == "ok_simultaneous") {
    state_ = State::await_challenge;
  } else if (text == "nok") {
    fail(Errc::refused_nok, "");
  } else if (text == "not_allowed") {
    fail(Errc::refused_not_allowed, "");
  } else if (text == "alive") {
    std::vector<std::uint8_t> body;
    put_u8(body, tag_status);
    put_bytes(body, config_.continue_if_alive ? std::string_view("true") : std::string_view("false"));
    send_packet(body);
    if (config_.continue_if_alive) {
      state_ = State::await_challenge;
    } else {
      fail(Errc::refused_alive, "");
    }
  } else if (text.starts_with("named:")) {
    // Only the answer to NAME_ME, which we never send.
    fail(Errc::name_me_refused, "status 'named:' although we did not ask for a name");
  } else {
    fail(Errc::bad_status, "'" + printable(packet.subspan(1)) + "'");
  }
}

void Handshake::on_challenge(std::span<const std::uint8_t> packet) {
  if (!expect(packet, tag_name, "challenge")) return;
  Reader in(packet.subspan(1));
  std::uint64_t flags = 0;
  std::uint32_t challenge = 0;
  std::uint32_t creation = 0;
  std::uint16_t name_length = 0;
  if (!in.u64(flags) || !in.u32(challenge) || !in.u32(creation) || !in.u16(name_length) ||
      !in.text(name_length, peer_.name)) {
    fail(Errc::truncated, "challenge of " + std::to_string(packet.size()) + " bytes");
    return;
  }
  peer_.flags = flag::expand(flags);
  peer_.creation = creation;
  if (!valid_node_name(peer_.name)) {
    fail(Errc::bad_name, "'" + printable(as_bytes(peer_.name)) + "'");
    return;
  }
  if (!config_.peer_name.empty() && peer_.name != config_.peer_name) {
    fail(Errc::wrong_peer, "called " + config_.peer_name + ", answered by " + peer_.name);
    return;
  }
  if ((peer_.flags & config_.required_flags) != config_.required_flags) {
    fail(Errc::missing_flags, "missing " + hex64(config_.required_flags & ~peer_.flags));
    return;
  }
  // challenge_reply: 'r', our challenge, the digest of theirs.
  const Digest digest = gen_digest(challenge, config_.cookie);
  std::vector<std::uint8_t> body;
  put_u8(body, tag_reply);
  put_u32(body, config_.challenge);
  put_bytes(body, digest);
  send_packet(body);
  state_ = State::await_ack;
}

void Handshake::on_ack(std::span<const std::uint8_t> packet) {
  if (!expect(packet, tag_ack, "challenge_ack", 1 + 16)) return;
  const Digest expected = gen_digest(config_.challenge, config_.cookie);
  if (!digest_equal(packet.subspan<1, 16>(), expected)) {
    fail(Errc::bad_digest, "in challenge_ack from " + peer_.name);
    return;
  }
  state_ = State::connected;
}

// --- acceptor --------------------------------------------------------------------------

void Handshake::on_name(std::span<const std::uint8_t> packet) {
  if (packet[0] == tag_old_name) {
    fail(Errc::unexpected_message, "send_name of version 5 ('n'): OTP 23+ handshake only");
    return;
  }
  if (!expect(packet, tag_name, "send_name")) return;
  Reader in(packet.subspan(1));
  std::uint64_t flags = 0;
  std::uint32_t creation = 0;
  std::uint16_t name_length = 0;
  if (!in.u64(flags) || !in.u32(creation) || !in.u16(name_length) || !in.text(name_length, peer_.name)) {
    fail(Errc::truncated, "send_name of " + std::to_string(packet.size()) + " bytes");
    return;
  }
  peer_.flags = flag::expand(flags);
  peer_.creation = creation;
  if ((peer_.flags & flag::name_me) != 0) {
    send_status(Status::not_allowed);
    fail(Errc::name_me_refused, "peer on host '" + printable(as_bytes(peer_.name)) + "' asked for a name");
    return;
  }
  if (!valid_node_name(peer_.name)) {
    fail(Errc::bad_name, "'" + printable(as_bytes(peer_.name)) + "'");
    return;
  }
  if ((peer_.flags & config_.required_flags) != config_.required_flags) {
    send_status(Status::not_allowed);
    fail(Errc::missing_flags, peer_.name + " lacks " + hex64(config_.required_flags & ~peer_.flags));
    return;
  }
  const Status status = config_.decide ? config_.decide(peer_) : Status::ok;
  send_status(status);
  switch (status) {
    case Status::ok:
    case Status::ok_simultaneous:
      send_challenge();
      return;
    case Status::alive:
      state_ = State::await_alive_answer;
      return;
    case Status::nok:
      fail(Errc::refused_nok, "we refused " + peer_.name);
      return;
    case Status::not_allowed:
      fail(Errc::refused_not_allowed, "we refused " + peer_.name);
      return;
  }
}

void Handshake::on_alive_answer(std::span<const std::uint8_t> packet) {
  const std::string_view text = as_text(packet);
  if (text == "strue") {
    send_challenge();
  } else if (text == "sfalse") {
    fail(Errc::refused_alive, peer_.name + " keeps its older connection");
  } else {
    fail(Errc::bad_status, "answer to alive: '" + printable(packet) + "'");
  }
}

void Handshake::send_challenge() {
  // 'N', flags, challenge, creation, name length, name.
  std::vector<std::uint8_t> body;
  put_u8(body, tag_name);
  put_u64(body, config_.flags | flag::handshake_23);
  put_u32(body, config_.challenge);
  put_u32(body, config_.creation);
  put_u16(body, static_cast<std::uint16_t>(config_.node_name.size()));
  put_bytes(body, config_.node_name);
  send_packet(body);
  state_ = State::await_reply;
}

void Handshake::on_reply(std::span<const std::uint8_t> packet) {
  if (!expect(packet, tag_reply, "challenge_reply", 1 + 4 + 16)) return;
  Reader in(packet.subspan(1));
  std::uint32_t their_challenge = 0;
  in.u32(their_challenge);
  const Digest expected = gen_digest(config_.challenge, config_.cookie);
  if (!digest_equal(packet.subspan<5, 16>(), expected)) {
    // As OTP: no ack, nothing else sent; the caller closes the socket.
    fail(Errc::bad_digest, "in challenge_reply from " + peer_.name);
    return;
  }
  std::vector<std::uint8_t> body;
  put_u8(body, tag_ack);
  put_bytes(body, gen_digest(their_challenge, config_.cookie));
  send_packet(body);
  state_ = State::connected;
}

}  // namespace camlbeam::dist
