// Frame bodies from a hostile peer into cpp/dist's MessageReader (pass-through frames,
// distribution headers with the atom cache, fragments). Byte 0 says what the connection
// negotiated (the bits of cpp/dist/test/frame_seed.hpp, which writes the seeds); then
// frame bodies, each after a 2-byte big-endian length (clamped to the bytes left).
//  - The reader never holds more than its limits; after an error it returns that error
//    for every later frame, and holds nothing.
//  - A message it yields is written back with encode_frames in both frame forms (the
//    header form in small fragments, their size from byte 0), and a fresh reader reads
//    the same control tuple and payload from each.
#include "fuzz_check.hpp"

#include "../cpp/dist/test/frame_seed.hpp"

#include <camlbeam/dist/control.hpp>
#include <camlbeam/dist/message_reader.hpp>

#include <algorithm>
#include <cstdint>
#include <span>
#include <vector>

namespace dist = camlbeam::dist;
namespace seed = camlbeam::dist::frame_seed;
using camlbeam::fuzz::require;

namespace {

constexpr std::uint64_t every_operation = dist::flag::mandatory_26 | dist::flag::dist_monitor |
                                          dist::flag::send_sender | dist::flag::exit_payload | dist::flag::spawn |
                                          dist::flag::alias | dist::flag::altact_sig;

std::uint64_t flags_of(std::uint8_t selector) {
  std::uint64_t flags = every_operation;
  if ((selector & seed::header_bit) != 0) flags |= dist::flag::dist_hdr_atom_cache;
  if ((selector & seed::fragments_bit) != 0) flags |= dist::flag::fragments;
  if ((selector & seed::latin1_bit) != 0) flags &= ~dist::flag::utf8_atoms;
  return flags;
}

dist::MessageReader::Limits limits_of(std::uint8_t selector) {
  dist::MessageReader::Limits limits;
  limits.terms = camlbeam::fuzz::decode_options().limits;
  if ((selector & seed::small_limits_bit) != 0) {
    limits.max_partial_bytes = 4096;
    limits.max_partial_sequences = 4;
  } else {
    limits.max_partial_bytes = std::size_t{1} << 20;
    limits.max_partial_sequences = 64;
  }
  return limits;
}

// The message written with `flags` (in fragments of `fragment_size` bytes when they allow
// it) and read back by a fresh reader: the last frame gives it, the others nothing.
void check_round_trip(const dist::Control& message, std::uint64_t flags, std::size_t fragment_size,
                      std::span<const std::uint8_t> body) {
  std::vector<std::vector<std::uint8_t>> frames;
  require(!dist::encode_frames(message, flags, 1, frames, fragment_size), "a message read can be written", body);
  dist::MessageReader again(flags);
  std::optional<dist::Control> back;
  for (std::size_t i = 0; i < frames.size(); ++i) {
    auto got = again.read(frames[i]);
    require(!got.error && got.message.has_value() == (i + 1 == frames.size()), "the frames written read back", body,
            frames[i]);
    if (got.message) back = std::move(got.message);
  }
  require(dist::control_tuple(*back) == dist::control_tuple(message), "the same control tuple", body);
  const auto* a = dist::payload_of(message);
  const auto* b = dist::payload_of(*back);
  require((a == nullptr) == (b == nullptr) && (a == nullptr || *a == *b), "the same payload", body);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::uint8_t selector = data[0];
  const std::uint64_t flags = flags_of(selector);
  const auto limits = limits_of(selector);
  dist::MessageReader reader(flags, limits);
  std::optional<dist::Errc> broken;
  for (std::size_t at = 1; at < size;) {
    const std::size_t declared = at + 1 < size ? (std::size_t{data[at]} << 8) | data[at + 1] : 0;
    at = std::min(size, at + 2);
    const std::span<const std::uint8_t> body(data + at, std::min(declared, size - at));
    at += body.size();

    auto got = reader.read(body);
    require(!(got.message && got.error), "a message or an error, not both", body);
    require(reader.partial_bytes() <= limits.max_partial_bytes, "partial bytes within the limit", body);
    require(reader.partial_sequences() <= limits.max_partial_sequences, "sequences within the limit", body);
    if (broken) {
      require(got.error && got.error->code == *broken, "an error sticks", body);
      continue;
    }
    if (got.error) {
      broken = got.error->code;
      require(reader.partial_bytes() == 0 && reader.partial_sequences() == 0, "a broken reader holds nothing", body);
      continue;
    }
    if (got.message) {
      constexpr auto fragmenting = dist::flag::dist_hdr_atom_cache | dist::flag::fragments;
      check_round_trip(*got.message, flags | fragmenting, 1 + selector / 16, body);
      check_round_trip(*got.message, flags & ~fragmenting, dist::otp_fragment_size, body);
    }
  }
  return 0;
}
