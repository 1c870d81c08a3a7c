// The NIF's term source and sink (nif_terms.hpp).
//
// Reading: the terms of an env are taken apart with enif_* and fed to a conv::OcamlBuilder
// (from conv's pool, as etf_to_ocaml's are) on an explicit stack: no C recursion, however
// deep the term. What the NIF API cannot take apart (pids, ports, references, funs,
// bignums, bitstrings that are not whole bytes, atoms beyond Latin-1) goes through
// enif_term_to_binary and etf's decoder, which feeds the same builder mid-build.
//
// Building: conv::walk_ocaml drives NifTermSink, an etf::Visitor that makes the terms
// bottom-up on an explicit stack of finished terms. What the NIF API cannot make (the same
// kinds) is written by etf's Writer and made by enif_binary_to_term; the reference rule of
// erlang/src/ocaml_etf_guard.erl is applied to every reference first.
#include "nif_terms.hpp"

#include "handles.hpp"

#include <camlbeam/etf/encoder.hpp>
#include <camlbeam/etf/error.hpp>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <new>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace camlbeam::nif {

namespace {

// ---------------------------------------------------------------------------------------
// Scratch memory, kept per thread

// What a thread keeps of a conversion's stacks once it is done: enough that a request
// converts without allocating once its thread has converted one as large, not so much
// that one huge term pins its memory. Conversions run on the OCaml thread, one per VM.
// 2 MB is a list of 256k terms in the sink's stack, beyond the worker's minor heap (a
// list of 200k integers fills it): at 256 KB, a list of 100,000 integers took its stacks
// fresh from the system every call (every page fault of the OCaml thread, in perf, and
// the copies as they doubled).
constexpr std::size_t kept_scratch_bytes = std::size_t{2} << 20;

template <class T>
void clear_and_trim(std::vector<T>& v) noexcept {
  v.clear();
  if (v.capacity() * sizeof(T) > kept_scratch_bytes) std::vector<T>().swap(v);
}

// A stack of terms whose push is inlined where it is used: std::vector's push_back was not,
// in the walk that feeds the sink (a call per term). Memory from malloc, grown by doubling.
class TermStack {
 public:
  TermStack() noexcept = default;
  ~TermStack() { std::free(data_); }
  TermStack(const TermStack&) = delete;
  TermStack& operator=(const TermStack&) = delete;

  [[gnu::always_inline]] void push(ERL_NIF_TERM t) {
    if (size_ == capacity_) [[unlikely]] grow();
    data_[size_++] = t;
  }
  ERL_NIF_TERM* data() noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }
  ERL_NIF_TERM& operator[](std::size_t i) noexcept { return data_[i]; }
  ERL_NIF_TERM back() const noexcept { return data_[size_ - 1]; }
  void shrink_to(std::size_t n) noexcept { size_ = n; }  // n <= size()
  void clear() noexcept { size_ = 0; }
  // Empty, and its memory given back past `kept` bytes.
  void trim(std::size_t kept) noexcept {
    size_ = 0;
    if (capacity_ * sizeof(ERL_NIF_TERM) <= kept) return;
    std::free(std::exchange(data_, nullptr));
    capacity_ = 0;
  }

 private:
  [[gnu::noinline]] void grow() {
    const std::size_t capacity = capacity_ == 0 ? 64 : 2 * capacity_;
    void* data = std::realloc(data_, capacity * sizeof(ERL_NIF_TERM));
    if (data == nullptr) throw std::bad_alloc();
    data_ = static_cast<ERL_NIF_TERM*>(data);
    capacity_ = capacity;
  }

  ERL_NIF_TERM* data_ = nullptr;
  std::size_t size_ = 0;
  std::size_t capacity_ = 0;
};

// The thread's scratch of type S, lent to one conversion at a time. A conversion that
// starts while it is lent (nested in another on the same thread: OCaml code such as a
// signal handler or a finaliser running in the builder's map_of_array callback) gets a
// fresh one of its own.
template <class S>
class ScratchLease {
 public:
  ScratchLease() {
    Slot& slot = thread_slot();
    if (!slot.busy) {
      slot.busy = true;
      slot_ = &slot;
      scratch_ = &slot.scratch;
    } else {
      scratch_ = &fresh_.emplace();
    }
  }
  ~ScratchLease() {
    if (slot_ == nullptr) return;
    slot_->scratch.trim();
    slot_->busy = false;
  }
  ScratchLease(const ScratchLease&) = delete;
  ScratchLease& operator=(const ScratchLease&) = delete;
  S& operator*() const noexcept { return *scratch_; }

 private:
  struct Slot {
    S scratch;
    bool busy = false;
  };
  static Slot& thread_slot() noexcept {
    thread_local Slot slot;
    return slot;
  }

  Slot* slot_ = nullptr;
  std::optional<S> fresh_;
  S* scratch_ = nullptr;
};

