// Iterative walk of an Erl.Term.t; included by conv.hpp.
//
// It allocates nothing on the OCaml heap (bignums are read through zarith's C interface),
// so the raw values on its stack stay valid: no GC can run while it walks.
#pragma once

#include <camlbeam/conv/layout.hpp>
#include <camlbeam/etf/error.hpp>
#include <camlbeam/etf/map_order.hpp>

#include <caml/bigarray.h>
#include <caml/mlvalues.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <span>
#include <utility>
#include <string_view>
#include <vector>

namespace camlbeam::conv {

namespace detail {

inline std::string_view string_view_of(value s) noexcept {
  return {String_val(s), caml_string_length(s)};
}
inline std::span<const std::uint8_t> bytes_of(value s) noexcept {
  return {reinterpret_cast<const std::uint8_t*>(String_val(s)), caml_string_length(s)};
}
// The bytes of an Erl.Binary.t, wherever they live.
inline std::span<const std::uint8_t> binary_bytes_of(value b) noexcept {
  const value payload = Field(b, 0);
  if (tag_of(b) == layout::binary_tag::heap) return bytes_of(payload);
  return {static_cast<const std::uint8_t*>(Caml_ba_data_val(payload)),
          static_cast<std::size_t>(Caml_ba_array_val(payload)->dim[0])};
}
inline std::uint32_t u32_of(value v) {
  const intnat n = Long_val(v);
  if (n < 0 || n > 0xFFFFFFFF) throw etf::EncodeError("a pid, port or reference number is not an unsigned 32-bit value");
  return static_cast<std::uint32_t>(n);
}
inline std::uint32_t count_of(std::size_t n) {
  if (n > 0xFFFFFFFF) throw etf::EncodeError("a container has more than 2^32-1 elements");
  return static_cast<std::uint32_t>(n);
}

inline etf::PidView pid_view(value record) {
  return {string_view_of(Field(record, 0)), u32_of(Field(record, 1)), u32_of(Field(record, 2)),
          u32_of(Field(record, 3))};
}

// A Bigint's sign and little-endian magnitude; fits_int64 when it violates the invariant
// and is small (written as an integer then, as term_to_binary would).
struct BigDigits {
  bool negative = false;
  bool fits_int64 = false;
  std::int64_t small = 0;
  std::vector<std::uint8_t> magnitude;
};
BigDigits big_digits(value z);

// Erlang writes a proper list of at most 65535 integers 0..255 as STRING_EXT.
inline bool list_as_string(value cells, std::vector<std::uint8_t>& bytes) {
  bytes.clear();
  for (value c = cells; c != Val_emptylist; c = Field(c, 1)) {
    const value elem = Field(c, 0);
    if (tag_of(elem) != layout::term_tag::int_) return false;
    const intnat n = Long_val(Field(elem, 0));
    if (n < 0 || n > 255 || bytes.size() == 0xFFFF) return false;
    bytes.push_back(static_cast<std::uint8_t>(n));
  }
  return true;
}

inline std::size_t list_length(value cells) noexcept {
  std::size_t n = 0;
  for (value c = cells; c != Val_emptylist; c = Field(c, 1)) ++n;
  return n;
}

// What a term without children is, read once for every reader of Erl.Term.t values (the
// walk below, the map order's view in ocaml_walker.cpp): calls the one method of `out` that
// says it (integer, big_integer, float64, atom, nil, binary, bitstring, pid, port,
// reference or export_fun, with etf::Visitor's arguments) and returns true. Returns false
// for a term with children (a tuple, a map, a non-empty list, a local fun), which each
// reader takes apart its own way. Throws EncodeError for what no Erl.Term.t is. Always
// inlined: out of line, the walk's loop paid a call per term (22% more instructions on a
// list of 100,000 integers, measured with callgrind).
template <class Out>
[[gnu::always_inline]] inline bool read_leaf(value v, Out& out) {
  namespace tag = layout::term_tag;
  if (Is_long(v)) throw etf::EncodeError("not an Erl.Term.t value");
  switch (tag_of(v)) {
    case tag::int_: out.integer(Long_val(Field(v, 0))); return true;
    case tag::bigint: {
      const BigDigits big = big_digits(Field(v, 0));
      if (big.fits_int64) out.integer(big.small);
      else out.big_integer(big.negative, big.magnitude);
      return true;
    }
    case tag::float_: {
      const double d = Double_val(Field(v, 0));
      if (!std::isfinite(d)) throw etf::EncodeError("Erlang has no NaN or infinite floats");
      out.float64(d);
      return true;
    }
    case tag::atom: out.atom(string_view_of(Field(v, 0))); return true;
    case tag::ref: {
      const value r = Field(v, 0);
      const value ids = Field(r, 2);
      std::uint32_t words[5];
      const std::size_t n = Wosize_val(ids);
      if (n == 0 || n > 5) throw etf::EncodeError("a reference has 1 to 5 id words");
      for (std::size_t i = 0; i < n; ++i) words[i] = u32_of(Field(ids, i));
      out.reference(etf::ReferenceView{string_view_of(Field(r, 0)), u32_of(Field(r, 1)),
                                       std::span<const std::uint32_t>(words, n)});
      return true;
    }
    case tag::fun: {
      const value f = Field(v, 0);
      if (tag_of(f) != layout::fun_tag::export_) return false;
      out.export_fun(string_view_of(Field(f, 0)), string_view_of(Field(f, 1)),
                     static_cast<std::uint8_t>(Long_val(Field(f, 2))));
      return true;
    }
    case tag::port: {
      const value p = Field(v, 0);
      out.port(etf::PortView{string_view_of(Field(p, 0)), static_cast<std::uint64_t>(Int64_val(Field(p, 1))),
                             u32_of(Field(p, 2))});
      return true;
    }
    case tag::pid: out.pid(pid_view(Field(v, 0))); return true;
    case tag::list:
    case tag::improper:
      if (Field(v, 0) != Val_emptylist) return false;
      if (tag_of(v) == tag::improper) throw etf::EncodeError("an improper list has at least one element");
      out.nil();
      return true;
    case tag::binary: out.binary(binary_bytes_of(Field(v, 0))); return true;
    case tag::bitstring: {
      const intnat bits = Long_val(Field(v, 1));
      if (bits < 1 || bits > 7) throw etf::EncodeError("a bitstring uses 1..7 bits of its last byte");
      out.bitstring(bytes_of(Field(v, 0)), static_cast<std::uint8_t>(bits));
      return true;
    }
    case tag::tuple:
    case tag::map: return false;
    case tag::handle:
      // Only a sink that can hold an OCaml value for Erlang takes one (the NIF's, as a
      // resource); bytes cannot.
      if constexpr (requires(const std::optional<etf::PidView>& pid) { out.handle(v, pid); }) {
        const value handle = Field(v, 0);
        const value monitor = Field(handle, layout::handle_field::monitor);
        std::optional<etf::PidView> pid;
        if (Is_block(monitor)) pid = pid_view(Field(monitor, 0));
        out.handle(handle, pid);
        return true;
      } else {
        // Also what the NIF sink gets for a handle among the keys of a map over 32 keys,
        // whose order OTP's hash decides (ocaml_walker.cpp): a resource made later has none.
        throw etf::EncodeError(
            "an OCaml handle (Erl.Term.Handle, ocaml:ref()) cannot be written as ETF: handles cross "
            "only the nif transport, and not as keys of a map of more than 32 keys");
      }
    default: throw etf::EncodeError("not an Erl.Term.t value (unknown constructor)");
  }
}

// Maps over 32 keys: the order OTP writes them in (etf/map_order.hpp), computed on the
// OCaml values themselves (ocaml_walker.cpp's view for etf/detail/map_hash.hpp).
std::vector<std::uint32_t> ocaml_hashmap_order(value bindings);

enum class Pending : std::uint8_t { tuple, map, list_cells, fun_cells };

struct WalkFrame {
  WalkFrame(Pending k, value src, std::size_t n = 0, value tail_term = Val_unit)
      : kind(k), source(src), count(n), tail(tail_term) {}

