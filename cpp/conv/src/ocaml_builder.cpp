// Erlang term events → Erl.Term.t on the OCaml heap, built bottom-up.
//
// GC discipline:
// - Every finished value the builder holds sits in a builder's `vals_`, a C++ vector that
//   the GC scans as roots through caml_scan_roots_hook (installed once, chaining whatever
//   hook was there: the systhreads library installs one too). The hook visits every live
//   builder, so a thread suspended mid-build (in the map_of_array callback) stays rooted.
// - Nothing else holds a raw `value` across an allocation: after each allocation the
//   inputs are read back from `vals_` (a minor collection may have moved them), and a new
//   block is pushed onto `vals_` (or stored in one) before the next allocation.
// - A container is allocated when it closes, from children that are all finished, so its
//   fields are initialised once: plain stores into a block of the minor heap (it is the
//   youngest block: no write barrier is needed; reserve_young takes the words as
//   OCaml's own Alloc_small does), caml_initialize into a caml_alloc_shr
//   block above Max_young_wosize. No caml_modify, no CAMLparam. Lists are consed from the
//   back, so each cell is built with its tail.
// - A builder is linked in the list of its domain (OCaml 4: the one list) by the thread
//   holding that domain's lock, and the GC scans each domain's list for that domain.
#include <camlbeam/conv/conv.hpp>
#include <camlbeam/conv/layout.hpp>

#include <caml/alloc.h>
#include <caml/bigarray.h>
#include <caml/callback.h>
#include <caml/custom.h>
#include <caml/gc.h>
#include <caml/memory.h>
#include <caml/mlvalues.h>
#include <caml/version.h>
#include <caml/domain_state.h>

#include <gmp.h>
#include <zarith.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <new>
#include <deque>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>
#include <stdexcept>

// caml/roots.h declares these only under CAML_INTERNALS, which would also pull in the
// runtime's private macros; both runtimes (libasmrun, libcamlrun) export them. The root
// scanning hook is the one internal whose shape OCaml 5 changed (README, "OCaml runtime
// internals used here").
extern "C" {
#if OCAML_VERSION_MAJOR >= 5
// scanning_action_flags is a C enum of int size; the action takes its data first, and the
// hook is told which domain it scans. The runtime reads the hook atomically.
typedef void (*camlbeam_scanning_action)(void*, value, volatile value*);
typedef void (*camlbeam_scan_roots_hook)(camlbeam_scanning_action, int, void*, caml_domain_state*);
extern std::atomic<camlbeam_scan_roots_hook> caml_scan_roots_hook;
static_assert(sizeof(std::atomic<camlbeam_scan_roots_hook>) == sizeof(camlbeam_scan_roots_hook));
extern const struct custom_operations caml_ba_ops;
#else
typedef void (*camlbeam_scanning_action)(value, value*);
typedef void (*camlbeam_scan_roots_hook)(camlbeam_scanning_action);
extern camlbeam_scan_roots_hook caml_scan_roots_hook;
// The operations of every Bigarray (finalise, compare, hash, serialise), which bigarray.h
// exports only under CAML_INTERNALS.
extern struct custom_operations caml_ba_ops;
#endif
}

namespace camlbeam::conv {

// ---------------------------------------------------------------------------------------
// Root

namespace {

// A T that is never destroyed (absl::NoDestructor's idea), for the pools below: what they
// hold is registered with the OCaml runtime, and must not be torn down by static
// destruction at exit, which does not run on the runtime thread.
template <class T>
class NoDestructor {
 public:
  NoDestructor() : value_() {}
  ~NoDestructor() {}  // NOLINT: value_ is left alone on purpose
  NoDestructor(const NoDestructor&) = delete;
  NoDestructor& operator=(const NoDestructor&) = delete;
  T& operator*() noexcept { return value_; }

