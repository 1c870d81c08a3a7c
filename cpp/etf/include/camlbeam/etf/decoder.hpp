// The bounded, iterative ETF decoder. It feeds a Visitor (visitor.hpp) and never recurses
// on the input's depth; every declared count and length is checked against the bytes left
// before anything is allocated or read.
//
//   etf::TermBuilder builder;
//   if (auto r = etf::decode(bytes, builder); !r) report(r.error->message());
//   etf::Term t = builder.take();
//
// or simply etf::decode_term(bytes), which throws DecodeException.
#pragma once

#include <camlbeam/etf/atom_cache.hpp>
#include <camlbeam/etf/error.hpp>
#include <camlbeam/etf/limits.hpp>
#include <camlbeam/etf/tags.hpp>
#include <camlbeam/etf/visitor.hpp>

#include <bit>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <algorithm>
#include <array>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace camlbeam::etf {

struct DecodeResult {
  std::size_t end = 0;  // offset just past the term
  std::optional<DecodeError> error;
  explicit operator bool() const noexcept { return !error.has_value(); }
};

namespace detail {

// zlib inflate of exactly `size` bytes; false when the stream is corrupt, shorter or longer.
// `consumed` is set to the compressed bytes the stream took.
bool inflate_exact(std::span<const std::uint8_t> compressed, std::uint8_t* out, std::size_t size,
                   std::size_t& consumed);

// Deflate expands at most about 1032:1; a declared size beyond that for the compressed
// bytes given cannot be honest, and is refused before anything is allocated.
inline constexpr std::size_t max_deflate_ratio = 1032;

// Appends the UTF-8 form of Latin-1 bytes.
void latin1_to_utf8(std::span<const std::uint8_t> latin1, std::string& out);

// The UTF-8 form of an atom's Latin-1 bytes (at most 255 of them), written into a buffer
// that lives in the decoder: no allocation, and nothing to construct per decode.
struct AtomText {
  char bytes[2 * 255];
  std::string_view from_latin1(std::span<const std::uint8_t> latin1) noexcept {
    std::size_t n = 0;
    for (std::uint8_t c : latin1) {
      if (c < 0x80) {
        bytes[n++] = static_cast<char>(c);
      } else {
        bytes[n++] = static_cast<char>(0xC0 | (c >> 6));
        bytes[n++] = static_cast<char>(0x80 | (c & 0x3F));
      }
    }
    return {bytes, n};
  }
};

// Number of code points in valid UTF-8, or -1 when the bytes are not valid UTF-8
// (overlong forms, surrogates and values past U+10FFFF are invalid).
long utf8_length(std::span<const std::uint8_t> bytes) noexcept;

inline std::uint16_t load_u16(const std::uint8_t* p) noexcept {
  return static_cast<std::uint16_t>((p[0] << 8) | p[1]);
}
inline std::uint32_t load_u32(const std::uint8_t* p) noexcept {
  std::uint32_t v;
  std::memcpy(&v, p, 4);
  if constexpr (std::endian::native == std::endian::little) v = __builtin_bswap32(v);
  return v;
}
inline std::uint64_t load_u64(const std::uint8_t* p) noexcept {
  std::uint64_t v;
  std::memcpy(&v, p, 8);
  if constexpr (std::endian::native == std::endian::little) v = __builtin_bswap64(v);
  return v;
}

enum class FrameKind : std::uint8_t { tuple, list, map, fun };

struct Frame {
  std::uint64_t remaining;  // children not yet started, once another frame opened above
  FrameKind kind;
};

// Room for the stack of open containers. The first frames live inside the decoder: most
// terms never touch the heap for it, and deep ones grow it by doubling. Heap storage
// outlives the decoder in a spare kept per thread, so that decoding deep terms one after
// another does not allocate and copy the stack each time, into memory the cache has not
// seen (a 10,000-deep term decodes 7% faster). The frames in use are counted by the
// decoder's loop (OpenFrames), in registers.
class FrameStorage {
 public:
  FrameStorage() noexcept { data_ = inline_.data(); }  // (frames are written before read)
  FrameStorage(const FrameStorage&) = delete;
  FrameStorage& operator=(const FrameStorage&) = delete;
  ~FrameStorage() {
    if (heap_ != nullptr) keep_spare(std::move(heap_), capacity_);
  }

  Frame* data() noexcept { return data_; }
  std::size_t capacity() const noexcept { return capacity_; }

  // At least twice the room, keeping the first `used` frames.
  [[gnu::noinline]] void grow(std::size_t used) {
    std::unique_ptr<Frame[]> bigger;
    std::size_t bigger_capacity = capacity_ * 2;
    if (Spare& kept = spare(); kept.capacity >= bigger_capacity) {
      bigger = std::move(kept.frames);
      bigger_capacity = std::exchange(kept.capacity, 0);
    } else {
      bigger = std::make_unique_for_overwrite<Frame[]>(bigger_capacity);
    }
    std::copy(data_, data_ + used, bigger.get());
    if (heap_ != nullptr) keep_spare(std::move(heap_), capacity_);
    heap_ = std::move(bigger);
    data_ = heap_.get();
    capacity_ = bigger_capacity;
  }

 private:
  static constexpr std::size_t inline_frames = 32;
  // The largest spare kept: 256 KB. A deeper stack (up to Limits::max_depth) is freed.
  static constexpr std::size_t max_spare_frames = std::size_t{1} << 14;

