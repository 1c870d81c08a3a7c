#include "bytes.hpp"

#include <camlbeam/dist/framing.hpp>

#include <stdexcept>
#include <string>

namespace camlbeam::dist {

std::array<std::uint8_t, 4> frame_length(std::size_t body_size) {
  if (body_size > 0xFFFFFFFFu) throw std::length_error("distribution frame over 4 GiB");
  const auto size = static_cast<std::uint32_t>(body_size);
  return {static_cast<std::uint8_t>(size >> 24), static_cast<std::uint8_t>(size >> 16),
          static_cast<std::uint8_t>(size >> 8), static_cast<std::uint8_t>(size)};
}

std::vector<std::uint8_t> frame(std::span<const std::uint8_t> body) {
  if (body.size() > 0xFFFFFFFFu) throw std::length_error("distribution frame over 4 GiB");
  std::vector<std::uint8_t> out;
  out.reserve(4 + body.size());
  detail::put_u32(out, static_cast<std::uint32_t>(body.size()));
  detail::put_bytes(out, body);
  return out;
}

std::vector<std::uint8_t> tick_frame() { return {0, 0, 0, 0}; }

void FrameReader::feed(std::span<const std::uint8_t> bytes) {
  if (broken_) return;
  // Drop what was handed out before growing: the buffer holds at most one partial frame
  // besides what this feed brings.
  if (begin_ > 0) {
    buffer_.erase(buffer_.begin(), buffer_.begin() + static_cast<std::ptrdiff_t>(begin_));
    begin_ = 0;
  }
  detail::put_bytes(buffer_, bytes);
}

FrameReader::Event FrameReader::next() {
  if (broken_) {
    return {Event::Kind::error, {}, Error{Errc::frame_too_long, std::to_string(broken_length_) + " bytes"}};
  }
  if (buffered() < 4) return {};
  const std::uint8_t* p = buffer_.data() + begin_;
  const std::size_t length = (std::size_t{p[0]} << 24) | (std::size_t{p[1]} << 16) | (std::size_t{p[2]} << 8) | p[3];
  if (length > max_frame_) {
    broken_ = true;
    broken_length_ = length;
    buffer_.clear();
    begin_ = 0;
    return next();
  }
  if (buffered() - 4 < length) return {};
  const std::span<const std::uint8_t> body(p + 4, length);
  begin_ += 4 + length;
  if (length == 0) return {Event::Kind::tick, {}, {}};
  return {Event::Kind::data, body, {}};
}

}  // namespace camlbeam::dist
