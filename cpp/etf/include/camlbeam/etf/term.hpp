// The C++ term model: a value type for every Erlang term, with Erlang's exact term order
// (the order of map keys and of =:=), printing in Erlang syntax, and construction helpers.
//
// Every operation on a Term (copy, destroy, compare, encode, print) walks the tree with an
// explicit stack, so a term nested a million deep costs heap, never the C++ stack.
#pragma once

#include <array>
#include <compare>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace camlbeam::etf {

class Term;

// A copyable owning pointer: keeps rare, large alternatives out of Term's inline size.
template <class T>
class Boxed {
 public:
  Boxed(T value) : ptr_(std::make_unique<T>(std::move(value))) {}  // NOLINT: implicit on purpose
  Boxed(const Boxed& other) : ptr_(std::make_unique<T>(*other.ptr_)) {}
  Boxed(Boxed&&) noexcept = default;
  Boxed& operator=(const Boxed& other) {
    if (this != &other) ptr_ = std::make_unique<T>(*other.ptr_);
    return *this;
  }
  Boxed& operator=(Boxed&&) noexcept = default;
  ~Boxed() = default;
  const T& operator*() const noexcept { return *ptr_; }
  T& operator*() noexcept { return *ptr_; }
  const T* operator->() const noexcept { return ptr_.get(); }
  T* operator->() noexcept { return ptr_.get(); }

 private:
  std::unique_ptr<T> ptr_;
};

// Kinds in Erlang's term order: number < atom < reference < fun < port < pid < tuple <
// map < nil < list < bitstring. Integers sort before floats (exact order, as map keys do).
enum class Kind : std::uint8_t {
  integer,      // fits in int64_t
  big_integer,  // does not fit in int64_t
  float64,
  atom,
  reference,
  fun,          // a local fun (NEW_FUN_EXT)
  export_fun,   // fun M:F/A (EXPORT_EXT)
  port,
  pid,
  tuple,
  map,
  nil,
  list,         // non-empty, proper or improper
  binary,
  bitstring,    // a bit count that is not a multiple of 8
};

std::string_view to_string(Kind kind) noexcept;

struct Atom {
  std::string name;  // UTF-8, at most 255 characters
  friend bool operator==(const Atom&, const Atom&) = default;
};

// Magnitude in little-endian bytes without high zero bytes, the way ETF carries it; the
// value never fits in int64_t (Term::integer normalises).
struct BigInteger {
  bool negative = false;
  std::vector<std::uint8_t> magnitude;
};

struct Pid {
  std::string node;  // the node atom, UTF-8
  std::uint32_t id = 0;
  std::uint32_t serial = 0;
  std::uint32_t creation = 0;
};

struct Port {
  std::string node;
  std::uint64_t id = 0;  // NEW_PORT_EXT when it fits 28 bits (as OTP 25), V4_PORT_EXT otherwise
  std::uint32_t creation = 0;
};

struct Reference {
  std::string node;
  std::uint32_t creation = 0;
  std::vector<std::uint32_t> ids;  // wire order, at most 5 words
};

struct ExportFun {
  std::string module;
  std::string function;
  std::uint8_t arity = 0;
};

// A local fun as NEW_FUN_EXT carries it; opaque outside the node that made it, but it
// round-trips byte for byte.
struct Fun {
  std::uint8_t arity = 0;
  std::array<std::uint8_t, 16> uniq{};
  std::uint32_t index = 0;
  std::string module;
  std::int64_t old_index = 0;
  std::int64_t old_uniq = 0;
  Pid pid;
  std::vector<Term> free_vars;
};

struct Binary {
  std::vector<std::uint8_t> bytes;
};

// bytes.size() * 8 - (8 - bits_in_last) bits; bits_in_last in 1..7, unused low bits zero.
struct Bitstring {
  std::vector<std::uint8_t> bytes;
  std::uint8_t bits_in_last = 8;
};

struct Tuple {
  std::vector<Term> elements;
};

// n elements followed by the tail: items.size() == n + 1, items.back() is the tail ([] for
// a proper list). The empty list is Kind::nil, never a List.
struct List {
  std::vector<Term> items;
};

// Entries flattened key, value, key, value ... and sorted by key in Erlang's exact order,
// so equal maps have equal entry sequences. Keys are unique.
struct Map {
  std::vector<Term> flat;
};

struct Nil {};

