#include <camlbeam/dist/connection.hpp>

#include <algorithm>

namespace camlbeam::dist {

Connected run_handshake(Socket socket, Handshake& handshake, Clock::time_point deadline) {
  std::uint8_t buffer[4096];
  for (;;) {
    const auto out = handshake.take_output();
    if (!out.empty()) {
      try {
        socket.write_all(out, deadline);
      } catch (const DistError&) {
        // A refusing peer may close before reading what we answer; its reason is the error.
        if (handshake.state() != Handshake::State::failed) throw;
      }
    }
    if (handshake.state() == Handshake::State::failed) throw DistError(*handshake.error());
    if (handshake.state() == Handshake::State::connected) break;
    const std::size_t n = socket.read_some(buffer, deadline);
    if (n == 0) {
      handshake.peer_closed();
    } else {
      handshake.feed(std::span(buffer, n));
    }
  }
  return Connected{std::move(socket), handshake.peer(), handshake.negotiated_flags(), handshake.take_leftover()};
}

Connected connect_node(const std::string& peer, HandshakeConfig config, EpmdClient& epmd, Clock::time_point deadline,
                       const std::string& address) {
  if (!valid_node_name(peer)) throw DistError(Errc::bad_name, "'" + peer + "'");
  const std::string alive = peer.substr(0, peer.find('@'));
  const auto info = epmd.port_please(alive);
  if (!info) throw DistError(Errc::connect_failed, "EPMD knows no node '" + alive + "'");
  config.peer_name = peer;
  Handshake handshake = Handshake::initiator(std::move(config));
  return run_handshake(Socket::connect(address, info->port, deadline), handshake, deadline);
}

Link::Link(Connected connected, Options options)
    : socket_(std::move(connected.socket)),
      peer_(std::move(connected.peer)),
      flags_(connected.flags),
      options_(options),
      reader_(options.max_frame),
      last_read_(Clock::now()),
      last_write_(Clock::now()) {
  reader_.feed(connected.leftover);
}

void Link::send_frame(std::span<const std::uint8_t> body, Clock::time_point deadline) {
  socket_.write_all(frame(body), deadline);
  last_write_ = Clock::now();
}

void Link::drain(const std::function<void(std::span<const std::uint8_t>)>& on_frame) {
  for (;;) {
    const auto event = reader_.next();
    switch (event.kind) {
      case FrameReader::Event::Kind::need_more: return;
      case FrameReader::Event::Kind::tick: ++stats_.ticks_received; break;
      case FrameReader::Event::Kind::data:
        ++stats_.frames_received;
        if (on_frame) on_frame(event.body);
        break;
      case FrameReader::Event::Kind::error: close(); throw DistError(event.error);
    }
  }
}

void Link::serve_until(Clock::time_point until, const std::function<void(std::span<const std::uint8_t>)>& on_frame) {
  drain(on_frame);
  std::uint8_t buffer[8192];
  for (;;) {
    const auto now = Clock::now();
    if (now - last_read_ > options_.silence_limit) {
      close();
      throw DistError(Errc::peer_silent, peer_.name);
    }
    // Tick when nothing was written for an interval, as OTP's connection loop does.
    if (now - last_write_ >= options_.tick_interval) {
      socket_.write_all(tick_frame(), now + options_.tick_interval);
      last_write_ = now;
      ++stats_.ticks_sent;
    }
    if (now >= until) return;
    const auto wake = std::min({until, last_write_ + options_.tick_interval, last_read_ + options_.silence_limit});
    if (!socket_.wait_readable(wake)) continue;
    const std::size_t n = socket_.read_some(buffer, wake);
    if (n == 0) {
      close();
      throw DistError(Errc::connection_closed, peer_.name);
    }
    last_read_ = Clock::now();
    reader_.feed(std::span(buffer, n));
    drain(on_frame);
  }
}

}  // namespace camlbeam::dist
