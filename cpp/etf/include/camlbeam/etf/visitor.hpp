// The streaming interface between the decoder and whatever builds from it (a Term tree, an
// OCaml value, a NIF term, a re-encoder). The decoder calls a visitor in document order;
// containers are bracketed by begin_/end_ calls and their children come in between:
//
//   begin_tuple(n)  n terms  end_tuple()
//   begin_list(n)   n terms, then the tail term ([] for a proper list)  end_list()
//   begin_map(n)    key, value, key, value ... (2n terms)  end_map()
//   begin_fun(f)    f.free_count terms  end_fun()
//
// Every view (string_view, span, the *View structs) is valid only during the call that
// receives it: it may point into the input, into inflated data, or into a scratch buffer.
// Atoms and node names always arrive as valid UTF-8 of at most 255 characters.
//
// What the decoder does not check, because it needs term comparison: that map keys are
// distinct. A builder that needs the guarantee checks it (TermBuilder does).
#pragma once

#include <camlbeam/etf/error.hpp>

#include <array>
#include <concepts>
#include <cstdint>
#include <span>
#include <string_view>

namespace camlbeam::etf {

struct PidView {
  std::string_view node;
  std::uint32_t id = 0;
  std::uint32_t serial = 0;
  std::uint32_t creation = 0;
};

struct PortView {
  std::string_view node;
  std::uint64_t id = 0;
  std::uint32_t creation = 0;
};

struct ReferenceView {
  std::string_view node;
  std::uint32_t creation = 0;
  std::span<const std::uint32_t> ids;  // wire order, 1..5 words
};

struct FunView {
  std::uint8_t arity = 0;
  std::array<std::uint8_t, 16> uniq{};
  std::uint32_t index = 0;
  std::string_view module;
  std::int64_t old_index = 0;
  std::int64_t old_uniq = 0;
  PidView pid;
  std::uint32_t free_count = 0;
};

// Thrown by a visitor to stop decoding; the decoder turns it into a DecodeError at the
// current offset (TermBuilder does this for a map that holds a key twice).
struct Reject {
  Errc code;
  std::uint64_t detail = 0;
};

template <class V>
concept Visitor = requires(V& v, std::int64_t i, double d, bool b, std::uint32_t n,
                           std::uint8_t u8, std::string_view s, std::span<const std::uint8_t> bytes,
                           const PidView& pid, const PortView& port, const ReferenceView& ref,
                           const FunView& fun) {
  v.integer(i);
  v.big_integer(b, bytes);  // magnitude little-endian, no high zero bytes, beyond int64
  v.float64(d);             // finite; -0.0 kept
  v.atom(s);
  v.binary(bytes);
  v.bitstring(bytes, u8);   // bits used in the last byte, 1..7; its unused bits are zero
  v.nil();
  v.string(bytes);          // STRING_EXT: a proper list of these byte values, never empty
  v.begin_list(n);
  v.end_list();
  v.begin_tuple(n);
  v.end_tuple();
  v.begin_map(n);
  v.end_map();
  v.pid(pid);
  v.port(port);
  v.reference(ref);
  v.begin_fun(fun);
  v.end_fun();
  v.export_fun(s, s, u8);
};

// Takes every event and keeps nothing: for where a term ends (decode_body's DecodeResult::end)
// or whether it decodes at all. Derived visitors pick the events they care about.
struct IgnoreTerm {
  void integer(std::int64_t) {}
  void big_integer(bool, std::span<const std::uint8_t>) {}
  void float64(double) {}
  void atom(std::string_view) {}
  void binary(std::span<const std::uint8_t>) {}
  void bitstring(std::span<const std::uint8_t>, std::uint8_t) {}
  void nil() {}
  void string(std::span<const std::uint8_t>) {}
  void begin_list(std::uint32_t) {}
  void end_list() {}
  void begin_tuple(std::uint32_t) {}
  void end_tuple() {}
  void begin_map(std::uint32_t) {}
  void end_map() {}
  void pid(const PidView&) {}
  void port(const PortView&) {}
  void reference(const ReferenceView&) {}
  void begin_fun(const FunView&) {}
  void end_fun() {}
  void export_fun(std::string_view, std::string_view, std::uint8_t) {}
};
static_assert(Visitor<IgnoreTerm>);

}  // namespace camlbeam::etf
