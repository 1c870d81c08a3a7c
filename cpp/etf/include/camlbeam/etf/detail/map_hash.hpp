// OTP 25's map hash and the entry order of a map of more than 32 keys, over any
// representation of terms.
//
// The algorithm (map_order.cpp says what it ports and why) needs to know, one level at a
// time, what a term is: that is a *view* (the MapKeyView concept below). etf::Term has its
// view in map_order.cpp; cpp/conv has one over OCaml Erl.Term.t values, so that a reply
// is ordered straight from the OCaml heap, with no tree in between. One implementation
// serves both, so they cannot drift apart; this header knows nothing of OCaml.
//
// A view is an object with these members:
//   types TermRef, MapRef, Elements, Cell, all cheap to copy:
//     TermRef   a term;
//     MapRef    a map's bindings, sorted by key in Erlang's exact term order;
//     Elements  a run of terms that are hashed one after the other (tuple elements, a
//               fun's free variables): a forward cursor, never empty when handed over;
//     Cell      a position in a non-empty list: one of its elements;
//   visit(TermRef, visitor)  calls exactly one of the visitor's methods (HashShape below
//               lists them) with what the term is at its top level;
//   map_size(MapRef), map_key(MapRef, i), map_value(MapRef, i)  the bindings;
//   map_identity(MapRef) -> const void*  the same for two MapRefs of the same bindings;
//   take_next(Elements&) -> TermRef, at_end(const Elements&) -> bool;
//   head(const Cell&) -> TermRef;
//   advance(Cell&) -> bool  to the next element; false at the last one, the cell left as
//               it was. A tail that is itself a list is followed, as Erlang sees one list;
//   improper_tail(const Cell&) -> std::optional<TermRef>  at the last element: the tail,
//               or nothing for a proper list;
//   as_byte(TermRef) -> std::optional<std::uint8_t>  the integers 0..255 (a fast path:
//               lists of them are hashed packed, four to a word).
//
// The visitor methods a view calls (visit), each for one kind of term:
//   integer(std::int64_t)
//   big_integer(bool negative, std::span<const std::uint8_t> magnitude_le)  beyond int64
//   float64(double)
//   atom(std::string_view name)
//   nil()
//   binary(std::span<const std::uint8_t>)
//   bitstring(std::span<const std::uint8_t> bytes, std::uint8_t bits_in_last)  1..7
//   tuple(std::size_t arity, Elements)          Elements only read when arity > 0
//   map(MapRef)
//   list(Cell)                                  a non-empty list
//   pid(const PidView&), port(const PortView&), reference(const ReferenceView&)
//   export_fun(std::string_view module, std::string_view function, std::uint8_t arity)
//   local_fun(std::size_t free_count, std::string_view module, std::uint32_t index,
//             std::int64_t old_uniq, Elements free_vars)  free_vars read when free_count > 0
#pragma once

#include <camlbeam/etf/error.hpp>
#include <camlbeam/etf/map_order.hpp>
#include <camlbeam/etf/visitor.hpp>

#include <algorithm>
#include <bit>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace camlbeam::etf::detail {

template <class V>
concept MapKeyView = requires(V& view, const typename V::TermRef term, const typename V::MapRef map,
                              typename V::Elements& elements, typename V::Cell& cell, std::size_t i) {
  { view.map_size(map) } -> std::convertible_to<std::size_t>;
  { view.map_key(map, i) } -> std::same_as<typename V::TermRef>;
  { view.map_value(map, i) } -> std::same_as<typename V::TermRef>;
  { view.map_identity(map) } -> std::same_as<const void*>;
  { view.take_next(elements) } -> std::same_as<typename V::TermRef>;
  { view.at_end(std::as_const(elements)) } -> std::same_as<bool>;
  { view.head(std::as_const(cell)) } -> std::same_as<typename V::TermRef>;
  { view.advance(cell) } -> std::same_as<bool>;
  { view.improper_tail(std::as_const(cell)) } -> std::same_as<std::optional<typename V::TermRef>>;
  { view.as_byte(term) } -> std::same_as<std::optional<std::uint8_t>>;
};

