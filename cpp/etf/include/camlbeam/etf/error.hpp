// Typed decode errors: a code, the byte offset where the problem was found, and the
// numbers that explain it. message() renders them for people; programs branch on code.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

namespace camlbeam::etf {

enum class Errc : std::uint8_t {
  truncated,              // the input ends inside a term
  bad_version,            // first byte is not 131
  unknown_tag,            // a tag byte no OTP release defines
  unsupported_tag,        // a defined tag that is invalid here (LOCAL_EXT, FUN_EXT, ATOM_CACHE_REF
                          // when no atom cache references are given)
  length_exceeds_input,   // a declared count or length needs more bytes than are left
  depth_limit,            // nesting deeper than Limits::max_depth
  input_size_limit,       // input longer than Limits::max_input_size
  inflated_size_limit,    // compressed term declares more than Limits::max_inflated_size
  bad_compression,        // zlib stream corrupt, or inflates to another size than declared
  invalid_utf8_atom,      // ATOM_UTF8 / SMALL_ATOM_UTF8 bytes are not valid UTF-8
  atom_too_long,          // an atom of more than 255 characters
  bad_float,              // NaN, infinity, or an unparsable old FLOAT_EXT
  bad_bit_count,          // BIT_BINARY bits-in-last-byte outside 1..8 (or non-zero for no bytes)
  bad_reference,          // a reference with no id words or more than 5
  bad_fun,                // NEW_FUN_EXT whose fields or declared size do not add up
  bad_node,               // pid/port/ref/fun whose node (or module) is not an atom
  duplicate_map_key,      // a map that holds the same key twice
  trailing_bytes,         // bytes after the term where the caller wanted none
  bad_atom_cache_ref,     // ATOM_CACHE_REF past the references its distribution header lists
  atom_cache_miss,        // a distribution header refers to a cache entry no header has written
  bad_dist_header,        // not a distribution header (131 then 68, 69 or 70)
};

std::string_view to_string(Errc code) noexcept;

struct DecodeError {
  Errc code;
  std::size_t offset = 0;   // byte offset from the start of the input (version byte included)
  std::uint64_t detail = 0; // the offending number: a tag, a declared length, a limit ...
  std::uint8_t tag = 0;     // the tag being decoded when the error was found, 0 if none
  bool inflated = false;    // offset counts in the inflated data of a compressed term

  std::string message() const;
  friend bool operator==(const DecodeError&, const DecodeError&) = default;
};

// Thrown only by the convenience entry points (decode_term and friends); the core decoder
// reports errors as values.
class DecodeException : public std::runtime_error {
 public:
  explicit DecodeException(const DecodeError& error);
  const DecodeError& error() const noexcept { return error_; }

 private:
  DecodeError error_;
};

// Thrown by the encoder for terms that cannot be put on the wire (an atom over 255
// characters, a list longer than 2^32-1 elements, a non-finite float ...).
class EncodeError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

}  // namespace camlbeam::etf
