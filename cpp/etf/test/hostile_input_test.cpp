// Hostile input: every malformed, oversized, over-deep or over-compressed input must end in
// its typed DecodeError at a sensible offset: never a crash, a hang, success, or an
// allocation out of proportion to the input. Erlang is the yardstick for "malformed": the
// ErlangAgrees tests run a live OTP node over the same bytes, documenting that the decoder
// is no more lenient than binary_to_term/1 (and where it is deliberately stricter).
//
// Byte strings marked "OTP 25" come from a live node: term_to_binary/1 for valid
// encodings, term_to_binary(binary_to_term(In)) for normalisations.

#include "erlang_oracle.hpp"

#include <camlbeam/etf/etf.hpp>

#include <gtest/gtest.h>
#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstddef>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <functional>
#include <new>
#include <optional>
#include <ostream>
#include <set>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <typeinfo>
#include <utility>
#include <vector>

namespace etf = camlbeam::etf;
using etf::Errc;
using camlbeam::etf::test::ask_erlang;
using camlbeam::etf::test::on_path;
using camlbeam::etf::test::to_hex;
using Bytes = std::vector<std::uint8_t>;

// ---- Allocation metering -------------------------------------------------------------------
// This binary replaces the global operator new with a counting one. While a meter is armed,
// every request is added up, and a request that would take the total past the budget throws
// std::bad_alloc instead of reaching malloc: a decoder that trusts a declared length fails
// the test without first taking the machine's memory. Counting requests rather than live
// bytes also catches quadratic re-allocation, which is quadratic copying.

namespace {

struct AllocationLedger {
  std::atomic<bool> armed{false};
  std::atomic<bool> exceeded{false};
  std::atomic<std::size_t> requested{0};
  std::atomic<std::size_t> budget{0};
};
constinit AllocationLedger g_ledger;

// Every replacement below allocates here: nullptr when the armed budget would be passed
// (or malloc fails), so each form of operator new can fail its own way.
void* allocate(std::size_t size, std::size_t alignment = 0) noexcept {
  if (g_ledger.armed.load(std::memory_order_relaxed)) {
    const std::size_t total = g_ledger.requested.fetch_add(size, std::memory_order_relaxed) + size;
    if (total > g_ledger.budget.load(std::memory_order_relaxed)) {
      g_ledger.exceeded.store(true, std::memory_order_relaxed);
      return nullptr;
    }
  }
  if (size == 0) size = 1;
  if (alignment <= alignof(std::max_align_t)) return std::malloc(size);
  return std::aligned_alloc(alignment, (size + alignment - 1) / alignment * alignment);
}

void* allocate_or_throw(std::size_t size, std::size_t alignment = 0) {
  if (void* p = allocate(size, alignment)) return p;
  throw std::bad_alloc();
}

}  // namespace

