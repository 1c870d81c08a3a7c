// Placeholder until the HAMT order lands: sorted order (valid ETF, not yet byte-identical
// to OTP for maps over 32 keys).
#include <camlbeam/etf/map_order.hpp>
#include <camlbeam/etf/term.hpp>

#include <numeric>

namespace camlbeam::etf {

std::vector<std::uint32_t> hashmap_encoding_order(std::span<const Term> flat) {
  std::vector<std::uint32_t> order(flat.size() / 2);
  std::iota(order.begin(), order.end(), 0u);
  return order;
}

}  // namespace camlbeam::etf