// An ErlNifBinary from enif_term_to_binary, released however the reading of it ends.
class TermBinary {
 public:
  TermBinary(ErlNifEnv* env, ERL_NIF_TERM term) {
    // It fails only when the binary cannot be allocated (erl_nif docs).
    if (!enif_term_to_binary(env, term, &bin_)) throw std::bad_alloc();
  }
  ~TermBinary() { enif_release_binary(&bin_); }
  TermBinary(const TermBinary&) = delete;
  TermBinary& operator=(const TermBinary&) = delete;
  std::span<const std::uint8_t> bytes() const noexcept { return {bin_.data, bin_.size}; }

 private:
  ErlNifBinary bin_;
};

// ---------------------------------------------------------------------------------------
// Reading: ERL_NIF_TERM → Erl.Term.t

struct ReadFrame {
  enum class Kind : std::uint8_t { tuple, list, map };
  Kind kind;
  // Children not yet started; a list's are not counted (1 until its tail is started).
  std::size_t remaining;
  // Lists: the cell whose head is the next element, or the tail once no cell is left.
  // Tuples and maps take their children from ReadScratch::pending.
  ERL_NIF_TERM cell = 0;
};

struct ReadScratch {
  std::vector<ERL_NIF_TERM> pending;  // children still to read, the next one last
  std::vector<ReadFrame> open;        // the containers begun and not yet ended
  void trim() noexcept {
    clear_and_trim(pending);
    clear_and_trim(open);
  }
};

// Why a read stopped, as the ETF path reports it. A NIF term has no byte offsets: the
// offset is 0, or the one in the sub-term's ETF when etf's decoder found the problem.
struct ReadFailure {
  etf::DecodeError error;
};

// The UTF-8 text of atoms read on this thread, by their term: an atom is an immediate
// term, the same in every env and for the VM's life (the VM never removes one), so a term
// equal to a remembered one is that atom, and nothing else. A hit skips the reader's three
// NIF API calls for an atom (the integer try, the type, enif_get_atom's copy of its text);
// the tag and the export's name of every call are atoms. Direct-mapped by the atom's
// index; texts up to `longest` bytes.
class AtomTexts {
 public:
  static constexpr std::size_t longest = 54;
  struct Slot {
    ERL_NIF_TERM term = 0;  // 0: empty (no term is 0: THE_NON_VALUE)
    std::uint8_t size = 0;
    char text[longest + 1] = {};
  };
  static_assert(sizeof(Slot) == 64);

  static AtomTexts& of_thread() noexcept {
    thread_local AtomTexts texts;
    return texts;
  }
  const Slot& slot(ERL_NIF_TERM term) const noexcept { return slots_[index(term)]; }
  void remember(ERL_NIF_TERM atom, std::string_view utf8) noexcept {
    if (utf8.size() > longest) return;
    Slot& slot = slots_[index(atom)];
    slot.size = static_cast<std::uint8_t>(utf8.size());
    std::memcpy(slot.text, utf8.data(), utf8.size());
    slot.term = atom;
  }

 private:
  static constexpr std::size_t slot_count = 128;
  // An atom's term is its index above 6 tag bits.
  static std::size_t index(ERL_NIF_TERM term) noexcept { return (term >> 6) % slot_count; }
  std::array<Slot, slot_count> slots_;
};

class NifReader {
 public:
  NifReader(ErlNifEnv* env, conv::OcamlBuilder& builder, const ReadLimits& limits, ReadScratch& scratch) noexcept
      : env_(env), builder_(builder), limits_(limits), pending_(scratch.pending), open_(scratch.open) {}

  // Feeds `term` to the builder, in the decoder's event order.
  void read(ERL_NIF_TERM term) {
    for (;;) {
      read_one(term);
      // The next term to read, ending every container whose children are all read.
      for (;;) {
        if (open_.empty()) return;
        ReadFrame& top = open_.back();
        if (top.remaining != 0) {
          if (top.kind != ReadFrame::Kind::list) {
            --top.remaining;
            term = pending_.back();
            pending_.pop_back();
          } else if (!enif_get_list_cell(env_, top.cell, &term, &top.cell)) {
            term = top.cell;  // the tail
            top.remaining = 0;
          }
          break;
        }
        switch (top.kind) {
          case ReadFrame::Kind::tuple: builder_.end_tuple(); break;
          case ReadFrame::Kind::list: builder_.end_list(); break;
          case ReadFrame::Kind::map: builder_.end_map(); break;
        }
        open_.pop_back();
      }
    }
  }

