#include <camlbeam/etf/error.hpp>

#include <string>

namespace camlbeam::etf {

std::string_view to_string(Errc code) noexcept {
  switch (code) {
    case Errc::truncated: return "truncated";
    case Errc::bad_version: return "bad_version";
    case Errc::unknown_tag: return "unknown_tag";
    case Errc::unsupported_tag: return "unsupported_tag";
    case Errc::length_exceeds_input: return "length_exceeds_input";
    case Errc::depth_limit: return "depth_limit";
    case Errc::input_size_limit: return "input_size_limit";
    case Errc::inflated_size_limit: return "inflated_size_limit";
    case Errc::bad_compression: return "bad_compression";
    case Errc::invalid_utf8_atom: return "invalid_utf8_atom";
    case Errc::atom_too_long: return "atom_too_long";
    case Errc::bad_float: return "bad_float";
    case Errc::bad_bit_count: return "bad_bit_count";
    case Errc::bad_reference: return "bad_reference";
    case Errc::bad_fun: return "bad_fun";
    case Errc::bad_node: return "bad_node";
    case Errc::duplicate_map_key: return "duplicate_map_key";
    case Errc::trailing_bytes: return "trailing_bytes";
    case Errc::bad_atom_cache_ref: return "bad_atom_cache_ref";
    case Errc::atom_cache_miss: return "atom_cache_miss";
    case Errc::bad_dist_header: return "bad_dist_header";
  }
  return "unknown_error";
}

namespace {

std::string explain(const DecodeError& e) {
  const std::string n = std::to_string(e.detail);
  switch (e.code) {
    case Errc::truncated: return "input ends inside a term (" + n + " more bytes needed)";
    case Errc::bad_version: return "first byte is " + n + ", not the version byte 131";
    case Errc::unknown_tag: return "unknown tag " + n;
    case Errc::unsupported_tag:
      return "tag " + n + " is not accepted here (LOCAL_EXT, the removed FUN_EXT, or an atom "
                          "cache reference where no distribution header's references are given)";
    case Errc::length_exceeds_input:
      return "a declared count or length needs at least " + n + " bytes, more than are left";
    case Errc::depth_limit: return "nesting deeper than the limit of " + n;
    case Errc::input_size_limit: return "input larger than the limit of " + n + " bytes";
    case Errc::inflated_size_limit:
      return "compressed term declares " + n + " bytes, more than the inflated-size limit";
    case Errc::bad_compression:
      return "compressed data is corrupt or does not inflate to the declared " + n + " bytes";
    case Errc::invalid_utf8_atom: return "atom is not valid UTF-8";
    case Errc::atom_too_long: return "atom of " + n + " characters (the limit is 255)";
    case Errc::bad_float: return "float is NaN, infinite or unreadable";
    case Errc::bad_bit_count: return "bit binary declares " + n + " bits in its last byte";
    case Errc::bad_reference: return "reference with " + n + " id words (1 to 5)";
    case Errc::bad_fun: return "fun whose fields or declared size do not add up";
    case Errc::bad_node: return "expected an atom (node or module name), found tag " + n;
    case Errc::duplicate_map_key: return "map holds the same key twice";
    case Errc::trailing_bytes: return n + " bytes follow the term";
    case Errc::bad_atom_cache_ref:
      return "atom cache reference " + n + " is past the references its distribution header lists";
    case Errc::atom_cache_miss:
      return "distribution header refers to atom cache entry " + n + ", which no header has written";
    case Errc::bad_dist_header: return "tag " + n + " does not start a distribution header (68, 69 or 70)";
  }
  return "unknown error";
}

}  // namespace

std::string DecodeError::message() const {
  std::string where = "at byte " + std::to_string(offset);
  if (inflated) where += " of the inflated data";
  if (tag != 0) where += " (tag " + std::to_string(tag) + ")";
  return std::string(to_string(code)) + " " + where + ": " + explain(*this);
}

DecodeException::DecodeException(const DecodeError& error)
    : std::runtime_error(error.message()), error_(error) {}

}  // namespace camlbeam::etf
