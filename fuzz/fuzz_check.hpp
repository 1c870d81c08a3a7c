// What the fuzz targets share: checking a property and, when it fails, saying which one
// and showing the bytes before aborting (libFuzzer then saves the input as a crash-*).
#pragma once

#include <camlbeam/etf/limits.hpp>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string_view>

namespace camlbeam::fuzz {

namespace etf = camlbeam::etf;

inline void dump(const char* label, std::span<const std::uint8_t> bytes) {
  std::fprintf(stderr, "  %s (%zu bytes):", label, bytes.size());
  for (std::size_t i = 0; i < bytes.size() && i < 512; ++i) std::fprintf(stderr, " %02X", bytes[i]);
  std::fprintf(stderr, bytes.size() > 512 ? " ...\n" : "\n");
}

inline std::span<const std::uint8_t> as_bytes(std::string_view s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

// Aborts with the property that failed and up to two byte strings that show it.
inline void require(bool holds, const char* property, std::span<const std::uint8_t> first = {},
                    std::span<const std::uint8_t> second = {}) {
  if (holds) return;
  std::fprintf(stderr, "\nproperty violated: %s\n", property);
  if (!first.empty()) dump("first", first);
  if (!second.empty()) dump("second", second);
  std::abort();
}

// The decoder's limits in the fuzzers: tight enough to keep one run cheap (a compressed
// input inflates to 1 MiB at most), loose enough to reach every path.
inline etf::DecodeOptions decode_options() {
  etf::DecodeOptions options;
  options.limits.max_depth = 512;
  options.limits.max_inflated_size = std::size_t{1} << 20;
  return options;
}

}  // namespace camlbeam::fuzz
