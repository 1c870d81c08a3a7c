// Bytes from a hostile peer into cpp/dist's parsers: the handshake machines in both roles,
// the connected phase's frame reader, and the EPMD reply parsers. Byte 0 picks the parser
// (and, bit 2, the handshake's 4-byte packet lengths of TLS distribution), byte 1 a chunk
// size; the rest is what the peer sends.
//  - Handshake: feeding the input whole and in chunks gives the same state, error code,
//    output and leftover (the 2- or 4-byte framing does not depend on how reads split); a failed
//    machine has an error and a live one none; output stays a few packets long; and the
//    machine never reaches `connected` unless the input holds the proof of the cookie (the
//    digest of our challenge), which no fuzzer forges.
//  - Frames: whole or chunked, the same frames and ticks, or the same error.
//  - EPMD: a reply parses or throws DistError, nothing else; a parsed reply is consistent.
#include "fuzz_check.hpp"

#include <camlbeam/dist/epmd.hpp>
#include <camlbeam/dist/framing.hpp>
#include <camlbeam/dist/handshake.hpp>

#include <algorithm>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace dist = camlbeam::dist;
using camlbeam::fuzz::require;
using Bytes = std::vector<std::uint8_t>;

namespace {

constexpr std::uint32_t our_challenge = 2;
const std::string cookie = "cookie";

dist::HandshakeConfig config(bool initiator, std::uint8_t length_bytes) {
  dist::HandshakeConfig c;
  c.length_bytes = length_bytes;
  c.node_name = initiator ? "ini@host" : "acc@host";
  c.cookie = cookie;
  c.creation = 1;
  c.challenge = our_challenge;
  if (initiator) c.peer_name = "acc@host";
  return c;
}

struct Outcome {
  dist::Handshake::State state;
  std::optional<dist::Errc> error;
  Bytes output;
  Bytes leftover;
  friend bool operator==(const Outcome&, const Outcome&) = default;
};

Outcome run(bool initiator, std::uint8_t length_bytes, std::span<const std::uint8_t> input, std::size_t chunk) {
  auto hs = initiator ? dist::Handshake::initiator(config(true, length_bytes))
                      : dist::Handshake::acceptor(config(false, length_bytes));
  Outcome o;
  o.output = hs.take_output();
  for (std::size_t i = 0; i < input.size(); i += chunk) {
    hs.feed(input.subspan(i, std::min(chunk, input.size() - i)));
    const Bytes out = hs.take_output();
    o.output.insert(o.output.end(), out.begin(), out.end());
    const Bytes left = hs.take_leftover();
    o.leftover.insert(o.leftover.end(), left.begin(), left.end());
  }
  o.state = hs.state();
  require((hs.state() == dist::Handshake::State::failed) == hs.error().has_value(), "failed exactly when an error is set",
          input);
  if (hs.error()) o.error = hs.error()->code;
  // Name, status, challenge, reply or ack, and a "strue": never more.
  require(o.output.size() <= 4 * dist::max_handshake_packet, "output bounded", input, o.output);
  if (hs.state() == dist::Handshake::State::connected) {
    const dist::Digest proof = dist::gen_digest(our_challenge, cookie);
    require(std::search(input.begin(), input.end(), proof.begin(), proof.end()) != input.end(),
            "connected only on the proof of the cookie", input);
  }
  return o;
}

void frames(std::span<const std::uint8_t> input, std::size_t chunk) {
  using Kind = dist::FrameReader::Event::Kind;
  auto read = [&](std::size_t step) {
    dist::FrameReader reader(4096);
    std::vector<std::pair<Kind, Bytes>> events;
    for (std::size_t i = 0; i < input.size(); i += step) {
      reader.feed(input.subspan(i, std::min(step, input.size() - i)));
      for (auto e = reader.next(); e.kind != Kind::need_more; e = reader.next()) {
        require(e.body.size() <= 4096, "frame within the limit", input);
        events.emplace_back(e.kind, Bytes(e.body.begin(), e.body.end()));
        if (e.kind == Kind::error) return events;
      }
    }
    return events;
  };
  require(read(input.size() + 1) == read(chunk), "frames do not depend on the split", input);
}

void epmd(std::span<const std::uint8_t> input, std::uint8_t which) {
  try {
    switch (which % 3) {
      case 0: dist::parse_alive2_reply(input); break;
      case 1:
        if (auto info = dist::parse_port2_reply(input)) {
          require(info->name.size() + info->extra.size() + 14 == input.size(), "port reply fields add up", input);
        }
        break;
      default: {
        const auto names = dist::parse_names_reply(input);
        require(names.nodes.size() <= input.size() / 15, "names bounded by the reply", input);
      }
    }
  } catch (const dist::DistError&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  const std::span<const std::uint8_t> input(data + 2, size - 2);
  const std::size_t chunk = std::max<std::size_t>(1, data[1]);
  switch (data[0] & 3) {
    case 0:
    case 1: {
      const bool initiator = (data[0] & 3) == 0;
      const std::uint8_t length_bytes = (data[0] & 4) != 0 ? 4 : 2;
      const Outcome whole = run(initiator, length_bytes, input, input.size() + 1);
      const Outcome split = run(initiator, length_bytes, input, chunk);
      require(whole == split, "the handshake does not depend on the split", input);
      break;
    }
    case 2: frames(input, chunk); break;
    default: epmd(input, data[1]); break;
  }
  return 0;
}
