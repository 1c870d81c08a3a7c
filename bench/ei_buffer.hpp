// libei's growable buffer, owned: shared by the benchmarks' libei baselines.
#pragma once

#include <ei.h>

#include <cstddef>
#include <cstdint>
#include <new>
#include <span>

namespace camlbeam::bench {

// An ei_x_buff that frees itself.
struct EiBuffer {
  ei_x_buff x{};
  EiBuffer() {
    if (ei_x_new(&x) < 0) throw std::bad_alloc();
  }
  ~EiBuffer() { ei_x_free(&x); }
  EiBuffer(const EiBuffer&) = delete;
  EiBuffer& operator=(const EiBuffer&) = delete;
};

// The bytes an ei_x_buff holds so far.
inline std::span<const std::uint8_t> ei_span(const ei_x_buff& x) {
  return {reinterpret_cast<const std::uint8_t*>(x.buff), static_cast<std::size_t>(x.index)};
}

}  // namespace camlbeam::bench
