// Data frames to typed messages, one connection's worth of state: its atom cache and the
// fragmented messages still arriving. I/O-free like the rest of cpp/dist: hand it the body
// of each data frame (what FrameReader::next() gives, ticks excluded) in the order received.
//
//   MessageReader reader(link.flags());
//   auto got = reader.read(body);
//   if (got.error) drop_connection(got.error->message());
//   else if (got.message) dispatch(*got.message);   // else: a fragment, more to come
//
// Frames come in three forms (erl_ext_dist, "Distribution Header"):
//   112, 131 control-tuple [131 payload]                     pass-through
//   131 68 header control-tuple [payload]                    DIST_HDR_ATOM_CACHE
//   131 69 seq frag header ... / 131 70 seq frag ...         FRAGMENTS
// The bytes are hostile: every length is checked by cpp/etf, terms are bounded by
// `Limits::terms`, and what partial messages hold is bounded by `Limits`.
#pragma once

#include <camlbeam/dist/control.hpp>
#include <camlbeam/dist/error.hpp>
#include <camlbeam/etf/atom_cache.hpp>
#include <camlbeam/etf/limits.hpp>

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <vector>

namespace camlbeam::dist {

class MessageReader {
 public:
  struct Limits {
    // Bytes of all partial (fragmented) messages together. OTP cuts messages into 64 KB
    // fragments, so this is the largest message a peer can send us in pieces.
    std::size_t max_partial_bytes = std::size_t{64} << 20;
    // Room reserved ahead for fragments announced but not come yet, all sequences
    // together (a message's buffer is sized from its first fragment's count).
    std::size_t max_room_ahead = std::size_t{16} << 20;
    // Sequences in flight at once: OTP interleaves one per sending process.
    std::size_t max_partial_sequences = 256;
    etf::Limits terms{};
  };

  struct Outcome {
    std::optional<Control> message;  // a whole message
    std::optional<Error> error;      // the peer broke the protocol: drop the connection
    // Neither: a fragment was kept; its message is not complete yet.
  };

  explicit MessageReader(std::uint64_t negotiated_flags) : MessageReader(negotiated_flags, Limits{}) {}
  MessageReader(std::uint64_t negotiated_flags, Limits limits);

  // One data frame's body. After an error every later call returns that error again: the
  // atom cache and the sequences can no longer be trusted.
  Outcome read(std::span<const std::uint8_t> body);

  std::size_t partial_bytes() const noexcept { return partial_bytes_; }
  // What the partial messages' buffers hold, their room ahead included.
  std::size_t reserved_bytes() const noexcept { return reserved_bytes_; }
  std::size_t partial_sequences() const noexcept { return partials_.size(); }

 private:
  struct Partial {
    etf::AtomCacheRefs refs;          // the first fragment's: the whole message uses them
    std::vector<std::uint8_t> bytes;  // the fragments' bodies so far, headers stripped
    std::uint64_t next_fragment_id;   // the id the next continuation must have
  };

  Outcome read_header_frame(std::span<const std::uint8_t> body);
  Outcome start_sequence(std::uint64_t sequence, std::uint64_t fragment_id, std::span<const std::uint8_t> rest);
  Outcome continue_sequence(std::uint64_t sequence, std::uint64_t fragment_id, std::span<const std::uint8_t> rest);
  Outcome decode(std::span<const std::uint8_t> bytes, const etf::AtomCacheRefs* refs);
  Outcome fail(Error error);

  std::uint64_t flags_;
  Limits limits_;
  etf::AtomCache cache_;
  etf::AtomCacheRefs refs_;  // a whole message's, reused
  // The control tuple's elements (src/control_elements.hpp), reused.
  std::vector<detail::ControlElement> elements_;
  std::map<std::uint64_t, Partial> partials_;
  std::size_t partial_bytes_ = 0;   // their bytes so far
  std::size_t reserved_bytes_ = 0;  // their buffers' capacities
  std::optional<Error> broken_;
};

}  // namespace camlbeam::dist
