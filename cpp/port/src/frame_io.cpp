#include "frame_io.hpp"

#include <limits.h>
#include <poll.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <string>
#include <system_error>
#include <tuple>

namespace camlbeam::port {

namespace {

using detail::frame_header_size;
constexpr std::size_t read_chunk = std::size_t{64} << 10;

std::size_t checked_limit(std::size_t max_frame) {
  if (max_frame > max_frame_limit) {
    throw std::invalid_argument("a frame limit of " + std::to_string(max_frame) + " bytes: a {packet, 4} frame holds at most " +
                                std::to_string(max_frame_limit));
  }
  return max_frame;
}

}  // namespace

void detail::store_length(std::uint8_t* p, std::size_t n) noexcept {
  p[0] = static_cast<std::uint8_t>(n >> 24);
  p[1] = static_cast<std::uint8_t>(n >> 16);
  p[2] = static_cast<std::uint8_t>(n >> 8);
  p[3] = static_cast<std::uint8_t>(n);
}

std::size_t detail::load_length(const std::uint8_t* p) noexcept {
  return (std::size_t{p[0]} << 24) | (std::size_t{p[1]} << 16) | (std::size_t{p[2]} << 8) | std::size_t{p[3]};
}

std::vector<std::uint8_t> framed(std::span<const std::uint8_t> body) {
  if (body.size() > max_frame_limit) {
    throw std::length_error("a frame of " + std::to_string(body.size()) + " bytes does not fit a 4-byte length");
  }
  std::vector<std::uint8_t> frame(frame_header_size + body.size());
  detail::store_length(frame.data(), body.size());
  std::copy(body.begin(), body.end(), frame.begin() + frame_header_size);
  return frame;
}

// ---------------------------------------------------------------------------------------
// FrameReader

FrameReader::FrameReader(int fd, std::size_t max_frame)
    : fd_(fd), max_frame_(checked_limit(max_frame)), current_(std::make_unique<Block>()) {
  buffer().resize(read_chunk);
}

std::size_t FrameReader::wanted(std::size_t at) const {
  if (end_ - at < frame_header_size) return frame_header_size;
  const std::size_t length = detail::load_length(buffer().data() + at);
  if (length > max_frame_) {
    throw ProtocolError("a frame of " + std::to_string(length) + " bytes announced, over the limit of " +
                        std::to_string(max_frame_));
  }
  return frame_header_size + length;
}

std::optional<std::span<const std::uint8_t>> FrameReader::next() {
  if (end_ - begin_ < frame_header_size) return std::nullopt;
  const std::size_t need = wanted(begin_);
  if (end_ - begin_ < need) return std::nullopt;
  const std::span<const std::uint8_t> frame(buffer().data() + begin_ + frame_header_size, need - frame_header_size);
  begin_ += need;
  ++handed_out_;
  return frame;
}

void FrameReader::unpin(Block* block) noexcept {
  if (--block->pins > 0 || block == current_.get()) return;
  std::erase_if(retired_, [block](const std::unique_ptr<Block>& retired) { return retired.get() == block; });
}

void FrameReader::move_to_new_buffer(std::size_t size) {
  auto fresh = std::make_unique<Block>();
  fresh->bytes.resize(size);
  std::copy(buffer().begin() + static_cast<std::ptrdiff_t>(begin_), buffer().begin() + static_cast<std::ptrdiff_t>(end_),
            fresh->bytes.begin());
  // Pinned frames stay in the old buffer, which lives on until its last Pin ends.
  if (current_->pins > 0) retired_.push_back(std::move(current_));
  current_ = std::move(fresh);
  visited_at_ = visited_at_ > begin_ ? visited_at_ - begin_ : 0;
  end_ -= begin_;
  begin_ = 0;
}

void FrameReader::make_room(std::size_t need) {
  std::vector<std::uint8_t>& bytes = buffer();
  if (bytes.size() - begin_ >= need) return;
  if (current_->pins > 0) {
    // Moving the bytes to the front, or reallocating, would move a frame still in use.
    move_to_new_buffer(std::max(need, read_chunk));
    return;
  }
  if (begin_ > 0) {
    std::copy(bytes.begin() + static_cast<std::ptrdiff_t>(begin_), bytes.begin() + static_cast<std::ptrdiff_t>(end_),
              bytes.begin());
    visited_at_ = visited_at_ > begin_ ? visited_at_ - begin_ : 0;
    end_ -= begin_;
    begin_ = 0;
  }
  if (bytes.size() < need) bytes.resize(need);
}

FrameReader::Fill FrameReader::fill(Wait wait) {
  if (current_->pins == 0 && begin_ == end_) begin_ = end_ = visited_at_ = 0;  // nothing unread: start over
  // Room for the whole frame being read (its length is checked by wanted()), and for at
  // least one chunk.
  make_room(std::max(wanted(begin_), end_ - begin_ + read_chunk));

  if (wait == Wait::none) {
    pollfd readable{fd_, POLLIN, 0};
    int ready;
    while ((ready = ::poll(&readable, 1, 0)) < 0 && errno == EINTR) {
    }
    if (ready <= 0) return Fill::nothing;
  }
  for (;;) {
    const ssize_t n = ::read(fd_, buffer().data() + end_, buffer().size() - end_);
    if (n > 0) {
      end_ += static_cast<std::size_t>(n);
      return Fill::data;
    }
    if (n == 0) {
      // Only at the end of input: whether what is left is whole frames.
      if (end_ != begin_ && walk(begin_, handed_out_, [](std::uint64_t, std::span<const std::uint8_t>) {}).first != end_) {
        throw ProtocolError("the pipe closed in the middle of a frame (" + std::to_string(end_ - begin_) +
                            " bytes of it read)");
      }
      return Fill::end_of_file;
    }
    if (errno != EINTR) throw std::system_error(errno, std::generic_category(), "read");
    if (wait == Wait::interruptible) return Fill::interrupted;
  }
}

bool FrameReader::shrink_now() {
  move_to_new_buffer(std::max(read_chunk, end_ - begin_));
  return true;
}

// ---------------------------------------------------------------------------------------
// FrameWriter

namespace {

// Writes `a` then `b` (either may be empty) whole, in as few system calls as the pipe
// allows. False on EPIPE; other errors are std::system_error.
bool write_whole(int fd, std::span<const std::uint8_t> a, std::span<const std::uint8_t> b) {
  iovec parts[2] = {{const_cast<std::uint8_t*>(a.data()), a.size()}, {const_cast<std::uint8_t*>(b.data()), b.size()}};
  iovec* first = parts;
  int count = 2;
  while (count > 0 && first->iov_len == 0) {
    ++first;
    --count;
  }
  while (count > 0) {
    // write() when there is one part: the kernel's writev path costs a tenth more per
    // small frame (its iovec import), which is every round trip's reply.
    const ssize_t n = count == 1 ? ::write(fd, first->iov_base, first->iov_len) : ::writev(fd, first, count);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EPIPE) return false;
      throw std::system_error(errno, std::generic_category(), "write");
    }
    auto done = static_cast<std::size_t>(n);
    while (count > 0 && done >= first->iov_len) {
      done -= first->iov_len;
      ++first;
      --count;
    }
    if (count > 0) {
      first->iov_base = static_cast<std::uint8_t*>(first->iov_base) + done;
      first->iov_len -= done;
    }
  }
  return true;
}

