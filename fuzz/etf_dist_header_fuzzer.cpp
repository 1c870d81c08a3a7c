// Arbitrary bytes as a distribution frame: parse_dist_header(), then the terms after the
// header decoded with its atom cache references (ATOM_CACHE_REF), through both consumers.
// Each input is read twice on one connection's cache (so that the second reading's
// CachedAtomRefs can find the entries the first one wrote), once as UTF-8, once as Latin-1.
//  - A header that fails leaves the cache as it was and lists no references; its error
//    lies inside the input and names the header's tag (or none, before it is read).
//  - A header that parses lists at most 255 references, each valid UTF-8 of at most 255
//    characters, and ends inside the input; a continuation fragment leaves the references
//    alone.
//  - The terms after it: the TermBuilder and the Writer fail alike, at the same offset; a
//    term that decodes has atoms where its references were, so its canonical encoding
//    decodes to an equal term without any references.
#include "fuzz_check.hpp"

#include <camlbeam/etf/etf.hpp>

#include <cstdint>
#include <utility>
#include <span>
#include <string>
#include <vector>

namespace etf = camlbeam::etf;
using camlbeam::fuzz::require;

namespace {

// The entries a cache holds (most of the 2048 are empty).
using Snapshot = std::vector<std::pair<std::size_t, std::string>>;

Snapshot snapshot(const etf::AtomCache& cache) {
  Snapshot entries;
  for (std::size_t i = 0; i < etf::AtomCache::entries; ++i)
    if (auto atom = cache.find(i)) entries.emplace_back(i, *atom);
  return entries;
}

std::span<const std::uint8_t> text_bytes(std::string_view s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

// Up to two terms (a control message and its payload) after the header.
void check_terms(std::span<const std::uint8_t> frame, std::size_t at, const etf::AtomCacheRefs& refs) {
  etf::DecodeOptions options = camlbeam::fuzz::decode_options();
  options.atom_cache_refs = &refs;
  for (int term = 0; term < 2 && at < frame.size(); ++term) {
    const std::span<const std::uint8_t> body = frame.subspan(at);
    etf::TermBuilder builder;
    const etf::DecodeResult built = etf::decode_body(body, builder, options, at);
    etf::ByteBuffer streamed;
    etf::Writer writer(streamed);
    const etf::DecodeResult written = etf::decode_body(body, writer, options, at);
    const bool duplicate_keys = !built && built.error->code == etf::Errc::duplicate_map_key;
    if (!duplicate_keys) {
      require(static_cast<bool>(built) == static_cast<bool>(written), "builder and writer agree on success", body);
      require(built.error == written.error, "builder and writer fail alike", body);
    }
    if (!built) return;
    require(built.end == written.end && built.end > at && built.end <= frame.size(), "a term ends inside the frame",
            body);
    const std::vector<std::uint8_t> canonical = etf::encode(builder.take());
    etf::TermBuilder again;
    require(static_cast<bool>(etf::decode(canonical, again, camlbeam::fuzz::decode_options())),
            "a term read with references encodes without them", body, canonical);
    at = built.end;
  }
}

void check_header(std::span<const std::uint8_t> frame, etf::AtomTextEncoding encoding, etf::AtomCache& cache,
                  etf::AtomCacheRefs& refs) {
  const Snapshot before = snapshot(cache);
  const std::size_t refs_before = refs.size();
  const etf::DistHeaderResult parsed = etf::parse_dist_header(frame, encoding, cache, refs);
  if (!parsed) {
    require(snapshot(cache) == before, "a header that fails leaves the cache alone", frame);
    require(refs.size() == 0, "a header that fails lists no references", frame);
    require(parsed.error->offset <= frame.size(), "a header's error lies inside the input", frame);
    const std::uint8_t t = parsed.error->tag;
    require(t == 0 || t == etf::tag::dist_header || t == etf::tag::dist_fragment_header ||
                t == etf::tag::dist_fragment_continuation,
            "a header's error names its tag", frame);
    return;
  }
  require(parsed.end <= frame.size(), "a header ends inside the input", frame);
  if (parsed.header.kind == etf::DistHeader::Kind::fragment_continuation) {
    require(refs.size() == refs_before && snapshot(cache) == before, "a continuation changes nothing", frame);
  }
  require(refs.size() <= etf::AtomCacheRefs::max_refs, "at most 255 references", frame);
  for (std::size_t i = 0; i < refs.size(); ++i) {
    const long chars = etf::detail::utf8_length(text_bytes(refs[i]));
    require(chars >= 0 && chars <= 255, "every reference is an atom: UTF-8 of at most 255 characters", frame,
            text_bytes(refs[i]));
  }
  check_terms(frame, parsed.end, refs);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::uint8_t> frame(data, size);
  for (etf::AtomTextEncoding encoding : {etf::AtomTextEncoding::utf8, etf::AtomTextEncoding::latin1}) {
    etf::AtomCache cache;
    etf::AtomCacheRefs refs;
    check_header(frame, encoding, cache, refs);
    check_header(frame, encoding, cache, refs);
  }
  return 0;
}
