// The order in which OTP writes map entries. A map of up to 32 keys is a "flatmap" whose
// keys are kept sorted in exact term order, and term_to_binary writes them in that order.
// A larger map is a HAMT keyed by the runtime's internal hash, and term_to_binary writes it
// in the order of its tree walk; reproducing that order is what makes encode() of a large
// map byte-identical to term_to_binary.
//
// The computation is detail/map_hash.hpp, a template over a view of terms: this function
// is its etf::Term instance, and cpp/conv has one over OCaml values, which orders a reply's
// maps with no tree built.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace camlbeam::etf {

class Term;

inline constexpr std::size_t flatmap_max_keys = 32;

// For a map given as flattened sorted entries (key, value, key, value ...) with more than
// flatmap_max_keys keys: the entry indices (0..n-1) in the order OTP 25 encodes them.
// Throws EncodeError for a map OTP 25 cannot decode: keys that its hash cannot tell apart
// at any depth (references equal in their first three words).
std::vector<std::uint32_t> hashmap_encoding_order(std::span<const Term> flat_sorted_entries);

}  // namespace camlbeam::etf