// ---------------------------------------------------------------------------------------
// The mixing primitives of utils.c.

inline constexpr std::uint32_t golden_ratio = 0x9e3779b9u;  // HCONST

// The words of a reference that make_internal_hash reads in OTP 25.
inline constexpr std::size_t otp_hashed_reference_words = 3;

// The seed of every internal hash (INTERNAL_HASH_SALT), so that it differs from phash2.
inline constexpr std::uint32_t internal_hash_seed = 3432918353u;

// HCONST_n: erts tags each kind of hash input with a different multiple of HCONST.
constexpr std::uint32_t hconst(std::uint32_t n) noexcept { return golden_ratio * n; }

// Bob Jenkins' lookup2 mix (the MIX macro).
constexpr void mix(std::uint32_t& a, std::uint32_t& b, std::uint32_t& c) noexcept {
  a -= b; a -= c; a ^= (c >> 13);
  b -= c; b -= a; b ^= (a << 8);
  c -= a; c -= b; c ^= (b >> 13);
  a -= b; a -= c; a ^= (c >> 12);
  b -= c; b -= a; b ^= (a << 16);
  c -= a; c -= b; c ^= (b >> 5);
  a -= b; a -= c; a ^= (c >> 3);
  b -= c; b -= a; b ^= (a << 10);
  c -= a; c -= b; c ^= (b >> 15);
}

constexpr std::uint32_t load_le32(const std::uint8_t* k) noexcept {
  return k[0] | (std::uint32_t{k[1]} << 8) | (std::uint32_t{k[2]} << 16) | (std::uint32_t{k[3]} << 24);
}

// block_hash: lookup2 over a byte string, seeded with the running hash.
inline std::uint32_t block_hash(std::span<const std::uint8_t> bytes, std::uint32_t initval) noexcept {
  std::uint32_t a = golden_ratio, b = golden_ratio, c = initval;
  const std::uint8_t* k = bytes.data();
  std::size_t left = bytes.size();
  for (; left >= 12; k += 12, left -= 12) {
    a += load_le32(k);
    b += load_le32(k + 4);
    c += load_le32(k + 8);
    mix(a, b, c);
  }
  c += static_cast<std::uint32_t>(bytes.size());  // erts passes the length as `unsigned`
  // The last 0..11 bytes; the lowest byte of c is taken by the length.
  for (std::size_t i = left; i-- > 0;) {
    const std::uint32_t byte = k[i];
    if (i >= 8) c += byte << (8 * (i - 7));
    else if (i >= 4) b += byte << (8 * (i - 4));
    else a += byte << (8 * i);
  }
  mix(a, b, c);
  return c;
}

// ---------------------------------------------------------------------------------------
// How erts represents what it hashes (64-bit emulator).

// Small integers are immediates of 60 signed bits: value << 4 | tag 0xF.
inline constexpr std::int64_t small_min = -(std::int64_t{1} << 59);
inline constexpr std::int64_t small_max = (std::int64_t{1} << 59) - 1;
constexpr std::uint64_t small_word(std::int64_t v) noexcept { return (static_cast<std::uint64_t>(v) << 4) | 0xF; }
inline constexpr std::uint64_t nil_word = 0x3B;  // [] is the NIL immediate tag alone in OTP 25

// Stand-in for an atom's immediate (index << 6 | 0xB): FNV-1a of the name instead of the
// index, which only the node that created the atom knows.
constexpr std::uint64_t atom_word(std::string_view name) noexcept {
  std::uint64_t h = 0xcbf29ce484222325u;
  for (char ch : name) h = (h ^ static_cast<std::uint8_t>(ch)) * 0x100000001b3u;
  return (h << 6) | 0x0B;
}

// Entry orders of the large maps nested in the keys being ordered, by map_identity: hashing
// a map goes over its entries in the VM's own iteration order, which for a large map is
// this same order.
using NestedOrders = std::unordered_map<const void*, std::vector<std::uint32_t>>;

