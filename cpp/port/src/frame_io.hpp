// {packet, 4} framing over a pipe: a 4-byte big-endian length, then the frame. Private to
// cpp/port; no ETF, no OCaml here.
#pragma once

#include <camlbeam/etf/encoder.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
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

// The longest frame body a 4-byte length can announce, less the header, so that a frame
// and its header always fit in 32 bits of size: the bound of every frame limit.
inline constexpr std::size_t max_frame_limit = std::size_t{0xFFFFFFFF} - 4;

// `body` behind its 4-byte big-endian length: one whole frame, for writing by hand.
// Throws std::length_error past max_frame_limit.
std::vector<std::uint8_t> framed(std::span<const std::uint8_t> body);

// Appends one frame to `out`: a 4-byte length, then the body fill(out) writes. False, and
// nothing appended, if the body is longer than max_frame (at most max_frame_limit);
// exceptions from fill propagate, with nothing appended.
template <class Fill>
bool append_frame(etf::ByteBuffer& out, std::size_t max_frame, Fill&& fill);

// Reads frames in batches: one read() takes as many bytes as the pipe holds, and next()
// then hands out every complete frame without another system call.
class FrameReader {
  // A buffer, and the Pins on the frames in it.
  struct Block {
    std::vector<std::uint8_t> bytes;
    int pins = 0;
  };

 public:
  // Throws std::invalid_argument past max_frame_limit.
  FrameReader(int fd, std::size_t max_frame);

  // The next complete frame already read, or nullopt if more input is needed. The span is
  // valid until the next call to fill() (or, while a Pin lives, until the Pin ends).
  // Throws ProtocolError when a length exceeds max_frame.
  std::optional<std::span<const std::uint8_t>> next();
  // How many frames next() has handed out: a frame's index in the stream is the count
  // before it was handed out.
  std::uint64_t handed_out() const noexcept { return handed_out_; }
  // Nothing read is waiting to be handed out, not even part of a frame.
  bool empty() const noexcept { return begin_ == end_; }

  enum class Wait : std::uint8_t {
    blocking,       // until a byte arrives; a signal handler that runs meanwhile does not end the wait
    interruptible,  // the same, but a signal handler that runs ends it (Fill::interrupted)
    none,           // what the pipe holds now, if anything (Fill::nothing)
  };
  enum class Fill : std::uint8_t { data, end_of_file, interrupted, nothing };
  // Reads what the pipe holds, waiting as `wait` says. A pipe closed in the middle of a
  // frame is a ProtocolError (whole frames not handed out yet are not: end_of_file); a
  // read error a std::system_error.
  Fill fill(Wait wait = Wait::blocking);

  // Calls visit(index, frame) for each complete frame read by the last fill()s that no
  // earlier call visited and next() has not handed out, in stream order.
  template <class Visit>
  void visit_new_frames(Visit&& visit);
  // Calls visit(index, frame) for every complete frame not handed out yet.
  template <class Visit>
  void visit_unread_frames(Visit&& visit) const;

  // While a Pin lives, the bytes of the frames next() handed out before it stay where they
  // are: fill() neither starts over at the front of the buffer they are in nor moves them,
  // but reads into a fresh buffer when that one has no room, and the old one is freed when
  // its last Pin ends. The request being served stays valid although OCaml code that runs
  // in the middle of it (Erl.call_erlang) reads more input; what is read meanwhile, in the
  // fresh buffer, is handled as usual (so that a long request does not pile up buffers).
  class Pin {
   public:
    explicit Pin(FrameReader& reader) noexcept : reader_(reader), block_(reader.current_.get()) { ++block_->pins; }
    ~Pin() { reader_.unpin(block_); }
    Pin(const Pin&) = delete;
    Pin& operator=(const Pin&) = delete;

   private:
    FrameReader& reader_;
    Block* block_;
  };

  // How many old buffers are kept for the Pins on frames in them (diagnostics, tests).
  std::size_t buffers_kept() const noexcept { return retired_.size(); }

  // Outside any Pin: if the buffer is larger than `above` bytes (it grew for a large
  // frame), replaces it with one of the usual size. Whether it did. (Checked between
  // every two requests: the test is inline.)
  bool shrink(std::size_t above) { return buffer().size() > above && current_->pins == 0 && shrink_now(); }

 private:
  // The bytes the frame at `at` needs in all (header included), if its header was read.
  std::size_t wanted(std::size_t at) const;
  bool shrink_now();
  // Makes room for `need` bytes from begin_ on.
  void make_room(std::size_t need);
  // Moves the unread bytes to a new buffer of `size` bytes.
  void move_to_new_buffer(std::size_t size);
  // Calls visit(index, frame) for the complete frames from offset `at` (of index `index`).
  // Returns where it stopped.
  template <class Visit>
  std::pair<std::size_t, std::uint64_t> walk(std::size_t at, std::uint64_t index, Visit&& visit) const;

  std::vector<std::uint8_t>& buffer() noexcept { return current_->bytes; }
  const std::vector<std::uint8_t>& buffer() const noexcept { return current_->bytes; }
  void unpin(Block* block) noexcept;