  Pending kind;
  value source;           // tuple/map: the array; list/fun: the next cons cell
  std::size_t next = 0;   // tuple/map: next index (maps: 2 per binding)
  std::size_t count = 0;  // tuple/map: children; lists: 1 once the tail is written
  value tail = Val_unit;  // lists: the tail term to write after the cells (Val_unit: [])
  std::vector<std::uint32_t> order;  // maps over 32 keys
};

// A walk's stack and the bytes of its last string, kept between walks on each thread: a
// small term's walk would otherwise allocate them and free them again (malloc and free:
// 5% of a short nif call, perf). A walk inside a walk (none does) would allocate its own.
// What grew past kept_size is not kept.
class WalkScratch {
 public:
  static constexpr std::size_t kept_size = 4096;
  WalkScratch() noexcept : scratch_(std::move(spare())) {
    scratch_.frames.clear();
    scratch_.string_bytes.clear();
  }
  ~WalkScratch() {
    scratch_.frames.clear();
    if (scratch_.frames.capacity() <= kept_size && scratch_.string_bytes.capacity() <= kept_size)
      spare() = std::move(scratch_);
  }
  WalkScratch(const WalkScratch&) = delete;
  WalkScratch& operator=(const WalkScratch&) = delete;
  std::vector<WalkFrame>& frames() noexcept { return scratch_.frames; }
  std::vector<std::uint8_t>& string_bytes() noexcept { return scratch_.string_bytes; }