enum class Aside : std::uint8_t { written, full, closed };

// At most `bytes.size()` bytes, without blocking: one write of at most PIPE_BUF bytes,
// which a pipe that polls writable takes whole (it has a free page).
Aside write_without_blocking(int fd, std::span<const std::uint8_t> bytes, std::size_t& written) {
  while (written < bytes.size()) {
    pollfd writable{fd, POLLOUT, 0};
    const int ready = ::poll(&writable, 1, 0);
    if (ready < 0 && errno == EINTR) continue;
    if ((writable.revents & (POLLERR | POLLHUP)) != 0) return Aside::closed;
    if (ready <= 0 || (writable.revents & POLLOUT) == 0) return Aside::full;
    const ssize_t n = ::write(fd, bytes.data() + written, std::min<std::size_t>(PIPE_BUF, bytes.size() - written));
    if (n > 0) {
      written += static_cast<std::size_t>(n);
    } else if (n < 0 && errno == EPIPE) {
      return Aside::closed;
    } else if (n < 0 && errno != EINTR) {
      return Aside::full;
    }
  }
  return Aside::written;
}

}  // namespace

FrameWriter::FrameWriter(int fd, std::size_t max_frame)
    : fd_(fd), max_frame_(checked_limit(max_frame)), buffer_(read_chunk) {}