  struct Spare {
    std::unique_ptr<Frame[]> frames;
    std::size_t capacity = 0;
  };
  static Spare& spare() noexcept {
    thread_local Spare kept;
    return kept;
  }
  static void keep_spare(std::unique_ptr<Frame[]> frames, std::size_t capacity) noexcept {
    Spare& kept = spare();
    if (capacity <= max_spare_frames && capacity > kept.capacity) {
      kept.frames = std::move(frames);
      kept.capacity = capacity;
    }
  }

  std::array<Frame, inline_frames> inline_;
  std::unique_ptr<Frame[]> heap_;
  Frame* data_ = nullptr;
  std::size_t capacity_ = inline_frames;
};

// The decoder loop's view of its open containers, a local it keeps in registers.
struct OpenFrames {
  Frame* frames;
  std::size_t depth = 0;
  std::size_t capacity;

  bool empty() const noexcept { return depth == 0; }
  Frame& top() noexcept { return frames[depth - 1]; }
  void push(FrameStorage& storage, const Frame& frame) {
    if (depth == capacity) [[unlikely]] {
      storage.grow(depth);
      frames = storage.data();
      capacity = storage.capacity();
    }
    frames[depth++] = frame;
  }
};

struct Failure {
  DecodeError error;
};

// Throws Failure{error}. Out of line and cold, so that a check costs its compare and branch
// and the throwing code stays out of the decoding loops.
[[noreturn, gnu::cold, gnu::noinline]] void raise(const DecodeError& error);

// What a tag byte starts. Each kind has one reader; which tag is which kind is written once,
// in dispatch_tag() below, and every path of the decoder (a lone scalar, the loop, the
// members out of line) dispatches through it. The order of the kinds is what the
// predicates after it test.
enum class TagKind : std::uint8_t {
  // Scalars the decoder's loop reads inline, on its register copy of the Reader.
  small_integer,
  integer,
  small_big,
  large_big,
  new_float,
  atom,  // ATOM_EXT, SMALL_ATOM_EXT and their UTF-8 forms
  binary,
  nil,
  string,
  // A scalar too, but long and rare: read out of line, so the loop's copy never escapes.
  old_float,
  // Containers: the loop reads their headers inline and walks their children.
  list,
  tuple,  // SMALL_TUPLE_EXT, LARGE_TUPLE_EXT
  map,
  // Read out of line by the Decoder's members: they need its scratch buffers or options.
  // (ATOM_CACHE_REF read inline made the loop 7% slower on a deep term.)
  atom_cache_ref,
  bit_binary,
  pid,        // NEW_PID_EXT, PID_EXT
  port,       // V4_PORT_EXT, NEW_PORT_EXT, PORT_EXT
  reference,  // NEWER_REFERENCE_EXT, NEW_REFERENCE_EXT, REFERENCE_EXT
  new_fun,
  export_fun,
  refused,  // defined by OTP, not accepted in a term: LOCAL_EXT, the removed FUN_EXT
  unknown,
};

// Holds no other term and needs nothing but a Reader: what decode() reads without a Decoder.
constexpr bool is_scalar(TagKind kind) noexcept { return kind <= TagKind::old_float; }
// Read inline by the Decoder's loop.
constexpr bool read_in_loop(TagKind kind) noexcept {
  return kind <= TagKind::string || (kind >= TagKind::list && kind <= TagKind::map);
}

// The one map from tag bytes to kinds: calls `read.template operator()<Kind>(t)` and returns
// what it returns. Each caller passes a generic lambda that reads the kinds it handles; one
// switch on the tag byte, so each path costs one indirect jump per term.
template <class Read>
[[gnu::always_inline]] constexpr inline decltype(auto) dispatch_tag(std::uint8_t t, Read&& read) {
  switch (t) {
    case tag::small_integer: return read.template operator()<TagKind::small_integer>(t);
    case tag::integer: return read.template operator()<TagKind::integer>(t);
    case tag::small_big: return read.template operator()<TagKind::small_big>(t);
    case tag::large_big: return read.template operator()<TagKind::large_big>(t);
    case tag::new_float: return read.template operator()<TagKind::new_float>(t);
    case tag::atom_latin1:
    case tag::small_atom_latin1:
    case tag::atom_utf8:
    case tag::small_atom_utf8: return read.template operator()<TagKind::atom>(t);
    case tag::binary: return read.template operator()<TagKind::binary>(t);
    case tag::nil: return read.template operator()<TagKind::nil>(t);
    case tag::string: return read.template operator()<TagKind::string>(t);
    case tag::old_float: return read.template operator()<TagKind::old_float>(t);
    case tag::list: return read.template operator()<TagKind::list>(t);
    case tag::small_tuple:
    case tag::large_tuple: return read.template operator()<TagKind::tuple>(t);
    case tag::map: return read.template operator()<TagKind::map>(t);
    case tag::bit_binary: return read.template operator()<TagKind::bit_binary>(t);
    case tag::new_pid:
    case tag::old_pid: return read.template operator()<TagKind::pid>(t);
    case tag::v4_port:
    case tag::new_port:
    case tag::old_port: return read.template operator()<TagKind::port>(t);
    case tag::newer_reference:
    case tag::new_reference:
    case tag::old_reference: return read.template operator()<TagKind::reference>(t);
    case tag::new_fun: return read.template operator()<TagKind::new_fun>(t);
    case tag::export_fun: return read.template operator()<TagKind::export_fun>(t);
    case tag::atom_cache_ref: return read.template operator()<TagKind::atom_cache_ref>(t);
    case tag::local:
    case tag::old_fun: return read.template operator()<TagKind::refused>(t);
    default: return read.template operator()<TagKind::unknown>(t);
  }
}

constexpr TagKind kind_of(std::uint8_t t) noexcept {
  return dispatch_tag(t, []<TagKind Kind>(std::uint8_t) { return Kind; });
}

// The reading half of the decoder: a position in the input, the checked primitives that
// read from it, and the terms that hold no other terms (scalars). It has no stack and no
// buffers, so it costs nothing to construct: decode() uses it alone for a lone scalar (a
// third of a small term's time went into building the full Decoder), and Decoder extends
// it, so both read scalars through this one implementation.
//
// It is a small value on purpose: Decoder's loop reads through a local copy, which the
// compiler keeps in registers as long as its address never escapes. Hence the primitives
// are always inlined and failing passes values, never `this`, to an out-of-line raise().
class Reader {
 public:
  Reader(const std::uint8_t* begin, const std::uint8_t* end, std::size_t base_offset) noexcept
      : begin_(begin), p_(begin), end_(end), base_(base_offset) {}

