// Arbitrary text into etf::parse_term. Text it rejects must be rejected with ParseError
// (anything else escapes and counts as a crash); text it accepts must give a term that
// prints, parses back to an equal term, prints the same again (to_string is a fixed point
// after one round), and survives the wire: decode(encode(t)) == t.
#include "fuzz_check.hpp"

#include <camlbeam/etf/etf.hpp>

#include <cstdint>
#include <string>
#include <string_view>

namespace etf = camlbeam::etf;
using camlbeam::fuzz::as_bytes;
using camlbeam::fuzz::require;

namespace {

constexpr std::size_t kMaxDepth = 64;  // the parser recurses; keep its stack small

etf::Term must_parse(std::string_view text, std::string_view source) {
  try {
    return etf::parse_term(text, kMaxDepth);
  } catch (const etf::ParseError&) {
    require(false, "parse_term reads what to_string writes", as_bytes(source), as_bytes(text));
  }
  return {};
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view source(reinterpret_cast<const char*>(data), size);
  etf::Term term;
  try {
    term = etf::parse_term(source, kMaxDepth);
  } catch (const etf::ParseError& e) {
    require(e.column() <= size + 1, "ParseError columns lie inside the text", as_bytes(source));
    return 0;
  }
  const std::string printed = term.to_string();
  const etf::Term reparsed = must_parse(printed, source);
  require(reparsed == term, "parse_term(to_string(t)) == t", as_bytes(source), as_bytes(printed));
  require(reparsed.to_string() == printed, "to_string is stable across a parse", as_bytes(source), as_bytes(printed));

  const std::vector<std::uint8_t> wire = etf::encode(term);
  etf::TermBuilder builder;
  require(static_cast<bool>(etf::decode(wire, builder)), "encode(t) decodes", as_bytes(source), wire);
  require(builder.take() == term, "decode(encode(t)) == t", as_bytes(source), wire);
  return 0;
}
