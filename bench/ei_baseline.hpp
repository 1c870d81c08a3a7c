// The libei baseline: the best decode and encode erl_interface 5.3 offers, shaped like our
// codec's interfaces so that one payload description and one DigestVisitor serve both.
//
// Decoding is what a careful libei user writes: ei_get_type, then the one ei_decode_* for
// that type, the zero-copy ei_decode_bitstring for binaries, and an explicit stack (reused
// between calls) instead of recursion, because the payloads include a 10,000-deep term.
// Encoding goes through ei_x_encode_* into an ei_x_buff that the caller reuses.
#pragma once

#include <camlbeam/etf/visitor.hpp>

#include <ei.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace camlbeam::bench {

static_assert(sizeof(long) == 8, "ei_decode_long/ei_x_encode_long must carry 64-bit integers");

// State a libei decode loop keeps between calls, as a long-lived C-node would.
struct EiScratch {
  enum class Open : std::uint8_t { tuple, list, map };
  struct Frame {
    long remaining;  // children not yet started
    Open kind;
  };
  std::vector<Frame> stack;
  std::vector<char> text = std::vector<char>(65536 + 1);  // STRING_EXT: u16 length + NUL
};

// Decodes one external term (version byte included) with libei and feeds its values to
// `visitor` in our decoder's event order. Handles the term kinds the payloads use; returns
// false on anything else or when libei reports an error. `*end` is the index after the term.
template <etf::Visitor V>
bool ei_decode_visit(const char* buf, V& visitor, EiScratch& scratch, int* end = nullptr) {
  using Open = EiScratch::Open;
  auto& stack = scratch.stack;
  stack.clear();
  int index = 0;
  int version = 0;
  if (ei_decode_version(buf, &index, &version) < 0) return false;
  for (;;) {
    int type = 0;
    int size = 0;
    if (ei_get_type(buf, &index, &type, &size) < 0) return false;
    switch (type) {
      case ERL_SMALL_INTEGER_EXT:
      case ERL_INTEGER_EXT:
      case ERL_SMALL_BIG_EXT:
      case ERL_LARGE_BIG_EXT: {
        long v = 0;
        if (ei_decode_long(buf, &index, &v) < 0) return false;  // beyond 64 bits: not needed here
        visitor.integer(v);
        break;
      }
      case ERL_FLOAT_EXT:
      case NEW_FLOAT_EXT: {
        double v = 0;
        if (ei_decode_double(buf, &index, &v) < 0) return false;
        visitor.float64(v);
        break;
      }
      case ERL_ATOM_EXT:
      case ERL_SMALL_ATOM_EXT:
      case ERL_ATOM_UTF8_EXT:
      case ERL_SMALL_ATOM_UTF8_EXT: {
        // UTF-8 out, as our decoder delivers; libei only decodes atoms by copying.
        char name[MAXATOMLEN_UTF8];
        erlang_char_encoding was{};
        erlang_char_encoding got{};
        if (ei_decode_atom_as(buf, &index, name, sizeof name, ERLANG_UTF8, &was, &got) < 0) return false;
        visitor.atom(std::string_view(name));
        break;
      }
      case ERL_BINARY_EXT:
      case ERL_BIT_BINARY_EXT: {
        const char* data = nullptr;
        unsigned int bit_offset = 0;
        std::size_t bits = 0;
        if (ei_decode_bitstring(buf, &index, &data, &bit_offset, &bits) < 0) return false;
        std::span<const std::uint8_t> bytes(reinterpret_cast<const std::uint8_t*>(data), (bits + 7) / 8);
        if (bits % 8 == 0) visitor.binary(bytes);
        else visitor.bitstring(bytes, static_cast<std::uint8_t>(bits % 8));
        break;
      }
      case ERL_STRING_EXT:
        if (ei_decode_string(buf, &index, scratch.text.data()) < 0) return false;
        visitor.string(std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(scratch.text.data()),
                                                     static_cast<std::size_t>(size)));
        break;
      case ERL_NIL_EXT:
      case ERL_LIST_EXT: {
        int n = 0;
        if (ei_decode_list_header(buf, &index, &n) < 0) return false;
        if (n == 0) {
          visitor.nil();
          break;
        }
        visitor.begin_list(static_cast<std::uint32_t>(n));
        stack.push_back({long{n} + 1, Open::list});  // the tail is a child too
        break;
      }
      case ERL_SMALL_TUPLE_EXT:
      case ERL_LARGE_TUPLE_EXT: {
        int n = 0;
        if (ei_decode_tuple_header(buf, &index, &n) < 0) return false;
        visitor.begin_tuple(static_cast<std::uint32_t>(n));
        if (n == 0) visitor.end_tuple();
        else stack.push_back({n, Open::tuple});
        break;
      }
      case ERL_MAP_EXT: {
        int n = 0;
        if (ei_decode_map_header(buf, &index, &n) < 0) return false;
        visitor.begin_map(static_cast<std::uint32_t>(n));
        if (n == 0) visitor.end_map();
        else stack.push_back({2 * long{n}, Open::map});
        break;
      }
      default:
        return false;
    }
    // Move on to the next child, closing every container that has none left.
    for (;;) {
      if (stack.empty()) {
        if (end != nullptr) *end = index;
        return true;
      }
      auto& top = stack.back();
      if (top.remaining != 0) {
        --top.remaining;
        break;
      }
      switch (top.kind) {
        case Open::tuple: visitor.end_tuple(); break;
        case Open::list: visitor.end_list(); break;
        case Open::map: visitor.end_map(); break;
      }
      stack.pop_back();
    }
  }
}

// ei_x_encode_* behind the subset of the Visitor interface the payloads use, so a payload
// describes its encoding once (payloads.hpp) for both etf::Writer and libei.
// libei writes every atom as SMALL_ATOM_UTF8_EXT (OTP 25's term_to_binary writes ATOM_EXT
// for Latin-1 names); otherwise its bytes equal term_to_binary's for these payloads.
class EiSink {
 public:
  explicit EiSink(ei_x_buff& x) : x_(x) {}

  void integer(std::int64_t v) { check(ei_x_encode_long(&x_, v)); }
  void float64(double v) { check(ei_x_encode_double(&x_, v)); }
  void atom(std::string_view name) { check(ei_x_encode_atom_len(&x_, name.data(), length(name.size()))); }
  void binary(std::span<const std::uint8_t> bytes) {
    check(ei_x_encode_binary(&x_, bytes.data(), length(bytes.size())));
  }
  void string(std::span<const std::uint8_t> bytes) {
    check(ei_x_encode_string_len(&x_, reinterpret_cast<const char*>(bytes.data()), length(bytes.size())));
  }
  void nil() { check(ei_x_encode_empty_list(&x_)); }
  void begin_list(std::uint32_t n) { check(ei_x_encode_list_header(&x_, n)); }
  void end_list() noexcept {}
  void begin_tuple(std::uint32_t n) { check(ei_x_encode_tuple_header(&x_, n)); }
  void end_tuple() noexcept {}
  void begin_map(std::uint32_t n) { check(ei_x_encode_map_header(&x_, n)); }
  void end_map() noexcept {}

  // False when any ei_x_encode_* call failed (it fails only when it cannot grow the buffer).
  bool ok() const noexcept { return ok_; }

 private:
  static int length(std::size_t n) noexcept { return static_cast<int>(n); }
  void check(int rc) noexcept { ok_ &= rc == 0; }

  ei_x_buff& x_;
  bool ok_ = true;
};

}  // namespace camlbeam::bench
