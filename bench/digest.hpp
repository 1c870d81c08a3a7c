// What "consuming every value" means in this benchmark, shared by all three decoders.
//
// A decode benchmark whose result nobody reads measures nothing (the compiler may drop the
// work, and a lazy decoder would win by skipping it), so each decoder feeds a DigestVisitor
// that folds every value into a few numbers, the way an application would read them into
// locals. The digest is also the smoke test's proof that ours, libei and Erlang read the
// same payload bytes as the same values: etf_bench.escript computes the same numbers from
// binary_to_term/1 and run.sh compares the lines.
//
// The work per value is deliberately small and equal for every decoder: an integer or a
// float is summed, a binary contributes its size and its first and last byte (enough to
// prove the pointer and length are right without turning a 1 MB binary into a memory-
// bandwidth test), an atom its byte length.
#pragma once

#include <camlbeam/etf/visitor.hpp>

#include <algorithm>
#include <bit>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace camlbeam::bench {

struct Digest {
  std::uint64_t terms = 0;         // every term, containers and list tails included
  std::uint64_t int_sum = 0;       // integers summed modulo 2^64
  double float_sum = 0;            // in document order, so the bits are reproducible
  std::uint64_t binary_bytes = 0;  // byte_size of every binary and bitstring
  std::uint64_t binary_edges = 0;  // first + last byte of every non-empty binary
  std::uint64_t atom_bytes = 0;    // UTF-8 length of every atom
  std::uint32_t max_depth = 0;     // containers open at once, at the deepest point

  friend bool operator==(const Digest&, const Digest&) = default;

  // The format etf_bench.escript's `digest` command prints, field for field.
  std::string line() const {
    return "terms=" + std::to_string(terms) + " ints=" + std::to_string(int_sum) +
           " floats=" + std::to_string(std::bit_cast<std::uint64_t>(float_sum)) +
           " binary=" + std::to_string(binary_bytes) + " edges=" + std::to_string(binary_edges) +
           " atoms=" + std::to_string(atom_bytes) + " depth=" + std::to_string(max_depth);
  }
};

class DigestVisitor {
 public:
  void integer(std::int64_t v) noexcept {
    ++d_.terms;
    d_.int_sum += static_cast<std::uint64_t>(v);
  }
  // Only the low 64 bits take part, which is what Erlang's `band (1 bsl 64 - 1)` keeps.
  void big_integer(bool negative, std::span<const std::uint8_t> magnitude) noexcept {
    std::uint64_t low = 0;
    for (std::size_t i = std::min<std::size_t>(magnitude.size(), 8); i-- > 0;) low = (low << 8) | magnitude[i];
    ++d_.terms;
    d_.int_sum += negative ? 0 - low : low;
  }
  void float64(double v) noexcept {
    ++d_.terms;
    d_.float_sum += v;
  }
  void atom(std::string_view name) noexcept {
    ++d_.terms;
    d_.atom_bytes += name.size();
  }
  void binary(std::span<const std::uint8_t> bytes) noexcept {
    ++d_.terms;
    d_.binary_bytes += bytes.size();
    if (!bytes.empty()) d_.binary_edges += std::uint64_t{bytes.front()} + bytes.back();
  }
  void bitstring(std::span<const std::uint8_t> bytes, std::uint8_t) noexcept {
    ++d_.terms;
    d_.binary_bytes += bytes.size();
  }
  void nil() noexcept { ++d_.terms; }
  // STRING_EXT is a list of small integers to Erlang: the list, its elements, its [] tail.
  void string(std::span<const std::uint8_t> bytes) noexcept {
    d_.terms += bytes.size() + 2;
    for (std::uint8_t b : bytes) d_.int_sum += b;
    d_.max_depth = std::max(d_.max_depth, depth_ + 1);
  }
  void begin_list(std::uint32_t) noexcept { open(); }
  void end_list() noexcept { --depth_; }
  void begin_tuple(std::uint32_t) noexcept { open(); }
  void end_tuple() noexcept { --depth_; }
  void begin_map(std::uint32_t) noexcept { open(); }
  void end_map() noexcept { --depth_; }
  // None of the payloads holds these; they count as one term each, as in the escript.
  void pid(const etf::PidView&) noexcept { ++d_.terms; }
  void port(const etf::PortView&) noexcept { ++d_.terms; }
  void reference(const etf::ReferenceView&) noexcept { ++d_.terms; }
  void begin_fun(const etf::FunView&) noexcept { open(); }
  void end_fun() noexcept { --depth_; }
  void export_fun(std::string_view, std::string_view, std::uint8_t) noexcept { ++d_.terms; }

  const Digest& digest() const noexcept { return d_; }

 private:
  void open() noexcept {
    ++d_.terms;
    d_.max_depth = std::max(d_.max_depth, ++depth_);
  }

  Digest d_;
  std::uint32_t depth_ = 0;
};

static_assert(etf::Visitor<DigestVisitor>);

}  // namespace camlbeam::bench
