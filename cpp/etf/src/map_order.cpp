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
#include <camlbeam/etf/error.hpp>
#include <camlbeam/etf/map_order.hpp>
#include <camlbeam/etf/term.hpp>

#include <algorithm>
#include <bit>
#include <optional>
#include <string_view>
#include <unordered_map>
#include <utility>

namespace camlbeam::etf {

namespace {

// ---------------------------------------------------------------------------------------
// The mixing primitives of utils.c.

constexpr std::uint32_t golden_ratio = 0x9e3779b9u;  // HCONST

// The words of a reference that make_internal_hash reads in OTP 25.
constexpr std::size_t otp_hashed_reference_words = 3;

// The seed of every internal hash (INTERNAL_HASH_SALT), so that it differs from phash2.
constexpr std::uint32_t internal_hash_seed = 3432918353u;

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
std::uint32_t block_hash(std::span<const std::uint8_t> bytes, std::uint32_t initval) noexcept {
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
constexpr std::int64_t small_min = -(std::int64_t{1} << 59);
constexpr std::int64_t small_max = (std::int64_t{1} << 59) - 1;
constexpr std::uint64_t small_word(std::int64_t v) noexcept {
  return (static_cast<std::uint64_t>(v) << 4) | 0xF;
}
constexpr std::uint64_t nil_word = 0x3B;  // [] is the NIL immediate tag alone in OTP 25

// Stand-in for an atom's immediate (index << 6 | 0xB): FNV-1a of the name instead of the
// index, which only the node that created the atom knows.
constexpr std::uint64_t atom_word(std::string_view name) noexcept {
  std::uint64_t h = 0xcbf29ce484222325u;
  for (char ch : name) h = (h ^ static_cast<std::uint8_t>(ch)) * 0x100000001b3u;
  return (h << 6) | 0x0B;
}

// is_byte(): the small integers 0..255, which list hashing packs four to a word.
std::optional<std::uint8_t> as_byte(const Term& t) noexcept {
  const auto* v = t.get_if<std::int64_t>();
  if (v == nullptr || *v < 0 || *v > 255) return std::nullopt;
  return static_cast<std::uint8_t>(*v);
}

const Map* large_map(const Term& t) noexcept {
  const auto* m = t.get_if<Map>();
  return m != nullptr && m->flat.size() / 2 > flatmap_max_keys ? m : nullptr;
}

// Entry orders of the large maps nested in the keys being ordered: hashing a map goes over
// its entries in the VM's own iteration order, which for a large map is this same order.
using NestedOrders = std::unordered_map<const Map*, std::vector<std::uint32_t>>;

// ---------------------------------------------------------------------------------------
// make_internal_hash(Key, 0) and the level hashes of hashmap_restore_hash, iterative like the
// original: an explicit stack of what is still to be hashed, in the order erts visits it.

class InternalHash {
 public:
  explicit InternalHash(const NestedOrders& nested) : nested_(nested) {}

  // make_map_hash(Key, Depth): the hash that places `key` at trie levels 8*depth to
  // 8*depth+7.
  std::uint32_t operator()(const Term& key, std::uint32_t depth) {
    hash_ = 0;
    if (depth > 0) mix2(depth, 1, hconst(22));  // the salt
    hash_ ^= internal_hash_seed;
    stack_.clear();
    push_term(key);
    drain();
    return hash_;
  }

 private:
  // Something still to hash: a term; a run of terms (tuple elements, fun free variables, map
  // entries, the latter possibly reordered); a list from one of its cells on; or the marker
  // erts hashes between a cons cell's head and its improper tail.
  struct Pending {
    enum class Op : std::uint8_t { term, run, list_cell, improper_tail_mark };
    Op op;
    const Term* terms;                    // term: the term; run: the array
    const List* list;                     // list_cell: the list
    std::size_t next;                     // run: next position; list_cell: the cell
    std::size_t end;                      // run: end position
    const std::uint32_t* entry_order;     // run over a large map: its entries' order
  };

  void push_term(const Term& t) { stack_.push_back({Pending::Op::term, &t, nullptr, 0, 0, nullptr}); }
  void push_run(std::span<const Term> terms, const std::uint32_t* entry_order = nullptr) {
    stack_.push_back({Pending::Op::run, terms.data(), nullptr, 0, terms.size(), entry_order});
  }
  void push_list_cell(const List& list, std::size_t cell) {
    stack_.push_back({Pending::Op::list_cell, nullptr, &list, cell, 0, nullptr});
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

  void drain() {
    while (!stack_.empty()) {
      Pending& top = stack_.back();
      switch (top.op) {
        case Pending::Op::term: {
          const Term& t = *top.terms;
          stack_.pop_back();
          hash_term(t);
          break;
        }
        case Pending::Op::run: {
          std::size_t i = top.next++;
          if (top.entry_order != nullptr) i = 2 * std::size_t{top.entry_order[i / 2]} + i % 2;
          const Term& t = top.terms[i];
          if (top.next == top.end) stack_.pop_back();
          hash_term(t);
          break;
        }
        case Pending::Op::list_cell: {
          const List& list = *top.list;
          const std::size_t cell = top.next;
          stack_.pop_back();
          hash_list(list, cell);
          break;
        }
        case Pending::Op::improper_tail_mark:
          stack_.pop_back();
          mix_constant(hconst(18));
          break;
      }
    }
  }

  // The TAG_PRIMARY_LIST case, from one cell on: a run of byte elements is packed four to a
  // word; the first other element is hashed as a term, with the rest of its list to follow.
  void hash_list(const List& start, std::size_t cell) {
    const List* list = &start;
    std::uint32_t packed = 0, packed_count = 0;  // erts's sh and c
    for (;;) {
      const std::size_t length = list->items.size() - 1;
      const Term& head = list->items[cell];
      const auto byte = as_byte(head);
      if (!byte) {
        if (packed_count > 0) mix2(packed, packed_count, hconst(22));
        mix_constant(hconst(17));
        push_rest(*list, cell);
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
      if (cell + 1 < length) {
        ++cell;
        continue;
      }
      const Term& tail = list->items[length];
      if (const auto* more = tail.get_if<List>()) {
        list = more;
        cell = 0;
        continue;
      }
      if (packed_count > 0) mix2(packed, packed_count, hconst(22));
      push_term(tail);  // [] or an improper tail, hashed as a term of its own
      return;
    }
  }

  // What follows the cell whose head is hashed as a term: the next cell, or the tail.
  void push_rest(const List& list, std::size_t cell) {
    const std::size_t length = list.items.size() - 1;
    if (cell + 1 < length) {
      push_list_cell(list, cell + 1);
      return;
    }
    const Term& tail = list.items[length];
    if (const auto* more = tail.get_if<List>()) {
      push_list_cell(*more, 0);
      return;
    }
    push_term(tail);
    stack_.push_back({Pending::Op::improper_tail_mark, nullptr, nullptr, 0, 0, nullptr});
  }

  void hash_magnitude(bool negative, std::span<const std::uint8_t> magnitude_le) noexcept {
    // Bignum digits are 64-bit words, least significant first.
    const std::uint32_t tag = negative ? hconst(10) : hconst(11);
    for (std::size_t i = 0; i < magnitude_le.size(); i += 8) {
      std::uint64_t digit = 0;
      const std::size_t n = std::min<std::size_t>(8, magnitude_le.size() - i);
      for (std::size_t j = 0; j < n; ++j) digit |= std::uint64_t{magnitude_le[i + j]} << (8 * j);
      mix_word(digit, tag);
    }
  }

  void hash_integer(std::int64_t v) noexcept {
    if (v >= small_min && v <= small_max) {
      mix_immediate(small_word(v));
      return;
    }
    const auto bits = static_cast<std::uint64_t>(v);
    mix_word(v < 0 ? 0 - bits : bits, v < 0 ? hconst(10) : hconst(11));  // a one-digit bignum
  }

  void hash_float(double d) noexcept {
    if (d == 0.0) d = 0.0;  // -0.0 hashes as 0.0: they are the same key in OTP 25
    mix_word(std::bit_cast<std::uint64_t>(d), hconst(12));
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

  // Stand-ins (see the top of the file): the node is hashed like an atom, the numbers with
  // the constant erts uses for the same kind.
  void hash_node(std::string_view node, std::uint32_t creation, std::uint32_t tag) noexcept {
    mix_word(atom_word(node), tag);
    mix1(creation, tag);
  }

  void hash_term(const Term& t) {
    switch (t.kind()) {
      case Kind::integer: hash_integer(*t.get_if<std::int64_t>()); break;
      case Kind::big_integer: {
        const BigInteger& big = **t.get_if<Boxed<BigInteger>>();
        hash_magnitude(big.negative, big.magnitude);
        break;
      }
      case Kind::float64: hash_float(*t.get_if<double>()); break;
      case Kind::atom: mix_immediate(atom_word(t.get_if<Atom>()->name)); break;
      case Kind::nil: mix_immediate(nil_word); break;
      case Kind::binary: hash_bits(t.get_if<Binary>()->bytes, 0, 0); break;
      case Kind::bitstring: {
        const Bitstring& b = *t.get_if<Bitstring>();
        const std::span<const std::uint8_t> bytes = b.bytes;
        if (b.bits_in_last >= 8 || bytes.empty()) hash_bits(bytes, 0, 0);
        else hash_bits(bytes.first(bytes.size() - 1), b.bits_in_last, bytes.back());
        break;
      }
      case Kind::tuple: {
        const auto& elements = t.get_if<Tuple>()->elements;
        mix1(static_cast<std::uint32_t>(elements.size()), hconst(9));
        if (!elements.empty()) push_run(elements);
        break;
      }
      case Kind::map: {
        const Map& m = *t.get_if<Map>();
        const std::size_t pairs = m.flat.size() / 2;
        mix1(static_cast<std::uint32_t>(pairs), hconst(16));
        if (pairs == 0) break;
        const std::uint32_t* order = nullptr;
        if (pairs > flatmap_max_keys) order = nested_.at(&m).data();
        push_run(m.flat, order);
        break;
      }
      case Kind::list: hash_list(*t.get_if<List>(), 0); break;
      case Kind::pid: {
        const Pid& p = **t.get_if<Boxed<Pid>>();
        hash_node(p.node, p.creation, hconst(5));
        mix2(p.id, p.serial, hconst(5));
        break;
      }
      case Kind::port: {
        const Port& p = **t.get_if<Boxed<Port>>();
        hash_node(p.node, p.creation, hconst(6));
        mix_word(p.id, hconst(6));
        break;
      }
      case Kind::reference: {
        const Reference& r = **t.get_if<Boxed<Reference>>();
        hash_node(r.node, r.creation, hconst(7));
        // Trailing zero words are left out: a shorter reference equal in value hashes alike.
        // OTP 25 hashes no more than the first three words (checked on 25.2: two references
        // of a node that differ only in their fourth word tie at every depth, and a map of
        // more than 32 keys holding both overflows the VM's C stack in binary_to_term). The
        // stand-in does the same, so that order_entries sees those ties and refuses them.
        std::size_t n = std::min<std::size_t>(r.ids.size(), otp_hashed_reference_words);
        while (n > 0 && r.ids[n - 1] == 0) --n;
        for (std::size_t i = 0; i < n; i += 2) mix2(r.ids[i], i + 1 < n ? r.ids[i + 1] : 0, hconst(8));
        break;
      }
      case Kind::export_fun: {
        const ExportFun& e = **t.get_if<Boxed<ExportFun>>();
        mix_word(atom_word(e.module), hconst(14));
        mix_word(atom_word(e.function), hconst(14));
        mix1(e.arity, hconst(14));
        break;
      }
      case Kind::fun: {
        const Fun& f = **t.get_if<Boxed<Fun>>();
        // The fields OTP 25 hashes (and compares) for a local fun: free variable count,
        // module, index and old uniq, then the free variables; never the creator pid.
        mix2(static_cast<std::uint32_t>(f.free_vars.size()), 0, hconst(20));
        mix_word(atom_word(f.module), hconst(20));
        mix2(f.index, static_cast<std::uint32_t>(f.old_uniq), hconst(21));
        if (!f.free_vars.empty()) push_run(f.free_vars);
        break;
      }
    }
  }

  const NestedOrders& nested_;
  std::vector<Pending> stack_;
  std::uint32_t hash_ = 0;
};

// ---------------------------------------------------------------------------------------
// Sorting entries into trie order.

// The nibble sequence of a hash, lowest nibble first, as one comparable number.
constexpr std::uint32_t reverse_nibbles(std::uint32_t h) noexcept {
  h = ((h & 0x0F0F0F0Fu) << 4) | ((h >> 4) & 0x0F0F0F0Fu);
  return __builtin_bswap32(h);
}

// Whether a reference is the term or anywhere inside it: keys {R1} and {R2}, or [R1] and
// [R2], tie in OTP's hash exactly as R1 and R2 do (checked on OTP 25.2.3: both kill the VM).
bool holds_reference(const Term& root) {
  std::vector<const Term*> pending{&root};
  while (!pending.empty()) {
    const Term* t = pending.back();
    pending.pop_back();
    if (t->kind() == Kind::reference) return true;
    for (const Term& child : t->children()) pending.push_back(&child);
  }
  return false;
}

// OTP rehashes without limit: for almost every kind every bit of a value goes into its
// hash, so distinct keys cannot tie at every depth. A stand-in hash could, so past this
// depth ties keep term order. References are the exception (otp_hashed_reference_words):
// keys that tie here and hold references hold two OTP cannot tell apart, a map it cannot
// decode.
constexpr std::uint32_t max_hash_depth = 16;

class TrieOrder {
 public:
  // The entry order of a map given as sorted flat entries.
  std::vector<std::uint32_t> operator()(std::span<const Term> flat) {
    prepare_nested_maps(flat);
    return order_entries(flat);
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
  // always finds the order of the large maps inside it.
  void prepare_nested_maps(std::span<const Term> flat) {
    std::vector<const Term*> pending;
    std::vector<const Map*> preorder;
    for (std::size_t i = 0; i < flat.size(); i += 2) pending.push_back(&flat[i]);
    while (!pending.empty()) {
      const Term* t = pending.back();
      pending.pop_back();
      if (const Map* m = large_map(*t)) preorder.push_back(m);
      for (const Term& child : t->children()) pending.push_back(&child);
    }
    // A map's descendants come after it in preorder, so in reverse they come first.
    for (auto it = preorder.rbegin(); it != preorder.rend(); ++it) {
      auto order = order_entries((*it)->flat);
      nested_.emplace(*it, std::move(order));
    }
  }

  std::vector<std::uint32_t> order_entries(std::span<const Term> flat) {
    const std::size_t pairs = flat.size() / 2;
    std::vector<Ranked> ranked(pairs);
    for (std::size_t i = 0; i < pairs; ++i)
      ranked[i] = {reverse_nibbles(map_hash_(flat[2 * i], 0)), static_cast<std::uint32_t>(i)};
    sort_by_rank(ranked, 0, pairs);
    std::vector<TieRun> ties;
    collect_ties(ranked, 0, pairs, 0, ties);
    while (!ties.empty()) {
      const TieRun run = ties.back();
      ties.pop_back();
      const std::uint32_t depth = run.depth + 1;
      if (depth == max_hash_depth) {
        for (std::size_t i = run.begin; i < run.end; ++i) {
          if (holds_reference(flat[2 * std::size_t{ranked[i].entry}])) {
            throw EncodeError(
                "a map of more than 32 keys holding references that differ only after their third word: "
                "OTP 25 hashes them alike at every depth, and decoding such a map overflows its stack");
          }
        }
        std::sort(ranked.begin() + static_cast<std::ptrdiff_t>(run.begin),
                  ranked.begin() + static_cast<std::ptrdiff_t>(run.end),
                  [&flat](const Ranked& a, const Ranked& b) {
                    return compare(flat[2 * std::size_t{a.entry}], flat[2 * std::size_t{b.entry}]) < 0;
                  });
        continue;
      }
      for (std::size_t i = run.begin; i < run.end; ++i)
        ranked[i].rank = reverse_nibbles(map_hash_(flat[2 * std::size_t{ranked[i].entry}], depth));
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

  NestedOrders nested_;
  InternalHash map_hash_{nested_};
};

}  // namespace

std::vector<std::uint32_t> hashmap_encoding_order(std::span<const Term> flat_sorted_entries) {
  return TrieOrder{}(flat_sorted_entries);
}

}  // namespace camlbeam::etf
