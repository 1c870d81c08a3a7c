// A term sink for reply frames with a size limit. Private to cpp/host.
#pragma once

#include <camlbeam/etf/encoder.hpp>
#include <camlbeam/etf/visitor.hpp>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace camlbeam::host::detail {

// etf::Writer for one frame appended to `out`, which keeps counting once the frame passes
// `limit` but stops keeping the bytes: an answer of a gigabyte costs about `limit` bytes of
// memory, and its exact encoded size is still known for the reply_too_large error. What is
// in `out` after the frame started is meaningless once over() is true.
class BoundedWriter {
 public:
  BoundedWriter(etf::ByteBuffer& out, std::size_t limit, int minor_version)
      : out_(out), start_(out.size()), limit_(limit), writer_(out, minor_version) {}

  // Bytes of the frame so far, kept or not.
  std::size_t size() const noexcept { return dropped_ + (out_.size() - start_); }
  bool over() const noexcept { return size() > limit_; }

  void version() { writer_.version(); }
  void integer(std::int64_t v) {
    writer_.integer(v);
    drop_if_over();
  }
  void big_integer(bool negative, std::span<const std::uint8_t> magnitude) {
    writer_.big_integer(negative, magnitude);
    drop_if_over();
  }
  void float64(double d) {
    writer_.float64(d);
    drop_if_over();
  }
  void atom(std::string_view utf8) {
    writer_.atom(utf8);
    drop_if_over();
  }
  // Binaries are the leaves with no bound on their size: counted, not copied, when they
  // would pass the limit (BINARY_EXT: tag, 4-byte length, the bytes).
  void binary(std::span<const std::uint8_t> bytes) {
    if (counted_instead(5 + bytes.size())) return;
    writer_.binary(bytes);
    drop_if_over();
  }
  // BIT_BINARY_EXT: tag, 4-byte length, bits used in the last byte, the bytes.
  void bitstring(std::span<const std::uint8_t> bytes, std::uint8_t bits) {
    if (counted_instead(6 + bytes.size())) return;
    writer_.bitstring(bytes, bits);
    drop_if_over();
  }
  void nil() {
    writer_.nil();
    drop_if_over();
  }
  void string(std::span<const std::uint8_t> bytes) {
    writer_.string(bytes);
    drop_if_over();
  }
  void begin_list(std::uint32_t n) {
    writer_.begin_list(n);
    drop_if_over();
  }
  void end_list() { writer_.end_list(); }
  void begin_tuple(std::uint32_t n) {
    writer_.begin_tuple(n);
    drop_if_over();
  }
  void end_tuple() { writer_.end_tuple(); }
  void begin_map(std::uint32_t n) {
    writer_.begin_map(n);
    drop_if_over();
  }
  void end_map() { writer_.end_map(); }
  void pid(const etf::PidView& pid) {
    writer_.pid(pid);
    drop_if_over();
  }
  void port(const etf::PortView& port) {
    writer_.port(port);
    drop_if_over();
  }
  void reference(const etf::ReferenceView& ref) {
    writer_.reference(ref);
    drop_if_over();
  }
  void begin_fun(const etf::FunView& fun) {
    ++open_funs_;
    writer_.begin_fun(fun);
  }
  void end_fun() {
    writer_.end_fun();
    --open_funs_;
    drop_if_over();
  }
  void export_fun(std::string_view module, std::string_view function, std::uint8_t arity) {
    writer_.export_fun(module, function, arity);
    drop_if_over();
  }

 private:
  // True if a leaf of `bytes` bytes would pass the limit: then it is only counted.
  bool counted_instead(std::size_t bytes) {
    if (size() + bytes <= limit_) return false;
    dropped_ += bytes;
    drop_if_over();
    return true;
  }

  // Past the limit the frame will be replaced, so its bytes go. Not while a fun is open:
  // the Writer patches the fun's size field, at the fun's start, when the fun ends.
  void drop_if_over() noexcept {
    if (open_funs_ == 0 && over() && out_.size() > start_) {
      dropped_ += out_.size() - start_;
      out_.truncate(start_);
    }
  }

  etf::ByteBuffer& out_;
  std::size_t start_;
  std::size_t limit_;
  etf::Writer writer_;
  std::size_t dropped_ = 0;
  std::size_t open_funs_ = 0;
};

static_assert(etf::Visitor<BoundedWriter>);

}  // namespace camlbeam::host::detail
