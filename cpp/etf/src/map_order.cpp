// The entry order of OTP 25's term_to_binary/1 for a map of more than 32 keys.
//
// Such a map is a HAMT (erts/emulator/beam/erl_map.c, read in the OTP 25.2.3 sources of
// Debian 12's erlang package and checked against that runtime). Each key has a 32-bit hash,
// make_map_hash(Key, 0) = make_internal_hash(Key, 0) of utils.c; the trie consumes it four
// bits at a time, lowest nibble first. Keys whose 32 bits all agree are told apart eight
// levels down by make_map_hash(Key, 1), then make_map_hash(Key, 2) and so on: the depth is
// mixed into a salt for make_internal_hash (hashmap_restore_hash, erl_map.h). enc_term_int
// in external.c pushes a node's children on its stack in slot order and pops them, so it
// writes the highest slot first, depth first. The wire order is therefore the keys sorted,
// highest first, by their sequence of nibbles: by the nibble-reversed hash, descending, ties
// broken the same way by the next depth's hash.
//
// make_internal_hash is ported here for every kind of key whose hash is a function of its
// value: integers of any size, floats, binaries, bitstrings, [], lists, tuples and maps.
// The rest hash what only the running VM knows: an atom its index in that node's atom table
// (the order the node happened to create its atoms in), local funs their module's atom
// index, export funs the address of their export entry, external pids, ports and references
// the address of their node entry, and a local pid, port or reference hashes unlike the
// same one seen from another node. Two runs of one program can order such a map differently
// (seen on OTP 25), so no encoder can match those bytes; for these kinds a stand-in built from
// names and numbers takes the place of index or address, which keeps our output deterministic.
//
// The port itself is detail/map_hash.hpp, a template over a view of terms, shared with
// cpp/conv's view of OCaml values; this file is the view of etf::Term.
#include <camlbeam/etf/detail/map_hash.hpp>
#include <camlbeam/etf/map_order.hpp>
#include <camlbeam/etf/term.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

namespace camlbeam::etf {

namespace {

// etf::Term as detail::MapKeyView sees it (detail/map_hash.hpp says what each member is).
class TermView {
 public:
  using TermRef = const Term*;
  using MapRef = std::span<const Term>;  // the flat entries: key, value, key, value ...
  using Elements = std::span<const Term>;
  struct Cell {
    const List* list = nullptr;
    std::size_t index = 0;  // of an element, never of the tail
  };

  std::size_t map_size(MapRef flat) const noexcept { return flat.size() / 2; }
  TermRef map_key(MapRef flat, std::size_t i) const noexcept { return &flat[2 * i]; }
  TermRef map_value(MapRef flat, std::size_t i) const noexcept { return &flat[2 * i + 1]; }
  const void* map_identity(MapRef flat) const noexcept { return flat.data(); }

  TermRef take_next(Elements& rest) const noexcept {
    const TermRef t = &rest.front();
    rest = rest.subspan(1);
    return t;
  }
  bool at_end(const Elements& rest) const noexcept { return rest.empty(); }

  TermRef head(const Cell& c) const noexcept { return &c.list->items[c.index]; }
  bool advance(Cell& c) const noexcept {
    const std::size_t length = c.list->items.size() - 1;  // the last item is the tail
    if (c.index + 1 < length) {
      ++c.index;
      return true;
    }
    if (const auto* more = c.list->items[length].get_if<List>()) {
      c = {more, 0};
      return true;
    }
    return false;
  }
  std::optional<TermRef> improper_tail(const Cell& c) const noexcept {
    const Term& tail = c.list->items.back();
    if (tail.kind() == Kind::nil) return std::nullopt;
    return &tail;
  }

  std::optional<std::uint8_t> as_byte(TermRef t) const noexcept {  // is_byte()
    const auto* v = t->get_if<std::int64_t>();
    if (v == nullptr || *v < 0 || *v > 255) return std::nullopt;
    return static_cast<std::uint8_t>(*v);
  }

  template <class Visitor>
  void visit(TermRef term, Visitor& visitor) const {
    const Term& t = *term;
    switch (t.kind()) {
      case Kind::integer: visitor.integer(*t.get_if<std::int64_t>()); break;
      case Kind::big_integer: {
        const BigInteger& big = **t.get_if<Boxed<BigInteger>>();
        visitor.big_integer(big.negative, big.magnitude);
        break;
      }
      case Kind::float64: visitor.float64(*t.get_if<double>()); break;
      case Kind::atom: visitor.atom(t.get_if<Atom>()->name); break;
      case Kind::nil: visitor.nil(); break;
      case Kind::binary: visitor.binary(t.get_if<Binary>()->bytes); break;
      case Kind::bitstring: {
        const Bitstring& b = *t.get_if<Bitstring>();
        visitor.bitstring(b.bytes, b.bits_in_last);
        break;
      }
      case Kind::tuple: {
        const auto& elements = t.get_if<Tuple>()->elements;
        visitor.tuple(elements.size(), Elements(elements));
        break;
      }
      case Kind::map: visitor.map(MapRef(t.get_if<Map>()->flat)); break;
      case Kind::list: visitor.list(Cell{t.get_if<List>(), 0}); break;
      case Kind::pid: {
        const Pid& p = **t.get_if<Boxed<Pid>>();
        visitor.pid(PidView{p.node, p.id, p.serial, p.creation});
        break;
      }
      case Kind::port: {
        const Port& p = **t.get_if<Boxed<Port>>();
        visitor.port(PortView{p.node, p.id, p.creation});
        break;
      }
      case Kind::reference: {
        const Reference& r = **t.get_if<Boxed<Reference>>();
        visitor.reference(ReferenceView{r.node, r.creation, r.ids});
        break;
      }
      case Kind::export_fun: {
        const ExportFun& e = **t.get_if<Boxed<ExportFun>>();
        visitor.export_fun(e.module, e.function, e.arity);
        break;
      }
      case Kind::fun: {
        const Fun& f = **t.get_if<Boxed<Fun>>();
        visitor.local_fun(f.free_vars.size(), f.module, f.index, f.old_uniq, Elements(f.free_vars));
        break;
      }
    }
  }
};

static_assert(detail::MapKeyView<TermView>);

}  // namespace

std::vector<std::uint32_t> hashmap_encoding_order(std::span<const Term> flat_sorted_entries) {
  TermView view;
  return detail::hashmap_encoding_order(view, TermView::MapRef(flat_sorted_entries));
}

}  // namespace camlbeam::etf