 private:
  // A term without children is passed to the builder; a container is begun, and read()
  // takes its children in order: a tuple's or a map's pushed on `pending_`, a list's from
  // its cells.
  void read_one(ERL_NIF_TERM term) {
    if (const AtomTexts::Slot& known = atom_texts_.slot(term); known.term == term) {
      // The slot stays as it is while the builder copies it: an allocation from C runs the
      // GC's work only, never OCaml code that could convert on this thread.
      builder_.atom({known.text, known.size});
      return;
    }
    // Numbers first, without asking the term's type: each enif_* call costs a few
    // nanoseconds, as much as building the value. Integers are the most common term of
    // all; after a float, floats are tried first, as a list's elements are mostly of one
    // kind (a float was three calls, int64, type and double; it is one in a run of them).
    // enif_get_int64 takes every integer that fits 64 bits (bignums of the VM up to 2^63).
    double d;
    if (after_float_ && enif_get_double(env_, term, &d)) {
      builder_.float64(d);
      return;
    }
    ErlNifSInt64 i;
    if (enif_get_int64(env_, term, &i)) {
      builder_.integer(i);
      after_float_ = false;
      return;
    }
    switch (enif_term_type(env_, term)) {
      case ERL_NIF_TERM_TYPE_FLOAT: {
        enif_get_double(env_, term, &d);
        builder_.float64(d);
        after_float_ = true;
        return;
      }
      case ERL_NIF_TERM_TYPE_BITSTRING: {
        ErlNifBinary bin;
        // Fails for a bitstring that is not whole bytes, which the NIF API cannot read.
        if (enif_inspect_binary(env_, term, &bin)) builder_.binary({bin.data, bin.size});
        else read_as_etf(term);
        return;
      }
      case ERL_NIF_TERM_TYPE_ATOM: read_atom(term); return;
      case ERL_NIF_TERM_TYPE_LIST: read_list(term); return;
      case ERL_NIF_TERM_TYPE_TUPLE: read_tuple(term); return;
      case ERL_NIF_TERM_TYPE_MAP: read_map(term); return;
      default:
        // A handle's resource term (a reference to Erlang) is the handle it holds.
        if (const std::optional<value> handle = handles::get(env_, term)) {
          builder_.handle(*handle);
          return;
        }
        // Bignums beyond 64 bits, pids, ports, references, funs: the NIF API has no reader
        // for their parts, and any kind a later OTP adds is at least read as ETF.
        read_as_etf(term);
        return;
    }
  }

  void read_atom(ERL_NIF_TERM atom) {
    // OTP 25's NIF API gives an atom's text in Latin-1 only (ERL_NIF_UTF8 came with
    // OTP 26), and fails for an atom with characters beyond it: that one is read as ETF,
    // where it is ATOM_UTF8.
    char latin1[256];  // an atom has at most 255 characters, and the NUL is written too
    const int written = enif_get_atom(env_, atom, latin1, sizeof latin1, ERL_NIF_LATIN1);
    if (written <= 0) {
      read_as_etf(atom);
      return;
    }
    const auto* text = reinterpret_cast<const std::uint8_t*>(latin1);
    const std::string_view utf8 = atom_text_.from_latin1({text, static_cast<std::size_t>(written - 1)});
    atom_texts_.remember(atom, utf8);
    builder_.atom(utf8);
  }

  void read_list(ERL_NIF_TERM list) {
    if (enif_is_empty_list(env_, list)) {
      builder_.nil();
      return;
    }
    // The elements are read from the cells as read() comes to them, and the tail, [] for a
    // proper list, is the last child, as ETF has it; the builder counts them as they come.
    // Nothing is copied out, and the list is not walked first for its length
    // (enif_get_list_length: 4% of an ocaml:call of 100 floats, perf).
    open(ReadFrame::Kind::list, 1, list);
    builder_.begin_list_of_unknown_length();
  }

  void read_tuple(ERL_NIF_TERM tuple) {
    int arity = 0;
    const ERL_NIF_TERM* elements = nullptr;
    enif_get_tuple(env_, tuple, &arity, &elements);
    const auto n = static_cast<std::uint32_t>(arity);  // at most 2^24 - 1 in the VM
    if (n == 0) {
      builder_.begin_tuple(0);
      builder_.end_tuple();
      return;
    }
    open(ReadFrame::Kind::tuple, n);
    builder_.begin_tuple(n);
    for (std::size_t k = n; k-- > 0;) pending_.push_back(elements[k]);
  }

  void read_map(ERL_NIF_TERM map) {
    std::size_t size = 0;
    enif_get_map_size(env_, map, &size);
    if (size == 0) {
      builder_.begin_map(0);
      builder_.end_map();
      return;
    }
    open(ReadFrame::Kind::map, 2 * size);
    builder_.begin_map(count32(size));
    // Room first, so that nothing throws while the iterator is live (it must be destroyed).
    const std::size_t first = pending_.size();
    pending_.reserve(first + 2 * size);
    ErlNifMapIterator it;
    // It fails only for a term that is no map, which enif_term_type said this one is.
    if (!enif_map_iterator_create(env_, map, &it, ERL_NIF_MAP_ITERATOR_FIRST))
      throw std::logic_error("enif_map_iterator_create refused a map");
    ERL_NIF_TERM key;
    ERL_NIF_TERM val;
    while (pending_.size() - first < 2 * size && enif_map_iterator_get_pair(env_, &it, &key, &val)) {
      pending_.push_back(key);
      pending_.push_back(val);
      enif_map_iterator_next(env_, &it);
    }
    enif_map_iterator_destroy(env_, &it);
    // The builder sorts the bindings (map_of_array), whichever order the VM keeps them in.
    std::reverse(pending_.begin() + static_cast<std::ptrdiff_t>(first), pending_.end());
  }