  [[gnu::always_inline]] inline std::size_t offset() const noexcept {
    return base_ + static_cast<std::size_t>(p_ - begin_);
  }

  // Runs `body`, turning a failure it throws (or a visitor's Reject) into result.error, and
  // records where it stopped. (The error is written in place: returning an optional by
  // value cost the small terms a third of their time in store-forwarding stalls.)
  template <class Body>
  [[gnu::always_inline]] inline void guarded(DecodeResult& result, Body&& body) {
    try {
      body();
    } catch (const Failure& f) {
      result.error = f.error;
    } catch (const Reject& r) {
      result.error = DecodeError{r.code, offset(), r.detail, current_tag_};
    }
    result.end = offset();
  }

  // Reads the first tag, which the caller has checked is there.
  [[gnu::always_inline]] inline std::uint8_t tag_at_start() noexcept {
    current_tag_ = *p_++;
    return current_tag_;
  }

  // The reader of every scalar kind (see TagKind), `t` being the tag just read. The
  // Decoder's loop calls it on its register copy; decode() calls it on a lone Reader.
  template <TagKind Kind, Visitor V>
  [[gnu::always_inline]] inline void read_scalar(std::uint8_t t, V& visitor, AtomText& atom_scratch) {
    static_assert(is_scalar(Kind));
    if constexpr (Kind == TagKind::small_integer) decode_small_integer(visitor);
    else if constexpr (Kind == TagKind::integer) decode_integer(visitor);
    else if constexpr (Kind == TagKind::small_big) decode_small_big(visitor);
    else if constexpr (Kind == TagKind::large_big) decode_large_big(visitor);
    else if constexpr (Kind == TagKind::new_float) decode_new_float(visitor);
    else if constexpr (Kind == TagKind::atom) visitor.atom(read_atom(t, atom_scratch));
    else if constexpr (Kind == TagKind::binary) decode_binary(visitor);
    else if constexpr (Kind == TagKind::nil) visitor.nil();
    else if constexpr (Kind == TagKind::string) decode_string(visitor);
    else if constexpr (Kind == TagKind::old_float) decode_float_old(visitor);
  }

  // The primitives below are public for Decoder's local copy (protected access would not
  // reach it); nothing outside this header uses them.
  [[noreturn, gnu::always_inline]] inline void fail(Errc code, std::uint64_t detail = 0) const {
    raise(DecodeError{code, offset(), detail, current_tag_});
  }
  [[noreturn, gnu::always_inline]] inline void fail_at(const std::uint8_t* where, Errc code,
                                                       std::uint64_t detail = 0) const {
    raise(DecodeError{code, base_ + static_cast<std::size_t>(where - begin_), detail, current_tag_});
  }

  [[gnu::always_inline]] inline std::size_t left() const noexcept {
    return static_cast<std::size_t>(end_ - p_);
  }

  [[gnu::always_inline]] inline void need(std::size_t n) const {
    if (left() < n) [[unlikely]] fail(Errc::truncated, n);
  }
  // A declared count of sub-terms (each at least one byte) or bytes, checked against what
  // is left after the siblings still owed by the open containers.
  // Reported at the count field itself (the last one read).
  // The headers of the term being read can eat into what siblings are owed, so owed_ may
  // already exceed what is left: compare without unsigned wrap-around.
  [[gnu::always_inline]] inline void need_declared(std::uint64_t n) const {
    const std::uint64_t owed = owed_ + top_left_;
    if (owed > left() || n > left() - owed) [[unlikely]]
      fail_at(count_at_, Errc::length_exceeds_input, n);
  }