 private:
  union {
    T value_;
  };
};

// The slots of Roots: a deque never moves its elements, so each slot is registered once.
// Under OCaml 4 only the thread holding the runtime touches the pool; under OCaml 5 each
// domain runs OCaml at once, so the pool has a lock. Nothing in it waits for the runtime
// (caml_register_global_root neither allocates nor polls), so a domain blocked on the lock
// never holds up a stop-the-world section that the holder waits for.
struct RootSlots {
  std::deque<value> slots;
  std::vector<value*> free;
#if OCAML_VERSION_MAJOR >= 5
  std::mutex lock;
#endif
};

RootSlots& root_slots() {
  static NoDestructor<RootSlots> pool;
  return *pool;
}

#if OCAML_VERSION_MAJOR >= 5
std::unique_lock<std::mutex> lock_slots(RootSlots& pool) { return std::unique_lock(pool.lock); }
#else
struct NoLock {};
NoLock lock_slots(RootSlots&) { return {}; }
#endif

#if OCAML_VERSION_MAJOR >= 5
// A few free slots each thread keeps for itself: a request takes and gives back two or
// three Roots (its answer, the context it replaces), and each was a lock of the pool, a
// fifth of the locks of a short nif call (perf). A thread that ends gives them back.
struct ThreadSlots {
  static constexpr std::size_t capacity = 8;
  std::array<value*, capacity> free{};
  std::size_t count = 0;
  ThreadSlots() = default;
  ThreadSlots(const ThreadSlots&) = delete;
  ThreadSlots& operator=(const ThreadSlots&) = delete;
  ~ThreadSlots() {
    if (count == 0) return;
    RootSlots& pool = root_slots();
    const std::lock_guard locked(pool.lock);
    // Within the capacity take_slot reserved: the pool's free list has room for every slot.
    for (std::size_t i = 0; i < count; ++i) pool.free.push_back(free[i]);
  }
};
thread_local ThreadSlots thread_slots;
#endif

value* take_slot() {
#if OCAML_VERSION_MAJOR >= 5
  if (thread_slots.count > 0) return thread_slots.free[--thread_slots.count];
#endif
  RootSlots& pool = root_slots();
  [[maybe_unused]] const auto locked = lock_slots(pool);
  if (pool.free.empty()) {
    // Room for every slot on the free list, so that giving one back never allocates.
    pool.free.reserve(pool.slots.size() + 1);
    value& slot = pool.slots.emplace_back(Val_unit);
    caml_register_global_root(&slot);
    return &slot;
  }
  value* slot = pool.free.back();
  pool.free.pop_back();
  return slot;
}

void give_back(value* slot) noexcept {
  *slot = Val_unit;  // keep nothing alive
#if OCAML_VERSION_MAJOR >= 5
  if (thread_slots.count < ThreadSlots::capacity) {
    thread_slots.free[thread_slots.count++] = slot;
    return;
  }
#endif
  RootSlots& pool = root_slots();
  [[maybe_unused]] const auto locked = lock_slots(pool);
  pool.free.push_back(slot);  // within the capacity take_slot reserved
}

}  // namespace

Root::Root(value v) : slot_(take_slot()) { *slot_ = v; }

Root::Root(Root&& other) noexcept : slot_(std::exchange(other.slot_, nullptr)) {}

Root& Root::operator=(Root&& other) noexcept {
  if (this != &other) {
    if (slot_ != nullptr) give_back(slot_);
    slot_ = std::exchange(other.slot_, nullptr);
  }
  return *this;
}

Root::~Root() {
  if (slot_ != nullptr) give_back(slot_);
}

void Root::set(value v) {
  if (slot_ == nullptr) slot_ = take_slot();
  *slot_ = v;
}

// ---------------------------------------------------------------------------------------
// The roots: every live builder's vals_

#if OCAML_VERSION_MAJOR >= 5
// One list per domain, indexed by the domain's slot in the runtime's table (Caml_state->id,
// below Max_domains_max): the GC asks each domain for its roots, from the domain's own
// thread or its backup thread, and a list is only changed by a thread holding its domain's
// lock, which cannot happen during the scan. Systhreads of one domain share its list, so a
// thread suspended mid-build stays rooted while another runs.
struct BuilderRoots {
  static constexpr std::size_t max_domains = 4096;  // Max_domains_max of OCaml 5.3
  static inline std::array<OcamlBuilder*, max_domains> heads{};
  static inline camlbeam_scan_roots_hook previous_hook = nullptr;

  static void scan(camlbeam_scanning_action action, int flags, void* data, caml_domain_state* domain) {
    for (OcamlBuilder* b = heads[static_cast<std::size_t>(domain->id)]; b != nullptr; b = b->next_)
      for (value& v : b->vals_)
        if (Is_block(v)) action(data, v, &v);
    if (previous_hook != nullptr) previous_hook(action, flags, data, domain);
  }

  static OcamlBuilder*& head() noexcept { return heads[static_cast<std::size_t>(Caml_state->id)]; }

  static void hook_once() noexcept {
    // Once per process, never undone: a hook installed after ours chains to ours. Domains
    // may build their first values at the same time: one of them installs it.
    static std::once_flag once;
    std::call_once(once, [] {
      previous_hook = caml_scan_roots_hook.exchange(scan);
    });
  }
#else
// The runtime is held by one thread at a time, so one list and no lock.
struct BuilderRoots {
  static inline OcamlBuilder* list = nullptr;
  static inline bool hooked = false;
  static inline camlbeam_scan_roots_hook previous_hook = nullptr;