  // The term's ETF, from the VM's own encoder, through etf's decoder into the same builder:
  // the builder does not care which source an event comes from, so the sub-term lands
  // where this term goes.
  void read_as_etf(ERL_NIF_TERM term) {
    const TermBinary bin(env_, term);
    etf::DecodeOptions options;
    // The bytes are the VM's: the size limit, which guards against sizes forged on a wire,
    // has nothing to guard here. A fun's free variables nest below this term's depth.
    options.limits.max_input_size = bin.bytes().size();
    options.limits.max_depth = limits_.max_depth - open_.size();
    const etf::DecodeResult result = etf::decode(bin.bytes(), builder_, options);
    if (!result) {
      etf::DecodeError error = *result.error;
      if (error.code == etf::Errc::depth_limit) error.detail = limits_.max_depth;  // the whole term's limit
      throw ReadFailure{error};
    }
  }

  // A container with `children` children begins. Nesting is counted as the ETF decoder
  // counts it (an empty container opens nothing), with its error.
  void open(ReadFrame::Kind kind, std::size_t children, ERL_NIF_TERM cell = 0) {
    if (open_.size() >= limits_.max_depth) throw ReadFailure{{etf::Errc::depth_limit, 0, limits_.max_depth}};
    open_.push_back(ReadFrame{kind, children, cell});
  }

  // The builder counts a map's bindings in 32 bits, as ETF does; no VM holds a map larger
  // (it would take 64 GB), but the count is checked rather than cut. (A list's elements it
  // counts itself, as they come.)
  static std::uint32_t count32(std::size_t n) {
    if (n > 0xFFFFFFFF) throw ReadFailure{{etf::Errc::length_exceeds_input, 0, n}};
    return static_cast<std::uint32_t>(n);
  }

  ErlNifEnv* env_;
  conv::OcamlBuilder& builder_;
  const ReadLimits& limits_;
  std::vector<ERL_NIF_TERM>& pending_;
  std::vector<ReadFrame>& open_;
  etf::detail::AtomText atom_text_;  // the decoder's Latin-1 → UTF-8 of atom text
  AtomTexts& atom_texts_ = AtomTexts::of_thread();
  bool after_float_ = false;         // the last number read was a float
};

// ---------------------------------------------------------------------------------------
// Building: Erl.Term.t → ERL_NIF_TERM

struct BuildFrame {
  enum class Kind : std::uint8_t { tuple, list, map };
  Kind kind;
  std::size_t base;  // its first child in `vals`
};

struct BuildScratch {
  TermStack vals;                        // finished terms, in event order
  std::vector<BuildFrame> open;          // the containers begun and not yet ended
  std::vector<ERL_NIF_TERM> map_values;  // a map's values, its keys staying in `vals`
  etf::ByteBuffer etf;                   // the ETF of a term the NIF API cannot make
  etf::ByteBuffer atom_etf;              // an atom's, checked while a fun is in `etf`
  std::size_t etf_peak = 0;              // the most `etf` held in this conversion
  void trim() noexcept {
    vals.trim(kept_scratch_bytes);
    clear_and_trim(open);
    clear_and_trim(map_values);
    // ByteBuffer tells its size, not its capacity: the conversion's peak says how large
    // it grew (an atom's buffer never grows past a few hundred bytes).
    if (etf_peak > kept_scratch_bytes) etf = etf::ByteBuffer();
    etf.clear();
    etf_peak = 0;
    atom_etf.clear();
  }
};

struct BuildFailure {
  BuildError error;
};

// The atoms answers use, by their UTF-8 text. Making one takes the VM's atom table's lock
// (enif_make_existing_atom_len; binary_to_term for one beyond Latin-1), which was about
// half a microsecond on the OCaml thread for the `ok` of every answer; an atom is an
// immediate term, valid in every env for the VM's life, as the VM never removes one.
// Direct-mapped, per thread: a slot's last atom stays until another text hashes to it.
// Only atoms the VM has are remembered, so a hit is what make_atom would have made.
class KnownAtoms {
 public:
  static KnownAtoms& of_thread() noexcept {
    thread_local KnownAtoms atoms;
    return atoms;
  }
  std::optional<ERL_NIF_TERM> find(std::string_view utf8) const noexcept {
    const Slot& slot = slots_[index(utf8)];
    if (slot.filled && slot.text == utf8) return slot.atom;
    return std::nullopt;
  }
  void remember(std::string_view utf8, ERL_NIF_TERM atom) {
    Slot& slot = slots_[index(utf8)];
    slot.filled = false;  // until the text is in (assign may throw bad_alloc)
    slot.text.assign(utf8);
    slot.atom = atom;
    slot.filled = true;
  }