  [[gnu::always_inline]] inline std::uint8_t u8() {
    need(1);
    return *p_++;
  }
  [[gnu::always_inline]] inline std::uint16_t u16() {
    need(2);
    auto v = load_u16(p_);
    p_ += 2;
    return v;
  }
  [[gnu::always_inline]] inline std::uint32_t u32() {
    need(4);
    auto v = load_u32(p_);
    p_ += 4;
    return v;
  }
  // Fields that declare a length or count: their position is remembered, so that a count
  // the input cannot hold is reported where it was declared.
  [[gnu::always_inline]] inline std::uint8_t count8() {
    count_at_ = p_;
    return u8();
  }
  [[gnu::always_inline]] inline std::uint16_t count16() {
    count_at_ = p_;
    return u16();
  }
  [[gnu::always_inline]] inline std::uint32_t count32() {
    count_at_ = p_;
    return u32();
  }
  [[gnu::always_inline]] inline std::uint64_t u64() {
    need(8);
    auto v = load_u64(p_);
    p_ += 8;
    return v;
  }
  [[gnu::always_inline]] inline std::span<const std::uint8_t> bytes(std::uint64_t n) {
    need_declared(n);
    std::span<const std::uint8_t> s(p_, static_cast<std::size_t>(n));
    p_ += n;
    return s;
  }
  // Reads an atom (any of the four atom tags) as UTF-8 into a view; Latin-1 atoms with
  // bytes above 127 are converted into `scratch`.
  [[gnu::always_inline]] inline std::string_view read_atom(std::uint8_t t, AtomText& scratch) {
    std::size_t len;
    bool latin1;
    switch (t) {
      case tag::atom_latin1: len = count16(); latin1 = true; break;
      case tag::small_atom_latin1: len = count8(); latin1 = true; break;
      case tag::atom_utf8: len = count16(); latin1 = false; break;
      case tag::small_atom_utf8: len = count8(); latin1 = false; break;
      default: fail(Errc::bad_node, t);
    }
    const std::uint8_t* start = p_;
    auto raw = bytes(len);
    if (latin1) {
      if (len > 255) fail_at(start, Errc::atom_too_long, len);
      bool ascii = true;
      for (auto c : raw) ascii &= c < 0x80;
      if (ascii) return {reinterpret_cast<const char*>(raw.data()), raw.size()};
      return scratch.from_latin1(raw);
    }
    long chars = utf8_length(raw);
    if (chars < 0) fail_at(start, Errc::invalid_utf8_atom);
    if (chars > 255) fail_at(start, Errc::atom_too_long, static_cast<std::uint64_t>(chars));
    return {reinterpret_cast<const char*>(raw.data()), raw.size()};
  }

  template <Visitor V>
  [[gnu::always_inline]] inline void decode_small_integer(V& visitor) { visitor.integer(u8()); }
  template <Visitor V>
  [[gnu::always_inline]] inline void decode_integer(V& visitor) {
    visitor.integer(static_cast<std::int32_t>(u32()));
  }
  template <Visitor V>
  [[gnu::always_inline]] inline void decode_large_big(V& visitor) { decode_big(count32(), visitor); }
  template <Visitor V>
  [[gnu::always_inline]] inline void decode_new_float(V& visitor) {
    const std::uint8_t* start = p_;
    double d = std::bit_cast<double>(u64());
    if (!std::isfinite(d)) [[unlikely]] fail_at(start, Errc::bad_float);
    visitor.float64(d);
  }
  template <Visitor V>
  [[gnu::always_inline]] inline void decode_binary(V& visitor) { visitor.binary(bytes(count32())); }
  template <Visitor V>
  [[gnu::always_inline]] inline void decode_string(V& visitor) {
    auto s = bytes(count16());
    if (s.empty()) visitor.nil();
    else visitor.string(s);
  }

  // SMALL_BIG's count and sign byte under one bounds check when both are there, as they
  // are but for truncated input, which the byte-at-a-time reads below report exactly.
  template <Visitor V>
  [[gnu::always_inline]] inline void decode_small_big(V& visitor) {
    if (left() >= 2) [[likely]] {
      count_at_ = p_;
      const std::size_t n = p_[0];
      ++p_;
      decode_big(n, visitor);
    } else {
      decode_big(count8(), visitor);
    }
  }

  // The sign byte (not yet read) and the magnitude of n bytes.
  template <Visitor V>
  [[gnu::always_inline]] inline void decode_big(std::size_t n, V& visitor) {
    const bool negative = u8() != 0;  // Erlang reads any non-zero sign byte as negative
    auto magnitude = bytes(n);
    // High zero bytes (legal, if not canonical) do not change the value; only a magnitude
    // too long for 64 bits needs them dropped before it can be read as one.
    if (magnitude.size() > 8) [[unlikely]] magnitude = without_high_zeros(magnitude);
    if (magnitude.size() <= 8) {
      const std::uint64_t m = little_endian_value(magnitude);
      if (!negative && m <= static_cast<std::uint64_t>(INT64_MAX)) {
        visitor.integer(static_cast<std::int64_t>(m));
        return;
      }
      if (negative && m <= static_cast<std::uint64_t>(INT64_MAX) + 1) {
        visitor.integer(static_cast<std::int64_t>(0 - m));
        return;
      }
    }
    // No high zero bytes are left: a longer magnitude lost them above, and one of at most
    // 8 bytes that does not fit in 64 bits has its top bit set.
    visitor.big_integer(negative, magnitude);
  }

