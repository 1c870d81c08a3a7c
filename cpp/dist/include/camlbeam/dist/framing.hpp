// Framing of the connected phase: a 4-byte big-endian length, then the frame; length 0 is
// a tick. I/O-free like the handshake: feed() the bytes read, next() the frames.
#pragma once

#include <camlbeam/dist/error.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace camlbeam::dist {

// The default bound on one frame's body. Larger messages come as FRAGMENTS (offered);
// the limit protects memory from a declared length no peer needs.
inline constexpr std::size_t default_max_frame = std::size_t{64} << 20;

// A frame's 4-byte big-endian length. Throws std::length_error over 4 GiB.
std::array<std::uint8_t, 4> frame_length(std::size_t body_size);
// A whole frame: length, then body.
std::vector<std::uint8_t> frame(std::span<const std::uint8_t> body);
// The tick: an empty frame.
std::vector<std::uint8_t> tick_frame();

class FrameReader {
 public:
  explicit FrameReader(std::size_t max_frame = default_max_frame) : max_frame_(max_frame) {}

  struct Event {
    enum class Kind : std::uint8_t { need_more, tick, data, error };
    Kind kind = Kind::need_more;
    std::span<const std::uint8_t> body;  // data: valid until the next feed()
    Error error;                         // error: frame_too_long
  };

  void feed(std::span<const std::uint8_t> bytes);
  // The next frame, need_more, or an error (sticky: the stream cannot be resynchronised).
  Event next();
  // Bytes fed and not yet handed out as frames.
  std::size_t buffered() const noexcept { return buffer_.size() - begin_; }

 private:
  std::size_t max_frame_;
  std::vector<std::uint8_t> buffer_;
  std::size_t begin_ = 0;
  bool broken_ = false;
  std::size_t broken_length_ = 0;
};

}  // namespace camlbeam::dist