 private:
  static constexpr std::size_t slot_count = 1024;
  struct Slot {
    std::string text;
    ERL_NIF_TERM atom = 0;
    bool filled = false;
  };
  static std::size_t index(std::string_view utf8) noexcept {
    return std::hash<std::string_view>{}(utf8) % slot_count;
  }
  std::array<Slot, slot_count> slots_;
};

[[noreturn]] void fail(BuildError::Kind kind, std::string message) {
  throw BuildFailure{{kind, std::move(message)}};
}

// An atom's text for a message: at most 60 bytes, cut on a character boundary.
std::string shortened(std::string_view utf8) {
  constexpr std::size_t most = 60;
  if (utf8.size() <= most) return std::string(utf8);
  std::size_t cut = most;
  while (cut > 0 && (static_cast<std::uint8_t>(utf8[cut]) & 0xC0) == 0x80) --cut;
  return std::string(utf8.substr(0, cut)) + "...";
}

[[noreturn]] void unknown_atom(std::string_view utf8) {
  fail(BuildError::Kind::unknown_atom,
       "the atom '" + shortened(utf8) + "' is not known to this VM (a worker's answer cannot create atoms)");
}

// Reference words OTP 25's hash reads (ocaml_etf_guard.erl's ?HASHED_REF_WORDS).
constexpr std::size_t hashed_ref_words = 3;

// The largest tuple the VM makes (MAX_ARITYVAL): enif_make_tuple_from_array does not check.
constexpr std::size_t max_tuple_arity = (std::size_t{1} << 24) - 1;

class NifTermSink {
 public:
  NifTermSink(ErlNifEnv* env, const BuildOptions& options, BuildScratch& scratch) noexcept
      : env_(env),
        options_(options),
        vals_(scratch.vals),
        open_(scratch.open),
        map_values_(scratch.map_values),
        etf_(scratch.etf),
        atom_etf_(scratch.atom_etf),
        etf_peak_(scratch.etf_peak),
        nil_(enif_make_list(env, 0)),
        bin2term_opts_(options.existing_atoms_only ? ERL_NIF_BIN2TERM_SAFE : 0),
        budget_(options.max_bytes != 0 ? options.max_bytes : SIZE_MAX) {}

  ERL_NIF_TERM result() const noexcept { return vals_.back(); }

  // Every event goes to the fun being written as ETF while there is one (capture_).

  // The leaves that come in runs (lists of numbers) are inlined into the walk; out of line
  // they were a call per element.
  [[gnu::always_inline]] void integer(std::int64_t v) {
    if (capture_) return capture_->integer(v);
    spend(word);
    vals_.push(enif_make_int64(env_, v));
  }
  void big_integer(bool negative, std::span<const std::uint8_t> magnitude) {
    via_etf([&](etf::Writer& w) { w.big_integer(negative, magnitude); }, "an integer");
  }
  [[gnu::always_inline]] void float64(double d) {
    if (capture_) return capture_->float64(d);
    spend(3 * word);
    vals_.push(enif_make_double(env_, d));  // finite: walk_ocaml refuses the others
  }
  void atom(std::string_view utf8) {
    if (capture_) {
      check_atom(utf8);
      return capture_->atom(utf8);
    }
    spend(word);
    vals_.push(make_atom(utf8));
  }
  void binary(std::span<const std::uint8_t> bytes) {
    if (capture_) return capture_->binary(bytes);
    spend(bytes.size() + 6 * word);
    ERL_NIF_TERM term;
    unsigned char* data = enif_make_new_binary(env_, bytes.size(), &term);
    if (data == nullptr) throw std::bad_alloc();
    if (!bytes.empty()) std::memcpy(data, bytes.data(), bytes.size());
    vals_.push(term);
  }
  void bitstring(std::span<const std::uint8_t> bytes, std::uint8_t bits) {
    via_etf([&](etf::Writer& w) { w.bitstring(bytes, bits); }, "a bitstring");
  }
  void nil() {
    if (capture_) return capture_->nil();
    vals_.push(nil_);
  }
  void string(std::span<const std::uint8_t> bytes) {
    if (capture_) return capture_->string(bytes);
    spend(2 * word * bytes.size());
    const std::size_t base = vals_.size();
    for (std::uint8_t b : bytes) vals_.push(enif_make_int(env_, b));
    const ERL_NIF_TERM list = enif_make_list_from_array(env_, vals_.data() + base, static_cast<unsigned>(bytes.size()));
    replace_from(base, list);
  }
  void begin_list(std::uint32_t n) {
    if (capture_) return capture_->begin_list(n);
    open_.push_back({BuildFrame::Kind::list, vals_.size()});
  }
  void end_list() {
    if (capture_) return capture_->end_list();
    const std::size_t base = close();
    // vals_[base, base + n): the elements; the tail after them.
    const std::size_t n = vals_.size() - base - 1;
    spend(2 * word * n);
    ERL_NIF_TERM list = vals_.back();
    if (enif_is_empty_list(env_, list)) {
      list = enif_make_list_from_array(env_, vals_.data() + base, static_cast<unsigned>(n));
    } else {
      for (std::size_t k = n; k-- > 0;) list = enif_make_list_cell(env_, vals_[base + k], list);
    }
    replace_from(base, list);
  }
  void begin_tuple(std::uint32_t n) {
    if (capture_) return capture_->begin_tuple(n);
    if (n > max_tuple_arity)
      fail(BuildError::Kind::invalid, "a tuple of " + std::to_string(n) + " elements (Erlang's largest has 2^24-1)");
    open_.push_back({BuildFrame::Kind::tuple, vals_.size()});
  }
  void end_tuple() {
    if (capture_) return capture_->end_tuple();
    const std::size_t base = close();
    const auto n = static_cast<unsigned>(vals_.size() - base);
    spend(word * (n + 1));
    replace_from(base, enif_make_tuple_from_array(env_, vals_.data() + base, n));
  }
  void begin_map(std::uint32_t n) {
    if (capture_) {
      capture_holds_large_map_ = capture_holds_large_map_ || n > small_map_max;
      return capture_->begin_map(n);
    }
    open_.push_back({BuildFrame::Kind::map, vals_.size()});
  }
  // The most keys of a flatmap (MAP_SMALL_MAP_LIMIT); a larger map is a hashmap.
  static constexpr std::size_t small_map_max = 32;