  static std::span<const std::uint8_t> without_high_zeros(std::span<const std::uint8_t> magnitude) noexcept {
    while (!magnitude.empty() && magnitude.back() == 0) magnitude = magnitude.first(magnitude.size() - 1);
    return magnitude;
  }

  // The value of at most 8 little-endian bytes. One 8-byte load and a mask when the input
  // has 8 bytes from there: a memcpy of a variable length compiled to `rep movsq`, whose
  // start-up cost was most of the time of a list of integers a quarter of which are
  // SMALL_BIG.
  [[gnu::always_inline]] inline std::uint64_t little_endian_value(std::span<const std::uint8_t> bytes) const noexcept {
    const std::size_t n = bytes.size();
    if (n == 0) return 0;
    if (end_ - bytes.data() >= 8) [[likely]] {
      std::uint64_t raw;
      std::memcpy(&raw, bytes.data(), 8);
      if constexpr (std::endian::native == std::endian::big) raw = __builtin_bswap64(raw);
      return raw & (~std::uint64_t{0} >> (64 - 8 * n));
    }
    std::uint64_t m = 0;
    for (std::size_t i = n; i-- > 0;) m = (m << 8) | bytes[i];
    return m;
  }

  template <Visitor V>
  void decode_float_old(V& visitor) {
    count_at_ = p_;  // a fixed 31-byte field: reported like a declared length
    auto raw = bytes(31);
    std::size_t len = 0;
    while (len < raw.size() && raw[len] != 0) ++len;
    const char* first = reinterpret_cast<const char*>(raw.data());  // no blanks: Erlang refuses them
    double value = 0;
    auto [ptr, ec] = std::from_chars(first, first + len, value);
    if (ec != std::errc() || ptr != first + len || !std::isfinite(value))
      fail_at(raw.data(), Errc::bad_float);
    visitor.float64(value);
  }

  const std::uint8_t* begin_;
  const std::uint8_t* p_;
  const std::uint8_t* end_;
  const std::uint8_t* count_at_ = begin_;  // set by every count field before it is checked
  std::size_t base_;
  // Children the open containers (a Decoder's) still expect: top_left_ for the innermost,
  // owed_ for all the others. Kept apart so that a step within a container changes one
  // count, not two.
  std::uint64_t owed_ = 0;
  std::uint64_t top_left_ = 0;
  std::uint8_t current_tag_ = 0;
};

template <Visitor V>
class Decoder : public Reader {
 public:
  Decoder(const std::uint8_t* begin, const std::uint8_t* end, std::size_t base_offset,
          V& visitor, const DecodeOptions& options)
      : Reader(begin, end, base_offset),
        visitor_(visitor),
        limits_(options.limits),
        atom_cache_refs_(options.atom_cache_refs) {}

  // Decodes one term starting at the current position; on failure sets result.error.
  void run(DecodeResult& result) {
    // The loop reads through a local copy of the Reader, which lives in registers: reading
    // through the members made every step a store and a reload of the position, of the
    // open container's count and of the bytes owed, chains that held a list of integers at
    // 10 cycles an element. The other kinds read through the members (read_out_of_line).
    Reader r = *this;
    OpenFrames open{frames_.data(), 0, frames_.capacity()};
    try {
      loop(r, open);
    } catch (const Failure& f) {
      result.error = f.error;
    } catch (const Reject& reject) {
      result.error = DecodeError{reject.code, r.offset(), reject.detail, r.current_tag_};
    }
    result.end = r.offset();
  }

 private:
  // The innermost open container's count lives in r.top_left_ while it is on top;
  // open.top().remaining is then stale, and is written only when another opens above it.
  // With no container open, r.top_left_ is 0: a step within a container tests one count.
  [[gnu::always_inline]] inline void loop(Reader& r, OpenFrames& open) {
    for (;;) {
      decode_one(r, open);
      for (;;) {
        if (r.top_left_ != 0) {
          --r.top_left_;
          break;
        }
        if (open.empty()) return;
        close(r, open.top().kind);
        --open.depth;
        if (!open.empty()) {
          r.top_left_ = open.top().remaining;
          r.owed_ -= r.top_left_;
        }
      }
    }
  }

  [[gnu::always_inline]] inline void open_frame(Reader& r, OpenFrames& open, FrameKind kind,
                                                std::uint64_t children) {
    if (open.depth >= limits_.max_depth) r.fail(Errc::depth_limit, limits_.max_depth);
    if (!open.empty()) {
      open.top().remaining = r.top_left_;
      r.owed_ += r.top_left_;
    }
    open.push(frames_, Frame{0, kind});
    r.top_left_ = children;
  }

  [[gnu::always_inline]] inline void close(Reader& r, FrameKind kind) {
    switch (kind) {
      case FrameKind::tuple: visitor_.end_tuple(); break;
      case FrameKind::list: visitor_.end_list(); break;
      case FrameKind::map: visitor_.end_map(); break;
      case FrameKind::fun: {
        const std::size_t fun_end = fun_ends_.back();
        fun_ends_.pop_back();
        if (r.offset() != fun_end) {
          r.current_tag_ = tag::new_fun;
          r.fail(Errc::bad_fun, fun_end);
        }
        visitor_.end_fun();
        break;
      }
    }
  }

