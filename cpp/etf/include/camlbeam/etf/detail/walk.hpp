// Iterative walk of a Term tree in the decoder's event order; included by encoder.hpp.
#pragma once

#include <camlbeam/etf/map_order.hpp>
#include <camlbeam/etf/term.hpp>

#include <limits>
#include <vector>

namespace camlbeam::etf {

namespace detail {

enum class WalkEnd : std::uint8_t { tuple, list, map, fun };

// Trivially copyable, so the walk stack grows by memcpy; the entry orders of large maps
// live on a side stack (WalkFrame::order_at indexes it, no_order when the frame has none).
struct WalkFrame {
  const Term* items;
  std::size_t next;
  std::size_t count;
  std::size_t order_at;
  WalkEnd end;
};
inline constexpr std::size_t no_order = static_cast<std::size_t>(-1);

inline std::uint32_t walk_count(std::size_t n) {
  if (n > std::numeric_limits<std::uint32_t>::max())
    throw EncodeError("a container has more than 2^32-1 elements");
  return static_cast<std::uint32_t>(n);
}

inline PidView pid_view(const Pid& p) noexcept { return PidView{p.node, p.id, p.serial, p.creation}; }

// True when a list is what term_to_binary writes as STRING_EXT; fills bytes.
inline bool as_external_string(const List& list, std::vector<std::uint8_t>& bytes) {
  const std::size_t n = list.items.size() - 1;
  if (n > 0xFFFF || list.items.back().kind() != Kind::nil) return false;
  bytes.resize(n);
  for (std::size_t i = 0; i < n; ++i) {
    const auto* v = list.items[i].get_if<std::int64_t>();
    if (v == nullptr || *v < 0 || *v > 255) return false;
    bytes[i] = static_cast<std::uint8_t>(*v);
  }
  return true;
}

}  // namespace detail

template <Visitor V>
void walk(const Term& root, V& visitor) {
  using detail::WalkEnd;
  using detail::WalkFrame;
  std::vector<WalkFrame> stack;
  std::vector<std::uint32_t> orders;
  std::vector<std::uint8_t> string_bytes;
  const Term* current = &root;
  for (;;) {
    const Term& t = *current;
    switch (t.kind()) {
      case Kind::integer: visitor.integer(*t.get_if<std::int64_t>()); break;
      case Kind::big_integer: {
        const auto& big = **t.get_if<Boxed<BigInteger>>();
        visitor.big_integer(big.negative, big.magnitude);
        break;
      }
      case Kind::float64: visitor.float64(*t.get_if<double>()); break;
      case Kind::atom: visitor.atom(t.get_if<Atom>()->name); break;
      case Kind::reference: {
        const auto& r = **t.get_if<Boxed<Reference>>();
        visitor.reference(ReferenceView{r.node, r.creation, r.ids});
        break;
      }
      case Kind::fun: {
        const auto& f = **t.get_if<Boxed<Fun>>();
        FunView view{f.arity, f.uniq, f.index, f.module, f.old_index, f.old_uniq,
                     detail::pid_view(f.pid), detail::walk_count(f.free_vars.size())};
        visitor.begin_fun(view);
        if (f.free_vars.empty()) visitor.end_fun();
        else stack.push_back(WalkFrame{f.free_vars.data(), 0, f.free_vars.size(), detail::no_order, WalkEnd::fun});
        break;
      }
      case Kind::export_fun: {
        const auto& e = **t.get_if<Boxed<ExportFun>>();
        visitor.export_fun(e.module, e.function, e.arity);
        break;
      }
      case Kind::port: {
        const auto& p = **t.get_if<Boxed<Port>>();
        visitor.port(PortView{p.node, p.id, p.creation});
        break;
      }
      case Kind::pid: visitor.pid(detail::pid_view(**t.get_if<Boxed<Pid>>())); break;
      case Kind::tuple: {
        const auto& elements = t.get_if<Tuple>()->elements;
        visitor.begin_tuple(detail::walk_count(elements.size()));
        if (elements.empty()) visitor.end_tuple();
        else stack.push_back(WalkFrame{elements.data(), 0, elements.size(), detail::no_order, WalkEnd::tuple});
        break;
      }
      case Kind::map: {
        const auto& flat = t.get_if<Map>()->flat;
        const std::size_t pairs = flat.size() / 2;
        visitor.begin_map(detail::walk_count(pairs));
        if (pairs == 0) {
          visitor.end_map();
          break;
        }
        WalkFrame frame{flat.data(), 0, flat.size(), detail::no_order, WalkEnd::map};
        if (pairs > flatmap_max_keys) {
          frame.order_at = orders.size();
          const std::vector<std::uint32_t> order = hashmap_encoding_order(flat);
          orders.insert(orders.end(), order.begin(), order.end());
        }
        stack.push_back(frame);
        break;
      }
      case Kind::nil: visitor.nil(); break;
      case Kind::list: {
        const auto& list = *t.get_if<List>();
        if (detail::as_external_string(list, string_bytes)) {
          visitor.string(string_bytes);
          break;
        }
        visitor.begin_list(detail::walk_count(list.items.size() - 1));
        stack.push_back(WalkFrame{list.items.data(), 0, list.items.size(), detail::no_order, WalkEnd::list});
        break;
      }
      case Kind::binary: visitor.binary(t.get_if<Binary>()->bytes); break;
      case Kind::bitstring: {
        const auto& b = *t.get_if<Bitstring>();
        visitor.bitstring(b.bytes, b.bits_in_last);
        break;
      }
    }
    // Next child, closing every container that is done.
    for (;;) {
      if (stack.empty()) return;
      WalkFrame& top = stack.back();
      if (top.next < top.count) {
        std::size_t i = top.next++;
        if (top.order_at != detail::no_order) i = 2 * std::size_t{orders[top.order_at + i / 2]} + (i % 2);
        current = &top.items[i];
        break;
      }
      switch (top.end) {
        case WalkEnd::tuple: visitor.end_tuple(); break;
        case WalkEnd::list: visitor.end_list(); break;
        case WalkEnd::map:
          if (top.order_at != detail::no_order) orders.resize(top.order_at);
          visitor.end_map();
          break;
        case WalkEnd::fun: visitor.end_fun(); break;
      }
      stack.pop_back();
    }
  }
}

}  // namespace camlbeam::etf
