// The distribution header's atom cache section (erl_ext_dist, "Normal Distribution Header"
// and "Distribution Header for fragmented messages"), read with the decoder's checked Reader.
#include <camlbeam/etf/atom_cache.hpp>
#include <camlbeam/etf/decoder.hpp>

namespace camlbeam::etf {

namespace {

// The flag half bytes follow NumberOfAtomCacheRefs: half byte i (0-based) is in flag byte
// i / 2, the low half for an even i, the high half for an odd one. Half byte i < N is the
// flags of reference i; half byte N holds LongAtoms.
std::uint8_t half_byte(std::span<const std::uint8_t> flags, std::size_t i) noexcept {
  const std::uint8_t byte = flags[i / 2];
  return static_cast<std::uint8_t>(i % 2 == 0 ? byte & 0x0F : byte >> 4);
}
constexpr std::uint8_t new_cache_entry_flag = 0x08;
constexpr std::uint8_t segment_index_mask = 0x07;
constexpr std::uint8_t long_atoms_flag = 0x01;

// The tag whose length field and character set read_atom() expects for a new entry's text.
std::uint8_t atom_text_tag(bool long_atoms, AtomTextEncoding encoding) noexcept {
  if (encoding == AtomTextEncoding::utf8) return long_atoms ? tag::atom_utf8 : tag::small_atom_utf8;
  return long_atoms ? tag::atom_latin1 : tag::small_atom_latin1;
}

// Reads NumberOfAtomCacheRefs, Flags and AtomCacheRefs into `refs` without touching
// `cache`, then writes the new entries into `cache` in their order (a later entry for the
// same index wins, as it does in OTP). A failure throws from the first loop, so it leaves
// `cache` as it was.
void read_atom_cache_section(detail::Reader& in, AtomTextEncoding encoding, AtomCache& cache,
                             AtomCacheRefs& refs) {
  const std::size_t count = in.count8();
  if (count == 0) return;  // no flags and no references follow
  const std::span<const std::uint8_t> flags = in.bytes(count / 2 + 1);
  const std::uint8_t text_tag = atom_text_tag((half_byte(flags, count) & long_atoms_flag) != 0, encoding);

  std::array<std::uint16_t, AtomCacheRefs::max_refs> cache_index;
  std::bitset<AtomCacheRefs::max_refs> is_new;
  std::bitset<AtomCache::entries> written_here;  // by a NewAtomCacheRef of this header
  detail::AtomText scratch;
  for (std::size_t i = 0; i < count; ++i) {
    const std::uint8_t ref_flags = half_byte(flags, i);
    const std::uint8_t* index_field = in.p_;
    const std::size_t segment = ref_flags & segment_index_mask;
    const std::size_t index = segment * 256 + in.u8();
    cache_index[i] = static_cast<std::uint16_t>(index);
    if ((ref_flags & new_cache_entry_flag) != 0) {
      refs.push_back(in.read_atom(text_tag, scratch));
      is_new.set(i);
      written_here.set(index);
    } else if (written_here[index]) {
      // The entry as the latest NewAtomCacheRef before this one in this header wrote it.
      std::size_t latest = i;
      while (!(is_new[--latest] && cache_index[latest] == index)) {}
      refs.push_back_again(latest);
    } else if (auto atom = cache.find(index)) {
      refs.push_back(*atom);
    } else {
      in.fail_at(index_field, Errc::atom_cache_miss, index);
    }
  }
  for (std::size_t i = 0; i < count; ++i)
    if (is_new[i]) cache.store(cache_index[i], refs[i]);
}

}  // namespace

DistHeaderResult parse_dist_header(std::span<const std::uint8_t> frame, AtomTextEncoding encoding,
                                   AtomCache& cache, AtomCacheRefs& refs) {
  DistHeaderResult parsed;
  DecodeResult result;
  detail::Reader in(frame.data(), frame.data() + frame.size(), 0);
  in.guarded(result, [&] {
    if (const std::uint8_t version = in.u8(); version != tag::version) in.fail_at(in.p_ - 1, Errc::bad_version, version);
    const std::uint8_t header_tag = in.u8();
    if (header_tag != tag::dist_header && header_tag != tag::dist_fragment_header &&
        header_tag != tag::dist_fragment_continuation)
      in.fail_at(in.p_ - 1, Errc::bad_dist_header, header_tag);
    in.current_tag_ = header_tag;
    if (header_tag != tag::dist_header) {
      parsed.header.sequence_id = in.u64();
      parsed.header.fragment_id = in.u64();
    }
    parsed.header.kind = static_cast<DistHeader::Kind>(header_tag);
    if (header_tag == tag::dist_fragment_continuation) return;
    refs.clear();
    read_atom_cache_section(in, encoding, cache, refs);
  });
  if (!result) refs.clear();
  parsed.end = result.end;
  parsed.error = result.error;
  return parsed;
}

}  // namespace camlbeam::etf
