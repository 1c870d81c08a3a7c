// Erl.Term.t → term sinks: the non-template parts of walk_ocaml.
#include <camlbeam/conv/conv.hpp>

#include <camlbeam/etf/detail/map_hash.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include <gmp.h>
#include <zarith.h>

namespace camlbeam::conv {

namespace detail {

BigDigits big_digits(value z) {
  BigDigits out;
  mpz_t m;
  ml_z_mpz_init_set_z(m, z);  // reads the Z.t; allocates only GMP memory
  if (mpz_fits_slong_p(m)) {
    out.fits_int64 = true;
    out.small = mpz_get_si(m);
  } else {
    out.negative = mpz_sgn(m) < 0;
    out.magnitude.resize((mpz_sizeinbase(m, 2) + 7) / 8);
    std::size_t written = 0;
    mpz_export(out.magnitude.data(), &written, -1, 1, 0, 0, m);  // little-endian bytes of |m|
    out.magnitude.resize(written);
  }
  mpz_clear(m);
  return out;
}

namespace {

// Erl.Term.t as etf::detail::MapKeyView sees it (etf/detail/map_hash.hpp says what each
// member is): OTP's order of a large map computed on the OCaml values themselves, with no
// tree in between. Like walk_ocaml it only reads, so no GC can run and the raw values it
// holds stay valid. Terms without children it reads with walk_ocaml's own read_leaf, so a
// bad key fails alike whichever of the two reads it first.
class OcamlTermView {
 public:
  using TermRef = value;  // an Erl.Term.t
  using MapRef = value;   // a Map's array of (key, value) pairs
  // A tuple's array from `next` to `end`, or (cells) a fun's free variables from a cons cell.
  struct Elements {
    value source = Val_emptylist;
    std::size_t next = 0;
    std::size_t end = 0;
    bool cells = false;
  };
  // A cons cell, and the Erl.Term.t after the list's last cell (an Improper's tail), or
  // no_tail for a proper list. Erl.Term.t values are all blocks, so an immediate cannot
  // be a tail.
  struct Cell {
    value cell = Val_emptylist;
    value tail = no_tail;
  };
  static constexpr value no_tail = Val_unit;

  std::size_t map_size(MapRef bindings) const noexcept { return Wosize_val(bindings); }
  TermRef map_key(MapRef bindings, std::size_t i) const noexcept { return Field(Field(bindings, i), 0); }
  TermRef map_value(MapRef bindings, std::size_t i) const noexcept { return Field(Field(bindings, i), 1); }
  const void* map_identity(MapRef bindings) const noexcept { return reinterpret_cast<const void*>(bindings); }

  TermRef take_next(Elements& rest) const noexcept {
    if (!rest.cells) return Field(rest.source, rest.next++);
    const TermRef t = Field(rest.source, 0);
    rest.source = Field(rest.source, 1);
    return t;
  }
  bool at_end(const Elements& rest) const noexcept {
    return rest.cells ? rest.source == Val_emptylist : rest.next == rest.end;
  }

  TermRef head(const Cell& c) const noexcept { return Field(c.cell, 0); }
  bool advance(Cell& c) const {
    if (const value next = Field(c.cell, 1); next != Val_emptylist) {
      c.cell = next;
      return true;
    }
    // An Improper whose tail is a non-empty list (not canonical): walk_ocaml writes it as
    // a list in tail position, which Erlang reads as one longer list.
    if (const auto more = non_empty_list(c.tail)) {
      c = *more;
      return true;
    }
    return false;
  }
  std::optional<TermRef> improper_tail(const Cell& c) const noexcept {
    if (c.tail == no_tail || is_empty_list(c.tail)) return std::nullopt;
    return c.tail;
  }

  std::optional<std::uint8_t> as_byte(TermRef t) const noexcept {  // is_byte()
    if (Is_long(t) || tag_of(t) != layout::term_tag::int_) return std::nullopt;
    const intnat n = Long_val(Field(t, 0));
    if (n < 0 || n > 255) return std::nullopt;
    return static_cast<std::uint8_t>(n);
  }

  template <class Visitor>
  void visit(TermRef v, Visitor& visitor) const {
    namespace tag = layout::term_tag;
    if (read_leaf(v, visitor)) return;
    switch (tag_of(v)) {
      case tag::fun: {  // a local fun: read_leaf takes the export ones
        namespace lf = layout::local_field;
        const value f = Field(v, 0);
        const value cells = Field(f, lf::free_vars);
        visitor.local_fun(count_of(list_length(cells)), string_view_of(Field(f, lf::module_)),
                          u32_of(Field(f, lf::index)), Long_val(Field(f, lf::old_uniq)),
                          Elements{.source = cells, .cells = true});
        break;
      }
      case tag::tuple: {
        const value elements = Field(v, 0);
        const std::size_t n = Wosize_val(elements);
        visitor.tuple(n, Elements{.source = elements, .end = n});
        break;
      }
      case tag::map: visitor.map(Field(v, 0)); break;
      case tag::list: visitor.list(Cell{Field(v, 0), no_tail}); break;  // not empty: read_leaf takes []
      case tag::improper: visitor.list(Cell{Field(v, 0), Field(v, 1)}); break;
    }
  }

 private:
  static bool is_list_term(value t) noexcept {
    return Is_block(t) && (tag_of(t) == layout::term_tag::list || tag_of(t) == layout::term_tag::improper);
  }
  static bool is_empty_list(value t) noexcept {
    return Is_block(t) && tag_of(t) == layout::term_tag::list && Field(t, 0) == Val_emptylist;
  }
  // The first cell of a tail that is a non-empty List or Improper.
  static std::optional<Cell> non_empty_list(value tail) noexcept {
    if (tail == no_tail || !is_list_term(tail) || Field(tail, 0) == Val_emptylist) return std::nullopt;
    return Cell{Field(tail, 0), tag_of(tail) == layout::term_tag::list ? no_tail : Field(tail, 1)};
  }
};

static_assert(etf::detail::MapKeyView<OcamlTermView>);

}  // namespace

// Read from the OCaml heap as it is: no term is built per key (the order needs only each
// key's hashes, and at most the entry indices of the large maps nested in keys).
std::vector<std::uint32_t> ocaml_hashmap_order(value bindings) {
  OcamlTermView view;
  return etf::detail::hashmap_encoding_order(view, bindings);
}

}  // namespace detail

void ocaml_to_etf(value term, etf::ByteBuffer& out, int minor_version) {
  etf::Writer writer(out, minor_version);
  writer.version();
  walk_ocaml(term, writer);
}

}  // namespace camlbeam::conv