// The whole family is replaced, so that whichever form allocates, the matching form frees
// (sanitizers check the pairing). GCC inlines them into their callers and then sees free()
// on memory from operator new, which in a replacement allocator is the pairing intended.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
void* operator new(std::size_t n) { return allocate_or_throw(n); }
void* operator new[](std::size_t n) { return allocate_or_throw(n); }
void* operator new(std::size_t n, std::align_val_t a) { return allocate_or_throw(n, static_cast<std::size_t>(a)); }
void* operator new[](std::size_t n, std::align_val_t a) { return allocate_or_throw(n, static_cast<std::size_t>(a)); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept { return allocate(n); }
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept { return allocate(n); }
void* operator new(std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return allocate(n, static_cast<std::size_t>(a));
}
void* operator new[](std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return allocate(n, static_cast<std::size_t>(a));
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

namespace {

class AllocationMeter {
 public:
  explicit AllocationMeter(std::size_t budget) {
    g_ledger.requested = 0;
    g_ledger.exceeded = false;
    g_ledger.budget = budget;
    g_ledger.armed = true;
  }
  ~AllocationMeter() { g_ledger.armed = false; }
  AllocationMeter(const AllocationMeter&) = delete;
  AllocationMeter& operator=(const AllocationMeter&) = delete;

  std::size_t requested() const noexcept { return g_ledger.requested; }
  bool exceeded() const noexcept { return g_ledger.exceeded; }
};

// What decoding may request in all: one Term slot per input byte at most (every declared
// child needs a byte of its own), a builder and a decoder frame per open container (two
// bytes at least), twice that for vectors growing by doubling, and for a compressed term
// its inflated copy plus the same for the inflated bytes.
constexpr std::size_t kBudgetPerInputByte = 4 * sizeof(etf::Term) + 128;
constexpr std::size_t kBudgetSlack = 256 * 1024;

std::size_t allocation_budget(std::size_t input_size, std::size_t inflated_size = 0) {
  return kBudgetSlack + kBudgetPerInputByte * (input_size + inflated_size) + inflated_size;
}

// ---- Building inputs ---------------------------------------------------------------------

// Hex digits, spaces between groups allowed: "6C FFFFFFFF 6A".
Bytes from_hex(std::string_view hex) {
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  Bytes out;
  int high = -1;
  for (char c : hex) {
    if (c == ' ') continue;
    const int v = nibble(c);
    if (v < 0) throw std::invalid_argument("bad hex digit in " + std::string(hex));
    if (high < 0) {
      high = v;
    } else {
      out.push_back(static_cast<std::uint8_t>(high << 4 | v));
      high = -1;
    }
  }
  if (high >= 0) throw std::invalid_argument("odd number of hex digits in " + std::string(hex));
  return out;
}

// Builds inputs field by field: term().u8(108).u32(0xFFFFFFFF).u8(106).
class Wire {
 public:
  Wire& u8(std::uint8_t v) {
    bytes_.push_back(v);
    return *this;
  }
  Wire& u16(std::uint16_t v) { return u8(static_cast<std::uint8_t>(v >> 8)).u8(static_cast<std::uint8_t>(v)); }
  Wire& u32(std::uint32_t v) {
    return u16(static_cast<std::uint16_t>(v >> 16)).u16(static_cast<std::uint16_t>(v));
  }
  Wire& bytes(std::span<const std::uint8_t> b) {
    bytes_.insert(bytes_.end(), b.begin(), b.end());
    return *this;
  }
  Wire& hex(std::string_view h) { return bytes(from_hex(h)); }
  Wire& text(std::string_view s) {
    bytes_.insert(bytes_.end(), s.begin(), s.end());
    return *this;
  }
  Wire& repeat(std::string_view hex_unit, std::size_t times) {
    const Bytes unit = from_hex(hex_unit);
    bytes_.reserve(bytes_.size() + unit.size() * times);
    for (std::size_t i = 0; i < times; ++i) bytes(unit);
    return *this;
  }
  // An old FLOAT_EXT body: the text NUL-padded to 31 bytes.
  Wire& float_text(std::string_view s) {
    text(s);
    for (std::size_t i = s.size(); i < 31; ++i) u8(0);
    return *this;
  }
  std::size_t size() const noexcept { return bytes_.size(); }
  // A finished Wire reads as its bytes, in a Bytes or as a span for the full expression.
  operator Bytes() const { return bytes_; }                         // NOLINT: implicit on purpose
  operator std::span<const std::uint8_t>() const { return bytes_; }  // NOLINT: implicit on purpose

 private:
  Bytes bytes_;
};

Wire term() { return std::move(Wire().u8(etf::tag::version)); }

// A minimal zlib compressor: one fixed-Huffman block (RFC 1950/1951), enough to make
// streams no real compressor writes, such as a gigabyte of zeros in under 7 MB (a zero
// literal, then back-references of length 258 at distance 1, 13 bits each).
Bytes zlib_stream(std::span<const std::uint8_t> literals, std::uint64_t zero_runs_of_258 = 0) {
  if (zero_runs_of_258 > 0 && (literals.empty() || literals.back() != 0))
    throw std::invalid_argument("zero runs copy the byte before them, which must be a zero literal");
  Bytes out{0x78, 0x01};  // deflate, 32 KiB window, no dictionary; 0x7801 is a multiple of 31
  std::uint32_t bit_buffer = 0;
  int bit_count = 0;
  auto put_bits = [&](std::uint32_t value, int count) {  // fields go least significant bit first
    bit_buffer |= value << bit_count;
    bit_count += count;
    for (; bit_count >= 8; bit_count -= 8, bit_buffer >>= 8) out.push_back(static_cast<std::uint8_t>(bit_buffer));
  };
  auto put_code = [&](std::uint32_t code, int length) {  // Huffman codes most significant first
    std::uint32_t reversed = 0;
    for (int i = 0; i < length; ++i) reversed |= ((code >> i) & 1u) << (length - 1 - i);
    put_bits(reversed, length);
  };
  put_bits(1, 1);  // BFINAL
  put_bits(1, 2);  // BTYPE 01: fixed Huffman codes
  std::uint64_t a = 1, b = 0;  // Adler-32
  for (std::uint8_t c : literals) {
    if (c < 144) put_code(0x30u + c, 8);
    else put_code(0x190u + (c - 144u), 9);
    a = (a + c) % 65521;
    b = (b + a) % 65521;
  }
  for (std::uint64_t i = 0; i < zero_runs_of_258; ++i) {
    put_code(0xC5, 8);  // length symbol 285: 258 bytes
    put_code(0, 5);     // distance symbol 0: distance 1
  }
  b = (b + zero_runs_of_258 * 258 % 65521 * a) % 65521;  // zeros leave a as it is
  put_code(0, 7);                                        // end of block, symbol 256
  if (bit_count > 0) put_bits(0, 8 - bit_count);
  const auto adler = static_cast<std::uint32_t>(b << 16 | a);
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<std::uint8_t>(adler >> shift));
  return out;
}

// 131, 80, declared size, zlib stream of the body.
Bytes compressed_term(std::span<const std::uint8_t> body, std::uint32_t declared_size) {
  return term().u8(etf::tag::compressed).u32(declared_size).bytes(zlib_stream(body));
}
Bytes compressed_term(std::span<const std::uint8_t> body) {
  return compressed_term(body, static_cast<std::uint32_t>(body.size()));
}

Bytes patched(Bytes bytes, std::size_t at, std::span<const std::uint8_t> with) {
  std::copy(with.begin(), with.end(), bytes.begin() + static_cast<std::ptrdiff_t>(at));
  return bytes;
}

// ---- Decoding under the meter ------------------------------------------------------------

struct Outcome {
  etf::DecodeResult result;
  etf::Term term;
  std::size_t allocated = 0;
  bool over_budget = false;
};

Outcome decode_metered(std::span<const std::uint8_t> input, const etf::DecodeOptions& options,
                       std::size_t budget) {
  Outcome outcome;
  etf::TermBuilder builder;
  {
    AllocationMeter meter(budget);
    try {
      outcome.result = etf::decode(input, builder, options);
    } catch (const std::bad_alloc&) {
      if (!meter.exceeded()) throw;
      outcome.over_budget = true;
    }
    outcome.allocated = meter.requested();
  }
  if (!outcome.over_budget && outcome.result) outcome.term = builder.take();
  return outcome;
}

// The inflated size a compressed input declares, when it is one the decoder may allocate.
std::size_t allowed_inflated_size(std::span<const std::uint8_t> input, const etf::Limits& limits) {
  if (input.size() < 6 || input[1] != etf::tag::compressed) return 0;
  const std::size_t size = etf::detail::load_u32(input.data() + 2);
  return size <= limits.max_inflated_size ? size : 0;
}

Outcome decode_metered(std::span<const std::uint8_t> input, const etf::DecodeOptions& options = {}) {
  return decode_metered(input, options,
                        allocation_budget(input.size(), allowed_inflated_size(input, options.limits)));
}

// The error a hostile input must produce. The offset may be anywhere from the offending
// tag to the end of the offending field: where exactly is the decoder's business.
struct ExpectedError {
  Errc code;
  std::size_t offset_min;
  std::size_t offset_max;
  bool inflated = false;          // the offset counts in the inflated data
  std::optional<Errc> or_code{};  // a second code that describes the input as well
  std::optional<std::uint64_t> detail{};

  ExpectedError in_inflated_data() const { return with([](ExpectedError& e) { e.inflated = true; }); }
  ExpectedError or_as(Errc code2) const { return with([&](ExpectedError& e) { e.or_code = code2; }); }
  ExpectedError detail_is(std::uint64_t d) const { return with([&](ExpectedError& e) { e.detail = d; }); }

 private:
  template <class F>
  ExpectedError with(F&& change) const {
    ExpectedError e = *this;
    change(e);
    return e;
  }
};

ExpectedError fails(Errc code, std::size_t offset_min, std::size_t offset_max) {
  return ExpectedError{code, offset_min, offset_max};
}
ExpectedError fails_at(Errc code, std::size_t offset) { return fails(code, offset, offset); }

std::string describe(const etf::DecodeError& e) {
  return std::string(etf::to_string(e.code)) + " at " + (e.inflated ? "inflated " : "") + "offset " +
         std::to_string(e.offset) + " (detail " + std::to_string(e.detail) + ", tag " + std::to_string(e.tag) +
         "): " + e.message();
}

testing::AssertionResult fails_as(std::span<const std::uint8_t> input, const Outcome& outcome,
                                  const ExpectedError& want) {
  auto failure = [&]() {
    return testing::AssertionFailure() << "input " << to_hex(input, 64) << " (" << input.size() << " bytes)\n"
                                       << "  wanted " << etf::to_string(want.code) << " at "
                                       << (want.inflated ? "inflated " : "") << "offset " << want.offset_min
                                       << ".." << want.offset_max << "\n  got ";
  };
  if (outcome.over_budget)
    return failure() << "an allocation past the budget (" << outcome.allocated << " bytes requested)";
  if (outcome.result) return failure() << "success: " << outcome.term.to_string().substr(0, 200);
  const etf::DecodeError& e = *outcome.result.error;
  const bool code_ok = e.code == want.code || (want.or_code && e.code == *want.or_code);
  if (!code_ok || e.offset < want.offset_min || e.offset > want.offset_max || e.inflated != want.inflated ||
      (want.detail && e.detail != *want.detail))
    return failure() << describe(e) << (want.detail ? " (wanted detail " + std::to_string(*want.detail) + ")" : "");
  return testing::AssertionSuccess();
}

testing::AssertionResult fails_as(std::span<const std::uint8_t> input, const ExpectedError& want,
                                  const etf::DecodeOptions& options = {}) {
  return fails_as(input, decode_metered(input, options), want);
}

// Decodes and re-encodes; the result must be what OTP 25 writes for the same term.
testing::AssertionResult normalises_to(std::span<const std::uint8_t> input, std::span<const std::uint8_t> want) {
  const Outcome outcome = decode_metered(input);
  if (outcome.over_budget) return testing::AssertionFailure() << "allocation past the budget";
  if (!outcome.result)
    return testing::AssertionFailure() << "input " << to_hex(input, 64) << ": " << describe(*outcome.result.error);
  const Bytes got = etf::encode(outcome.term);
  if (!std::equal(got.begin(), got.end(), want.begin(), want.end()))
    return testing::AssertionFailure() << "input " << to_hex(input, 64) << " re-encodes as " << to_hex(got, 64)
                                       << ", OTP 25 writes " << to_hex(want, 64);
  return testing::AssertionSuccess();
}

// Runs body on a thread with a small stack. A term a million deep cannot be walked
// recursively in 4 MiB (each level would take at least a return address and a saved frame
// pointer: 16 MB in all), so finishing at all proves the walk is iterative.
void run_on_small_stack(std::size_t stack_bytes, const std::function<void()>& body) {
  struct Task {
    const std::function<void()>* body;
    std::exception_ptr error;
  } task{&body, nullptr};
  auto trampoline = [](void* arg) -> void* {
    auto* t = static_cast<Task*>(arg);
    try {
      (*t->body)();
    } catch (...) {
      t->error = std::current_exception();
    }
    return nullptr;
  };
  pthread_attr_t attr;
  ASSERT_EQ(pthread_attr_init(&attr), 0);
  ASSERT_EQ(pthread_attr_setstacksize(&attr, stack_bytes), 0);
  pthread_t thread;
  const int created = pthread_create(&thread, &attr, trampoline, &task);
  pthread_attr_destroy(&attr);
  ASSERT_EQ(created, 0);
  pthread_join(thread, nullptr);
  if (task.error) std::rethrow_exception(task.error);
}

// ---- Valid encodings, at least one per tag -----------------------------------------------

struct ValidEncoding {
  std::string name;
  std::uint8_t tag;  // the tag this one is here to cover
  Bytes bytes;
};

// OTP 25 term_to_binary/1, except the forms OTP 25 reads but no longer writes (old pid,
// port and references, SMALL_ATOM_EXT, V4_PORT_EXT), each checked with binary_to_term/1.
std::vector<ValidEncoding> otp_encodings() {
  Wire large_tuple = term().u8(105).u32(256);  // {1, 2, ..., 256}
  for (int i = 1; i <= 255; ++i) large_tuple.u8(97).u8(static_cast<std::uint8_t>(i));
  large_tuple.u8(98).u32(256);
  return {
      {"small_integer", 97, from_hex("836107")},
      {"integer", 98, from_hex("8362FFFFFED4")},
      {"small_big", 110, from_hex("836E0901000000000000000040")},
      {"large_big", 111, term().hex("6F 00000107 00").repeat("00", 262).u8(0x10)},  // 1 bsl 2100
      {"new_float", 70, from_hex("8346FE41EB2D66005835")},
      {"old_float", 99, from_hex("8363322E3530303030303030303030303030303030303030652B30300000000000")},
      {"atom_latin1", 100, from_hex("8364000568E96C6C6F")},
      {"small_atom_latin1", 115, from_hex("837303666F6F")},
      {"small_atom_utf8", 119, from_hex("837705F09F988078")},
      {"atom_utf8", 118, term().hex("76 0100").repeat("F09F9880", 64)},  // 64 x U+1F600
      {"binary", 109, from_hex("836D00000003010203")},
      {"bit_binary", 77, from_hex("834D0000000305010218")},
      {"nil", 106, from_hex("836A")},
      {"string", 107, from_hex("836B000568656C6C6F")},
      {"improper_list", 108, from_hex("836C000000026101640003666F6F640003626172")},
      {"small_tuple", 104, from_hex("8368036400016161016B000162")},
      {"large_tuple", 105, std::move(large_tuple)},
      {"map", 116, from_hex("8374000000036102640001626400016161016B00016B6C00000001640001766A")},
      {"new_pid", 88, from_hex("835864000D6E6F6E6F6465406E6F686F7374000000090000000000000000")},
      {"new_port", 89, from_hex("835964000D6E6F6E6F6465406E6F686F73740000000500000000")},
      {"newer_reference", 90,
       from_hex("835A000364000D6E6F6E6F6465406E6F686F7374000000000000F8F9A15C00014996A274")},
      {"new_fun_without_free_variables", 112,  // fun(X) -> X end, compiled in module probe
       from_hex("8370000000490170BCE365D3BD2118DAF0A804655DECCF000000000000000064000570726F62656100620385E71B58"
                "64000D6E6F6E6F6465406E6F686F7374000000090000000000000000")},
      {"new_fun", 112,  // fun() -> X end with X = {7, x}, compiled in module vec
       from_hex("83700000004F009D4B0097D9E2F8415ADFE26486B9F851000000000000000164000376656361006204EA58045864"
                "000D6E6F6E6F6465406E6F686F73740000000900000000000000006802610764000178")},
      {"export", 113, from_hex("83716400056C697374736400036D61706102")},
      {"compressed", 80, from_hex("83500000003E789CCB60CA66D0602012E402314F6252321C010061B9060F")},
      {"old_pid", 103, from_hex("8367640001610000000100000002 03")},
      {"old_port", 102, from_hex("836664000161 00000001 03")},
      {"old_reference", 101, from_hex("8365640001610000000103")},
      {"new_reference", 114, from_hex("83720001640001 61 03 00000001")},
      {"v4_port", 120, from_hex("8378640001 61 0000000100000002 00000003")},
      {"nested", 104,
       from_hex("8368046400026F6B6C0000000374000000016400036B65796802463FF00000000000006D00000001766C000000"
                "016C000000016A6A6A6801680168006A6B00037374726E0901000000000000000001")},
  };
}

// What our encoder makes of a term using every kind, plain and compressed.
std::vector<ValidEncoding> encoder_encodings() {
  using etf::Term;
  etf::Fun fun;
  fun.arity = 1;
  fun.uniq = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
  fun.index = 3;
  fun.module = "mod";
  fun.old_index = 3;
  fun.old_uniq = 12345678;
  fun.pid = etf::Pid{"n@h", 1, 2, 3};
  fun.free_vars.push_back(Term::integer(300));
  const Term everything = Term::tuple({
      Term::integer(-1), Term::integer(1LL << 40), Term::big_integer(true, {1, 2, 3, 4, 5, 6, 7, 8, 9}),
      Term::float64(-2.5), Term::atom("plain"), Term::atom("\xC3\xBCnic\xE2\x82\xAC"),
      Term::binary(std::string_view("bin")), Term::bitstring({0xA0}, 3),
      Term::list({Term::string("ab"), Term::nil()}, Term::atom("tail")),
      Term::map({{Term::atom("a"), Term::integer(1)}, {Term::integer(2), Term::atom("b")}}),
      Term::pid(etf::Pid{"n@h", 1, 2, 3}), Term::port(etf::Port{"n@h", 1ULL << 40, 4}),
      Term::port(etf::Port{"n@h", 7, 4}), Term::reference(etf::Reference{"n@h", 5, {1, 2, 3}}),
      Term::export_fun("m", "f", 2), Term::fun(std::move(fun)), Term::tuple({}),
      Term::binary(std::string(300, 'x')),  // so that compressing pays
  });
  etf::EncodeOptions compress;
  compress.compression_level = 6;
  return {{"encoder_plain", 104, etf::encode(everything)},
          {"encoder_compressed", 80, etf::encode(everything, compress)}};
}

std::vector<ValidEncoding> all_valid_encodings() {
  std::vector<ValidEncoding> all = otp_encodings();
  for (auto& e : encoder_encodings()) all.push_back(std::move(e));
  return all;
}

bool is_compressed(std::span<const std::uint8_t> bytes) {
  return bytes.size() > 1 && bytes[1] == etf::tag::compressed;
}

// Cutting the zlib stream makes a corrupt stream; any other cut runs out of input, seen
// either on reading (truncated) or on checking a declared length (length_exceeds_input).
ExpectedError expected_for_prefix(std::span<const std::uint8_t> whole, std::size_t cut) {
  if (is_compressed(whole) && cut >= 6) return fails(Errc::bad_compression, 2, cut);
  return fails(Errc::truncated, 0, cut).or_as(Errc::length_exceeds_input);
}

TEST(ValidEncodings, CoverEveryTagTheDecoderAccepts) {
  const std::set<int> accepted = {70,  77,  80,  88,  89,  90,  97,  98,  99,  100, 101, 102, 103, 104, 105,
                                  106, 107, 108, 109, 110, 111, 112, 113, 114, 115, 116, 118, 119, 120};
  std::set<int> covered;
  for (const auto& v : otp_encodings()) covered.insert(v.tag);
  EXPECT_EQ(covered, accepted);
}

// Each decodes whole, and its term re-encodes to bytes that decode to an equal term (the
// prefixes below are only meaningful if the whole does decode).
TEST(ValidEncodings, DecodeWholeWithinTheBudgetAndReencode) {
  for (const auto& v : all_valid_encodings()) {
    SCOPED_TRACE(v.name);
    const Outcome outcome = decode_metered(v.bytes);
    ASSERT_FALSE(outcome.over_budget) << outcome.allocated << " bytes requested";
    ASSERT_TRUE(outcome.result) << describe(*outcome.result.error);
    EXPECT_EQ(outcome.result.end, v.bytes.size());
    const Bytes again = etf::encode(outcome.term);
    const Outcome back = decode_metered(again);
    ASSERT_TRUE(back.result) << "re-encoded as " << to_hex(again, 96) << ": " << describe(*back.result.error);
    EXPECT_TRUE(back.term == outcome.term) << to_hex(again, 96);
  }
}

// No proper prefix of a valid encoding decodes. The format is self-delimiting and the
// decoder reads strictly forward, so if a prefix P decoded whole, decoding the full
// encoding would take the same steps, stop at |P| and report trailing bytes; a cut zlib
// stream loses its end-of-stream marker and checksum.
TEST(Truncation, EveryProperPrefixOfEveryEncodingFails) {
  std::size_t checked = 0;
  for (const auto& v : all_valid_encodings()) {
    for (std::size_t cut = 0; cut < v.bytes.size(); ++cut) {
      const std::span<const std::uint8_t> prefix(v.bytes.data(), cut);
      ASSERT_TRUE(fails_as(prefix, expected_for_prefix(v.bytes, cut))) << v.name << " cut at " << cut;
      ++checked;
    }
  }
  EXPECT_GT(checked, 1500u);
}

// ---- The table of hostile inputs ---------------------------------------------------------

struct HostileCase {
  std::string name;
  Bytes input;
  ExpectedError want;
  bool erlang_rejects = true;  // binary_to_term/1 raises badarg on these bytes too
};

void PrintTo(const HostileCase& c, std::ostream* os) { *os << c.name << " " << to_hex(c.input, 48); }

using Cases = std::vector<HostileCase>;

// Nested containers where each level declares as many children as the bytes left after its
// header can hold, behind a first child of fixed width (an INTEGER_EXT by default). Each
// count fits in the bytes left, yet together they are quadratic in the input size: the
// decoder must count the filler's payload bytes against the children still owed, or every
// level may declare (and a term builder reserve) as much as the whole input.
Bytes counts_behind_fixed_field(std::uint32_t levels, std::string_view filler = "62 00000000",
                                std::uint8_t container = etf::tag::large_tuple) {
  const Bytes fill = from_hex(filler);
  auto count_for = [container](std::uint32_t bytes_left) -> std::uint32_t {
    if (container == etf::tag::list) return bytes_left == 0 ? 0 : bytes_left - 1;  // plus the tail
    if (container == etf::tag::map) return bytes_left / 2;
    return bytes_left;
  };
  const auto after_outer = static_cast<std::uint32_t>(fill.size() + 5 * levels);
  Wire w = term().u8(container).u32(count_for(after_outer)).bytes(fill);
  for (std::uint32_t i = 0; i < levels; ++i) w.u8(container).u32(count_for(5 * (levels - i - 1)));
  return w;
}

Cases oversized_length_cases() {
  constexpr Errc E = Errc::length_exceeds_input;
  return {
      {"list_of_4G_elements", term().hex("6C FFFFFFFF 6A"), fails(E, 1, 6).detail_is(0x100000000)},
      {"list_one_element_longer_than_input", term().hex("6C 00000002 6A 6A"), fails(E, 1, 6)},
      {"binary_of_4G_bytes", term().hex("6D FFFFFFFF 010203"), fails(E, 1, 6).detail_is(0xFFFFFFFF)},
      {"binary_one_byte_longer_than_input", term().hex("6D 00000004 010203"), fails(E, 1, 6)},
      {"atom_utf8_of_64K_bytes", term().hex("76 FFFF 61"), fails(E, 1, 4)},
      {"atom_latin1_of_64K_bytes", term().hex("64 FFFF 61"), fails(E, 1, 4)},
      {"small_atom_utf8_of_200_bytes", term().hex("77 C8 616161"), fails(E, 1, 3)},
      {"small_atom_latin1_of_200_bytes", term().hex("73 C8 616161"), fails(E, 1, 3)},
      {"large_tuple_of_4G_elements", term().hex("69 FFFFFFFF 6A"), fails(E, 1, 6)},
      {"small_tuple_of_255_elements", term().hex("68 FF 6A6A"), fails(E, 1, 3)},
      {"map_of_4G_pairs", term().hex("74 FFFFFFFF 6A"), fails(E, 1, 6)},
      // 2^31 pairs are 2^32 terms: the count must not wrap in 32 bits.
      {"map_of_2G_pairs", term().hex("74 80000000").repeat("6A", 16), fails(E, 1, 6).detail_is(0x100000000)},
      {"map_of_2_pairs_in_3_bytes", term().hex("74 00000002 6A6A6A"), fails(E, 1, 6)},
      {"large_big_of_4G_digits", term().hex("6F FFFFFFFF 00 01"), fails(E, 1, 7)},
      {"small_big_of_255_digits", term().hex("6E FF 00 010203"), fails(E, 1, 4)},
      {"string_of_64K_bytes", term().hex("6B FFFF 61"), fails(E, 1, 4)},
      {"bit_binary_of_4G_bytes", term().hex("4D FFFFFFFF 03 FF"), fails(E, 1, 7)},
      {"new_fun_of_4G_bytes", term().hex("70 FFFFFFFF").repeat("00", 20), fails(E, 1, 6)},
      {"old_float_of_3_bytes", term().hex("63").text("1.5"), fails(E, 1, 2)},
      // Containers share the bytes left: an inner count must leave a byte for each
      // element the outer containers still owe.
      {"list_takes_bytes_owed_to_tuple", term().hex("68 02 6C 00000003 6A6A6A6A"), fails(E, 3, 8)},
      {"tuple_takes_bytes_owed_to_list", term().hex("6C 00000001 68 03 6A6A6A"), fails(E, 6, 8)},
      {"tuple_takes_bytes_owed_to_map", term().hex("74 00000002 6A 68 03 6A6A6A6A"), fails(E, 8, 9)},
      // Caught on the fixed-width read, or at the latest on the next count declared.
      {"fixed_width_field_takes_bytes_owed_to_siblings", term().hex("68 1B 62 00000000 68 14").repeat("6A", 20),
       fails(E, 1, 10).or_as(Errc::truncated)},
      {"counts_behind_fixed_field", counts_behind_fixed_field(10), fails(E, 1, 16).or_as(Errc::truncated)},
  };
}

Cases compression_cases() {
  constexpr Errc Bad = Errc::bad_compression;
  const Bytes real = from_hex("83500000003E789CCB60CA66D0602012E402314F6252321C010061B9060F");  // OTP 25
  const std::size_t n = real.size();
  const Bytes empty_stream = from_hex("789C030000000001");
  const std::uint8_t kIntegerPair[] = {97, 1, 97, 2};
  const std::uint8_t kListOf4G[] = {108, 0xFF, 0xFF, 0xFF, 0xFF, 106};
  const std::uint8_t kCompressedAgain[] = {80, 0, 0, 0, 2, 0x78, 0x01};
  const std::uint8_t kVersionAgain[] = {131, 97, 1};
  const std::uint8_t kShortTuple[] = {104, 2, 97, 1};
  Bytes flipped_data = real;
  flipped_data[12] ^= 0xFF;
  Bytes flipped_checksum = real;
  flipped_checksum.back() ^= 1;
  return {
      {"declared_size_over_the_limit", term().hex("50 04000001").bytes(empty_stream),
       fails(Errc::inflated_size_limit, 2, 6).detail_is(0x04000001)},
      {"declared_size_4G", term().hex("50 FFFFFFFF").bytes(empty_stream),
       fails(Errc::inflated_size_limit, 2, 6).detail_is(0xFFFFFFFF), false},
      {"declared_size_one_short", patched(real, 5, from_hex("3D")), fails(Bad, 2, n)},
      {"declared_size_one_long", patched(real, 5, from_hex("3F")), fails(Bad, 2, n)},
      {"declared_size_zero", patched(real, 2, from_hex("00000000")), fails(Bad, 2, n)},
      {"zlib_header_corrupt", patched(real, 6, from_hex("0000")), fails(Bad, 2, n)},
      {"deflate_data_corrupt", flipped_data, fails(Bad, 2, n)},
      {"adler32_corrupt", flipped_checksum, fails(Bad, 2, n)},
      {"no_stream_at_all", term().hex("50 00000001"), fails(Bad, 2, 6)},
      // binary_to_term/1 ignores bytes after the stream; by default we do not.
      {"byte_after_the_stream", Wire().bytes(real).u8(0),
       fails(Errc::trailing_bytes, 6, n).or_as(Errc::bad_compression), false},
      // OTP 25 ignores leftovers in the inflated data as well; we never do.
      {"inflated_term_has_trailing_bytes", compressed_term(kIntegerPair),
       fails_at(Errc::trailing_bytes, 2).in_inflated_data(), false},
      {"inflated_list_of_4G_elements", compressed_term(kListOf4G),
       fails(Errc::length_exceeds_input, 0, 5).in_inflated_data()},
      {"compressed_inside_compressed", compressed_term(kCompressedAgain),
       fails_at(Errc::unknown_tag, 0).in_inflated_data().detail_is(80)},
      {"version_byte_inside_inflated_data", compressed_term(kVersionAgain),
       fails_at(Errc::unknown_tag, 0).in_inflated_data().detail_is(131)},
      {"inflated_tuple_truncated", compressed_term(kShortTuple),
       fails(Errc::truncated, 2, 4).in_inflated_data().or_as(Errc::length_exceeds_input)},
  };
}

// Byte sequences that are not UTF-8, each tried as a SMALL_ATOM_UTF8 and an ATOM_UTF8.
Cases utf8_cases() {
  const std::pair<const char*, const char*> bad[] = {
      {"overlong_nul", "C080"},
      {"overlong_slash", "C1AF"},
      {"overlong_three_bytes", "E08080"},
      {"overlong_three_bytes_max", "E09FBF"},
      {"overlong_four_bytes", "F0808080"},
      {"overlong_four_bytes_max", "F08FBFBF"},
      {"high_surrogate", "EDA080"},
      {"low_surrogate", "EDBFBF"},
      {"beyond_U10FFFF", "F4908080"},
      {"lead_F5", "F5808080"},
      {"five_byte_form", "F888808080"},
      {"byte_FE", "FE"},
      {"byte_FF", "FF"},
      {"lone_continuation", "80"},
      {"two_byte_cut", "C3"},
      {"three_byte_cut", "E282"},
      {"four_byte_cut", "F09F98"},
      {"continuation_missing", "C341"},
      {"cut_after_ascii", "616263E282"},
      {"surrogate_after_ascii", "6162EDA080"},
  };
  Cases cases;
  for (const auto& [name, hex] : bad) {
    const Bytes seq = from_hex(hex);
    const auto len = static_cast<std::uint8_t>(seq.size());
    cases.push_back({std::string("small_atom_utf8_") + name, term().u8(119).u8(len).bytes(seq),
                     fails(Errc::invalid_utf8_atom, 1, 3 + seq.size())});
    cases.push_back({std::string("atom_utf8_") + name, term().u8(118).u16(len).bytes(seq),
                     fails(Errc::invalid_utf8_atom, 1, 4 + seq.size())});
  }
  cases.push_back({"pid_node_overlong", term().hex("58 77 02 C080 00000001 00000000 00000000"),
                   fails(Errc::invalid_utf8_atom, 1, 6)});
  cases.push_back({"export_module_surrogate", term().hex("71 77 03 EDA080 77 01 66 61 01"),
                   fails(Errc::invalid_utf8_atom, 1, 6)});
  return cases;
}

Cases atom_length_cases() {
  constexpr Errc Long = Errc::atom_too_long;
  return {
      {"atom_utf8_of_256_ascii", term().hex("76 0100").repeat("61", 256), fails(Long, 1, 260).detail_is(256)},
      {"atom_latin1_of_256", term().hex("64 0100").repeat("E9", 256), fails(Long, 1, 260).detail_is(256)},
      {"atom_utf8_of_256_two_byte_chars", term().hex("76 0200").repeat("C3A9", 256),
       fails(Long, 1, 516).detail_is(256)},
      {"atom_utf8_of_256_four_byte_chars", term().hex("76 0400").repeat("F09F9880", 256),
       fails(Long, 1, 1028).detail_is(256)},
      {"pid_node_of_256", term().hex("58 76 0100").repeat("61", 256).hex("00000001 00000000 00000000"),
       fails(Long, 1, 261)},
  };
}

Cases float_cases() {
  Cases cases;
  const std::pair<const char*, const char*> ieee[] = {
      {"nan", "7FF8000000000000"},      {"negative_nan", "FFF8000000000000"},
      {"signalling_nan", "7FF0000000000001"}, {"plus_infinity", "7FF0000000000000"},
      {"minus_infinity", "FFF0000000000000"},
  };
  for (const auto& [name, hex] : ieee)
    cases.push_back({std::string("new_float_") + name, term().u8(70).hex(hex), fails(Errc::bad_float, 1, 10)});
  // Old FLOAT_EXT text that Erlang's reader refuses. Erlang also refuses leading blanks,
  // and text that fills all 31 bytes without a NUL.
  const std::pair<const char*, const char*> text[] = {
      {"nan", "nan"},          {"inf", "inf"},         {"minus_inf", "-inf"},    {"infinity", "infinity"},
      {"overflow", "1e400"},   {"minus_overflow", "-1e400"}, {"underflow", "1e-400"},
      {"letters", "abc"},      {"empty", ""},          {"junk_after", "1.5x"},   {"exponent_cut", "1.0e"},
      {"hex_float", "0x1p3"},  {"leading_blank", " 1.5"},
  };
  for (const auto& [name, s] : text)
    cases.push_back({std::string("old_float_") + name, term().u8(99).float_text(s), fails(Errc::bad_float, 1, 33)});
  cases.push_back({"old_float_without_nul", term().u8(99).text("1.5").repeat("20", 28), fails(Errc::bad_float, 1, 33)});
  return cases;
}

Cases bit_count_cases() {
  constexpr Errc Bits = Errc::bad_bit_count;
  return {
      {"zero_bits_with_data", term().hex("4D 00000001 00 FF"), fails(Bits, 1, 7).detail_is(0)},
      {"nine_bits", term().hex("4D 00000001 09 FF"), fails(Bits, 1, 7).detail_is(9)},
      {"255_bits", term().hex("4D 00000002 FF FFFF"), fails(Bits, 1, 7).detail_is(255)},
      {"bits_without_data", term().hex("4D 00000000 03"), fails(Bits, 1, 7).detail_is(3)},
  };
}

Cases tag_cases() {
  Cases cases = {
      {"local_ext", term().hex("79 00"), fails_at(Errc::unsupported_tag, 1).detail_is(121)},
      {"fun_ext", term().hex("75 00000000"), fails_at(Errc::unsupported_tag, 1).detail_is(117)},
      {"atom_cache_ref", term().hex("52 00"), fails_at(Errc::unsupported_tag, 1).detail_is(82)},
      {"local_ext_in_tuple", term().hex("68 01 79 00"), fails_at(Errc::unsupported_tag, 3).detail_is(121)},
      {"version_130", from_hex("82 6101"), fails_at(Errc::bad_version, 0).detail_is(130)},
      {"version_0", from_hex("00 6101"), fails_at(Errc::bad_version, 0).detail_is(0)},
      {"no_version", from_hex("6101"), fails_at(Errc::bad_version, 0).detail_is(97)},
      {"empty_input", Bytes{}, fails_at(Errc::truncated, 0)},
      {"version_only", term(), fails_at(Errc::truncated, 1)},
      // binary_to_term/1 ignores bytes after the term; a framed protocol must not.
      {"byte_after_term", term().hex("6101 61"), fails_at(Errc::trailing_bytes, 3).detail_is(1), false},
      {"byte_after_tuple", term().hex("6801 6A 6A"), fails_at(Errc::trailing_bytes, 4), false},
  };
  // Tags no OTP release defines as a term, and those only valid elsewhere (68 the
  // distribution header, 80 compression at the top only, 131 the version byte).
  for (int t : {0, 1, 65, 68, 69, 71, 78, 80, 87, 122, 131, 255})
    cases.push_back({"unknown_tag_" + std::to_string(t), term().hex("68 01").u8(static_cast<std::uint8_t>(t)).hex("0000"),
                     fails_at(Errc::unknown_tag, 3).detail_is(static_cast<std::uint64_t>(t))});
  return cases;
}

Cases node_and_reference_cases() {
  return {
      {"newer_reference_of_6_words", term().hex("5A 0006 7701 61 00000000").repeat("00000001", 6),
       fails(Errc::bad_reference, 1, 4).detail_is(6)},
      {"new_reference_of_6_words", term().hex("72 0006 7701 61 00").repeat("00000001", 6),
       fails(Errc::bad_reference, 1, 4).detail_is(6)},
      // OTP 25 reads a reference of no words, though no node makes one; we refuse it.
      {"newer_reference_of_no_words", term().hex("5A 0000 640001 61 00000000"),
       fails(Errc::bad_reference, 1, 4).detail_is(0), false},
      {"newer_reference_of_65535_words", term().hex("5A FFFF 7701 61 00000000").repeat("00", 64),
       fails(Errc::bad_reference, 1, 4).detail_is(65535)},
      {"reference_node_is_integer", term().hex("5A 0001 6101 00000000 00000001"), fails(Errc::bad_node, 1, 6)},
      {"pid_node_is_integer", term().hex("58 6101 00000001 00000000 00000000"), fails(Errc::bad_node, 1, 4)},
      {"port_node_is_tuple", term().hex("59 6800 00000001 00000000"), fails(Errc::bad_node, 1, 4)},
      {"v4_port_node_is_nil", term().hex("78 6A 0000000000000001 00000000"), fails(Errc::bad_node, 1, 3)},
  };
}

// NEW_FUN_EXT of fun() -> X end with X = {7, x} (OTP 25), 81 bytes. Offsets: 2 Size (79),
// 27 NumFree, 31 Module tag, 37 OldIndex tag, 44 Pid tag, 73 the free variable.
Bytes otp_closure() {
  return from_hex(
      "83700000004F009D4B0097D9E2F8415ADFE26486B9F851000000000000000164000376656361006204EA58045864000D6E6F"
      "6E6F6465406E6F686F73740000000900000000000000006802610764000178");
}

Cases fun_cases() {
  const Bytes fun = otp_closure();
  const Bytes body(fun.begin() + 1, fun.end());  // without the version byte
  constexpr Errc Fun = Errc::bad_fun;
  // OTP 25 does not check the Size field of NEW_FUN_EXT at all; we hold it to the bytes.
  constexpr bool kErlangChecksSize = false;
  return {
      {"fun_size_one_short", patched(fun, 2, from_hex("0000004E")), fails(Fun, 1, 81), kErlangChecksSize},
      {"fun_size_one_long", term().hex("6802").bytes(patched(body, 1, from_hex("00000050"))).u8(106),
       fails(Fun, 3, 83), kErlangChecksSize},
      // A size that cannot even hold itself does not add up; it does not exceed the input.
      {"fun_size_zero", patched(fun, 2, from_hex("00000000")), fails(Fun, 1, 6), kErlangChecksSize},
      {"fun_size_three", patched(fun, 2, from_hex("00000003")), fails(Fun, 1, 6), kErlangChecksSize},
      {"fun_free_count_4G", patched(fun, 27, from_hex("FFFFFFFF")), fails(Errc::length_exceeds_input, 1, 81)},
      {"fun_module_is_integer", patched(fun, 31, from_hex("61")), fails(Errc::bad_node, 1, 32)},
      {"fun_old_index_is_nil", patched(fun, 37, from_hex("6A")), fails(Fun, 1, 38)},
      {"fun_pid_is_integer", patched(fun, 44, from_hex("61")), fails(Fun, 1, 45)},
      {"export_module_is_integer", term().hex("71 6101 640003 6D6170 6102"), fails(Errc::bad_node, 1, 3)},
  };
}

// Maps that hold a key twice, under any of its encodings. Erlang compares keys with =:=,
// and OTP 25 has 0.0 =:= -0.0.
Cases duplicate_key_cases() {
  constexpr Errc Dup = Errc::duplicate_map_key;
  auto map2 = [](std::string_view k1, std::string_view k2) -> Bytes {
    return term().hex("74 00000002").hex(k1).hex("6101").hex(k2).hex("6102");
  };
  Wire hash_map = term().hex("74 00000022");  // 34 pairs: keys 0..32, then 0 again
  for (int k = 0; k <= 32; ++k) hash_map.u8(97).u8(static_cast<std::uint8_t>(k)).hex("6A");
  hash_map.hex("6100 6A");
  Cases cases = {
      {"same_small_integer", map2("6101", "6101"), {}},
      {"small_integer_and_integer_ext", map2("6101", "62 00000001"), {}},
      {"small_integer_and_small_big", map2("6101", "6E 01 00 01"), {}},
      {"atom_ext_and_small_atom_utf8", map2("64 0001 61", "77 01 61"), {}},
      {"plus_and_minus_zero", map2("46 0000000000000000", "46 8000000000000000"), {}},
      {"old_and_new_float", term().hex("74 00000002 63").float_text("1.5").hex("6A 46 3FF8000000000000 6A"), {}},
      {"string_and_list", map2("6B 0002 0102", "6C 00000002 6101 6102 6A"), {}},
      {"empty_list_ext_and_nil", map2("6C 00000000 6A", "6A"), {}},
      {"binary_and_eight_bit_bit_binary", map2("6D 00000001 AB", "4D 00000001 08 AB"), {}},
      {"hash_map_of_34_pairs", std::move(hash_map), {}},
      {"in_a_nested_map", term().hex("6802 6A 74 00000002 6101 6A 6101 6A"), {}},
  };
  for (auto& c : cases) {
    c.name = "duplicate_key_" + c.name;
    c.want = fails(Dup, 1, c.input.size());
  }
  return cases;
}

Cases all_hostile_cases() {
  Cases all;
  for (auto make : {oversized_length_cases, compression_cases, utf8_cases, atom_length_cases, float_cases,
                    bit_count_cases, tag_cases, node_and_reference_cases, fun_cases, duplicate_key_cases})
    for (auto& c : make()) all.push_back(std::move(c));
  return all;
}

class Hostile : public testing::TestWithParam<HostileCase> {};

TEST_P(Hostile, FailsWithItsTypedErrorWithinBudget) {
  const HostileCase& c = GetParam();
  EXPECT_TRUE(fails_as(c.input, c.want));
}

INSTANTIATE_TEST_SUITE_P(Inputs, Hostile, testing::ValuesIn(all_hostile_cases()),
                         [](const testing::TestParamInfo<HostileCase>& param) { return param.param.name; });

TEST(HostileTable, NamesAreUnique) {
  std::set<std::string> names;
  for (const auto& c : all_hostile_cases()) EXPECT_TRUE(names.insert(c.name).second) << c.name;
}

// ---- Declared counts and memory ----------------------------------------------------------

// Adds up the children every container declares: what a builder would reserve.
struct DeclaredChildren : etf::IgnoreTerm {
  std::uint64_t total = 0;
  void begin_list(std::uint32_t n) { total += std::uint64_t{n} + 1; }
  void begin_tuple(std::uint32_t n) { total += n; }
  void begin_map(std::uint32_t n) { total += 2 * std::uint64_t{n}; }
  void begin_fun(const etf::FunView& f) { total += f.free_count; }
};
static_assert(etf::Visitor<DeclaredChildren>);

// Each child takes a byte at least, so a decoder that keeps the bytes owed by open
// containers in its checks never lets the declared children add up past the input size,
// whatever the input and whether or not it decodes.
TEST(DeclaredCounts, NeverAddUpPastTheInputSize) {
  std::vector<std::pair<std::string, Bytes>> inputs;
  for (const char* filler : {"62 00000000", "46 0000000000000000", "58 7701 61 00000001 00000000 00000000"})
    for (std::uint8_t container : {etf::tag::large_tuple, etf::tag::list, etf::tag::map})
      inputs.emplace_back(std::string(filler) + " in " + std::to_string(container),
                          counts_behind_fixed_field(50, filler, container));
  for (const auto& v : all_valid_encodings()) inputs.emplace_back(v.name, v.bytes);
  for (const auto& [name, input] : inputs) {
    DeclaredChildren counter;
    (void)etf::decode(input, counter);
    EXPECT_LE(counter.total, input.size()) << name << ": " << to_hex(input, 48);
  }
}

// The same input at scale: 20 KB whose 4,000 levels could each reserve as much as the input.
TEST(Memory, BuilderReservesInProportionToTheInput) {
  const Bytes input = counts_behind_fixed_field(4000);
  EXPECT_TRUE(fails_as(input, fails(Errc::length_exceeds_input, 1, 16).or_as(Errc::truncated)));
}

// ---- Depth ---------------------------------------------------------------------------------

constexpr std::size_t kMillion = 1'000'000;

Bytes nested_tuples(std::size_t depth, std::string_view innermost = "6A") {
  return term().repeat("6801", depth).hex(innermost);
}
Bytes nested_lists(std::size_t depth, std::string_view innermost = "6A") {
  return term().repeat("6C00000001", depth).hex(innermost).repeat("6A", depth);
}
// [1 | [1 | [1 | ...]]] written as nested one-element LIST_EXTs, each the tail of the last.
Bytes tail_chained_list(std::size_t links) { return term().repeat("6C00000001 6101", links).hex("6A"); }

struct DepthCase {
  const char* name;
  Bytes (*make)(std::size_t);
  std::size_t header_size;  // bytes of each level before the next level starts
};

const DepthCase kDepthCases[] = {
    {"nested_tuples", [](std::size_t d) { return nested_tuples(d); }, 2},
    {"nested_lists", [](std::size_t d) { return nested_lists(d); }, 5},
    {"tail_chained_list", tail_chained_list, 7},
};

// With the default limits (100,000 open containers) the container that would be the
// 100,001st open one fails, reported between its tag and the end of its header.
TEST(Depth, AMillionLevelsStopAtTheDefaultLimitWithinBudget) {
  const std::size_t limit = etf::Limits{}.max_depth;
  for (const auto& c : kDepthCases) {
    SCOPED_TRACE(c.name);
    const Bytes input = c.make(kMillion);
    const std::size_t tag = 1 + limit * c.header_size;
    EXPECT_TRUE(fails_as(input, fails(Errc::depth_limit, tag, tag + c.header_size).detail_is(limit)));
  }
}

bool decodes(std::span<const std::uint8_t> input, const etf::DecodeOptions& options) {
  etf::TermBuilder builder;
  return static_cast<bool>(etf::decode(input, builder, options));
}

TEST(Depth, EveryKindOfContainerCountsAndEmptyOnesDoNot) {
  etf::DecodeOptions one_level;
  one_level.limits.max_depth = 1;
  const Bytes closure = otp_closure();
  // Each with the offsets of the inner container's tag and the end of its header.
  const std::pair<Bytes, std::size_t> too_deep[] = {
      {term().hex("6801 6801 6A"), 5},
      {term().hex("6801 6C00000001 6A 6A"), 8},
      {term().hex("6801 74 00000001 6A 6A"), 8},
      {term().hex("6C00000001 6801 6A 6A"), 8},
      {term().hex("6801").bytes(std::span(closure).subspan(1)), 75},
  };
  for (const auto& [input, header_end] : too_deep)
    EXPECT_TRUE(fails_as(input, fails(Errc::depth_limit, 3, header_end).detail_is(1), one_level));
  for (const Bytes& input : {Bytes(term().hex("6801 6800")), Bytes(term().hex("6801 74 00000000")),
                             Bytes(term().hex("6801 6A")), Bytes(term().hex("6801 6B 0001 07"))}) {
    EXPECT_TRUE(decodes(input, one_level)) << to_hex(input);
  }
  etf::DecodeOptions flat;
  flat.limits.max_depth = 0;
  EXPECT_TRUE(fails_as(term().hex("6801 6A"), fails(Errc::depth_limit, 1, 3).detail_is(0), flat));
  EXPECT_TRUE(decodes(term().hex("6800"), flat));
}

// With the limit raised past it, a million-deep term decodes, and every operation on the
// Term copes, on a stack far too small for recursion: copy, compare (equal, and unequal at
// the innermost leaf), encode (byte-identical), print, destroy.
void check_million_deep(Bytes (*make)(std::size_t, std::string_view), char open, char close) {
  const Bytes input = make(kMillion, "6A");
  const Bytes smaller = make(kMillion, "6101");  // innermost [] replaced by 1, and 1 < []
  run_on_small_stack(4 << 20, [&] {
    etf::DecodeOptions deep;
    deep.limits.max_depth = 2 * kMillion;
    std::optional<etf::Term> original(etf::decode_term(input, deep));
    {
      const etf::Term copy = *original;
      EXPECT_TRUE(copy == *original);
      const etf::Term other = etf::decode_term(smaller, deep);
      EXPECT_TRUE((other <=> *original) == std::strong_ordering::less);
      EXPECT_TRUE((*original <=> other) == std::strong_ordering::greater);
    }
    EXPECT_TRUE(etf::encode(*original) == input);
    const std::string text = original->to_string();
    EXPECT_EQ(text, std::string(kMillion, open) + "[]" + std::string(kMillion, close));
    original.reset();  // destruction, inside the small stack too
  });
}

TEST(Depth, AMillionNestedTuplesRoundTripWithoutRecursion) { check_million_deep(nested_tuples, '{', '}'); }
TEST(Depth, AMillionNestedListsRoundTripWithoutRecursion) { check_million_deep(nested_lists, '[', ']'); }

// A chain of tails is one list in Erlang ([1 | [2]] is [1, 2]); folding it must cost time
// and memory linear in the input (the meter counts re-allocation as it happens).
TEST(Depth, ATailChainIsOneFlatListBuiltInLinearTime) {
  constexpr std::size_t kLinks = 99'999;
  const Bytes input = tail_chained_list(kLinks);
  const Outcome outcome = decode_metered(input);
  ASSERT_FALSE(outcome.over_budget) << outcome.allocated << " bytes requested for a " << input.size()
                                    << "-byte input";
  ASSERT_TRUE(outcome.result) << describe(*outcome.result.error);
  EXPECT_TRUE(outcome.term == etf::Term::list(std::vector<etf::Term>(kLinks, etf::Term::integer(1))));
  // OTP 25 writes a list of more than 65535 small integers as LIST_EXT.
  EXPECT_TRUE(etf::encode(outcome.term) == Bytes(term().u8(108).u32(kLinks).repeat("6101", kLinks).u8(106)));
}

// ---- Compression bombs ---------------------------------------------------------------------

constexpr std::uint64_t kGigabyteRuns = (std::uint64_t{1} << 30) / 258;  // one zero + this x 258 zeros
const std::uint8_t kZero[] = {0};

Bytes zero_bomb(std::uint32_t declared_size) {
  return term().u8(etf::tag::compressed).u32(declared_size).bytes(zlib_stream(kZero, kGigabyteRuns));
}
constexpr auto kGigabyte = static_cast<std::uint32_t>(1 + 258 * kGigabyteRuns);

// The helper itself, so that a failure below is the decoder's and not the test's.
TEST(Compression, HandMadeStreamsInflate) {
  // A binary of 1 + 2 x 258 = 517 zeros: its header as literals, a zero literal, two runs.
  const std::uint8_t header[] = {109, 0, 0, 2, 5, 0};
  const Bytes input = term().u8(80).u32(5 + 517).bytes(zlib_stream(header, 2));
  const Outcome outcome = decode_metered(input);
  ASSERT_TRUE(outcome.result) << describe(*outcome.result.error);
  EXPECT_TRUE(outcome.term == etf::Term::binary(std::string(517, '\0')));
}

// A gigabyte of zeros in 6.7 MB, declaring its true size: refused before inflating or
// allocating anything.
TEST(Compression, AnHonestGigabyteBombIsRefusedBeforeAllocating) {
  const Bytes bomb = zero_bomb(kGigabyte);
  ASSERT_LT(bomb.size(), 7u << 20);
  const Outcome outcome = decode_metered(bomb, {}, kBudgetSlack);
  EXPECT_TRUE(fails_as(bomb, outcome, fails(Errc::inflated_size_limit, 2, 6).detail_is(kGigabyte)));
}

// The same gigabyte declaring a megabyte: inflation stops at the declared size, and no
// more than that is allocated.
TEST(Compression, AGigabyteBombDeclaringAMegabyteStopsThere) {
  const Bytes bomb = zero_bomb(1 << 20);
  const Outcome outcome = decode_metered(bomb, {}, (1 << 20) + kBudgetSlack);
  EXPECT_TRUE(fails_as(bomb, outcome, fails(Errc::bad_compression, 2, bomb.size())));
}

// ---- Inputs that decode, and what they normalise to ----------------------------------------

struct Normalisation {
  std::string name;
  Bytes input;
  Bytes otp;  // term_to_binary(binary_to_term(input)) on OTP 25
};

std::vector<Normalisation> normalisations() {
  const std::uint8_t kFive[] = {97, 5};
  return {
      {"bit_binary_of_8_bits_is_a_binary", from_hex("834D0000000108AB"), from_hex("836D00000001AB")},
      {"unused_bits_are_masked", from_hex("834D0000000103FF"), from_hex("834D0000000103E0")},
      {"empty_bit_binary", from_hex("834D0000000000"), from_hex("836D00000000")},
      {"empty_list_ext_is_its_tail_nil", from_hex("836C000000006A"), from_hex("836A")},
      {"empty_list_ext_is_its_tail_integer", from_hex("836C0000000061FF"), from_hex("8361FF")},
      {"empty_list_ext_twice", from_hex("836C000000006C000000006A"), from_hex("836A")},
      {"large_big_of_no_digits", from_hex("836F0000000000"), from_hex("836100")},
      {"big_with_high_zero_digit", from_hex("836E0900FFFFFFFFFFFFFFFF00"), from_hex("836E0800FFFFFFFFFFFFFFFF")},
      {"big_that_fits_32_bits", from_hex("836E040101000000"), from_hex("8362FFFFFFFF")},
      {"int64_min_stays_big", from_hex("836E08010000000000000080"), from_hex("836E08010000000000000080")},
      {"small_atom_latin1", from_hex("8373016D"), from_hex("836400016D")},
      {"small_atom_latin1_high", from_hex("837301E9"), from_hex("83640001E9")},
      {"small_atom_utf8_ascii", from_hex("83770161"), from_hex("8364000161")},
      {"atom_utf8_ascii", from_hex("837600026162"), from_hex("836400026162")},
      {"empty_string_ext", from_hex("836B0000"), from_hex("836A")},
      {"list_of_bytes_is_a_string", from_hex("836C00000002610161026A"), from_hex("836B00020102")},
      {"tail_chain", from_hex("836C0000000161016C0000000161026A"), from_hex("836B00020102")},
      {"tail_chain_of_nils", from_hex("836C000000016A6C000000016A6A"), from_hex("836C000000026A6A6A")},
      {"map_keys_sorted", from_hex("837400000002 6102 64000162 6101 64000161"),
       from_hex("837400000002610164000161610264000162")},
      {"one_and_one_point_zero_are_two_keys", from_hex("837400000002 463FF0000000000000 6101 6101 6102"),
       from_hex("837400000002 6101 6102 463FF0000000000000 6101")},
      {"old_pid", from_hex("8367640001610000000100000002 03"), from_hex("835864000161000000010000000200000003")},
      {"old_port", from_hex("836664000161 00000001 03"), from_hex("8359640001610000000100000003")},
      {"old_reference", from_hex("8365640001610000000103"), from_hex("835A0001640001610000000300000001")},
      {"new_reference", from_hex("83720001640001 61 03 00000001"), from_hex("835A0001640001610000000300000001")},
      {"v4_port", from_hex("8378640001 61 0000000100000002 00000003"),
       from_hex("8378640001 61 0000000100000002 00000003")},
      {"old_float", from_hex("8363312E3530303030303030303030303030303030303030652B30300000000000"),
       from_hex("83463FF8000000000000")},
      {"old_float_ignores_bytes_after_nul", term().u8(99).text("1.5").u8(0).text("zz").repeat("00", 25),
       from_hex("83463FF8000000000000")},
      {"minus_zero_kept", from_hex("83468000000000000000"), from_hex("83468000000000000000")},
      {"atom_of_255_four_byte_chars", term().hex("76 03FC").repeat("F09F9880", 255),
       term().hex("76 03FC").repeat("F09F9880", 255)},
      {"atom_of_255_latin1_chars", term().hex("64 00FF").repeat("E9", 255), term().hex("64 00FF").repeat("E9", 255)},
      {"small_atom_utf8_of_255_chars", term().hex("77 FF").repeat("61", 255), term().hex("64 00FF").repeat("61", 255)},
      {"hand_made_zlib_stream", compressed_term(kFive), from_hex("836105")},
      // OTP 25 reads an INTEGER_EXT export arity too, though no OTP release writes one.
      {"export_arity_as_integer_ext", from_hex("83716400056C69737473640003 6D6170 62 00000002"),
       from_hex("83716400056C69737473640003 6D6170 6102")},
  };
}

TEST(Accepted, UnusualEncodingsNormaliseAsOtpDoes) {
  for (const auto& n : normalisations()) {
    SCOPED_TRACE(n.name);
    EXPECT_TRUE(normalises_to(n.input, n.otp));
  }
}

TEST(Accepted, TrailingBytesWhenTheOptionAllowsThem) {
  etf::DecodeOptions lenient;
  lenient.allow_trailing_bytes = true;
  etf::TermBuilder builder;
  const Bytes input = term().hex("6101 61 FF");
  const etf::DecodeResult result = etf::decode(input, builder, lenient);
  ASSERT_TRUE(result) << describe(*result.error);
  EXPECT_EQ(result.end, 3u);
  EXPECT_TRUE(builder.take() == etf::Term::integer(1));
}

TEST(Limits, InputSizeIsCheckedFirst) {
  etf::DecodeOptions small;
  small.limits.max_input_size = 4;
  EXPECT_TRUE(fails_as(term().hex("6D 00000000"), fails_at(Errc::input_size_limit, 0).detail_is(4), small));
  EXPECT_TRUE(fails_as(term().hex("62 00000001"), fails_at(Errc::input_size_limit, 0), small));
}

// ---- Hostile text ----------------------------------------------------------------------------
// parse_term's contract is a Term or a ParseError, whatever the text: no other exception,
// no crash, no recursion deeper than its max_depth.

// Text in which parse_term must fail with ParseError (and nothing else).
std::vector<std::pair<std::string, std::string>> hostile_texts() {
  std::vector<std::pair<std::string, std::string>> texts = {
      {"char_lead_byte_then_end_in_list", "[$\xF0]"},
      {"char_lead_byte_then_end", "$\xF0"},
      {"char_cut_three_byte_form_in_tuple", "{$\xE2\x82}"},
      {"char_cut_in_map", "#{$\xF0\x9F => 1}"},
      {"dollar_at_end", "$"},
      {"unterminated_string", "\"abc"},
      {"unterminated_atom", "'abc"},
      {"unterminated_binary", "<<1,2"},
      {"base_out_of_range", "37#1"},
      {"base_without_digits", "16#"},
      {"atom_of_256_chars", std::string(256, 'a')},
      {"duplicate_map_key", "#{1 => a, 1 => b}"},
      {"nan_float", "nan"},
      // The decoder refuses a reference of no id words, so the parser must not make one.
      {"reference_of_no_words", "#Ref<'a@h'.14>"},
  };
  return texts;
}

// Everything here is rejected, except "nan", which is an atom (no float literal).
TEST(HostileText, OnlyParseErrorEscapes) {
  for (const auto& [name, text] : hostile_texts()) {
    SCOPED_TRACE(name);
    try {
      const etf::Term t = etf::parse_term(text);
      EXPECT_TRUE(name == "nan_float") << "parsed as " << t.to_string().substr(0, 100);
    } catch (const etf::ParseError& e) {
      EXPECT_LE(e.column(), text.size() + 1) << e.what();
    } catch (const std::exception& e) {
      ADD_FAILURE() << "threw " << typeid(e).name() << ": " << e.what();
    }
  }
}

std::string repeated(std::string_view unit, std::size_t times) {
  std::string out;
  out.reserve(unit.size() * times);
  for (std::size_t i = 0; i < times; ++i) out += unit;
  return out;
}

// The parser keeps its open brackets on the heap: a hundred thousand of them must end in a
// ParseError (unclosed, or past max_depth) on a 1 MiB stack, sanitizers included. Each text runs
// in a child process, so that a stack overflow fails this test rather than the suite.
TEST(HostileText, DeepNestingFailsWithinAOneMegabyteStack) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const std::pair<const char*, const char*> kinds[] = {
      {"lists", "["}, {"list_tails", "[1|"}, {"tuples", "{"}, {"map_values", "#{1=>"}, {"map_keys", "#{"}};
  for (const auto& [name, unit] : kinds) {
    SCOPED_TRACE(name);
    const std::string text = repeated(unit, 100'000);
    EXPECT_EXIT(
        {
          bool rejected = false;
          run_on_small_stack(1 << 20, [&] {
            try {
              (void)etf::parse_term(text);
            } catch (const etf::ParseError&) {
              rejected = true;
            }
          });
          std::exit(rejected ? 0 : 1);
        },
        testing::ExitedWithCode(0), "");
  }
}

// Atoms are checked for UTF-8 already; strings and $c characters should be too, rather
// than turning stray bytes into code points (a lone F5 into 5, ED A0 80 into the surrogate
// 55296, F7 BF BF BF into 2097151).
TEST(HostileText, InvalidUtf8IsRejectedInStringsAndCharacters) {
  for (const char* text : {"\"\xF5\"", "\"\xED\xA0\x80\"", "$\xC0\x80", "$\xED\xA0\x80", "$\xF7\xBF\xBF\xBF",
                           "$\x80"}) {
    EXPECT_THROW((void)etf::parse_term(text), etf::ParseError) << testing::PrintToString(std::string(text));
  }
}

// ---- Erlang agrees -------------------------------------------------------------------------
// One escript run over every hostile input (and every truncated prefix) that should make
// binary_to_term/1 raise badarg, and every normalisation. Skipped without erl on PATH.

constexpr const char* kErlangChecker = R"(#!/usr/bin/env escript
%% Each line: "R <hex>" answers badarg | accepted, "N <hex>" answers the hex of
%% term_to_binary(binary_to_term(Bytes)) | badarg.
main([Path]) ->
    {ok, Data} = file:read_file(Path),
    Lines = binary:split(Data, <<"\n">>, [global, trim_all]),
    [io:put_chars([answer(L), $\n]) || L <- Lines].
answer(<<"R ", Hex/binary>>) ->
    try binary_to_term(binary:decode_hex(Hex)) of _ -> <<"accepted">>
    catch error:badarg -> <<"badarg">> end;
answer(<<"N ", Hex/binary>>) ->
    try binary:encode_hex(term_to_binary(binary_to_term(binary:decode_hex(Hex))))
    catch error:badarg -> <<"badarg">> end.
)";

TEST(ErlangAgrees, RejectsWhatWeRejectAndNormalisesAlike) {
  ASSERT_TRUE(on_path("escript")) << "escript is missing (erlang-nox): run scripts/setup.sh";
  struct Question {
    std::string name;
    std::string line;
    std::string want;
  };
  std::vector<Question> questions;
  for (const auto& c : all_hostile_cases())
    if (c.erlang_rejects) questions.push_back({c.name, "R " + to_hex(c.input), "badarg"});
  for (const auto& v : all_valid_encodings())
    for (std::size_t cut = 0; cut < v.bytes.size(); ++cut)
      questions.push_back({v.name + " cut at " + std::to_string(cut),
                           "R " + to_hex(std::span(v.bytes.data(), cut)), "badarg"});
  for (const auto& n : normalisations()) questions.push_back({n.name, "N " + to_hex(n.input), to_hex(n.otp)});
  std::vector<std::string> lines;
  for (const auto& q : questions) lines.push_back(q.line);
  const std::vector<std::string> answers = ask_erlang(kErlangChecker, lines);
  ASSERT_EQ(answers.size(), questions.size()) << (answers.empty() ? "" : answers.front());
  for (std::size_t i = 0; i < questions.size(); ++i)
    EXPECT_EQ(answers[i], questions[i].want) << questions[i].name << ": " << questions[i].line.substr(0, 120);
}

}  // namespace