  // One term, or the header of a container (whose children follow). Scalars and the
  // containers every payload has are read here, on `r`; the other kinds go out of line.
  // (Returning what to do and calling the members from one place after the switch, so that
  // the loop holds one call site instead of one per kind, made it slower: 7% on a deep
  // term, 4% on a list of integers.)
  [[gnu::always_inline]] inline void decode_one(Reader& r, OpenFrames& open) {
    bool read_a_term;
    do {
      const std::uint8_t t = r.u8();
      r.current_tag_ = t;
      read_a_term = dispatch_tag(t, [&]<TagKind Kind>(std::uint8_t tag_byte) __attribute__((always_inline)) {
        if constexpr (is_scalar(Kind) && read_in_loop(Kind)) {
          r.read_scalar<Kind>(tag_byte, visitor_, atom_scratch_);
          return true;
        } else if constexpr (read_in_loop(Kind)) {
          return read_container_header<Kind>(r, open, tag_byte);
        } else {
          read_through_members<Kind>(r, open, tag_byte);
          return true;
        }
      });
    } while (!read_a_term);
  }

  // The header of a tuple, list or map; false for a LIST_EXT of no elements, which Erlang
  // reads as its tail alone: the caller reads the next term in its place.
  template <TagKind Kind>
  [[gnu::always_inline]] inline bool read_container_header(Reader& r, OpenFrames& open, std::uint8_t t) {
    if constexpr (Kind == TagKind::list) {
      const std::uint32_t n = r.count32();
      if (n == 0) return false;
      r.need_declared(std::uint64_t{n} + 1);
      visitor_.begin_list(n);
      open_frame(r, open, FrameKind::list, std::uint64_t{n} + 1);
    } else if constexpr (Kind == TagKind::tuple) {
      const std::uint32_t n = t == tag::small_tuple ? r.count8() : r.count32();
      r.need_declared(n);
      visitor_.begin_tuple(n);
      if (n == 0) visitor_.end_tuple();
      else open_frame(r, open, FrameKind::tuple, n);
    } else {
      static_assert(Kind == TagKind::map);
      const std::uint32_t n = r.count32();
      r.need_declared(std::uint64_t{n} * 2);
      visitor_.begin_map(n);
      if (n == 0) visitor_.end_map();
      else open_frame(r, open, FrameKind::map, std::uint64_t{n} * 2);
    }
    return true;
  }

  // A kind the loop leaves to the members: `r` is copied into them around an out-of-line
  // call, and written back even when it throws, so that the result reports where decoding
  // stopped.
  template <TagKind Kind>
  [[gnu::always_inline]] inline void read_through_members(Reader& r, OpenFrames& open, std::uint8_t t) {
    static_cast<Reader&>(*this) = r;
    std::uint32_t fun_children;
    try {
      fun_children = read_out_of_line<Kind>(t);
    } catch (...) {
      r = *this;
      throw;
    }
    r = *this;
    if (fun_children != 0) open_frame(r, open, FrameKind::fun, fun_children);
  }

  // The reader of each kind the loop does not read inline; returns what read_fun returns
  // for a fun, 0 for everything else.
  template <TagKind Kind>
  [[gnu::noinline]] std::uint32_t read_out_of_line(std::uint8_t t) {
    static_assert(!read_in_loop(Kind));
    if constexpr (Kind == TagKind::old_float) read_scalar<Kind>(t, visitor_, atom_scratch_);
    else if constexpr (Kind == TagKind::bit_binary) read_bitstring();
    else if constexpr (Kind == TagKind::pid) visitor_.pid(read_pid_body(t, node_scratch_));
    else if constexpr (Kind == TagKind::port) read_port(t);
    else if constexpr (Kind == TagKind::reference) read_reference(t);
    else if constexpr (Kind == TagKind::new_fun) return read_fun();
    else if constexpr (Kind == TagKind::export_fun) read_export_fun();
    else if constexpr (Kind == TagKind::atom_cache_ref) visitor_.atom(read_cached_atom());
    else if constexpr (Kind == TagKind::refused) fail_at(p_ - 1, Errc::unsupported_tag, t);
    else fail_at(p_ - 1, Errc::unknown_tag, t);
    return 0;
  }

  void read_port(std::uint8_t t) {
    PortView port;
    port.node = read_node(node_scratch_);
    port.id = t == tag::v4_port ? u64() : u32();
    port.creation = t == tag::old_port ? u8() : u32();
    visitor_.port(port);
  }

  void read_export_fun() {
    std::string_view module = read_atom_field(module_scratch_);
    std::string_view function = read_atom_field(atom_scratch_);
    // OTP writes the arity as SMALL_INTEGER; other encoders may use INTEGER.
    const std::int64_t arity = read_small_int_field();
    if (arity < 0 || arity > 255) fail(Errc::bad_fun, static_cast<std::uint64_t>(arity));
    visitor_.export_fun(module, function, static_cast<std::uint8_t>(arity));
  }

  // ATOM_CACHE_REF's index (its tag just read), resolved against the references of the
  // distribution header the term came after.
  std::string_view read_cached_atom() {
    if (atom_cache_refs_ == nullptr) fail_at(p_ - 1, Errc::unsupported_tag, tag::atom_cache_ref);
    const std::uint8_t index = u8();
    if (index >= atom_cache_refs_->size()) fail_at(p_ - 1, Errc::bad_atom_cache_ref, index);
    return (*atom_cache_refs_)[index];
  }

