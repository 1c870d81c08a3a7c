// The ETF encoder. Writer is the streaming sink: it has the Visitor interface, so the
// decoder can drive it (a re-encoder), and later layers write OCaml values or NIF terms
// through it without a tree. encode() writes a Term. The output is byte-identical to OTP
// 25's term_to_binary/1, or term_to_binary(T, [{minor_version, 2}]) with minor_version 2.
#pragma once

#include <camlbeam/etf/error.hpp>
#include <camlbeam/etf/tags.hpp>
#include <camlbeam/etf/visitor.hpp>

#include <bit>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

namespace camlbeam::etf {

class Term;

// A growable byte buffer that does not zero what it is about to overwrite.
class ByteBuffer {
 public:
  ByteBuffer() = default;
  explicit ByteBuffer(std::size_t capacity) { reserve(capacity); }
  ByteBuffer(ByteBuffer&&) noexcept = default;
  ByteBuffer& operator=(ByteBuffer&&) noexcept = default;
  ByteBuffer(const ByteBuffer&) = delete;
  ByteBuffer& operator=(const ByteBuffer&) = delete;

  // Space for n more bytes; the caller writes them all, then the size has grown by n.
  std::uint8_t* extend(std::size_t n) {
    if (capacity_ - size_ < n) grow(n);
    std::uint8_t* p = data_.get() + size_;
    size_ += n;
    return p;
  }
  void push(std::uint8_t b) { *extend(1) = b; }
  void append(std::span<const std::uint8_t> bytes) {
    if (!bytes.empty()) std::memcpy(extend(bytes.size()), bytes.data(), bytes.size());
  }
  void reserve(std::size_t capacity) {
    if (capacity > capacity_) grow(capacity - size_);
  }
  void clear() noexcept { size_ = 0; }
  void truncate(std::size_t size) noexcept {
    if (size < size_) size_ = size;
  }

  std::uint8_t* data() noexcept { return data_.get(); }
  const std::uint8_t* data() const noexcept { return data_.get(); }
  std::size_t size() const noexcept { return size_; }
  std::span<const std::uint8_t> span() const noexcept { return {data_.get(), size_}; }
  std::vector<std::uint8_t> to_vector() const { return {data_.get(), data_.get() + size_}; }

 private:
  void grow(std::size_t n);

  std::unique_ptr<std::uint8_t[]> data_;
  std::size_t size_ = 0;
  std::size_t capacity_ = 0;
};

struct EncodeOptions {
  int minor_version = 1;      // 1: Latin-1 atoms as ATOM_EXT (OTP 25 default); 2: all UTF-8
  int compression_level = 0;  // 0: none; 1..9 as term_to_binary(T, [{compressed, N}])
};

class Writer {
 public:
  explicit Writer(ByteBuffer& out, int minor_version = 1) : out_(out), minor_version_(minor_version) {}

  void version() { out_.push(tag::version); }

  void integer(std::int64_t v) {
    if (v >= 0 && v <= 255) {
      std::uint8_t* p = out_.extend(2);
      p[0] = tag::small_integer;
      p[1] = static_cast<std::uint8_t>(v);
    } else if (v >= INT32_MIN && v <= INT32_MAX) {
      std::uint8_t* p = out_.extend(5);
      p[0] = tag::integer;
      store_u32(p + 1, static_cast<std::uint32_t>(v));
    } else {
      big_from_int64(v);
    }
  }
  void big_integer(bool negative, std::span<const std::uint8_t> magnitude_le);
  void float64(double d) {
    std::uint8_t* p = out_.extend(9);
    p[0] = tag::new_float;
    store_u64(p + 1, std::bit_cast<std::uint64_t>(d));
  }
  void atom(std::string_view utf8);
  void binary(std::span<const std::uint8_t> bytes) {
    std::uint8_t* p = out_.extend(5 + bytes.size());
    p[0] = tag::binary;
    store_u32(p + 1, checked_u32(bytes.size(), "binary"));
    if (!bytes.empty()) std::memcpy(p + 5, bytes.data(), bytes.size());
  }
  void bitstring(std::span<const std::uint8_t> bytes, std::uint8_t bits_in_last);
  void nil() { out_.push(tag::nil); }
  // STRING_EXT when it fits (at most 65535 bytes), otherwise the equivalent LIST_EXT.
  void string(std::span<const std::uint8_t> bytes);
  void begin_list(std::uint32_t n) { header_u32(tag::list, n); }
  void end_list() noexcept {}
  void begin_tuple(std::uint32_t n) {
    if (n <= 255) {
      std::uint8_t* p = out_.extend(2);
      p[0] = tag::small_tuple;
      p[1] = static_cast<std::uint8_t>(n);
    } else {
      header_u32(tag::large_tuple, n);
    }
  }
  void end_tuple() noexcept {}
  void begin_map(std::uint32_t n) { header_u32(tag::map, n); }
  void end_map() noexcept {}
  void pid(const PidView& pid);
  void port(const PortView& port);
  void reference(const ReferenceView& ref);
  void begin_fun(const FunView& fun);  // the caller then writes fun.free_count terms
  void end_fun();
  void export_fun(std::string_view module, std::string_view function, std::uint8_t arity);

  ByteBuffer& buffer() noexcept { return out_; }

 private:
  static void store_u32(std::uint8_t* p, std::uint32_t v) noexcept {
    if constexpr (std::endian::native == std::endian::little) v = __builtin_bswap32(v);
    std::memcpy(p, &v, 4);
  }
  static void store_u64(std::uint8_t* p, std::uint64_t v) noexcept {
    if constexpr (std::endian::native == std::endian::little) v = __builtin_bswap64(v);
    std::memcpy(p, &v, 8);
  }
  static std::uint32_t checked_u32(std::size_t n, const char* what);
  void header_u32(std::uint8_t t, std::uint32_t n) {
    std::uint8_t* p = out_.extend(5);
    p[0] = t;
    store_u32(p + 1, n);
  }
  void big_from_int64(std::int64_t v);

  ByteBuffer& out_;
  int minor_version_;
  std::vector<std::size_t> fun_starts_;
};

static_assert(Visitor<Writer>);

// Appends the complete external form (131 ...) of a term; compresses like
// term_to_binary(T, [{compressed, Level}]), which keeps the plain form when compressing
// would not make it smaller.
void encode_into(const Term& term, ByteBuffer& out, const EncodeOptions& options = {});
std::vector<std::uint8_t> encode(const Term& term, const EncodeOptions& options = {});

// Feeds a Term to any visitor, in the decoder's event order (no recursion).
template <Visitor V>
void walk(const Term& term, V& visitor);

}  // namespace camlbeam::etf

#include <camlbeam/etf/detail/walk.hpp>