// ---------------------------------------------------------------------------------------
// make_internal_hash(Key, 0) and the level hashes of hashmap_restore_hash, iterative like the
// original: an explicit stack of what is still to be hashed, in the order erts visits it.
// The view calls back the methods under "What a term is" (the visitor of visit()).

template <MapKeyView V>
class InternalHash {
  using TermRef = typename V::TermRef;
  using MapRef = typename V::MapRef;
  using Elements = typename V::Elements;
  using Cell = typename V::Cell;

 public:
  InternalHash(V& view, const NestedOrders& nested) : view_(view), nested_(nested) {}

  // make_map_hash(Key, Depth): the hash that places `key` at trie levels 8*depth to
  // 8*depth+7.
  std::uint32_t operator()(TermRef key, std::uint32_t depth) {
    hash_ = 0;
    if (depth > 0) mix2(depth, 1, hconst(22));  // the salt
    hash_ ^= internal_hash_seed;
    stack_.clear();
    view_.visit(key, *this);
    drain();
    return hash_;
  }

  // ---- What a term is: the view calls one of these per term, from visit(). ----

  void integer(std::int64_t v) noexcept {
    if (v >= small_min && v <= small_max) {
      mix_immediate(small_word(v));
      return;
    }
    const auto bits = static_cast<std::uint64_t>(v);
    mix_word(v < 0 ? 0 - bits : bits, v < 0 ? hconst(10) : hconst(11));  // a one-digit bignum
  }

  void big_integer(bool negative, std::span<const std::uint8_t> magnitude_le) noexcept {
    // Bignum digits are 64-bit words, least significant first.
    const std::uint32_t tag = negative ? hconst(10) : hconst(11);
    for (std::size_t i = 0; i < magnitude_le.size(); i += 8) {
      std::uint64_t digit = 0;
      const std::size_t n = std::min<std::size_t>(8, magnitude_le.size() - i);
      for (std::size_t j = 0; j < n; ++j) digit |= std::uint64_t{magnitude_le[i + j]} << (8 * j);
      mix_word(digit, tag);
    }
  }

  void float64(double d) noexcept {
    if (d == 0.0) d = 0.0;  // -0.0 hashes as 0.0: they are the same key in OTP 25
    mix_word(std::bit_cast<std::uint64_t>(d), hconst(12));
  }

  void atom(std::string_view name) noexcept { mix_immediate(atom_word(name)); }
  void nil() noexcept { mix_immediate(nil_word); }
  void binary(std::span<const std::uint8_t> bytes) noexcept { hash_bits(bytes, 0, 0); }

  void bitstring(std::span<const std::uint8_t> bytes, std::uint8_t bits_in_last) noexcept {
    if (bits_in_last >= 8 || bytes.empty()) hash_bits(bytes, 0, 0);
    else hash_bits(bytes.first(bytes.size() - 1), bits_in_last, bytes.back());
  }

  void tuple(std::size_t arity, Elements elements) {
    mix1(static_cast<std::uint32_t>(arity), hconst(9));
    if (arity > 0) push_elements(elements);
  }

  void map(MapRef m) {
    const std::size_t pairs = view_.map_size(m);
    mix1(static_cast<std::uint32_t>(pairs), hconst(16));
    if (pairs == 0) return;
    const std::uint32_t* order = nullptr;
    if (pairs > flatmap_max_keys) order = nested_.at(view_.map_identity(m)).data();
    stack_.push_back(Pending{.op = Pending::Op::map_entries, .map = m, .end = 2 * pairs, .entry_order = order});
  }

  // The TAG_PRIMARY_LIST case, from one cell on: a run of byte elements is packed four to a
  // word; the first other element is hashed as a term, with the rest of its list to follow.
  void list(Cell cell) {
    std::uint32_t packed = 0, packed_count = 0;  // erts's sh and c
    for (;;) {
      const TermRef head = view_.head(cell);
      const auto byte = view_.as_byte(head);
      if (!byte) {
        if (packed_count > 0) mix2(packed, packed_count, hconst(22));
        mix_constant(hconst(17));
        push_rest(cell);
        push_term(head);
        return;
      }
      packed = (packed << 8) + *byte;
      if (packed_count == 3) {
        mix1(packed, hconst(4));
        packed = packed_count = 0;
      } else {
        ++packed_count;
      }
      if (view_.advance(cell)) continue;
      if (packed_count > 0) mix2(packed, packed_count, hconst(22));
      push_tail(cell);  // [] or an improper tail, hashed as a term of its own
      return;
    }
  }