  // An atom inside another term (a node, a module, a function name): any atom tag, or an
  // atom cache reference.
  std::string_view read_atom_field(AtomText& scratch) {
    const std::uint8_t t = u8();
    if (t == tag::atom_cache_ref) return read_cached_atom();
    return read_atom(t, scratch);
  }

  std::string_view read_node(AtomText& scratch) { return read_atom_field(scratch); }

  std::int64_t read_small_int_field() {
    switch (u8()) {
      case tag::small_integer: return u8();
      case tag::integer: return static_cast<std::int32_t>(u32());
      default: fail(Errc::bad_fun);
    }
  }

  PidView read_pid_body(std::uint8_t t, AtomText& scratch) {
    PidView pid;
    pid.node = read_node(scratch);
    pid.id = u32();
    pid.serial = u32();
    pid.creation = t == tag::new_pid ? u32() : u8();
    return pid;
  }

  void read_bitstring() {
    const std::uint8_t* start = p_;
    std::uint32_t len = count32();
    std::uint8_t bits = u8();
    auto data = bytes(len);
    if (len == 0) {
      if (bits != 0) fail_at(start, Errc::bad_bit_count, bits);
      visitor_.binary(data);
      return;
    }
    if (bits == 0 || bits > 8) fail_at(start, Errc::bad_bit_count, bits);
    if (bits == 8) {
      visitor_.binary(data);
      return;
    }
    auto mask = static_cast<std::uint8_t>(0xFF << (8 - bits));
    if ((data.back() & ~mask) == 0) {
      visitor_.bitstring(data, bits);
      return;
    }
    bits_scratch_.assign(data.begin(), data.end());
    bits_scratch_.back() &= mask;
    visitor_.bitstring(bits_scratch_, bits);
  }

  void read_reference(std::uint8_t t) {
    ReferenceView ref;
    std::uint32_t count = 1;
    if (t != tag::old_reference) {
      count = u16();
      // Erlang reads even a reference of no words; no node makes one, so we refuse it.
      if (count == 0 || count > 5) fail(Errc::bad_reference, count);
    }
    ref.node = read_node(node_scratch_);
    if (t == tag::old_reference) {
      ref_ids_[0] = u32();
      ref.creation = u8();
    } else {
      ref.creation = t == tag::newer_reference ? u32() : u8();
      need(std::size_t{4} * count);
      for (std::uint32_t i = 0; i < count; ++i) ref_ids_[i] = u32();
    }
    ref.ids = std::span<const std::uint32_t>(ref_ids_.data(), count);
    visitor_.reference(ref);
  }

  // Returns the free variables the caller must open a frame for (0: the fun is complete).
  std::uint32_t read_fun() {
    const std::uint8_t* size_field = p_;
    std::uint32_t size = u32();  // counts itself, so at least 4
    if (size < 4) fail_at(size_field, Errc::bad_fun, size);
    if (size - 4 > left()) fail_at(size_field, Errc::length_exceeds_input, size);
    std::size_t fun_end = offset() - 4 + size;
    FunView fun;
    fun.arity = u8();
    need(16);
    std::memcpy(fun.uniq.data(), p_, 16);
    p_ += 16;
    fun.index = u32();
    fun.free_count = u32();
    fun.module = read_atom_field(module_scratch_);
    fun.old_index = read_small_int_field();
    fun.old_uniq = read_small_int_field();
    std::uint8_t pid_tag = u8();
    if (pid_tag != tag::new_pid && pid_tag != tag::old_pid) fail(Errc::bad_fun, pid_tag);
    fun.pid = read_pid_body(pid_tag, node_scratch_);
    count_at_ = size_field + 25;  // the free-variable count
    need_declared(fun.free_count);
    if (fun_end > base_ + static_cast<std::size_t>(end_ - begin_)) fail(Errc::bad_fun, size);
    visitor_.begin_fun(fun);
    if (fun.free_count == 0) {
      if (offset() != fun_end) fail(Errc::bad_fun, fun_end);
      visitor_.end_fun();
    } else {
      fun_ends_.push_back(fun_end);
    }
    return fun.free_count;
  }

  V& visitor_;
  const Limits& limits_;
  const AtomCacheRefs* atom_cache_refs_;  // DecodeOptions::atom_cache_refs
  FrameStorage frames_;
  std::vector<std::size_t> fun_ends_;  // where each open fun's declared size says it ends
  // Left uninitialised on purpose: written before read, and a decode of a small term should
  // not pay for constructing them.
  AtomText atom_scratch_, node_scratch_, module_scratch_;
  std::vector<std::uint8_t> bits_scratch_;
  std::array<std::uint32_t, 5> ref_ids_;  // written before read
};

}  // namespace detail

