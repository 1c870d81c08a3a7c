// Big-endian reading and writing with every read bounded: private to cpp/dist.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace camlbeam::dist::detail {

class Reader {
 public:
  explicit Reader(std::span<const std::uint8_t> bytes) noexcept : bytes_(bytes) {}
  std::size_t left() const noexcept { return bytes_.size() - at_; }
  bool u8(std::uint8_t& out) noexcept { return get(1, out); }
  bool u16(std::uint16_t& out) noexcept { return get(2, out); }
  bool u32(std::uint32_t& out) noexcept { return get(4, out); }
  bool u64(std::uint64_t& out) noexcept { return get(8, out); }
  bool bytes(std::size_t n, std::span<const std::uint8_t>& out) noexcept {
    if (left() < n) return false;
    out = bytes_.subspan(at_, n);
    at_ += n;
    return true;
  }
  bool text(std::size_t n, std::string& out) {
    std::span<const std::uint8_t> raw;
    if (!bytes(n, raw)) return false;
    out.assign(raw.begin(), raw.end());
    return true;
  }

 private:
  template <class T>
  bool get(std::size_t n, T& out) noexcept {
    if (left() < n) return false;
    T value = 0;
    for (std::size_t i = 0; i < n; ++i) value = static_cast<T>((value << 8) | bytes_[at_ + i]);
    out = value;
    at_ += n;
    return true;
  }

  std::span<const std::uint8_t> bytes_;
  std::size_t at_ = 0;
};

inline void put_u8(std::vector<std::uint8_t>& out, std::uint8_t v) { out.push_back(v); }
inline void put_u16(std::vector<std::uint8_t>& out, std::uint16_t v) {
  out.push_back(static_cast<std::uint8_t>(v >> 8));
  out.push_back(static_cast<std::uint8_t>(v));
}
inline void put_u32(std::vector<std::uint8_t>& out, std::uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<std::uint8_t>(v >> shift));
}
inline void put_u64(std::vector<std::uint8_t>& out, std::uint64_t v) {
  for (int shift = 56; shift >= 0; shift -= 8) out.push_back(static_cast<std::uint8_t>(v >> shift));
}
inline void put_bytes(std::vector<std::uint8_t>& out, std::string_view s) { out.insert(out.end(), s.begin(), s.end()); }
inline void put_bytes(std::vector<std::uint8_t>& out, std::span<const std::uint8_t> s) {
  out.insert(out.end(), s.begin(), s.end());
}

// Printable for an error message: at most `max` bytes, non-printable ones as \xNN.
std::string printable(std::span<const std::uint8_t> bytes, std::size_t max = 64);

}  // namespace camlbeam::dist::detail