  void end_map() {
    if (capture_) return capture_->end_map();
    const std::size_t base = close();
    // vals_[base, base + 2 pairs): k0 v0 k1 v1 ...: the values move out, the keys close up
    // in place (key k moves down to base + k from base + 2k, never over one still unread).
    const std::size_t pairs = (vals_.size() - base) / 2;
    spend(word * (2 * pairs + 3));
    map_values_.clear();
    for (std::size_t k = 0; k < pairs; ++k) map_values_.push_back(vals_[base + 2 * k + 1]);
    for (std::size_t k = 0; k < pairs; ++k) vals_[base + k] = vals_[base + 2 * k];
    ERL_NIF_TERM map;
    if (pairs <= small_map_max) {
      if (!enif_make_map_from_arrays(env_, vals_.data() + base, map_values_.data(), pairs, &map))
        fail(BuildError::Kind::invalid, "a map holds the same key twice, as Erlang compares keys");
    } else {
      // OTP 25's enif_make_map_from_arrays sorts a large map's keys with the scheduler's
      // data, and crashes on a thread that is no scheduler (a null scheduler pointer in
      // erts_qsort): this sink runs on the OCaml thread. Put one pair at a time instead; a key
      // put twice leaves the map smaller than its pairs.
      map = enif_make_new_map(env_);
      for (std::size_t k = 0; k < pairs; ++k) enif_make_map_put(env_, map, vals_[base + k], map_values_[k], &map);
      std::size_t size = 0;
      if (!enif_get_map_size(env_, map, &size) || size != pairs)
        fail(BuildError::Kind::invalid, "a map holds the same key twice, as Erlang compares keys");
    }
    replace_from(base, map);
  }
  void pid(const etf::PidView& pid) {
    check_atom(pid.node);
    via_etf([&](etf::Writer& w) { w.pid(pid); }, "a pid");
  }
  void port(const etf::PortView& port) {
    check_atom(port.node);
    via_etf([&](etf::Writer& w) { w.port(port); }, "a port");
  }
  void reference(const etf::ReferenceView& ref) {
    check_reference(ref);
    check_atom(ref.node);
    via_etf([&](etf::Writer& w) { w.reference(ref); }, "a reference");
  }
  // A local fun is made whole by enif_binary_to_term: from begin_fun to its end_fun, the
  // events (its free variables, funs nested in them) are written as its ETF.
  void begin_fun(const etf::FunView& fun) {
    check_atom(fun.module);
    check_atom(fun.pid.node);
    if (!capture_) {
      etf_.clear();
      capture_.emplace(etf_);
      capture_->version();
    }
    ++capture_depth_;
    capture_->begin_fun(fun);
  }
  void end_fun() {
    capture_->end_fun();
    if (--capture_depth_ != 0) return;
    capture_.reset();
    if (std::exchange(capture_holds_large_map_, false))
      fail(BuildError::Kind::needs_scheduler, "a fun holding a map of more than 32 keys");
    vals_.push(from_etf(etf_, "a fun"));
  }
  void export_fun(std::string_view module, std::string_view function, std::uint8_t arity) {
    check_atom(module);
    check_atom(function);
    via_etf([&](etf::Writer& w) { w.export_fun(module, function, arity); }, "an export fun");
  }

