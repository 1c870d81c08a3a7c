// The non-template parts of the decoder: inflation and character-set helpers.
#include <camlbeam/etf/decoder.hpp>

#include <zlib.h>

#include <limits>

namespace camlbeam::etf::detail {

void raise(const DecodeError& error) { throw Failure{error}; }

bool inflate_exact(std::span<const std::uint8_t> compressed, std::uint8_t* out, std::size_t size,
                   std::size_t& consumed) {
  if (compressed.size() > std::numeric_limits<uInt>::max() ||
      size > std::numeric_limits<uInt>::max())
    return false;
  z_stream zs{};
  if (inflateInit(&zs) != Z_OK) return false;
  zs.next_in = const_cast<Bytef*>(compressed.data());  // zlib's API is not const-correct
  zs.avail_in = static_cast<uInt>(compressed.size());
  // One spare byte tells "inflates to exactly size" from "inflates to more".
  std::uint8_t spare = 0;
  zs.next_out = size > 0 ? out : &spare;
  zs.avail_out = static_cast<uInt>(size > 0 ? size : 1);
  int rc = inflate(&zs, Z_FINISH);
  bool exact = false;
  if (rc == Z_STREAM_END) {
    exact = zs.total_out == size;
  } else if (size > 0 && zs.avail_out == 0 && (rc == Z_BUF_ERROR || rc == Z_OK)) {
    zs.next_out = &spare;
    zs.avail_out = 1;
    rc = inflate(&zs, Z_FINISH);
    exact = false;  // any further output means the stream is longer than declared
    if (rc == Z_STREAM_END && zs.total_out == size) exact = true;
  }
  consumed = static_cast<std::size_t>(zs.total_in);
  inflateEnd(&zs);
  return exact;
}

void latin1_to_utf8(std::span<const std::uint8_t> latin1, std::string& out) {
  out.reserve(out.size() + latin1.size() * 2);
  for (std::uint8_t c : latin1) {
    if (c < 0x80) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back(static_cast<char>(0xC0 | (c >> 6)));
      out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
    }
  }
}

long utf8_length(std::span<const std::uint8_t> s) noexcept {
  long chars = 0;
  std::size_t i = 0;
  const std::size_t n = s.size();
  while (i < n) {
    const std::uint8_t c = s[i];
    if (c < 0x80) {
      ++i;
    } else if (c >= 0xC2 && c <= 0xDF) {
      if (i + 1 >= n || (s[i + 1] & 0xC0) != 0x80) return -1;
      i += 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      if (i + 2 >= n || (s[i + 1] & 0xC0) != 0x80 || (s[i + 2] & 0xC0) != 0x80) return -1;
      if (c == 0xE0 && s[i + 1] < 0xA0) return -1;   // overlong
      if (c == 0xED && s[i + 1] >= 0xA0) return -1;  // UTF-16 surrogates
      i += 3;
    } else if (c >= 0xF0 && c <= 0xF4) {
      if (i + 3 >= n || (s[i + 1] & 0xC0) != 0x80 || (s[i + 2] & 0xC0) != 0x80 ||
          (s[i + 3] & 0xC0) != 0x80)
        return -1;
      if (c == 0xF0 && s[i + 1] < 0x90) return -1;   // overlong
      if (c == 0xF4 && s[i + 1] >= 0x90) return -1;  // beyond U+10FFFF
      i += 4;
    } else {
      return -1;
    }
    ++chars;
  }
  return chars;
}

}  // namespace camlbeam::etf::detail
