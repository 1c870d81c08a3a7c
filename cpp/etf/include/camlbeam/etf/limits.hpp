// What the decoder accepts. The defaults take anything OTP produces in practice (Erlang
// encodes 100,000-deep terms without complaint) and refuse what only an attacker sends.
#pragma once

#include <cstddef>

namespace camlbeam::etf {

class AtomCacheRefs;  // atom_cache.hpp

struct Limits {
  std::size_t max_depth = 100'000;                 // open containers at once
  std::size_t max_input_size = std::size_t{1} << 31;   // bytes handed to the decoder
  std::size_t max_inflated_size = std::size_t{64} << 20;  // declared size of a compressed term
};

struct DecodeOptions {
  Limits limits{};
  // binary_to_term/1 ignores bytes after the term; a framed protocol should not.
  bool allow_trailing_bytes = false;
  // What ATOM_CACHE_REF means: the atoms listed by the distribution header the term came
  // after (parse_dist_header). Without them, ATOM_CACHE_REF is refused (unsupported_tag).
  const AtomCacheRefs* atom_cache_refs = nullptr;
};

// The entry points' default: a constant, not a temporary built on every call (building it
// was a few stores, read back at once, in the decode of a small term).
inline constexpr DecodeOptions default_decode_options{};

}  // namespace camlbeam::etf