  // An Erl.Term.Handle (`handle`: its Erl.Term.handle): a new resource object holding it,
  // monitoring its `monitor` if it has one (handles.hpp).
  void handle(value handle, const std::optional<etf::PidView>& monitor) {
    if (capture_)
      fail(BuildError::Kind::invalid,
           "an OCaml handle among a fun's free variables: such a fun is made from ETF, which cannot hold one");
    std::optional<ErlNifPid> pid;
    if (monitor) {
      check_atom(monitor->node);
      etf_.clear();
      etf::Writer writer(etf_);
      writer.version();
      writer.pid(*monitor);
      const ERL_NIF_TERM term = from_etf(etf_, "a pid");
      pid.emplace();
      if (!enif_get_local_pid(env_, term, &*pid))
        fail(BuildError::Kind::invalid, "an OCaml handle monitors a process of another node: a resource monitors local ones only");
    }
    spend(4 * word);  // the resource term; its object is the VM's
    vals_.push(handles::make(env_, handle, pid));
  }

 private:
  // The children of the top container come off the stack; returns where they start.
  static constexpr std::size_t word = sizeof(ERL_NIF_TERM);

  // Counts what the answer takes in the VM against BuildOptions::max_bytes (0, no limit:
  // the budget is then SIZE_MAX, which no term's count reaches).
  [[gnu::always_inline]] void spend(std::size_t bytes) {
    spent_ += bytes;
    if (spent_ > budget_) [[unlikely]] too_large();
  }
  [[noreturn, gnu::noinline, gnu::cold]] void too_large() const {
    throw BuildFailure{{BuildError::Kind::too_large,
                        "the term takes more than " + std::to_string(options_.max_bytes) + " bytes of the VM (the pool's max_reply_size)", spent_}};
  }

  std::size_t close() noexcept {
    const std::size_t base = open_.back().base;
    open_.pop_back();
    return base;
  }

  void replace_from(std::size_t base, ERL_NIF_TERM term) {
    vals_.shrink_to(base);
    vals_.push(term);
  }

  // A term the NIF API cannot make, written by etf's Writer: into the fun being written,
  // or on its own and made by enif_binary_to_term.
  template <class Write>
  void via_etf(Write&& write, const char* what) {
    if (capture_) {
      write(*capture_);
      return;
    }
    etf_.clear();
    etf::Writer writer(etf_);
    writer.version();
    write(writer);
    vals_.push(from_etf(etf_, what));
  }

  ERL_NIF_TERM from_etf(const etf::ByteBuffer& bytes, const char* what) {
    etf_peak_ = std::max(etf_peak_, bytes.size());
    spend(bytes.size());
    ERL_NIF_TERM term;
    if (enif_binary_to_term(env_, bytes.data(), bytes.size(), &term, bin2term_opts_) != bytes.size())
      fail(BuildError::Kind::invalid, std::string("the VM refused to make ") + what + " of this answer (binary_to_term)");
    return term;
  }

  ERL_NIF_TERM make_atom(std::string_view utf8) {
    if (const std::optional<ERL_NIF_TERM> known = known_atoms_.find(utf8)) return *known;
    const ERL_NIF_TERM atom = make_unknown_atom(utf8);
    known_atoms_.remember(utf8, atom);
    return atom;
  }

  // make_atom, asking the VM.
  ERL_NIF_TERM make_unknown_atom(std::string_view utf8) {
    const auto ascii = [](std::string_view s) {
      return std::all_of(s.begin(), s.end(), [](char c) { return static_cast<std::uint8_t>(c) < 0x80; });
    };
    if (utf8.size() <= 255 && ascii(utf8)) {
      if (!options_.existing_atoms_only) return enif_make_atom_len(env_, utf8.data(), utf8.size());
      ERL_NIF_TERM atom;
      if (!enif_make_existing_atom_len(env_, utf8.data(), utf8.size(), &atom, ERL_NIF_LATIN1)) unknown_atom(utf8);
      return atom;
    }
    // OTP 25's NIF API takes atom text in Latin-1 only; enif_binary_to_term takes any atom.
    // The Writer checks the text (UTF-8, at most 255 characters: EncodeError, invalid)
    // and writes it in Latin-1 when it fits, as term_to_binary does.
    atom_etf_.clear();
    etf::Writer writer(atom_etf_);
    writer.version();
    writer.atom(utf8);
    ERL_NIF_TERM atom;
    // With ERL_NIF_BIN2TERM_SAFE an atom the VM lacks is the only reason to fail.
    if (enif_binary_to_term(env_, atom_etf_.data(), atom_etf_.size(), &atom, bin2term_opts_) != atom_etf_.size())
      unknown_atom(utf8);
    return atom;
  }

