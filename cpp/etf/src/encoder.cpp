#include <camlbeam/etf/encoder.hpp>
#include <camlbeam/etf/decoder.hpp>
#include <camlbeam/etf/term.hpp>

#include <zlib.h>

#include <algorithm>
#include <limits>
#include <string>

namespace camlbeam::etf {

void ByteBuffer::grow(std::size_t n) {
  if (n > std::numeric_limits<std::size_t>::max() / 2 - size_) throw std::bad_alloc();
  const std::size_t wanted = std::max({size_ + n, capacity_ + capacity_ / 2, std::size_t{64}});
  auto bigger = std::make_unique_for_overwrite<std::uint8_t[]>(wanted);
  if (size_ != 0) std::memcpy(bigger.get(), data_.get(), size_);
  data_ = std::move(bigger);
  capacity_ = wanted;
}

std::uint32_t Writer::checked_u32(std::size_t n, const char* what) {
  if (n > std::numeric_limits<std::uint32_t>::max())
    throw EncodeError(std::string(what) + " longer than 2^32-1 bytes cannot be encoded");
  return static_cast<std::uint32_t>(n);
}

void Writer::big_integer(bool negative, std::span<const std::uint8_t> magnitude) {
  while (!magnitude.empty() && magnitude.back() == 0) magnitude = magnitude.first(magnitude.size() - 1);
  if (magnitude.size() <= 255) {
    std::uint8_t* p = out_.extend(3 + magnitude.size());
    p[0] = tag::small_big;
    p[1] = static_cast<std::uint8_t>(magnitude.size());
    p[2] = negative ? 1 : 0;
    if (!magnitude.empty()) std::memcpy(p + 3, magnitude.data(), magnitude.size());
  } else {
    std::uint8_t* p = out_.extend(6 + magnitude.size());
    p[0] = tag::large_big;
    store_u32(p + 1, checked_u32(magnitude.size(), "bignum"));
    p[5] = negative ? 1 : 0;
    std::memcpy(p + 6, magnitude.data(), magnitude.size());
  }
}

void Writer::big_from_int64(std::int64_t v) {
  const bool negative = v < 0;
  std::uint64_t m = negative ? 0 - static_cast<std::uint64_t>(v) : static_cast<std::uint64_t>(v);
  std::uint8_t digits[8];
  std::size_t n = 0;
  while (m != 0) {
    digits[n++] = static_cast<std::uint8_t>(m & 0xFF);
    m >>= 8;
  }
  big_integer(negative, {digits, n});
}

void Writer::atom(std::string_view utf8) {
  const auto* bytes = reinterpret_cast<const std::uint8_t*>(utf8.data());
  bool ascii = true;
  for (std::uint8_t c : std::span(bytes, utf8.size())) ascii &= c < 0x80;
  if (ascii) {
    if (utf8.size() > 255) throw EncodeError("atom longer than 255 characters: " + std::string(utf8.substr(0, 40)) + "...");
  } else {
    const long chars = detail::utf8_length({bytes, utf8.size()});
    if (chars < 0) throw EncodeError("atom is not valid UTF-8");
    if (chars > 255) throw EncodeError("atom longer than 255 characters");
  }
  if (minor_version_ < 2) {
    // OTP 25's default: atoms that fit Latin-1 go as ATOM_EXT in Latin-1.
    if (ascii) {
      std::uint8_t* p = out_.extend(3 + utf8.size());
      p[0] = tag::atom_latin1;
      p[1] = 0;
      p[2] = static_cast<std::uint8_t>(utf8.size());
      std::memcpy(p + 3, bytes, utf8.size());
      return;
    }
    std::uint8_t latin1[255];
    std::size_t n = 0;
    bool fits = true;
    for (std::size_t i = 0; i < utf8.size() && fits;) {
      const std::uint8_t c = bytes[i];
      if (c < 0x80) {
        latin1[n++] = c;
        i += 1;
      } else if ((c == 0xC2 || c == 0xC3) && i + 1 < utf8.size()) {
        latin1[n++] = static_cast<std::uint8_t>(((c & 0x03) << 6) | (bytes[i + 1] & 0x3F));
        i += 2;
      } else {
        fits = false;
      }
    }
    if (fits) {
      std::uint8_t* p = out_.extend(3 + n);
      p[0] = tag::atom_latin1;
      p[1] = 0;
      p[2] = static_cast<std::uint8_t>(n);
      std::memcpy(p + 3, latin1, n);
      return;
    }
  }
  if (utf8.size() <= 255) {
    std::uint8_t* p = out_.extend(2 + utf8.size());
    p[0] = tag::small_atom_utf8;
    p[1] = static_cast<std::uint8_t>(utf8.size());
    std::memcpy(p + 2, bytes, utf8.size());
  } else {
    std::uint8_t* p = out_.extend(3 + utf8.size());
    p[0] = tag::atom_utf8;
    p[1] = static_cast<std::uint8_t>(utf8.size() >> 8);
    p[2] = static_cast<std::uint8_t>(utf8.size() & 0xFF);
    std::memcpy(p + 3, bytes, utf8.size());
  }
}

void Writer::bitstring(std::span<const std::uint8_t> bytes, std::uint8_t bits_in_last) {
  if (bits_in_last == 8 || bytes.empty()) {
    binary(bytes);
    return;
  }
  if (bits_in_last == 0 || bits_in_last > 8) throw EncodeError("bits in the last byte must be 1..8");
  std::uint8_t* p = out_.extend(6 + bytes.size());
  p[0] = tag::bit_binary;
  store_u32(p + 1, checked_u32(bytes.size(), "bitstring"));
  p[5] = bits_in_last;
  std::memcpy(p + 6, bytes.data(), bytes.size());
  p[5 + bytes.size()] &= static_cast<std::uint8_t>(0xFF << (8 - bits_in_last));
}

void Writer::string(std::span<const std::uint8_t> bytes) {
  if (bytes.empty()) {
    nil();
  } else if (bytes.size() <= 0xFFFF) {
    std::uint8_t* p = out_.extend(3 + bytes.size());
    p[0] = tag::string;
    p[1] = static_cast<std::uint8_t>(bytes.size() >> 8);
    p[2] = static_cast<std::uint8_t>(bytes.size() & 0xFF);
    std::memcpy(p + 3, bytes.data(), bytes.size());
  } else {
    begin_list(checked_u32(bytes.size(), "list"));
    std::uint8_t* p = out_.extend(2 * bytes.size() + 1);
    for (std::uint8_t b : bytes) {
      *p++ = tag::small_integer;
      *p++ = b;
    }
    *p = tag::nil;
  }
}

void Writer::pid(const PidView& pid) {
  out_.push(tag::new_pid);
  atom(pid.node);
  std::uint8_t* p = out_.extend(12);
  store_u32(p, pid.id);
  store_u32(p + 4, pid.serial);
  store_u32(p + 8, pid.creation);
}

// OTP 25 writes NEW_PORT_EXT only for ids of up to 28 bits (the old port number width),
// V4_PORT_EXT beyond [seen in the conformance test].
void Writer::port(const PortView& port) {
  constexpr std::uint64_t new_port_max_id = (std::uint64_t{1} << 28) - 1;
  const bool v4 = port.id > new_port_max_id;
  out_.push(v4 ? tag::v4_port : tag::new_port);
  atom(port.node);
  if (v4) {
    std::uint8_t* p = out_.extend(12);
    store_u64(p, port.id);
    store_u32(p + 8, port.creation);
  } else {
    std::uint8_t* p = out_.extend(8);
    store_u32(p, static_cast<std::uint32_t>(port.id));
    store_u32(p + 4, port.creation);
  }
}

void Writer::reference(const ReferenceView& ref) {
  if (ref.ids.size() > 5) throw EncodeError("a reference has at most 5 id words");
  std::uint8_t* p = out_.extend(3);
  p[0] = tag::newer_reference;
  p[1] = 0;
  p[2] = static_cast<std::uint8_t>(ref.ids.size());
  atom(ref.node);
  p = out_.extend(4 + 4 * ref.ids.size());
  store_u32(p, ref.creation);
  for (std::uint32_t id : ref.ids) store_u32(p += 4, id);
}

void Writer::begin_fun(const FunView& fun) {
  out_.push(tag::new_fun);
  fun_starts_.push_back(out_.size());
  std::uint8_t* p = out_.extend(4 + 1 + 16 + 4 + 4);
  store_u32(p, 0);  // size, patched by end_fun
  p[4] = fun.arity;
  std::memcpy(p + 5, fun.uniq.data(), 16);
  store_u32(p + 21, fun.index);
  store_u32(p + 25, fun.free_count);
  atom(fun.module);
  integer(fun.old_index);
  integer(fun.old_uniq);
  pid(fun.pid);  // the caller writes the free variables, then end_fun()
}

void Writer::end_fun() {
  const std::size_t start = fun_starts_.back();
  fun_starts_.pop_back();
  store_u32(out_.data() + start, checked_u32(out_.size() - start, "fun"));
}

void Writer::export_fun(std::string_view module, std::string_view function, std::uint8_t arity) {
  out_.push(tag::export_fun);
  atom(module);
  atom(function);
  std::uint8_t* p = out_.extend(2);
  p[0] = tag::small_integer;
  p[1] = arity;
}

namespace {

// term_to_binary's rule: compress only when zlib's output fits in the plain size minus the
// five bytes the COMPRESSED header adds.
void compress_in_place(ByteBuffer& out, std::size_t body_start, int level) {
  const std::size_t body_size = out.size() - body_start;
  if (body_size < 5) return;
  uLongf budget = static_cast<uLongf>(body_size - 5);
  ByteBuffer compressed(budget + 1);
  if (compress2(compressed.data(), &budget, out.data() + body_start,
                static_cast<uLong>(body_size), level) != Z_OK)
    return;
  out.truncate(body_start);
  std::uint8_t* p = out.extend(5 + budget);
  p[0] = tag::compressed;
  const auto size = static_cast<std::uint32_t>(body_size);
  p[1] = static_cast<std::uint8_t>(size >> 24);
  p[2] = static_cast<std::uint8_t>(size >> 16);
  p[3] = static_cast<std::uint8_t>(size >> 8);
  p[4] = static_cast<std::uint8_t>(size);
  std::memcpy(p + 5, compressed.data(), budget);
}

}  // namespace

void encode_into(const Term& term, ByteBuffer& out, const EncodeOptions& options) {
  if (options.compression_level < 0 || options.compression_level > 9)
    throw EncodeError("compression level must be 0..9");
  out.push(tag::version);
  const std::size_t body_start = out.size();
  Writer writer(out, options.minor_version);
  walk(term, writer);
  if (options.compression_level > 0) compress_in_place(out, body_start, options.compression_level);
}

std::vector<std::uint8_t> encode(const Term& term, const EncodeOptions& options) {
  ByteBuffer out;
  encode_into(term, out, options);
  return out.to_vector();
}

}  // namespace camlbeam::etf