  // Stand-ins (see map_order.cpp): the node is hashed like an atom, the numbers with the
  // constant erts uses for the same kind.
  void pid(const PidView& p) noexcept {
    hash_node(p.node, p.creation, hconst(5));
    mix2(p.id, p.serial, hconst(5));
  }

  void port(const PortView& p) noexcept {
    hash_node(p.node, p.creation, hconst(6));
    mix_word(p.id, hconst(6));
  }

  void reference(const ReferenceView& r) noexcept {
    hash_node(r.node, r.creation, hconst(7));
    // Trailing zero words are left out: a shorter reference equal in value hashes alike.
    // OTP 25 hashes no more than the first three words (checked on 25.2: two references
    // of a node that differ only in their fourth word tie at every depth, and a map of
    // more than 32 keys holding both overflows the VM's C stack in binary_to_term). The
    // stand-in does the same, so that TrieOrder sees those ties and refuses them.
    std::size_t n = std::min<std::size_t>(r.ids.size(), otp_hashed_reference_words);
    while (n > 0 && r.ids[n - 1] == 0) --n;
    for (std::size_t i = 0; i < n; i += 2) mix2(r.ids[i], i + 1 < n ? r.ids[i + 1] : 0, hconst(8));
  }

  void export_fun(std::string_view module, std::string_view function, std::uint8_t arity) noexcept {
    mix_word(atom_word(module), hconst(14));
    mix_word(atom_word(function), hconst(14));
    mix1(arity, hconst(14));
  }

  // The fields OTP 25 hashes (and compares) for a local fun: free variable count, module,
  // index and old uniq, then the free variables; never the creator pid.
  void local_fun(std::size_t free_count, std::string_view module, std::uint32_t index, std::int64_t old_uniq,
                 Elements free_vars) {
    mix2(static_cast<std::uint32_t>(free_count), 0, hconst(20));
    mix_word(atom_word(module), hconst(20));
    mix2(index, static_cast<std::uint32_t>(old_uniq), hconst(21));
    if (free_count > 0) push_elements(free_vars);
  }

 private:
  // Something still to hash: a term; a run of terms (tuple elements, fun free variables);
  // a map's entries, keys and values interleaved, possibly reordered; a list from one of
  // its cells on; the proper list's [] or the marker erts hashes between a cons cell's head
  // and its improper tail.
  struct Pending {
    enum class Op : std::uint8_t { term, elements, map_entries, list_cell, nil, improper_tail_mark };
    Op op;
    TermRef term{};                               // term
    Elements elements{};                          // elements: those still to hash
    MapRef map{};                                 // map_entries
    Cell cell{};                                  // list_cell
    std::size_t next = 0;                         // map_entries: next flat position
    std::size_t end = 0;                          // map_entries: 2 * size
    const std::uint32_t* entry_order = nullptr;   // map_entries of a large map: its order
  };

  void push_term(TermRef t) { stack_.push_back(Pending{.op = Pending::Op::term, .term = t}); }
  void push_elements(Elements e) { stack_.push_back(Pending{.op = Pending::Op::elements, .elements = e}); }
  void push_list_cell(Cell c) { stack_.push_back(Pending{.op = Pending::Op::list_cell, .cell = c}); }

  // The tail after a list's last cell, hashed as a term.
  void push_tail(const Cell& last) {
    if (const std::optional<TermRef> tail = view_.improper_tail(last)) push_term(*tail);
    else stack_.push_back(Pending{.op = Pending::Op::nil});
  }

