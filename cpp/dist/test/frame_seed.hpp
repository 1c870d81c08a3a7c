// The input format of fuzz/dist_frame_fuzzer.cpp, written by the tests that record seeds:
// byte 0 says what the connection negotiated (FrameSeed bits), then frame bodies, each
// after a 2-byte big-endian length. Seeds are written only when $CAMLBEAM_DIST_FRAME_CORPUS
// names a directory (the committed corpus, fuzz/corpus/dist_frame, came from these).
#pragma once

#include <camlbeam/dist/flags.hpp>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <span>
#include <string>
#include <vector>

namespace camlbeam::dist::frame_seed {

inline constexpr std::uint8_t header_bit = 1;      // DIST_HDR_ATOM_CACHE
inline constexpr std::uint8_t fragments_bit = 2;   // FRAGMENTS
inline constexpr std::uint8_t latin1_bit = 4;      // no UTF8_ATOMS: Latin-1 atom texts
inline constexpr std::uint8_t small_limits_bit = 8;  // the fuzzer's tight MessageReader limits

inline std::uint8_t selector_of(std::uint64_t flags) {
  return static_cast<std::uint8_t>(((flags & flag::dist_hdr_atom_cache) != 0 ? header_bit : 0) |
                                   ((flags & flag::fragments) != 0 ? fragments_bit : 0) |
                                   ((flags & flag::utf8_atoms) == 0 ? latin1_bit : 0));
}

// Writes the frames that fit a 2-byte length as seed `name`, when seeds are wanted.
inline void write(const std::string& name, std::uint64_t flags, const std::vector<std::vector<std::uint8_t>>& frames) {
  const char* dir = std::getenv("CAMLBEAM_DIST_FRAME_CORPUS");
  if (dir == nullptr) return;
  std::vector<std::uint8_t> seed{selector_of(flags)};
  for (const auto& f : frames) {
    if (f.size() > 0xFFFF) continue;
    seed.push_back(static_cast<std::uint8_t>(f.size() >> 8));
    seed.push_back(static_cast<std::uint8_t>(f.size()));
    seed.insert(seed.end(), f.begin(), f.end());
  }
  std::ofstream(std::string(dir) + "/" + name, std::ios::binary)
      .write(reinterpret_cast<const char*>(seed.data()), static_cast<std::streamsize>(seed.size()));
}

}  // namespace camlbeam::dist::frame_seed