class Term {
 public:
  using Repr = std::variant<std::int64_t, Boxed<BigInteger>, double, Atom, Boxed<Reference>,
                            Boxed<Fun>, Boxed<ExportFun>, Boxed<Port>, Boxed<Pid>, Tuple, Map, Nil,
                            List, Binary, Bitstring>;

  Term() noexcept : repr_(Nil{}) {}
  Term(const Term& other);
  // A moved-from Term is [] (never a half-moved alternative).
  Term(Term&& other) noexcept : repr_(std::exchange(other.repr_, Nil{})) {}
  Term& operator=(const Term& other);
  Term& operator=(Term&& other) noexcept;
  ~Term() {
    // Leaves (most terms) die here, inline; containers check for nested children.
    if (has_children_kind()) release_children_iteratively();
  }

  // Builds the alternative T in place: what the decoder's builder uses on its hot path.
  template <class T, class... Args>
  explicit Term(std::in_place_type_t<T> t, Args&&... args) : repr_(t, std::forward<Args>(args)...) {}

  // Construction. These validate what the wire would reject and throw EncodeError.
  static Term integer(std::int64_t value) noexcept;
  static Term big_integer(bool negative, std::vector<std::uint8_t> magnitude_le);
  static Term float64(double value);  // rejects NaN and infinities
  static Term atom(std::string_view utf8);
  static Term binary(std::span<const std::uint8_t> bytes);
  static Term binary(std::string_view bytes);
  static Term bitstring(std::vector<std::uint8_t> bytes, std::uint8_t bits_in_last);
  static Term nil() noexcept { return Term(); }
  static Term tuple(std::vector<Term> elements);
  static Term list(std::vector<Term> elements, Term tail = Term());
  static Term map(std::vector<std::pair<Term, Term>> entries);  // rejects duplicate keys
  static Term pid(Pid pid);
  static Term port(Port port);
  static Term reference(Reference ref);
  static Term fun(Fun fun);
  static Term export_fun(std::string_view module, std::string_view function, std::uint8_t arity);
  static Term string(std::string_view latin1_codes);  // a list of byte values, like "abc"

  // Takes already-validated parts; used by the decoder's builder.
  static Term from_repr(Repr repr) noexcept { return Term(std::move(repr)); }

  Kind kind() const noexcept { return static_cast<Kind>(repr_.index()); }
  bool is_integer() const noexcept { return kind() == Kind::integer || kind() == Kind::big_integer; }
  bool is_atom(std::string_view name) const noexcept;

  template <class T>
  const T* get_if() const noexcept {
    return std::get_if<T>(&repr_);
  }
  std::optional<std::int64_t> as_int64() const noexcept;
  std::optional<double> as_double() const noexcept;
  std::optional<std::string_view> atom_name() const noexcept;
  std::span<const Term> tuple_elements() const noexcept;  // empty span unless a tuple
  std::size_t map_size() const noexcept;

  const Repr& repr() const noexcept { return repr_; }
  Repr& repr() noexcept { return repr_; }

  // The child terms in encoding order: tuple elements, list items (tail last), map keys
  // and values interleaved, fun free variables. Empty for everything else.
  std::span<const Term> children() const noexcept;
  std::span<Term> children() noexcept;

  // Erlang syntax, as io:format("~p") would write it, with pids, ports and references
  // spelled with their node: #Pid<'a@h'.Id.Serial.Creation>, #Port<'a@h'.Id.Creation>,
  // #Ref<'a@h'.Creation.W2.W1.W0>, local funs as #Fun<Module.Index.OldUniq>.
  std::string to_string() const;

  // Erlang's exact term order: 1 < 1.0, 0.0 == -0.0, maps by size, then keys, then values.
  friend std::strong_ordering compare(const Term& a, const Term& b) noexcept;
  friend bool operator==(const Term& a, const Term& b) noexcept { return compare(a, b) == 0; }
  friend std::strong_ordering operator<=>(const Term& a, const Term& b) noexcept {
    return compare(a, b);
  }

 private:
  explicit Term(Repr repr) noexcept : repr_(std::move(repr)) {}
  bool has_children_kind() const noexcept {
    const Kind k = kind();
    return k == Kind::tuple || k == Kind::list || k == Kind::map || k == Kind::fun;
  }
  void release_children_iteratively() noexcept;

  Repr repr_;
};

// Sorts map entries (flattened key, value pairs) by key. Returns the index of the first key
// that equals its predecessor, or npos when all keys are distinct.
std::size_t sort_map_entries(std::vector<Term>& flat);
inline constexpr std::size_t npos = static_cast<std::size_t>(-1);

}  // namespace camlbeam::etf
