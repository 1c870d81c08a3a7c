// The distribution atom cache (erl_ext_dist, "Distribution Header"): a node sends an atom's
// text once per connection, in the header of a distribution message, and then refers to it
// by a cache index; the terms after a header name its atoms as ATOM_CACHE_REF (tag 82).
//
// Per connection, the receiving side keeps an AtomCache; per message, parse_dist_header()
// applies the header to it and lists what the header's references mean in an AtomCacheRefs,
// which the decoder resolves ATOM_CACHE_REF against (DecodeOptions::atom_cache_refs):
//
//   etf::AtomCache cache;                    // one per connection
//   etf::AtomCacheRefs refs;                 // one per message in flight
//   auto header = etf::parse_dist_header(frame, etf::AtomTextEncoding::utf8, cache, refs);
//   if (!header) drop_connection(header.error->message());
//   etf::DecodeOptions options{.atom_cache_refs = &refs};
//   auto control = etf::decode_body(frame.subspan(header.end), visitor, options, header.end);
//
// Everything here reads bytes from the network: every length is checked against the bytes
// left before it is used, and the memory held is bounded (2048 entries of at most 255
// characters per cache, 255 references per message).
#pragma once

#include <camlbeam/etf/error.hpp>

#include <array>
#include <bitset>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace camlbeam::etf {

// How a connection's headers spell atom texts: UTF-8 once both nodes have exchanged
// DFLAG_UTF8_ATOMS in the handshake (every OTP 23 or later node does), Latin-1 otherwise.
enum class AtomTextEncoding : std::uint8_t { latin1, utf8 };

// The receiving half of one connection's atom cache: 8 segments of 256 entries, written by
// the NewAtomCacheRefs of the headers that arrive and read by their CachedAtomRefs. Texts
// are kept as UTF-8, so that a Latin-1 connection converts each atom once, not per use.
class AtomCache {
 public:
  static constexpr std::size_t entries = 8 * 256;

  AtomCache() : texts_(entries) {}

  // The atom at `index` (SegmentIndex * 256 + InternalSegmentIndex); nullopt when no header
  // has written that entry yet. (The empty atom '' is an atom: hence the optional.)
  std::optional<std::string_view> find(std::size_t index) const noexcept {
    if (index >= entries || !filled_[index]) return std::nullopt;
    return std::string_view(texts_[index]);
  }
  void store(std::size_t index, std::string_view utf8_text) {
    if (index >= entries) throw std::out_of_range("AtomCache: entry past 2047");
    texts_[index].assign(utf8_text);
    filled_.set(index);
  }

 private:
  std::vector<std::string> texts_;
  std::bitset<entries> filled_;
};

// The atoms one distribution header refers to, in its order: ATOM_CACHE_REF i in the terms
// after the header is atom i here. It holds its own copy of the texts (a message names a
// few short atoms), so that it stays valid however the connection's cache changes later:
// the fragments of one message may arrive after the headers of other messages.
class AtomCacheRefs {
 public:
  static constexpr std::size_t max_refs = 255;  // 0 <= AtomCacheReferenceIndex < 255
  static constexpr std::size_t max_atom_bytes = 4 * 255;

  std::size_t size() const noexcept { return count_; }
  // Atom i as UTF-8 (valid, at most 255 characters); i < size().
  std::string_view operator[](std::size_t i) const noexcept {
    return std::string_view(text_).substr(refs_[i].offset, refs_[i].size);
  }

  void clear() noexcept {
    count_ = 0;
    text_.clear();
  }
  // Appends an atom (copied).
  void push_back(std::string_view utf8_text) {
    if (count_ == max_refs || utf8_text.size() > max_atom_bytes)
      throw std::length_error("AtomCacheRefs: full, or not an atom");
    refs_[count_++] = Ref{static_cast<std::uint32_t>(text_.size()), static_cast<std::uint16_t>(utf8_text.size())};
    text_.append(utf8_text);
  }
  // Appends atom i again, without copying its text.
  void push_back_again(std::size_t i) {
    if (count_ == max_refs || i >= count_) throw std::length_error("AtomCacheRefs: full, or no atom i");
    refs_[count_++] = refs_[i];
  }

 private:
  struct Ref {
    std::uint32_t offset;
    std::uint16_t size;  // at most max_atom_bytes
  };
  std::string text_;
  std::array<Ref, max_refs> refs_;  // the first count_ are written
  std::size_t count_ = 0;
};

struct DistHeader {
  // The header's tag: a whole message, the first fragment of one, or a later fragment.
  enum class Kind : std::uint8_t { normal = 68, fragment_start = 69, fragment_continuation = 70 };
  Kind kind = Kind::normal;
  std::uint64_t sequence_id = 0;  // fragments only
  std::uint64_t fragment_id = 0;  // fragments only: counts down to 1, the last fragment
};

struct DistHeaderResult {
  DistHeader header;
  std::size_t end = 0;  // offset just past the header: where the control message starts
  std::optional<DecodeError> error;
  explicit operator bool() const noexcept { return !error.has_value(); }
};

// Reads the distribution header at the start of `frame` (131, then 68, 69 or 70). A
// normal or first-fragment header lists its references in `refs` (cleared first) and
// writes its new entries into `cache`; a later fragment has neither, and leaves both alone
// (it uses the refs of its sequence's first fragment). All or nothing: on failure `cache`
// is unchanged and `refs` is empty. Errors carry the header's tag and the offset of the
// offending field: truncated, length_exceeds_input, invalid_utf8_atom, atom_too_long,
// atom_cache_miss (a reference to an entry no header has written), bad_version,
// bad_dist_header (not a distribution header tag).
DistHeaderResult parse_dist_header(std::span<const std::uint8_t> frame, AtomTextEncoding encoding,
                                   AtomCache& cache, AtomCacheRefs& refs);

}  // namespace camlbeam::etf
