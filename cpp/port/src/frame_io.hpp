// {packet, 4} framing over a pipe: a 4-byte big-endian length, then the frame. Private to
// cpp/port; no ETF, no OCaml here.
#pragma once

#include <camlbeam/etf/encoder.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <stdexcept>
#include <vector>

namespace camlbeam::port {

// The peer broke the framing: nothing after this point can be trusted.
class ProtocolError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// `body` behind its 4-byte big-endian length: one whole frame, for writing by hand.
std::vector<std::uint8_t> framed(std::span<const std::uint8_t> body);

// Reads frames in batches: one read() takes as many bytes as the pipe holds, and next()
// then hands out every complete frame without another system call.
class FrameReader {
 public:
  FrameReader(int fd, std::size_t max_frame);

  // The next complete frame already read, or nullopt if more input is needed. The span is
  // valid until the next call to fill(). Throws ProtocolError when a length exceeds
  // max_frame.
  std::optional<std::span<const std::uint8_t>> next();

  enum class Fill : std::uint8_t { data, end_of_file };
  // Blocks until at least one more byte arrived, or the writer closed the pipe. A pipe
  // closed in the middle of a frame is a ProtocolError; a read error a std::system_error.
  Fill fill();


 private:
  std::size_t wanted() const;  // the bytes the frame at begin_ needs in all, if known

  int fd_;
  std::size_t max_frame_;
  std::vector<std::uint8_t> buffer_;
  std::size_t begin_ = 0;
  std::size_t end_ = 0;
};

// Collects frames and writes them in batches. A frame can be opened before its body is
// known (Host::handle appends a reply only if there is one); frames appended while it is
// open and still empty (Erl.send from the export that runs) go before it.
class FrameWriter {
 public:
  FrameWriter(int fd, std::size_t max_frame);

  // Reserves the header of a frame whose body the caller appends to buffer().
  void open();
  // Patches the length of the open frame. False, and the frame dropped, if it is empty or
  // longer than max_frame.
  bool close();
  // Drops the open frame.
  void abandon() noexcept;

  // Appends one whole frame, its body written by fill(etf::ByteBuffer&). May be called
  // while a frame is open and still empty. False, and nothing appended, if the body is
  // longer than max_frame; exceptions from fill propagate, with nothing appended.
  template <class Fill>
  bool append(Fill&& fill);

  etf::ByteBuffer& buffer() noexcept { return buffer_; }
  // Complete frames waiting to be written.
  std::size_t pending() const noexcept { return open_ ? open_at_ : buffer_.size(); }

  // Writes every complete frame. False if the reader closed the pipe (EPIPE): the writer
  // then drops everything from now on. Other write errors are std::system_error.
  bool flush();
  bool closed() const noexcept { return closed_; }

 private:
  void patch(std::size_t at, std::size_t length) noexcept;

  int fd_;
  std::size_t max_frame_;
  etf::ByteBuffer buffer_;
  bool open_ = false;
  std::size_t open_at_ = 0;
  bool closed_ = false;
};

template <class Fill>
bool FrameWriter::append(Fill&& fill) {
  const bool reopen = open_;
  if (open_) {
    // Only an empty open frame can have another frame put before it.
    if (buffer_.size() != open_at_ + 4) throw std::logic_error("FrameWriter::append inside a non-empty open frame");
    buffer_.truncate(open_at_);
    open_ = false;
  }
  const std::size_t at = buffer_.size();
  buffer_.extend(4);
  bool fits = false;
  try {
    fill(buffer_);
    const std::size_t length = buffer_.size() - at - 4;
    fits = length <= max_frame_;
    if (fits) {
      patch(at, length);
    } else {
      buffer_.truncate(at);
    }
  } catch (...) {
    buffer_.truncate(at);
    if (reopen) open();
    throw;
  }
  if (reopen) open();
  return fits;
}

}  // namespace camlbeam::port