namespace detail {
// decode()'s body, writing into the caller's result: one DecodeResult per call, never copied.
template <Visitor V>
void decode_body_into(DecodeResult& result, std::span<const std::uint8_t> bytes, V& visitor,
                      const DecodeOptions& options, std::size_t base_offset) {
  Decoder<V>(bytes.data(), bytes.data() + bytes.size(), base_offset, visitor, options).run(result);
}

// The tags Reader::read_scalar() reads, as a table: decode() checks it before it sets
// anything up.
inline constexpr auto scalar_tags = [] {
  std::array<bool, 256> is{};
  for (std::size_t t = 0; t < is.size(); ++t) is[t] = is_scalar(kind_of(static_cast<std::uint8_t>(t)));
  return is;
}();

// Decodes a term body that is a lone scalar (its error included, if it fails) and returns
// true; returns false, having read and visited nothing, for any other term.
template <Visitor V>
bool decode_lone_scalar(DecodeResult& result, std::span<const std::uint8_t> body, V& visitor) {
  // Classified before anything is set up, so that a container pays one table look-up here.
  if (!scalar_tags[body[0]]) return false;
  Reader reader(body.data(), body.data() + body.size(), 1);
  AtomText atom_scratch;  // (uninitialised: written before read)
  // Inlined, or `reader` would escape into the lambda's frame and live in memory.
  reader.guarded(result, [&]() __attribute__((always_inline)) {
    dispatch_tag(reader.tag_at_start(), [&]<TagKind Kind>(std::uint8_t tag_byte) __attribute__((always_inline)) {
      if constexpr (is_scalar(Kind)) reader.read_scalar<Kind>(tag_byte, visitor, atom_scratch);
    });
  });
  return true;
}

// A COMPRESSED term (131, 80, u32 inflated size, zlib stream): checked before inflating.
template <Visitor V>
void decode_compressed(DecodeResult& result, std::span<const std::uint8_t> input, V& visitor,
                       const DecodeOptions& options) {
  auto fail = [&result](Errc code, std::size_t offset, std::uint64_t detail, bool inflated = false) {
    result.error = DecodeError{code, offset, detail, tag::compressed, inflated};
    result.end = offset;
  };
  if (input.size() < 6) return fail(Errc::truncated, input.size(), 6);
  const std::size_t size = load_u32(input.data() + 2);
  if (size > options.limits.max_inflated_size) return fail(Errc::inflated_size_limit, 2, size);
  const std::size_t compressed_size = input.size() - 6;
  if (size / max_deflate_ratio > compressed_size) return fail(Errc::bad_compression, 6, size);
  std::vector<std::uint8_t> inflated(size);
  std::size_t consumed = 0;
  if (!inflate_exact(input.subspan(6), inflated.data(), size, consumed))
    return fail(Errc::bad_compression, 6, size);
  if (consumed != compressed_size && !options.allow_trailing_bytes)
    return fail(Errc::trailing_bytes, 6 + consumed, compressed_size - consumed);
  // Offsets inside the inflated data are reported as such; the compressed stream must hold
  // exactly one term, so leftovers there are an error whatever the options say.
  decode_body_into(result, std::span<const std::uint8_t>(inflated), visitor, options, 0);
  if (!result) {
    result.error->inflated = true;
  } else if (result.end != size) {
    result.error = DecodeError{Errc::trailing_bytes, result.end, size - result.end, 0, true};
  } else {
    result.end = input.size();
  }
}
}  // namespace detail

// Decodes one term body (no version byte) starting at bytes[0]; reports where it ended,
// whatever follows (options.allow_trailing_bytes does not apply). The terms after a
// distribution header are bodies; options.atom_cache_refs says what their atom cache
// references mean.
template <Visitor V>
DecodeResult decode_body(std::span<const std::uint8_t> bytes, V& visitor, const DecodeOptions& options,
                         std::size_t base_offset = 0) {
  DecodeResult result;
  detail::decode_body_into(result, bytes, visitor, options, base_offset);
  return result;
}
template <Visitor V>
DecodeResult decode_body(std::span<const std::uint8_t> bytes, V& visitor, const Limits& limits = {},
                         std::size_t base_offset = 0) {
  return decode_body(bytes, visitor, DecodeOptions{.limits = limits}, base_offset);
}

// Decodes a complete external term: version byte 131, then a term or a compressed term.
// Every path returns the one `result` object, so it is built in the caller's frame (a
// copied-back result cost small terms a store-forwarding stall).
template <Visitor V>
DecodeResult decode(std::span<const std::uint8_t> input, V& visitor, const DecodeOptions& options = default_decode_options) {
  DecodeResult result;
  auto fail = [&result](Errc code, std::size_t offset, std::uint64_t detail = 0, std::uint8_t t = 0) {
    result.error = DecodeError{code, offset, detail, t};
    result.end = offset;
  };
  if (input.size() > options.limits.max_input_size) {
    fail(Errc::input_size_limit, 0, options.limits.max_input_size);
  } else if (input.empty()) {
    fail(Errc::truncated, 0, 1);
  } else if (input[0] != tag::version) {
    fail(Errc::bad_version, 0, input[0]);
  } else if (input.size() >= 2 && input[1] == tag::compressed) {
    detail::decode_compressed(result, input, visitor, options);
  } else {
    // A lone scalar needs none of the Decoder's stack or buffers, and is decoded by the same
    // Reader code the Decoder would use; anything else starts over with the full Decoder.
    const bool lone_scalar = input.size() >= 2 && detail::decode_lone_scalar(result, input.subspan(1), visitor);
    if (!lone_scalar) detail::decode_body_into(result, input.subspan(1), visitor, options, 1);
    if (result && !options.allow_trailing_bytes && result.end != input.size())
      fail(Errc::trailing_bytes, result.end, input.size() - result.end);
  }
  return result;
}

}  // namespace camlbeam::etf