  // What follows the cell whose head is hashed as a term: the next cell, or the tail.
  void push_rest(Cell cell) {
    if (view_.advance(cell)) {
      push_list_cell(cell);
      return;
    }
    push_tail(cell);
    stack_.push_back(Pending{.op = Pending::Op::improper_tail_mark});
  }

  void mix2(std::uint32_t x, std::uint32_t y, std::uint32_t tag) noexcept {  // UINT32_HASH_2
    std::uint32_t a = tag + x, b = tag + y;
    mix(a, b, hash_);
  }
  void mix1(std::uint32_t x, std::uint32_t tag) noexcept { mix2(x, 0, tag); }  // UINT32_HASH
  void mix_word(std::uint64_t w, std::uint32_t tag) noexcept {
    mix2(static_cast<std::uint32_t>(w), static_cast<std::uint32_t>(w >> 32), tag);
  }
  void mix_immediate(std::uint64_t w) noexcept { mix_word(w, golden_ratio); }
  void mix_constant(std::uint32_t tag) noexcept {  // CONST_HASH
    hash_ = std::rotl(hash_ ^ tag, 17);
  }

  // Binaries and bitstrings: the whole bytes with block_hash, then the trailing bits.
  void hash_bits(std::span<const std::uint8_t> whole_bytes, std::uint32_t trailing_bits,
                 std::uint8_t last_byte) noexcept {
    const std::uint32_t seed = hconst(13) + hash_;
    if (whole_bytes.empty() && trailing_bits == 0) {
      hash_ = seed;
      return;
    }
    hash_ = block_hash(whole_bytes, seed);
    if (trailing_bits > 0) mix2(trailing_bits, last_byte >> (8 - trailing_bits), hconst(15));
  }

  void hash_node(std::string_view node, std::uint32_t creation, std::uint32_t tag) noexcept {
    mix_word(atom_word(node), tag);
    mix1(creation, tag);
  }

  // Each step takes what it needs off the top entry and pops it when done before hashing
  // anything: hashing pushes, which may move the stack.
  void drain() {
    while (!stack_.empty()) {
      Pending& top = stack_.back();
      switch (top.op) {
        case Pending::Op::term: {
          const TermRef t = top.term;
          stack_.pop_back();
          view_.visit(t, *this);
          break;
        }
        case Pending::Op::elements: {
          const TermRef t = view_.take_next(top.elements);
          if (view_.at_end(top.elements)) stack_.pop_back();
          view_.visit(t, *this);
          break;
        }
        case Pending::Op::map_entries: {
          std::size_t i = top.next++;
          if (top.entry_order != nullptr) i = 2 * std::size_t{top.entry_order[i / 2]} + i % 2;
          const TermRef t = i % 2 == 0 ? view_.map_key(top.map, i / 2) : view_.map_value(top.map, i / 2);
          if (top.next == top.end) stack_.pop_back();
          view_.visit(t, *this);
          break;
        }
        case Pending::Op::list_cell: {
          const Cell cell = top.cell;
          stack_.pop_back();
          list(cell);
          break;
        }
        case Pending::Op::nil:
          stack_.pop_back();
          nil();
          break;
        case Pending::Op::improper_tail_mark:
          stack_.pop_back();
          mix_constant(hconst(18));
          break;
      }
    }
  }

  V& view_;
  const NestedOrders& nested_;
  std::vector<Pending> stack_;
  std::uint32_t hash_ = 0;
};

// ---------------------------------------------------------------------------------------
// Every term inside some terms, each once, through the view: finds the large maps nested in
// keys (to order them first) and references (which OTP may not tell apart). A visitor of
// the view, like InternalHash; iterative, with a stack kept between calls.

template <MapKeyView V>
class Subterms {
  using TermRef = typename V::TermRef;
  using MapRef = typename V::MapRef;
  using Elements = typename V::Elements;
  using Cell = typename V::Cell;

 public:
  explicit Subterms(V& view) : view_(view) {}

  // Appends to `large_maps` every map of more than flatmap_max_keys keys in `root` (itself
  // included), each before the maps inside it.
  void collect_large_maps(TermRef root, std::vector<MapRef>& large_maps) {
    large_maps_ = &large_maps;
    walk(root);
  }

