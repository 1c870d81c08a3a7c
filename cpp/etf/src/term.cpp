#include <camlbeam/etf/term.hpp>

#include <camlbeam/etf/decoder.hpp>
#include <camlbeam/etf/error.hpp>

#include <algorithm>
#include <cmath>
#include <numeric>

namespace camlbeam::etf {

std::string_view to_string(Kind kind) noexcept {
  switch (kind) {
    case Kind::integer: return "integer";
    case Kind::big_integer: return "big_integer";
    case Kind::float64: return "float";
    case Kind::atom: return "atom";
    case Kind::reference: return "reference";
    case Kind::fun: return "fun";
    case Kind::export_fun: return "export_fun";
    case Kind::port: return "port";
    case Kind::pid: return "pid";
    case Kind::tuple: return "tuple";
    case Kind::map: return "map";
    case Kind::nil: return "nil";
    case Kind::list: return "list";
    case Kind::binary: return "binary";
    case Kind::bitstring: return "bitstring";
  }
  return "unknown";
}

// ---------------------------------------------------------------------------------------
// Children, copying and destruction without recursion.

namespace {

template <class TermRef>
auto children_of(TermRef& term) noexcept {
  using Elem = std::conditional_t<std::is_const_v<TermRef>, const Term, Term>;
  auto& repr = term.repr();
  switch (term.kind()) {
    case Kind::tuple: return std::span<Elem>(std::get<Tuple>(repr).elements);
    case Kind::list: return std::span<Elem>(std::get<List>(repr).items);
    case Kind::map: return std::span<Elem>(std::get<Map>(repr).flat);
    case Kind::fun: return std::span<Elem>(std::get<Boxed<Fun>>(repr)->free_vars);
    default: return std::span<Elem>();
  }
}

// A copy of the node itself whose children are all [] (so copying never recurses).
Term::Repr shallow_copy(const Term& t) {
  switch (t.kind()) {
    case Kind::tuple: return Tuple{std::vector<Term>(t.get_if<Tuple>()->elements.size())};
    case Kind::list: return List{std::vector<Term>(t.get_if<List>()->items.size())};
    case Kind::map: return Map{std::vector<Term>(t.get_if<Map>()->flat.size())};
    case Kind::fun: {
      const Fun& f = **t.get_if<Boxed<Fun>>();
      Fun header{f.arity, f.uniq, f.index, f.module, f.old_index, f.old_uniq, f.pid, {}};
      header.free_vars.resize(f.free_vars.size());
      return Boxed<Fun>(std::move(header));
    }
    default: return t.repr();
  }
}

bool has_nested_children(std::span<const Term> children) noexcept {
  return std::any_of(children.begin(), children.end(), [](const Term& c) {
    switch (c.kind()) {
      case Kind::tuple:
      case Kind::list:
      case Kind::map:
      case Kind::fun: return !c.children().empty();
      default: return false;
    }
  });
}

}  // namespace

std::span<const Term> Term::children() const noexcept { return children_of(*this); }
std::span<Term> Term::children() noexcept { return children_of(*this); }

Term::Term(const Term& other) : repr_(shallow_copy(other)) {
  if (other.children().empty()) return;
  std::vector<std::pair<const Term*, Term*>> pending{{&other, this}};
  while (!pending.empty()) {
    auto [from, to] = pending.back();
    pending.pop_back();
    auto src = from->children();
    auto dst = to->children();
    for (std::size_t i = 0; i < src.size(); ++i) {
      dst[i].repr_ = shallow_copy(src[i]);
      if (!src[i].children().empty()) pending.emplace_back(&src[i], &dst[i]);
    }
  }
}

Term& Term::operator=(const Term& other) {
  if (this != &other) *this = Term(other);
  return *this;
}

Term& Term::operator=(Term&& other) noexcept {
  if (this != &other) {
    Term old(std::move(*this));  // destroyed iteratively at the end of this scope
    repr_ = std::exchange(other.repr_, Nil{});
  }
  return *this;
}

// Moves grandchildren into a work list before each child dies, so every destructor that
// runs here sees a term without nested children and returns at once. A container whose
// children are all leaves (the common case) lets its vector destroy them directly.
void Term::release_children_iteratively() noexcept {
  if (!has_nested_children(children())) return;
  std::vector<Term> doomed;
  auto take_children = [&doomed](Term& t) {
    for (Term& c : t.children()) {
      if (c.has_children_kind() && !c.children().empty()) doomed.push_back(std::move(c));
    }
  };
  take_children(*this);
  while (!doomed.empty()) {
    Term t = std::move(doomed.back());
    doomed.pop_back();
    take_children(t);
    // Its children are leaves now: their vector goes without its destructor looking again
    // (a list of 100,000 integers was three passes).
    t.repr_ = Nil{};
  }
}

// ---------------------------------------------------------------------------------------
// Construction.

Term Term::integer(std::int64_t value) noexcept { return Term(Repr(value)); }

Term Term::big_integer(bool negative, std::vector<std::uint8_t> magnitude) {
  while (!magnitude.empty() && magnitude.back() == 0) magnitude.pop_back();
  if (magnitude.size() <= 8) {
    std::uint64_t m = 0;
    for (std::size_t i = magnitude.size(); i-- > 0;) m = (m << 8) | magnitude[i];
    if (!negative && m <= static_cast<std::uint64_t>(INT64_MAX)) return integer(static_cast<std::int64_t>(m));
    if (negative && m <= static_cast<std::uint64_t>(INT64_MAX) + 1) return integer(static_cast<std::int64_t>(0 - m));
  }
  return Term(Repr(Boxed<BigInteger>(BigInteger{negative, std::move(magnitude)})));
}

Term Term::float64(double value) {
  if (!std::isfinite(value)) throw EncodeError("Erlang floats are finite");
  return Term(Repr(value));
}

Term Term::atom(std::string_view utf8) {
  const long chars = detail::utf8_length({reinterpret_cast<const std::uint8_t*>(utf8.data()), utf8.size()});
  if (chars < 0) throw EncodeError("atom is not valid UTF-8");
  if (chars > 255) throw EncodeError("atom longer than 255 characters");
  return Term(Repr(Atom{std::string(utf8)}));
}

Term Term::binary(std::span<const std::uint8_t> bytes) {
  return Term(Repr(Binary{{bytes.begin(), bytes.end()}}));
}

Term Term::binary(std::string_view bytes) {
  return binary({reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size()});
}

Term Term::bitstring(std::vector<std::uint8_t> bytes, std::uint8_t bits_in_last) {
  if (bits_in_last == 0 || bits_in_last > 8) throw EncodeError("bits in the last byte must be 1..8");
  if (bytes.empty() || bits_in_last == 8) return Term(Repr(Binary{std::move(bytes)}));
  bytes.back() &= static_cast<std::uint8_t>(0xFF << (8 - bits_in_last));
  return Term(Repr(Bitstring{std::move(bytes), bits_in_last}));
}

Term Term::tuple(std::vector<Term> elements) { return Term(Repr(Tuple{std::move(elements)})); }

// [A | [B, C]] is the list [A, B, C]: a tail that is itself a list is merged, so each term
// has one shape (the shape term_to_binary writes).
Term Term::list(std::vector<Term> elements, Term tail) {
  if (elements.empty()) return tail;
  if (auto* rest = std::get_if<List>(&tail.repr_)) {
    elements.reserve(elements.size() + rest->items.size());
    for (Term& t : rest->items) elements.push_back(std::move(t));
  } else {
    elements.push_back(std::move(tail));
  }
  return Term(Repr(List{std::move(elements)}));
}

Term Term::map(std::vector<std::pair<Term, Term>> entries) {
  std::vector<Term> flat;
  flat.reserve(entries.size() * 2);
  for (auto& [k, v] : entries) {
    flat.push_back(std::move(k));
    flat.push_back(std::move(v));
  }
  if (sort_map_entries(flat) != npos) throw EncodeError("map holds the same key twice");
  return Term(Repr(Map{std::move(flat)}));
}

Term Term::pid(Pid pid) {
  (void)atom(pid.node);  // validates the node name
  return Term(Repr(Boxed<Pid>(std::move(pid))));
}

Term Term::port(Port port) {
  (void)atom(port.node);
  return Term(Repr(Boxed<Port>(std::move(port))));
}

Term Term::reference(Reference ref) {
  (void)atom(ref.node);
  if (ref.ids.empty() || ref.ids.size() > 5) throw EncodeError("a reference has 1 to 5 id words");
  return Term(Repr(Boxed<Reference>(std::move(ref))));
}

Term Term::fun(Fun fun) {
  (void)atom(fun.module);
  (void)atom(fun.pid.node);
  return Term(Repr(Boxed<Fun>(std::move(fun))));
}

Term Term::export_fun(std::string_view module, std::string_view function, std::uint8_t arity) {
  (void)atom(module);
  (void)atom(function);
  return Term(Repr(Boxed<ExportFun>(ExportFun{std::string(module), std::string(function), arity})));
}

Term Term::string(std::string_view latin1_codes) {
  std::vector<Term> codes;
  codes.reserve(latin1_codes.size());
  for (char c : latin1_codes) codes.push_back(integer(static_cast<std::uint8_t>(c)));
  return list(std::move(codes));
}

// ---------------------------------------------------------------------------------------
// Inspection.

bool Term::is_atom(std::string_view name) const noexcept {
  const auto* a = get_if<Atom>();
  return a != nullptr && a->name == name;
}

std::optional<std::int64_t> Term::as_int64() const noexcept {
  if (const auto* v = get_if<std::int64_t>()) return *v;
  return std::nullopt;
}

std::optional<double> Term::as_double() const noexcept {
  if (const auto* v = get_if<double>()) return *v;
  return std::nullopt;
}

std::optional<std::string_view> Term::atom_name() const noexcept {
  if (const auto* a = get_if<Atom>()) return std::string_view(a->name);
  return std::nullopt;
}

std::span<const Term> Term::tuple_elements() const noexcept {
  if (const auto* t = get_if<Tuple>()) return t->elements;
  return {};
}

std::size_t Term::map_size() const noexcept {
  if (const auto* m = get_if<Map>()) return m->flat.size() / 2;
  return 0;
}

// ---------------------------------------------------------------------------------------
// Exact term order.

namespace {

using Ord = std::strong_ordering;

template <class T>
Ord cmp3(const T& a, const T& b) noexcept {
  return a < b ? Ord::less : (b < a ? Ord::greater : Ord::equal);
}

Ord compare_bytes(std::string_view a, std::string_view b) noexcept {
  const int c = a.compare(b);
  return c < 0 ? Ord::less : (c > 0 ? Ord::greater : Ord::equal);
}

Ord compare_magnitudes(const std::vector<std::uint8_t>& a, const std::vector<std::uint8_t>& b) noexcept {
  if (a.size() != b.size()) return cmp3(a.size(), b.size());
  for (std::size_t i = a.size(); i-- > 0;) {
    if (a[i] != b[i]) return cmp3(a[i], b[i]);
  }
  return Ord::equal;
}

// Integers of either representation, by value.
Ord compare_integers(const Term& a, const Term& b) noexcept {
  const auto* ia = a.get_if<std::int64_t>();
  const auto* ib = b.get_if<std::int64_t>();
  if (ia && ib) return cmp3(*ia, *ib);
  if (ia) return (*b.get_if<Boxed<BigInteger>>())->negative ? Ord::greater : Ord::less;
  if (ib) return (*a.get_if<Boxed<BigInteger>>())->negative ? Ord::less : Ord::greater;
  const BigInteger& x = **a.get_if<Boxed<BigInteger>>();
  const BigInteger& y = **b.get_if<Boxed<BigInteger>>();
  if (x.negative != y.negative) return x.negative ? Ord::less : Ord::greater;
  const Ord m = compare_magnitudes(x.magnitude, y.magnitude);
  return x.negative ? 0 <=> m : m;
}

struct BitsView {
  const std::vector<std::uint8_t>& bytes;
  std::size_t bits;
};

BitsView bits_of(const Term& t) noexcept {
  if (const auto* b = t.get_if<Binary>()) return {b->bytes, b->bytes.size() * 8};
  const auto& s = *t.get_if<Bitstring>();
  return {s.bytes, (s.bytes.size() - 1) * 8 + s.bits_in_last};
}

// Bit strings compare as sequences of bits; a proper prefix is smaller.
Ord compare_bits(const Term& a, const Term& b) noexcept {
  const BitsView x = bits_of(a), y = bits_of(b);
  const std::size_t common = std::min(x.bits, y.bits);
  const std::size_t whole = common / 8;
  if (whole != 0) {
    const int c = std::memcmp(x.bytes.data(), y.bytes.data(), whole);
    if (c != 0) return c < 0 ? Ord::less : Ord::greater;
  }
  if (const std::size_t rest = common % 8; rest != 0) {
    const auto mask = static_cast<std::uint8_t>(0xFF << (8 - rest));
    const Ord o = cmp3(static_cast<std::uint8_t>(x.bytes[whole] & mask),
                       static_cast<std::uint8_t>(y.bytes[whole] & mask));
    if (o != 0) return o;
  }
  return cmp3(x.bits, y.bits);
}

// Nodes compare by name, then creation.
Ord compare_nodes(const std::string& a, std::uint32_t ca, const std::string& b, std::uint32_t cb) noexcept {
  if (const Ord o = compare_bytes(a, b); o != 0) return o;
  return cmp3(ca, cb);
}

Ord compare_references(const Reference& a, const Reference& b) noexcept {
  if (const Ord o = compare_nodes(a.node, a.creation, b.node, b.creation); o != 0) return o;
  // Id words compare from the most significant down; missing high words count as zero.
  const std::size_t n = std::max(a.ids.size(), b.ids.size());
  for (std::size_t i = n; i-- > 0;) {
    const std::uint32_t x = i < a.ids.size() ? a.ids[i] : 0;
    const std::uint32_t y = i < b.ids.size() ? b.ids[i] : 0;
    if (x != y) return cmp3(x, y);
  }
  return Ord::equal;
}

Ord compare_pids(const Pid& a, const Pid& b) noexcept {
  if (a.serial != b.serial) return cmp3(a.serial, b.serial);
  if (a.id != b.id) return cmp3(a.id, b.id);
  return compare_nodes(a.node, a.creation, b.node, b.creation);
}

// Unlike pids, ports order by node first, then number (OTP 25, seen).
Ord compare_ports(const Port& a, const Port& b) noexcept {
  if (const Ord o = compare_nodes(a.node, a.creation, b.node, b.creation); o != 0) return o;
  return cmp3(a.id, b.id);
}

Ord compare_exports(const ExportFun& a, const ExportFun& b) noexcept {
  if (const Ord o = compare_bytes(a.module, b.module); o != 0) return o;
  if (const Ord o = compare_bytes(a.function, b.function); o != 0) return o;
  return cmp3(a.arity, b.arity);
}

// The fun's identity as OTP 25 orders funs: module, index, old uniq, then the number of
// free variables (which are compared afterwards, as children). The creator pid is ignored.
Ord compare_fun_headers(const Fun& a, const Fun& b) noexcept {
  if (const Ord o = compare_bytes(a.module, b.module); o != 0) return o;
  if (a.index != b.index) return cmp3(a.index, b.index);
  if (a.old_uniq != b.old_uniq) return cmp3(a.old_uniq, b.old_uniq);
  return cmp3(a.free_vars.size(), b.free_vars.size());
}

// Term order class: integers and bignums are one class, binaries and bitstrings another.
int order_class(Kind k) noexcept {
  switch (k) {
    case Kind::big_integer: return static_cast<int>(Kind::integer);
    case Kind::bitstring: return static_cast<int>(Kind::binary);
    default: return static_cast<int>(k);
  }
}

// A position in the comparison: a term, or the suffix of a list from element `offset` on.
struct Cursor {
  const Term* term;
  std::size_t offset = 0;
};

}  // namespace

std::strong_ordering compare(const Term& a, const Term& b) noexcept {
  std::vector<std::pair<Cursor, Cursor>> pending;
  Cursor x{&a}, y{&b};
  for (;;) {
    const Term& s = *x.term;
    const Term& t = *y.term;
    const int cs = order_class(s.kind()), ct = order_class(t.kind());
    if (cs != ct) return cmp3(cs, ct);
    Ord o = Ord::equal;
    switch (s.kind()) {
      case Kind::integer:
      case Kind::big_integer: o = compare_integers(s, t); break;
      case Kind::float64:
        // Adding +0.0 turns -0.0 into +0.0: OTP 25 holds them equal (=:= and as map keys).
        o = std::strong_order(*s.get_if<double>() + 0.0, *t.get_if<double>() + 0.0);
        break;
      case Kind::atom: o = compare_bytes(s.get_if<Atom>()->name, t.get_if<Atom>()->name); break;
      case Kind::reference: o = compare_references(**s.get_if<Boxed<Reference>>(), **t.get_if<Boxed<Reference>>()); break;
      case Kind::export_fun: o = compare_exports(**s.get_if<Boxed<ExportFun>>(), **t.get_if<Boxed<ExportFun>>()); break;
      case Kind::port: o = compare_ports(**s.get_if<Boxed<Port>>(), **t.get_if<Boxed<Port>>()); break;
      case Kind::pid: o = compare_pids(**s.get_if<Boxed<Pid>>(), **t.get_if<Boxed<Pid>>()); break;
      case Kind::nil: break;
      case Kind::binary:
      case Kind::bitstring: o = compare_bits(s, t); break;
      case Kind::fun:
      case Kind::tuple:
      case Kind::map: {
        if (s.kind() == Kind::fun) o = compare_fun_headers(**s.get_if<Boxed<Fun>>(), **t.get_if<Boxed<Fun>>());
        const auto cs_children = s.children(), ct_children = t.children();
        if (o == 0) o = cmp3(cs_children.size(), ct_children.size());
        if (o != 0) break;
        if (s.kind() == Kind::map) {
          // All keys first, then the values: push values, then keys, in reverse.
          for (std::size_t i = cs_children.size(); i >= 2; i -= 2)
            pending.push_back({{&cs_children[i - 1]}, {&ct_children[i - 1]}});
          for (std::size_t i = cs_children.size(); i >= 2; i -= 2)
            pending.push_back({{&cs_children[i - 2]}, {&ct_children[i - 2]}});
        } else {
          for (std::size_t i = cs_children.size(); i-- > 0;)
            pending.push_back({{&cs_children[i]}, {&ct_children[i]}});
        }
        break;
      }
      case Kind::list: {
        const auto& ls = s.get_if<List>()->items;
        const auto& lt = t.get_if<List>()->items;
        const std::size_t ns = ls.size() - 1 - x.offset, nt = lt.size() - 1 - y.offset;
        const std::size_t common = std::min(ns, nt);
        // After the common elements: the shorter side's tail against the other's rest.
        Cursor rest_s = ns == common ? Cursor{&ls.back()} : Cursor{&s, x.offset + common};
        Cursor rest_t = nt == common ? Cursor{&lt.back()} : Cursor{&t, y.offset + common};
        pending.push_back({rest_s, rest_t});
        for (std::size_t i = common; i-- > 0;)
          pending.push_back({{&ls[x.offset + i]}, {&lt[y.offset + i]}});
        break;
      }
    }
    if (o != 0) return o;
    if (pending.empty()) return Ord::equal;
    std::tie(x, y) = pending.back();
    pending.pop_back();
  }
}

std::size_t sort_map_entries(std::vector<Term>& flat) {
  const std::size_t pairs = flat.size() / 2;
  bool sorted = true;
  for (std::size_t i = 1; i < pairs && sorted; ++i) sorted = compare(flat[2 * i - 2], flat[2 * i]) < 0;
  if (sorted) return npos;  // the usual case: OTP sends small maps in key order
  {
    std::vector<std::size_t> order(pairs);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&flat](std::size_t i, std::size_t j) { return compare(flat[2 * i], flat[2 * j]) < 0; });
    std::vector<Term> reordered;
    reordered.reserve(flat.size());
    for (std::size_t i : order) {
      reordered.push_back(std::move(flat[2 * i]));
      reordered.push_back(std::move(flat[2 * i + 1]));
    }
    flat = std::move(reordered);
  }
  for (std::size_t i = 1; i < pairs; ++i) {
    if (compare(flat[2 * i - 2], flat[2 * i]) == 0) return i;
  }
  return npos;
}

}  // namespace camlbeam::etf
