// Arbitrary bytes into the ETF decoder, through both of its consumers:
//  (a) a TermBuilder. When the bytes decode, the canonical encoding of the term decodes to
//      an equal term and encodes to the same bytes again (encode . decode is idempotent);
//      the term survives copy, compare and print, and printing parses back (local funs
//      aside, which print as #Fun<...>, a form the parser does not read);
//  (b) a Writer, the streaming re-encoder. It agrees with (a) on whether and where the
//      input fails (apart from duplicate map keys, which only the builder checks), its
//      output decodes to the same term, and on a canonical encoding it is the identity.
// Anything else the codec throws escapes and counts as a crash.
#include "fuzz_check.hpp"

#include <camlbeam/etf/etf.hpp>

#include <algorithm>
#include <cstdint>
#include <span>
#include <string>

namespace etf = camlbeam::etf;
using camlbeam::fuzz::as_bytes;
using camlbeam::fuzz::require;

namespace {

const etf::DecodeOptions kOptions = camlbeam::fuzz::decode_options();

bool same(std::span<const std::uint8_t> a, std::span<const std::uint8_t> b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end());
}

// The streaming re-encoding: version byte, then whatever the decoder feeds the Writer.
struct Streamed {
  etf::ByteBuffer bytes;
  etf::DecodeResult result;
};
Streamed stream(std::span<const std::uint8_t> input) {
  Streamed s;
  etf::Writer writer(s.bytes);
  writer.version();
  s.result = etf::decode(input, writer, kOptions);
  return s;
}

etf::Term must_decode(std::span<const std::uint8_t> bytes, const char* what) {
  etf::TermBuilder builder;
  const etf::DecodeResult result = etf::decode(bytes, builder, kOptions);
  require(static_cast<bool>(result), what, bytes);
  return builder.take();
}

void check_term(std::span<const std::uint8_t> input, const etf::Term& term) {
  const std::vector<std::uint8_t> canonical = etf::encode(term);
  const etf::Term again = must_decode(canonical, "the canonical encoding decodes");
  require(again == term, "decode(encode(t)) == t", input, canonical);
  const std::vector<std::uint8_t> twice = etf::encode(again);
  require(same(twice, canonical), "encode is idempotent on decoded terms", canonical, twice);

  if (input.size() > 1 && input[1] == etf::tag::compressed) {
    etf::EncodeOptions compress;
    compress.compression_level = 1;
    const std::vector<std::uint8_t> packed = etf::encode(term, compress);
    require(must_decode(packed, "a compressed re-encoding decodes") == term, "compressed round trip", input,
            packed);
  }

  const etf::Term copy = term;
  require(copy == term && (copy <=> term) == 0, "a copy compares equal", input);

  const std::string text = term.to_string();
  require(!text.empty(), "to_string writes something", input);
  if (text.find("#Fun<") == std::string::npos) {
    etf::Term parsed;
    try {
      parsed = etf::parse_term(text);
    } catch (const etf::ParseError&) {
      require(false, "parse_term reads what to_string writes", input, as_bytes(text));
    }
    require(parsed == term, "parse_term(to_string(t)) == t", input, as_bytes(text));
  }

  const Streamed streamed = stream(input);
  require(static_cast<bool>(streamed.result), "the Writer path decodes what the builder path does", input);
  require(must_decode(streamed.bytes.span(), "the Writer's output decodes") == term,
          "the Writer's output means the same term", input, streamed.bytes.span());
  const Streamed identity = stream(canonical);
  require(same(identity.bytes.span(), canonical), "the Writer copies a canonical encoding unchanged", canonical,
          identity.bytes.span());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::uint8_t> input(data, size);
  etf::TermBuilder builder;
  const etf::DecodeResult result = etf::decode(input, builder, kOptions);
  if (result) {
    require(result.end == input.size(), "a decoded input is used whole", input);
    check_term(input, builder.take());
    return 0;
  }
  const etf::DecodeError& error = *result.error;
  require(error.offset <= input.size() || error.inflated, "error offsets lie inside the input", input);
  require(!error.message().empty(), "errors explain themselves", input);
  if (error.code != etf::Errc::duplicate_map_key) {
    const Streamed streamed = stream(input);
    require(!streamed.result && *streamed.result.error == error,
            "the Writer path fails exactly where the builder path does", input);
  }
  return 0;
}