  // Called by the GC (minor and major collections, compaction) on the runtime thread.
  static void scan(camlbeam_scanning_action action) {
    for (OcamlBuilder* b = list; b != nullptr; b = b->next_)
      for (value& v : b->vals_)
        if (Is_block(v)) action(v, &v);
    if (previous_hook != nullptr) previous_hook(action);
  }

  static OcamlBuilder*& head() noexcept { return list; }

  static void hook_once() noexcept {
    if (hooked) return;
    // Once per process, never undone: a hook installed after ours chains to ours.
    previous_hook = caml_scan_roots_hook;
    caml_scan_roots_hook = scan;
    hooked = true;
  }
#endif

  static void link(OcamlBuilder* b) noexcept {
    hook_once();
    OcamlBuilder*& first = head();
    b->next_ = first;
    if (first != nullptr) first->prev_ = b;
    first = b;
  }

  static void unlink(OcamlBuilder* b) noexcept {
    if (b->prev_ != nullptr) b->prev_->next_ = b->next_;
    else head() = b->next_;
    if (b->next_ != nullptr) b->next_->prev_ = b->prev_;
    b->prev_ = b->next_ = nullptr;
  }
};

// ---------------------------------------------------------------------------------------
// OcamlBuilder

namespace {

using namespace layout;

enum class OpenKind : std::uint8_t { tuple, list, map, fun };

// A block too big for the minor heap. caml_alloc_shr raises Out_of_memory when the major
// heap cannot grow, and an OCaml exception raised here would jump over the C++ frames of
// the decoder (or, with no OCaml code below them, end the process as an uncaught
// exception): this failure is a C++ one, which the request path answers. OCaml 4: the
// allocation is not sampled by Gc.Memprof (the _no_track variant is the only one that does
// not raise); OCaml 5 runs Memprof's callbacks at the next poll, never in an allocation.
value major_block(mlsize_t wosize, tag_t tag) {
#if OCAML_VERSION_MAJOR >= 5
  const value b = caml_alloc_shr_noexc(wosize, tag);
#else
  const value b = caml_alloc_shr_no_track_noexc(wosize, tag);
#endif
  if (b == 0) throw std::bad_alloc();
  return b;
}

// A managed Bigarray of char holding a copy of the bytes: its memory is malloc's, freed by
// the Bigarray's finaliser. Built as caml_ba_alloc builds it, but with the runtime told how
// much memory the block holds (caml_ba_alloc of OCaml 4.13 tells it nothing about data it
// is given), so that the GC paces itself on it (see collect_between_requests). And
// caml_ba_alloc's own malloc would raise Out_of_memory, which no OCaml handler would
// catch here; this failure is a C++ one.
value off_heap_bytes(std::span<const std::uint8_t> bytes) {
  void* data = std::malloc(bytes.size());
  if (data == nullptr) throw std::bad_alloc();
  std::memcpy(data, bytes.data(), bytes.size());
  const value ba = caml_alloc_custom_mem(&caml_ba_ops, offsetof(caml_ba_array, dim) + sizeof(intnat), bytes.size());
  caml_ba_array* array = Caml_ba_array_val(ba);
  array->data = data;
  array->num_dims = 1;
  // CAML_BA_CHAR, the kind Bigarray.char makes: Erl.Binary.bigstring is a Bigarray of
  // char, and the kind is what marshalling and the runtime's compare and hash go by.
  array->flags = static_cast<intnat>(CAML_BA_CHAR) | static_cast<intnat>(CAML_BA_C_LAYOUT) |
                 static_cast<intnat>(CAML_BA_MANAGED);
  array->proxy = nullptr;
  array->dim[0] = static_cast<intnat>(bytes.size());
  return ba;
}

// A zarith integer (the result is unrooted: the caller pushes it at once). GMP's memory is
// C memory: nothing here is held across the one OCaml allocation.
value zarith_of(bool negative, std::span<const std::uint8_t> magnitude) {
  mpz_t m;
  mpz_init(m);
  mpz_import(m, magnitude.size(), -1, 1, 0, 0, magnitude.data());  // little-endian bytes
  if (negative) mpz_neg(m, m);
  value z = ml_z_from_mpz(m);
  mpz_clear(m);
  return z;
}

// The minor heap's fast path, as OCaml's own allocations take it (Alloc_small, which
// CAML_INTERNALS keeps from us): `words` (headers included) taken from young_ptr when they
// fit above young_limit, without a call. Null when they do not, and then nothing is taken:
// the caller allocates with caml_alloc_small, which runs what young_limit asks for (the
// minor collection, Memprof's sampling, a signal, another domain's interrupt). Blocks are
// carved out of the words with young_header, their fields stored before anything else
// allocates, as in any caml_alloc_small block; the youngest blocks need no write barrier.
// caml_alloc_small was a call per block, three per element of a list of floats.
//
// `domain` is the builder's domain_, read from Caml_state once per conversion: OCaml 5's
// Caml_state is a thread-local, which in this position-independent code is a call to
// __tls_get_addr at each use (three or four per block: 6% of an ocaml:call of 100 floats
// on a scheduler, in perf). The pointer does not change while a thread holds its domain,
// and a collection moves blocks, not the domain's state; young_ptr and young_limit are
// read through it afresh at every reservation.
[[gnu::always_inline]] inline value* reserve_young(caml_domain_state* domain, std::size_t words) noexcept {
#if OCAML_VERSION_MAJOR >= 5
  const uintnat limit = domain->young_limit.load(std::memory_order_relaxed);
#else
  const auto limit = reinterpret_cast<uintnat>(domain->young_limit);
#endif
  value* const young = domain->young_ptr;
  const auto ptr = reinterpret_cast<uintnat>(young);
  // young_limit may be above young_ptr (OCaml 5: UINTNAT_MAX, an interrupt).
  if (ptr < limit || (ptr - limit) / sizeof(value) < words) return nullptr;
  domain->young_ptr = young - words;
  return young - words;
}

// The block of `wosize` fields whose header is at `hp`, in words reserve_young gave.
[[gnu::always_inline]] inline value young_header(value* hp, mlsize_t wosize, tag_t tag) noexcept {
  Hd_hp(hp) = Make_header(wosize, tag, 0);  // colour 0 and no profinfo, as Alloc_small makes them
  return Val_hp(hp);
}

// caml_alloc_small, with the fast path inlined.
[[gnu::always_inline]] inline value young_block(caml_domain_state* domain, mlsize_t wosize, tag_t tag) {
  if (value* hp = reserve_young(domain, Whsize_wosize(wosize))) [[likely]]
    return young_header(hp, wosize, tag);
  return caml_alloc_small(wosize, tag);
}

// caml_alloc_string, filled: minor-heap strings through young_block (caml_alloc_string
// was a call per atom and small binary, reading Caml_state several times), major-heap ones
// as major_block says. The result is unrooted: the caller pushes it at once.
value ocaml_string(caml_domain_state* domain, const void* data, std::size_t size) {
  const mlsize_t wosize = (size + sizeof(value)) / sizeof(value);
  const bool young = wosize <= Max_young_wosize;
  const value s = young ? young_block(domain, wosize, String_tag) : major_block(wosize, String_tag);
  // The padding caml_alloc_string writes: the last byte of the block says how many bytes
  // of the last word are not the string's.
  Field(s, wosize - 1) = 0;
  const mlsize_t last = Bsize_wsize(wosize) - 1;
  Byte(s, last) = static_cast<char>(last - size);
  if (size != 0) std::memcpy(Bytes_val(s), data, size);
  // Strings hold no pointers, so the collection caml_alloc_shr may have asked for can run
  // now, with s rooted by caml_check_urgent_gc.
  return young ? s : caml_check_urgent_gc(s);
}

}  // namespace

struct OcamlBuilder::Frame {
  OpenKind kind;
  std::size_t base;      // first child in vals_ (funs: the Local record, children after it)
  std::size_t expected;  // children before the end (lists: elements, not counting the tail)
  std::size_t filled = 0;
  std::size_t merged_tails = 0;  // lists: tail lists folded into this one
};

OcamlBuilder::OcamlBuilder() : domain_(Caml_state) {
  vals_.reserve(256);
  frames_.reserve(32);
  BuilderRoots::link(this);
}

OcamlBuilder::~OcamlBuilder() { BuilderRoots::unlink(this); }

[[gnu::always_inline]] inline void OcamlBuilder::child_done() noexcept {
  if (!frames_.empty()) ++frames_.back().filled;
}

[[gnu::always_inline]] inline void OcamlBuilder::push_child(value v) {
  vals_.push_back(v);
  child_done();
}

// Replaces the top of vals_ by the one-field constructor `tag` around it.
[[gnu::always_inline]] inline void OcamlBuilder::wrap_top(tag_t tag) {
  const value b = young_block(domain_, 1, tag);
  Field(b, 0) = vals_.back();  // read after the allocation: it may have moved
  vals_.back() = b;
}

// A block of vals_[first, first + n), n > 0. The fields are read after the allocation.
value OcamlBuilder::block_of(std::size_t first, std::size_t n, tag_t tag) {
  if (n <= Max_young_wosize) {
    const value b = young_block(domain_, n, tag);
    for (std::size_t i = 0; i < n; ++i) Field(b, i) = vals_[first + i];
    return b;
  }
  // Too big for the minor heap: a major block, every field initialised before anything
  // else allocates; caml_initialize records the young fields in the remembered set. Then
  // the collection caml_alloc_shr may have asked for (caml_check_urgent_gc roots b).
  const value b = major_block(n, tag);
  for (std::size_t i = 0; i < n; ++i) caml_initialize(&Field(b, i), vals_[first + i]);
  return caml_check_urgent_gc(b);
}

void OcamlBuilder::integer(std::int64_t v) {
  if (v >= Min_long && v <= Max_long) [[likely]] {
    const value b = young_block(domain_, 1, term_tag::int_);
    Field(b, 0) = Val_long(v);
    push_child(b);
    return;
  }
  const bool negative = v < 0;
  std::uint64_t m = negative ? 0 - static_cast<std::uint64_t>(v) : static_cast<std::uint64_t>(v);
  std::uint8_t bytes[8];
  for (auto& b : bytes) {
    b = static_cast<std::uint8_t>(m & 0xFF);
    m >>= 8;
  }
  big_integer(negative, bytes);
}

void OcamlBuilder::big_integer(bool negative, std::span<const std::uint8_t> magnitude) {
  vals_.push_back(zarith_of(negative, magnitude));
  wrap_top(term_tag::bigint);
  child_done();
}

void OcamlBuilder::float64(double d) {
  static_assert(Double_wosize == 1);
  if (value* hp = reserve_young(domain_, 4)) [[likely]] {
    // The boxed double and the Float around it, under one limit check.
    const value boxed = young_header(hp + 2, Double_wosize, Double_tag);
    Store_double_val(boxed, d);
    const value f = young_header(hp, 1, term_tag::float_);
    Field(f, 0) = boxed;
    push_child(f);
    return;
  }
  vals_.push_back(caml_copy_double(d));
  wrap_top(term_tag::float_);
  child_done();
}

void OcamlBuilder::atom(std::string_view utf8) {
  vals_.push_back(ocaml_string(domain_, utf8.data(), utf8.size()));
  wrap_top(term_tag::atom);
  child_done();
}

void OcamlBuilder::binary(std::span<const std::uint8_t> bytes) {
  if (bytes.size() <= heap_binary_max) {
    vals_.push_back(ocaml_string(domain_, bytes.data(), bytes.size()));
    wrap_top(binary_tag::heap);
  } else {
    vals_.push_back(off_heap_bytes(bytes));
    wrap_top(binary_tag::off_heap);
  }
  wrap_top(term_tag::binary);
  child_done();
}

void OcamlBuilder::bitstring(std::span<const std::uint8_t> bytes, std::uint8_t bits) {
  vals_.push_back(ocaml_string(domain_, bytes.data(), bytes.size()));
  const value b = caml_alloc_small(2, term_tag::bitstring);
  Field(b, 0) = vals_.back();
  Field(b, 1) = Val_int(bits);
  vals_.back() = b;
  child_done();
}

void OcamlBuilder::nil() {
  const value b = young_block(domain_, 1, term_tag::list);
  Field(b, 0) = Val_emptylist;
  push_child(b);
}

bool OcamlBuilder::at_list_tail() const noexcept {
  return !frames_.empty() && frames_.back().kind == OpenKind::list &&
         frames_.back().filled == frames_.back().expected;
}

void OcamlBuilder::string(std::span<const std::uint8_t> bytes) {
  if (at_list_tail()) {
    // [X, Y | "ab"] is [X, Y, $a, $b]: continue the open list.
    frames_.back().expected += bytes.size();
    for (std::uint8_t b : bytes) integer(b);
    nil();
    return;
  }
  // Consed from the back: the accumulated list is the top of vals_, the element above it.
  vals_.push_back(Val_emptylist);
  for (std::size_t i = bytes.size(); i-- > 0;) {
    const value elem = young_block(domain_, 1, term_tag::int_);
    Field(elem, 0) = Val_int(bytes[i]);
    vals_.push_back(elem);
    const value cell = young_block(domain_, 2, 0);
    Field(cell, 0) = vals_[vals_.size() - 1];
    Field(cell, 1) = vals_[vals_.size() - 2];
    vals_.pop_back();
    vals_.back() = cell;
  }
  wrap_top(term_tag::list);
  child_done();
}

void OcamlBuilder::begin_list(std::uint32_t n) {
  if (at_list_tail()) {
    // [X | [Y, Z]] is [X, Y, Z]: fold the tail list into the open one.
    frames_.back().expected += n;
    ++frames_.back().merged_tails;
    return;
  }
  frames_.push_back(Frame{OpenKind::list, vals_.size(), n});
}

// Never at its tail before end_list: no tail list or string is folded into it, which only
// ETF's shapes need.
void OcamlBuilder::begin_list_of_unknown_length() {
  frames_.push_back(Frame{OpenKind::list, vals_.size(), SIZE_MAX});
}

// Conses vals_[base, base + n) onto the list vals_[acc], from the back: as many cells at a
// time as the minor heap has room for (a list's cells are then adjacent, the first one
// lowest, in the order a walk reads them), one at a time through caml_alloc_small when it
// has none, so that the collection runs and the next run of cells fits.
void OcamlBuilder::cons_onto(std::size_t acc, std::size_t base, std::size_t n) {
  constexpr std::size_t cell_words = 3;
  constexpr std::size_t most_at_once = 4096;
  std::size_t i = n;
  while (i > 0) {
    const std::size_t k = std::min(i, most_at_once);
    if (value* hp = reserve_young(domain_, k * cell_words)) [[likely]] {
      // Cells [i - k, i) at hp, the element at i - k first.
      value tail = vals_[acc];
      for (std::size_t j = k; j-- > 0;) {
        const value cell = young_header(hp + j * cell_words, 2, 0);
        Field(cell, 0) = vals_[base + i - k + j];
        Field(cell, 1) = tail;
        tail = cell;
      }
      vals_[acc] = tail;
      i -= k;
    } else {
      const value cell = caml_alloc_small(2, 0);
      --i;
      Field(cell, 0) = vals_[base + i];
      Field(cell, 1) = vals_[acc];
      vals_[acc] = cell;
    }
  }
}

void OcamlBuilder::end_list() {
  Frame& top = frames_.back();
  if (top.merged_tails > 0) {
    --top.merged_tails;
    return;
  }
  const std::size_t base = top.base;
  frames_.pop_back();
  // vals_[base, base + n): the elements; vals_[base + n]: the tail.
  const std::size_t n = vals_.size() - base - 1;
  const value tail = vals_.back();
  const bool proper = tag_of(tail) == term_tag::list && Field(tail, 0) == Val_emptylist;
  // The accumulated cells take the tail's slot when it is [] (not needed any more), or
  // the slot above it when the tail is kept for the Improper block.
  if (proper) vals_.back() = Val_emptylist;
  else vals_.push_back(Val_emptylist);
  const std::size_t acc = vals_.size() - 1;
  cons_onto(acc, base, n);
  value result;
  if (proper) {
    result = young_block(domain_, 1, term_tag::list);
    Field(result, 0) = vals_[acc];
  } else {
    result = young_block(domain_, 2, term_tag::improper);
    Field(result, 0) = vals_[acc];
    Field(result, 1) = vals_[acc - 1];
  }
  vals_.resize(base);
  push_child(result);
}

void OcamlBuilder::begin_tuple(std::uint32_t n) { frames_.push_back(Frame{OpenKind::tuple, vals_.size(), n}); }

void OcamlBuilder::end_tuple() {
  const std::size_t base = frames_.back().base;
  frames_.pop_back();
  const std::size_t n = vals_.size() - base;
  const value elements = n == 0 ? Atom(0) : block_of(base, n, 0);
  vals_.resize(base);
  vals_.push_back(elements);
  wrap_top(term_tag::tuple);
  child_done();
}

void OcamlBuilder::begin_map(std::uint32_t n) {
  frames_.push_back(Frame{OpenKind::map, vals_.size(), 2 * std::size_t{n}});
}

void OcamlBuilder::end_map() {
  const std::size_t base = frames_.back().base;
  frames_.pop_back();
  const std::size_t pairs = (vals_.size() - base) / 2;
  // vals_[base, base + 2 pairs): k0 v0 k1 v1 ... The (k, v) blocks go above them, then
  // move down over the keys and values, which they now hold.
  for (std::size_t i = 0; i < pairs; ++i) {
    const value p = young_block(domain_, 2, 0);
    Field(p, 0) = vals_[base + 2 * i];
    Field(p, 1) = vals_[base + 2 * i + 1];
    vals_.push_back(p);
  }
  for (std::size_t i = 0; i < pairs; ++i) vals_[base + i] = vals_[base + 2 * pairs + i];
  vals_.resize(base + pairs);
  const value bindings = pairs == 0 ? Atom(0) : block_of(base, pairs, 0);
  vals_.resize(base);
  vals_.push_back(bindings);
  if (pairs <= 1) {
    // Already sorted, and no key can repeat: no need for the OCaml side.
    wrap_top(term_tag::map);
    child_done();
    return;
  }
  // Erl.Term.map_of_array sorts the bindings; it keeps the last of equal keys, so a
  // shorter result means the wire repeated a key. The callback's argument and result are
  // the only raw values here. Its OCaml code can meet an exception that is no fault of the
  // input (a signal handler's, Out_of_memory, Stack_overflow): that one is passed on as
  // it is, for the caller to report as what it is.
  static const value* map_of_array = nullptr;
  if (map_of_array == nullptr) map_of_array = caml_named_value("camlbeam.map_of_array");
  if (map_of_array == nullptr)
    throw std::logic_error("camlbeam.map_of_array is not registered: the Erl library is not linked");
  const value map = caml_callback_exn(*map_of_array, vals_.back());
  if (Is_exception_result(map)) throw CallbackRaised{Extract_exception(map)};
  if (Wosize_val(Field(map, 0)) != pairs) throw etf::Reject{etf::Errc::duplicate_map_key};
  vals_.back() = map;
  child_done();
}

namespace {

// Pid record {node; id; serial; creation}, from the node string on top of `vals`; the
// record replaces it.
void pid_record_over_node(std::vector<value>& vals, const etf::PidView& pid) {
  const value record = caml_alloc_small(4, 0);
  Field(record, 0) = vals.back();
  Field(record, 1) = Val_long(pid.id);
  Field(record, 2) = Val_long(pid.serial);
  Field(record, 3) = Val_long(pid.creation);
  vals.back() = record;
}

}  // namespace

void OcamlBuilder::pid(const etf::PidView& pid) {
  vals_.push_back(ocaml_string(domain_, pid.node.data(), pid.node.size()));
  pid_record_over_node(vals_, pid);
  wrap_top(term_tag::pid);
  child_done();
}

void OcamlBuilder::port(const etf::PortView& port) {
  vals_.push_back(ocaml_string(domain_, port.node.data(), port.node.size()));
  vals_.push_back(caml_copy_int64(static_cast<std::int64_t>(port.id)));
  const value record = caml_alloc_small(3, 0);
  Field(record, 0) = vals_[vals_.size() - 2];
  Field(record, 1) = vals_[vals_.size() - 1];
  Field(record, 2) = Val_long(port.creation);
  vals_.pop_back();
  vals_.back() = record;
  wrap_top(term_tag::port);
  child_done();
}

void OcamlBuilder::reference(const etf::ReferenceView& ref) {
  vals_.push_back(ocaml_string(domain_, ref.node.data(), ref.node.size()));
  const std::size_t count = ref.ids.size();
  value ids = Atom(0);
  if (count != 0) {
    ids = caml_alloc_small(static_cast<mlsize_t>(count), 0);  // ETF carries at most 5 ids
    for (std::size_t i = 0; i < count; ++i) Field(ids, i) = Val_long(ref.ids[i]);
  }
  vals_.push_back(ids);
  const value record = caml_alloc_small(3, 0);
  Field(record, 0) = vals_[vals_.size() - 2];
  Field(record, 1) = Val_long(ref.creation);
  Field(record, 2) = vals_[vals_.size() - 1];
  vals_.pop_back();
  vals_.back() = record;
  wrap_top(term_tag::ref);
  child_done();
}

void OcamlBuilder::begin_fun(const etf::FunView& fun) {
  // The Local record without its free variables sits at the frame's base; they follow it,
  // and end_fun builds the final record around their list.
  vals_.push_back(ocaml_string(domain_, fun.uniq.data(), fun.uniq.size()));
  vals_.push_back(ocaml_string(domain_, fun.module.data(), fun.module.size()));
  vals_.push_back(ocaml_string(domain_, fun.pid.node.data(), fun.pid.node.size()));
  pid_record_over_node(vals_, fun.pid);
  const value local = caml_alloc_small(local_field::count, fun_tag::local);
  const std::size_t top = vals_.size();
  Field(local, local_field::arity) = Val_int(fun.arity);
  Field(local, local_field::uniq) = vals_[top - 3];
  Field(local, local_field::index) = Val_long(fun.index);
  Field(local, local_field::module_) = vals_[top - 2];
  Field(local, local_field::old_index) = Val_long(fun.old_index);
  Field(local, local_field::old_uniq) = Val_long(fun.old_uniq);
  Field(local, local_field::pid) = vals_[top - 1];
  Field(local, local_field::free_vars) = Val_emptylist;
  vals_.resize(top - 3);
  vals_.push_back(local);
  frames_.push_back(Frame{OpenKind::fun, vals_.size() - 1, fun.free_count});
}

void OcamlBuilder::end_fun() {
  const std::size_t base = frames_.back().base;
  frames_.pop_back();
  const std::size_t n = vals_.size() - base - 1;
  vals_.push_back(Val_emptylist);
  const std::size_t acc = vals_.size() - 1;
  cons_onto(acc, base + 1, n);
  // A fresh record rather than a store into the old one, which may be in the major heap
  // by now (that store would need caml_modify).
  const value local = caml_alloc_small(local_field::count, fun_tag::local);
  for (mlsize_t i = 0; i < local_field::count; ++i) Field(local, i) = Field(vals_[base], i);
  Field(local, local_field::free_vars) = vals_[acc];
  vals_.resize(base);
  vals_.push_back(local);
  wrap_top(term_tag::fun);
  child_done();
}

void OcamlBuilder::export_fun(std::string_view module, std::string_view function, std::uint8_t arity) {
  vals_.push_back(ocaml_string(domain_, module.data(), module.size()));
  vals_.push_back(ocaml_string(domain_, function.data(), function.size()));
  const value exp = caml_alloc_small(3, fun_tag::export_);
  Field(exp, 0) = vals_[vals_.size() - 2];
  Field(exp, 1) = vals_[vals_.size() - 1];
  Field(exp, 2) = Val_int(arity);
  vals_.pop_back();
  vals_.back() = exp;
  wrap_top(term_tag::fun);
  child_done();
}

void OcamlBuilder::handle(value handle) {
  vals_.push_back(handle);
  wrap_top(term_tag::handle);
  child_done();
}

value OcamlBuilder::take() {
  const value result = vals_.back();
  reset();  // nothing built stays reachable from the builder
  return result;
}

void OcamlBuilder::reset() noexcept {
  vals_.clear();  // keeps the capacity for the next build
  frames_.clear();
}

// ---------------------------------------------------------------------------------------

// The builders of etf_to_ocaml, reused so that a call allocates no builder and registers
// nothing with the GC. Normally one; another is made only when a decode starts while one is
// in progress (another thread's, suspended in the map_of_array callback, or a finaliser's
// decode running inside it). Never freed: a builder's destructor must run on the runtime
// thread, which a static destructor at exit does not promise.
struct detail::BuilderPool {
  std::deque<OcamlBuilder> all;      // never moves a builder: each stays linked where it is
  std::vector<OcamlBuilder*> idle;   // with room for all of them: a return never allocates
};

namespace {

using detail::BuilderPool;

#if OCAML_VERSION_MAJOR >= 5
// One pool per domain, as the builders' lists are (BuilderRoots): a builder stays in the
// list of the domain that made it, and only threads holding that domain's lock lease it. A
// domain that ends leaves its idle builders to the next domain given its slot.
BuilderPool& builder_pool(caml_domain_state* domain) {
  static NoDestructor<std::array<std::unique_ptr<BuilderPool>, BuilderRoots::max_domains>> pools;
  std::unique_ptr<BuilderPool>& pool = (*pools)[static_cast<std::size_t>(domain->id)];
  if (!pool) pool = std::make_unique<BuilderPool>();
  return *pool;
}
#else
BuilderPool& builder_pool(caml_domain_state*) {
  static NoDestructor<BuilderPool> pool;
  return *pool;
}
#endif

}  // namespace

// The domain's state is read here, once per conversion, for the builder's minor-heap fast
// path (reserve_young): a builder left idle by a domain that ended serves the next one
// given its slot.
BuilderLease::BuilderLease() : BuilderLease(Caml_state) {}

BuilderLease::BuilderLease(caml_domain_state* domain) : pool_(builder_pool(domain)) {
  if (pool_.idle.empty()) {
    pool_.idle.reserve(pool_.all.size() + 1);
    builder_ = &pool_.all.emplace_back();
  } else {
    builder_ = pool_.idle.back();
    pool_.idle.pop_back();
  }
  builder_->domain_ = domain;
}

BuilderLease::~BuilderLease() {
  builder_->reset();
  pool_.idle.push_back(builder_);
}

UnrootedDecode etf_to_ocaml_unrooted(std::span<const std::uint8_t> bytes, const etf::DecodeOptions& options) {
  UnrootedDecode out;
  try {
    const BuilderLease builder;
    const etf::DecodeResult result = etf::decode(bytes, *builder, options);
    if (!result) out.error = result.error;
    else out.term = (*builder).take();
  } catch (const CallbackRaised& raised) {
    // The exception value stays valid: the unwinding allocated nothing on the OCaml heap.
    out.raised = raised.exception;
  }
  return out;
}

DecodeToOcaml etf_to_ocaml(std::span<const std::uint8_t> bytes, const etf::DecodeOptions& options) {
  UnrootedDecode decoded = etf_to_ocaml_unrooted(bytes, options);
  DecodeToOcaml out;
  // Nothing has allocated on the OCaml heap since the decode.
  if (decoded.raised) out.raised.emplace(*decoded.raised);
  else if (decoded.error) out.error = decoded.error;
  else out.value.set(decoded.term);
  return out;
}

}  // namespace camlbeam::conv