void FrameWriter::patch(std::size_t at, std::size_t length) noexcept { detail::store_length(buffer_.data() + at, length); }

void FrameWriter::open() {
  if (open_) throw std::logic_error("FrameWriter::open: a frame is open already");
  open_at_ = buffer_.size();
  buffer_.extend(frame_header_size);
  open_ = true;
}

bool FrameWriter::close() {
  if (!open_) throw std::logic_error("FrameWriter::close: no frame is open");
  open_ = false;
  const std::size_t length = buffer_.size() - open_at_ - frame_header_size;
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

void FrameWriter::hand_over() {
  if (open_) throw std::logic_error("FrameWriter::hand_over: a frame is open");
  if (buffer_.size() == 0) return;
  peak_ = std::max(peak_, buffer_.size());
  const std::lock_guard lock(write_lock_);
  if (handed_written_ == handed_.size()) {
    handed_.clear();
    handed_written_ = 0;
  }
  if (handed_.size() == 0) {
    std::swap(handed_, buffer_);
  } else {
    handed_.append(buffer_.span());
    buffer_.clear();
  }
}

bool FrameWriter::flush() {
  const std::size_t complete = pending();
  peak_ = std::max(peak_, complete);
  {
    const std::lock_guard lock(write_lock_);
    if (!closed() && !write_whole(fd_, handed_.span().subspan(handed_written_), buffer_.span().first(complete))) {
      closed_.store(true);
    }
    handed_.clear();
    handed_written_ = 0;
  }
  // What is left is an open frame's header (and body so far): it moves to the front.
  const std::size_t rest = buffer_.size() - complete;
  if (rest > 0) std::copy_n(buffer_.data() + complete, rest, buffer_.data());
  buffer_.truncate(rest);
  if (open_) open_at_ = 0;
  return !closed();
}

bool FrameWriter::write_aside(std::span<const std::uint8_t> frame) noexcept {
  const std::unique_lock lock(write_lock_, std::try_to_lock);
  if (!lock.owns_lock() || closed() || frame.size() > PIPE_BUF) return false;
  Aside result = write_without_blocking(fd_, handed_.span(), handed_written_);
  std::size_t frame_written = 0;
  // A frame of at most PIPE_BUF bytes is written whole or not at all: never half a frame.
  if (result == Aside::written) result = write_without_blocking(fd_, frame, frame_written);
  if (result == Aside::closed) closed_.store(true);
  return result == Aside::written;
}

bool FrameWriter::shrink_now() {
  peak_ = 0;
  etf::ByteBuffer fresh(read_chunk);
  fresh.append(buffer_.span());
  buffer_ = std::move(fresh);
  const std::lock_guard lock(write_lock_);
  if (handed_written_ == handed_.size()) {
    handed_ = etf::ByteBuffer();
    handed_written_ = 0;
  }
  return true;
}

}  // namespace camlbeam::port
