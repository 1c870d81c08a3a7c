#include "frame_io.hpp"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <string>
#include <system_error>

namespace camlbeam::port {

namespace {

constexpr std::size_t header_size = 4;
constexpr std::size_t read_chunk = std::size_t{64} << 10;

std::size_t load_be32(const std::uint8_t* p) noexcept {
  return (std::size_t{p[0]} << 24) | (std::size_t{p[1]} << 16) | (std::size_t{p[2]} << 8) | std::size_t{p[3]};
}

void store_be32(std::uint8_t* p, std::size_t n) noexcept {
  p[0] = static_cast<std::uint8_t>(n >> 24);
  p[1] = static_cast<std::uint8_t>(n >> 16);
  p[2] = static_cast<std::uint8_t>(n >> 8);
  p[3] = static_cast<std::uint8_t>(n);
}

}  // namespace

std::vector<std::uint8_t> framed(std::span<const std::uint8_t> body) {
  std::vector<std::uint8_t> frame(header_size + body.size());
  store_be32(frame.data(), body.size());
  std::copy(body.begin(), body.end(), frame.begin() + header_size);
  return frame;
}

FrameReader::FrameReader(int fd, std::size_t max_frame) : fd_(fd), max_frame_(max_frame), buffer_(read_chunk) {}

std::size_t FrameReader::wanted() const {
  if (end_ - begin_ < header_size) return header_size;
  const std::size_t length = load_be32(buffer_.data() + begin_);
  if (length > max_frame_) {
    throw ProtocolError("a frame of " + std::to_string(length) + " bytes announced, over the limit of " +
                        std::to_string(max_frame_));
  }
  return header_size + length;
}

std::optional<std::span<const std::uint8_t>> FrameReader::next() {
  if (end_ - begin_ < header_size) return std::nullopt;
  const std::size_t need = wanted();
  if (end_ - begin_ < need) return std::nullopt;
  const std::span<const std::uint8_t> frame(buffer_.data() + begin_ + header_size, need - header_size);
  begin_ += need;
  if (begin_ == end_) begin_ = end_ = 0;
  return frame;
}

FrameReader::Fill FrameReader::fill() {
  // Room for the whole frame being read (its length is checked by wanted()), and for at
  // least one chunk, moving what is left to the front first.
  const std::size_t need = std::max(wanted(), end_ - begin_ + read_chunk);
  if (begin_ > 0 && buffer_.size() - begin_ < need) {
    std::copy(buffer_.begin() + static_cast<std::ptrdiff_t>(begin_), buffer_.begin() + static_cast<std::ptrdiff_t>(end_),
              buffer_.begin());
    end_ -= begin_;
    begin_ = 0;
  }
  if (buffer_.size() - begin_ < need) buffer_.resize(begin_ + need);

  for (;;) {
    const ssize_t n = ::read(fd_, buffer_.data() + end_, buffer_.size() - end_);
    if (n > 0) {
      end_ += static_cast<std::size_t>(n);
      return Fill::data;
    }
    if (n == 0) {
      if (end_ != begin_) {
        throw ProtocolError("the pipe closed in the middle of a frame (" + std::to_string(end_ - begin_) +
                            " bytes of it read)");
      }
      return Fill::end_of_file;
    }
    if (errno != EINTR) throw std::system_error(errno, std::generic_category(), "read");
  }
}

FrameWriter::FrameWriter(int fd, std::size_t max_frame) : fd_(fd), max_frame_(max_frame), buffer_(read_chunk) {}

void FrameWriter::patch(std::size_t at, std::size_t length) noexcept { store_be32(buffer_.data() + at, length); }

void FrameWriter::open() {
  if (open_) throw std::logic_error("FrameWriter::open: a frame is open already");
  open_at_ = buffer_.size();
  buffer_.extend(header_size);
  open_ = true;
}

bool FrameWriter::close() {
  if (!open_) throw std::logic_error("FrameWriter::close: no frame is open");
  open_ = false;
  const std::size_t length = buffer_.size() - open_at_ - header_size;
  if (length == 0 || length > max_frame_) {
    buffer_.truncate(open_at_);
    return false;
  }
  patch(open_at_, length);
  return true;
}

void FrameWriter::abandon() noexcept {
  if (!open_) return;
  open_ = false;
  buffer_.truncate(open_at_);
}

bool FrameWriter::flush() {
  const std::size_t complete = pending();
  std::size_t written = 0;
  while (written < complete && !closed_) {
    const ssize_t n = ::write(fd_, buffer_.data() + written, complete - written);
    if (n >= 0) {
      written += static_cast<std::size_t>(n);
    } else if (errno == EPIPE) {
      closed_ = true;
    } else if (errno != EINTR) {
      throw std::system_error(errno, std::generic_category(), "write");
    }
  }
  // What is left is an open frame's header (and body so far): it moves to the front.
  const std::size_t rest = buffer_.size() - complete;
  if (rest > 0) std::copy_n(buffer_.data() + complete, rest, buffer_.data());
  buffer_.truncate(rest);
  if (open_) open_at_ = 0;
  return !closed_;
}

}  // namespace camlbeam::port