  // Whether `root` is a reference or holds one.
  bool holds_reference(TermRef root) {
    large_maps_ = nullptr;
    found_reference_ = false;
    walk(root);
    return found_reference_;
  }

  // ---- What a term is (visit()): containers push their children. ----
  void integer(std::int64_t) noexcept {}
  void big_integer(bool, std::span<const std::uint8_t>) noexcept {}
  void float64(double) noexcept {}
  void atom(std::string_view) noexcept {}
  void nil() noexcept {}
  void binary(std::span<const std::uint8_t>) noexcept {}
  void bitstring(std::span<const std::uint8_t>, std::uint8_t) noexcept {}
  void pid(const PidView&) noexcept {}
  void port(const PortView&) noexcept {}
  void reference(const ReferenceView&) noexcept { found_reference_ = true; }
  void export_fun(std::string_view, std::string_view, std::uint8_t) noexcept {}
  void tuple(std::size_t arity, Elements elements) {
    if (arity > 0) push_all(elements);
  }
  void local_fun(std::size_t free_count, std::string_view, std::uint32_t, std::int64_t, Elements free_vars) {
    if (free_count > 0) push_all(free_vars);
  }
  void map(MapRef m) {
    const std::size_t pairs = view_.map_size(m);
    if (large_maps_ != nullptr && pairs > flatmap_max_keys) large_maps_->push_back(m);
    for (std::size_t i = 0; i < pairs; ++i) {
      pending_.push_back(view_.map_key(m, i));
      pending_.push_back(view_.map_value(m, i));
    }
  }
  void list(Cell cell) {
    do pending_.push_back(view_.head(cell));
    while (view_.advance(cell));
    if (const std::optional<TermRef> tail = view_.improper_tail(cell)) pending_.push_back(*tail);
  }

 private:
  void walk(TermRef root) {
    pending_.clear();
    pending_.push_back(root);
    while (!pending_.empty()) {
      const TermRef t = pending_.back();
      pending_.pop_back();
      view_.visit(t, *this);
    }
  }
  void push_all(Elements elements) {
    do pending_.push_back(view_.take_next(elements));
    while (!view_.at_end(elements));
  }

  V& view_;
  std::vector<TermRef> pending_;
  std::vector<MapRef>* large_maps_ = nullptr;
  bool found_reference_ = false;
};

// ---------------------------------------------------------------------------------------
// Sorting entries into trie order.

// The nibble sequence of a hash, lowest nibble first, as one comparable number.
constexpr std::uint32_t reverse_nibbles(std::uint32_t h) noexcept {
  h = ((h & 0x0F0F0F0Fu) << 4) | ((h >> 4) & 0x0F0F0F0Fu);
  return __builtin_bswap32(h);
}

// OTP rehashes without limit: for almost every kind every bit of a value goes into its
// hash, so distinct keys cannot tie at every depth. A stand-in hash could, so past this
// depth ties keep term order. References are the exception (otp_hashed_reference_words):
// keys that tie here and hold references hold two OTP cannot tell apart, a map it cannot
// decode.
inline constexpr std::uint32_t max_hash_depth = 16;

template <MapKeyView V>
class TrieOrder {
  using TermRef = typename V::TermRef;
  using MapRef = typename V::MapRef;

 public:
  explicit TrieOrder(V& view) : view_(view), subterms_(view), map_hash_(view, nested_) {}

  // The entry order of a map of more than flatmap_max_keys keys.
  std::vector<std::uint32_t> operator()(MapRef map) {
    prepare_nested_maps(map);
    return order_entries(map);
  }

 private:
  struct Ranked {
    std::uint32_t rank;   // reverse_nibbles(hash) at the current depth
    std::uint32_t entry;
  };
  struct TieRun {
    std::size_t begin, end;
    std::uint32_t depth;  // the hash depth whose hashes tie over [begin, end)
  };