 private:
  struct Kept {
    std::vector<WalkFrame> frames;
    std::vector<std::uint8_t> string_bytes;
  };
  static Kept& spare() noexcept {
    static thread_local Kept kept;
    return kept;
  }
  Kept scratch_;
};

}  // namespace detail

template <etf::Visitor V>
void walk_ocaml(value root, V& sink) {
  namespace tag = layout::term_tag;
  using detail::Pending;
  detail::WalkScratch scratch;
  std::vector<detail::WalkFrame>& stack = scratch.frames();
  std::vector<std::uint8_t>& string_bytes = scratch.string_bytes();
  value current = root;
  for (;;) {
    const value v = current;
    if (!detail::read_leaf(v, sink)) {
      switch (tag_of(v)) {
        case tag::fun: {  // a local fun: read_leaf takes the export ones
          const value f = Field(v, 0);
          namespace lf = layout::local_field;
          etf::FunView view;
          view.arity = static_cast<std::uint8_t>(Long_val(Field(f, lf::arity)));
          const auto uniq = detail::bytes_of(Field(f, lf::uniq));
          if (uniq.size() != 16) throw etf::EncodeError("a fun's uniq is 16 bytes");
          std::copy(uniq.begin(), uniq.end(), view.uniq.begin());
          view.index = detail::u32_of(Field(f, lf::index));
          view.module = detail::string_view_of(Field(f, lf::module_));
          view.old_index = Long_val(Field(f, lf::old_index));
          view.old_uniq = Long_val(Field(f, lf::old_uniq));
          view.pid = detail::pid_view(Field(f, lf::pid));
          const value cells = Field(f, lf::free_vars);
          view.free_count = detail::count_of(detail::list_length(cells));
          sink.begin_fun(view);
          if (cells == Val_emptylist) sink.end_fun();
          else stack.emplace_back(Pending::fun_cells, cells);
          break;
        }
        case tag::tuple: {
          const value elements = Field(v, 0);
          const std::size_t n = Wosize_val(elements);
          sink.begin_tuple(detail::count_of(n));
          if (n == 0) sink.end_tuple();
          else stack.emplace_back(Pending::tuple, elements, n);
          break;
        }
        case tag::map: {
          const value bindings = Field(v, 0);
          const std::size_t n = Wosize_val(bindings);
          sink.begin_map(detail::count_of(n));
          if (n == 0) {
            sink.end_map();
            break;
          }
          detail::WalkFrame frame(Pending::map, bindings, 2 * n);
          if (n > etf::flatmap_max_keys) frame.order = detail::ocaml_hashmap_order(bindings);
          stack.push_back(std::move(frame));
          break;
        }
        case tag::list:
        case tag::improper: {  // not empty: read_leaf takes []
          const value cells = Field(v, 0);
          const bool proper = tag_of(v) == tag::list;
          if (proper && detail::list_as_string(cells, string_bytes)) {
            sink.string(string_bytes);
            break;
          }
          sink.begin_list(detail::count_of(detail::list_length(cells)));
          stack.emplace_back(Pending::list_cells, cells, 0, proper ? Val_unit : Field(v, 1));
          break;
        }
      }
    }
    // The next term to write, closing every container that is done.
    for (;;) {
      if (stack.empty()) return;
      detail::WalkFrame& top = stack.back();
      bool found = true;
      switch (top.kind) {
        case Pending::tuple:
          if (top.next < top.count) current = Field(top.source, top.next++);
          else found = false;
          break;
        case Pending::map:
          if (top.next < top.count) {
            const std::size_t i = top.next++;
            const std::size_t binding = top.order.empty() ? i / 2 : top.order[i / 2];
            current = Field(Field(top.source, binding), i % 2);
          } else {
            found = false;
          }
          break;
        case Pending::list_cells:
        case Pending::fun_cells:
          // Elements without children are written here, in a loop of their own: through
          // the outer one each paid the frame's dispatch too (ocaml_to_nif of 100 floats
          // 1.5 -> 1.3 us).
          while (top.source != Val_emptylist && detail::read_leaf(Field(top.source, 0), sink))
            top.source = Field(top.source, 1);
          if (top.source != Val_emptylist) {
            current = Field(top.source, 0);
            top.source = Field(top.source, 1);
          } else if (top.kind == Pending::list_cells && top.count == 0) {
            top.count = 1;  // the tail is written once
            if (top.tail == Val_unit) {
              sink.nil();
              continue;
            }
            current = top.tail;
          } else {
            found = false;
          }
          break;
      }
      if (found) break;
      switch (top.kind) {
        case Pending::tuple: sink.end_tuple(); break;
        case Pending::map: sink.end_map(); break;
        case Pending::list_cells: sink.end_list(); break;
        case Pending::fun_cells: sink.end_fun(); break;
      }
      stack.pop_back();
    }
  }
}

}  // namespace camlbeam::conv