  int fd_;
  std::size_t max_frame_;
  std::unique_ptr<Block> current_;
  std::vector<std::unique_ptr<Block>> retired_;  // buffers that pinned frames still live in
  std::size_t begin_ = 0;  // the first byte not handed out
  std::size_t end_ = 0;    // past the last byte read
  std::uint64_t handed_out_ = 0;
  std::size_t visited_at_ = 0;  // visit_new_frames: the first frame not visited yet ...
  std::uint64_t visited_index_ = 0;  // ... and its index
};

// Collects frames and writes them in batches. A frame can be opened before its body is
// known (host::handle_etf appends a reply only if there is one); frames appended while it is
// open and still empty (Erl.send from the export that runs) go before it.
//
// One thread (the runtime thread) appends and flushes. Another (the request watch's) may
// write frames of its own between whole frames, without blocking (write_aside): complete
// frames the first thread handed over (hand_over) go out first, so that replies already
// made do not wait behind a long request, then the other thread's frame. Every write to
// the fd happens under one lock and ends on a frame boundary, except a flush's, which
// holds the lock until its last byte is written.
class FrameWriter {
 public:
  // Throws std::invalid_argument past max_frame_limit.
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
  // Complete frames waiting in buffer().
  std::size_t pending() const noexcept { return open_ ? open_at_ : buffer_.size(); }

  // With no frame open: the complete frames become the other thread's to write if this one
  // does not flush first. A swap of buffers when none are handed over yet, else a copy.
  void hand_over();

  // Writes every frame handed over, then every complete frame. Blocks until written or
  // the reader closed the pipe (EPIPE): then false, and the writer drops everything from
  // now on. Other write errors are std::system_error.
  bool flush();
  bool closed() const noexcept { return closed_.load(std::memory_order_relaxed); }

  // From the other thread: writes what was handed over, then `frame` (a whole frame with
  // its header, at most PIPE_BUF bytes, so that it is written whole or not at all), as far
  // as the pipe takes them without blocking. False if the runtime thread is writing (the
  // lock is taken), the pipe is full or closed, or `frame` is too long; never blocks.
  bool write_aside(std::span<const std::uint8_t> frame) noexcept;

  // Between requests, with no frame open: if the buffers grew past `above` bytes (a large
  // reply), replaces them with ones of the usual size. Whether it did.
  bool shrink(std::size_t above) { return peak_ > above && !open_ && shrink_now(); }

 private:
  void patch(std::size_t at, std::size_t length) noexcept;
  bool shrink_now();

  int fd_;
  std::size_t max_frame_;
  etf::ByteBuffer buffer_;
  bool open_ = false;
  std::size_t open_at_ = 0;
  std::size_t peak_ = 0;  // the most bytes buffered since the last shrink

  std::mutex write_lock_;
  etf::ByteBuffer handed_;          // under write_lock_
  std::size_t handed_written_ = 0;  // under write_lock_
  std::atomic<bool> closed_{false};
};

// ---------------------------------------------------------------------------------------

namespace detail {
inline constexpr std::size_t frame_header_size = 4;
void store_length(std::uint8_t* at, std::size_t length) noexcept;  // length <= max_frame_limit
std::size_t load_length(const std::uint8_t* at) noexcept;
}  // namespace detail

template <class Fill>
bool append_frame(etf::ByteBuffer& out, std::size_t max_frame, Fill&& fill) {
  const std::size_t at = out.size();
  out.extend(detail::frame_header_size);
  try {
    fill(out);
  } catch (...) {
    out.truncate(at);
    throw;
  }
  const std::size_t length = out.size() - at - detail::frame_header_size;
  if (length > max_frame || length > max_frame_limit) {
    out.truncate(at);
    return false;
  }
  detail::store_length(out.data() + at, length);
  return true;
}

template <class Fill>
bool FrameWriter::append(Fill&& fill) {
  const bool reopen = open_;
  if (open_) {
    // Only an empty open frame can have another frame put before it.
    if (buffer_.size() != open_at_ + detail::frame_header_size) {
      throw std::logic_error("FrameWriter::append inside a non-empty open frame");
    }
    buffer_.truncate(open_at_);
    open_ = false;
  }
  bool fits = false;
  try {
    fits = append_frame(buffer_, max_frame_, fill);
  } catch (...) {
    if (reopen) open();
    throw;
  }
  if (reopen) open();
  return fits;
}

template <class Visit>
std::pair<std::size_t, std::uint64_t> FrameReader::walk(std::size_t at, std::uint64_t index, Visit&& visit) const {
  while (end_ - at >= detail::frame_header_size) {
    const std::size_t need = wanted(at);
    if (end_ - at < need) break;
    visit(index, std::span<const std::uint8_t>(buffer().data() + at + detail::frame_header_size,
                                               need - detail::frame_header_size));
    at += need;
    ++index;
  }
  return {at, index};
}

template <class Visit>
void FrameReader::visit_new_frames(Visit&& visit) {
  if (visited_index_ < handed_out_) {  // next() went past what was visited
    visited_at_ = begin_;
    visited_index_ = handed_out_;
  }
  std::tie(visited_at_, visited_index_) = walk(visited_at_, visited_index_, visit);
}

template <class Visit>
void FrameReader::visit_unread_frames(Visit&& visit) const {
  walk(begin_, handed_out_, visit);
}

}  // namespace camlbeam::port