  // An atom of a term made by enif_binary_to_term: checked first, so that an unknown one
  // is named (binary_to_term only fails).
  void check_atom(std::string_view utf8) {
    if (options_.existing_atoms_only) make_atom(utf8);
  }

  // ocaml_etf_guard.erl's rule: OTP 25 hashes three words of a reference, and forged
  // cousins as map keys overflow the VM's C stack.
  void check_reference(const etf::ReferenceView& ref) const {
    std::size_t words = ref.ids.size();
    while (words > 0 && ref.ids[words - 1] == 0) --words;  // a shorter equal reference hashes alike
    if (words <= hashed_ref_words) return;
    if (ref.node == options_.local_node && ref.creation == options_.local_creation) return;
    fail(BuildError::Kind::forged_reference,
         "a reference of more than three words that this node did not make: OTP 25 cannot tell it "
         "from others in a map, and such a map crashes the VM");
  }

  ErlNifEnv* env_;
  const BuildOptions& options_;
  TermStack& vals_;
  std::vector<BuildFrame>& open_;
  std::vector<ERL_NIF_TERM>& map_values_;
  etf::ByteBuffer& etf_;
  etf::ByteBuffer& atom_etf_;
  std::size_t& etf_peak_;
  const ERL_NIF_TERM nil_;
  const unsigned bin2term_opts_;
  KnownAtoms& known_atoms_ = KnownAtoms::of_thread();
  std::optional<etf::Writer> capture_;  // the local fun being written, while there is one
  std::size_t capture_depth_ = 0;       // funs begun in it and not ended (nested ones too)
  bool capture_holds_large_map_ = false;  // a map of it would crash enif_binary_to_term here
  std::size_t spent_ = 0;                 // counted against options_.max_bytes
  const std::size_t budget_;              // options_.max_bytes, or SIZE_MAX for none
};

static_assert(etf::Visitor<NifTermSink>);

}  // namespace

// ---------------------------------------------------------------------------------------

conv::UnrootedDecode nif_to_ocaml(ErlNifEnv* env, ERL_NIF_TERM term, ReadLimits limits) {
  conv::UnrootedDecode out;
  try {
    const conv::BuilderLease builder;
    const ScratchLease<ReadScratch> scratch;
    NifReader(env, *builder, limits, *scratch).read(term);
    out.term = (*builder).take();
  } catch (const ReadFailure& failure) {
    out.error = failure.error;
  } catch (const etf::Reject& reject) {
    // The builder's refusal outside etf's decoder: a map whose keys the VM holds apart but
    // Erl.Term.compare does not (etf::Errc::duplicate_map_key).
    out.error = etf::DecodeError{reject.code, 0, reject.detail};
  } catch (const conv::CallbackRaised& raised) {
    // As etf_to_ocaml_unrooted: the exception value stays valid, the unwinding allocated
    // nothing on the OCaml heap.
    out.raised = raised.exception;
  }
  return out;
}

conv::UnrootedDecode NifRequestSource::to_ocaml() { return nif_to_ocaml(env_, request_, limits_); }

std::optional<host::RequestHead> NifRequestSource::head() const noexcept {
  int arity = 0;
  const ERL_NIF_TERM* elements = nullptr;
  if (!enif_get_tuple(env_, request_, &arity, &elements) || arity == 0) return std::nullopt;
  char latin1[256];  // an atom has at most 255 characters, and the NUL is written too
  // Not an atom, or one beyond Latin-1, which no request's tag is (they are the host's
  // ASCII names): no head, as EtfRequest::head has none for a tuple not starting with one.
  const int written = enif_get_atom(env_, elements[0], latin1, sizeof latin1, ERL_NIF_LATIN1);
  if (written <= 0) return std::nullopt;
  const auto* text = reinterpret_cast<const std::uint8_t*>(latin1);
  return host::RequestHead{head_text_.from_latin1({text, static_cast<std::size_t>(written - 1)}),
                           static_cast<std::size_t>(arity)};
}

BuiltTerm ocaml_to_nif(ErlNifEnv* env, value term, const BuildOptions& options) {
  BuiltTerm out;
  try {
    const ScratchLease<BuildScratch> scratch;
    NifTermSink sink(env, options, *scratch);
    conv::walk_ocaml(term, sink);
    out.term = sink.result();
  } catch (const BuildFailure& failure) {
    out.error = failure.error;
  } catch (const std::bad_alloc&) {
    throw;
  } catch (const std::exception& e) {
    // etf::EncodeError from walk_ocaml or the Writer: a value no Erlang term matches (a
    // NaN, an atom of 300 characters ...). Nothing else is expected; whatever it is, the
    // answer cannot be made, and no exception may reach the VM's scheduler.
    out.error = BuildError{BuildError::Kind::invalid, e.what()};
  } catch (...) {
    out.error = BuildError{BuildError::Kind::invalid, "the answer could not be made into a term"};
  }
  return out;
}

}  // namespace camlbeam::nif