  // Orders every large map nested in the keys, innermost first, so that hashing a map
  // always finds the order of the large maps inside it. Nothing is allocated for keys
  // that hold none.
  void prepare_nested_maps(MapRef map) {
    std::vector<MapRef> preorder;
    const std::size_t pairs = view_.map_size(map);
    for (std::size_t i = 0; i < pairs; ++i) subterms_.collect_large_maps(view_.map_key(map, i), preorder);
    // A map's descendants come after it in preorder, so in reverse they come first.
    for (auto it = preorder.rbegin(); it != preorder.rend(); ++it) {
      auto order = order_entries(*it);
      nested_.emplace(view_.map_identity(*it), std::move(order));
    }
  }

  std::vector<std::uint32_t> order_entries(MapRef map) {
    const std::size_t pairs = view_.map_size(map);
    std::vector<Ranked> ranked(pairs);
    for (std::size_t i = 0; i < pairs; ++i)
      ranked[i] = {reverse_nibbles(map_hash_(view_.map_key(map, i), 0)), static_cast<std::uint32_t>(i)};
    sort_by_rank(ranked, 0, pairs);
    std::vector<TieRun> ties;
    collect_ties(ranked, 0, pairs, 0, ties);
    while (!ties.empty()) {
      const TieRun run = ties.back();
      ties.pop_back();
      const std::uint32_t depth = run.depth + 1;
      if (depth == max_hash_depth) {
        for (std::size_t i = run.begin; i < run.end; ++i) {
          if (subterms_.holds_reference(view_.map_key(map, ranked[i].entry))) {
            throw EncodeError(
                "a map of more than 32 keys holding references that differ only after their third word: "
                "OTP 25 hashes them alike at every depth, and decoding such a map overflows its stack");
          }
        }
        // Term order: the bindings are sorted by key, so that is the entries' own order.
        std::sort(ranked.begin() + static_cast<std::ptrdiff_t>(run.begin),
                  ranked.begin() + static_cast<std::ptrdiff_t>(run.end),
                  [](const Ranked& a, const Ranked& b) { return a.entry < b.entry; });
        continue;
      }
      for (std::size_t i = run.begin; i < run.end; ++i)
        ranked[i].rank = reverse_nibbles(map_hash_(view_.map_key(map, ranked[i].entry), depth));
      sort_by_rank(ranked, run.begin, run.end);
      collect_ties(ranked, run.begin, run.end, depth, ties);
    }
    std::vector<std::uint32_t> order(pairs);
    for (std::size_t i = 0; i < pairs; ++i) order[i] = ranked[i].entry;
    return order;
  }

  // Highest rank first, as the encoder pops the highest trie slot first.
  static void sort_by_rank(std::vector<Ranked>& ranked, std::size_t begin, std::size_t end) {
    std::sort(ranked.begin() + static_cast<std::ptrdiff_t>(begin),
              ranked.begin() + static_cast<std::ptrdiff_t>(end),
              [](const Ranked& a, const Ranked& b) { return a.rank > b.rank; });
  }

  static void collect_ties(const std::vector<Ranked>& ranked, std::size_t begin, std::size_t end,
                           std::uint32_t depth, std::vector<TieRun>& ties) {
    for (std::size_t i = begin; i < end;) {
      std::size_t j = i + 1;
      while (j < end && ranked[j].rank == ranked[i].rank) ++j;
      if (j - i > 1) ties.push_back({i, j, depth});
      i = j;
    }
  }

  V& view_;
  Subterms<V> subterms_;
  NestedOrders nested_;
  InternalHash<V> map_hash_;
};

// For a map of more than flatmap_max_keys keys, seen through `view`: the entry indices
// (0..n-1) in the order OTP 25 encodes them. Throws EncodeError for a map OTP 25 cannot
// decode: keys that its hash cannot tell apart at any depth (references equal in their
// first three words).
template <MapKeyView V>
std::vector<std::uint32_t> hashmap_encoding_order(V& view, typename V::MapRef map) {
  return TrieOrder<V>(view)(map);
}

}  // namespace camlbeam::etf::detail
