// What every C++ driver of the conformance flow (run_conformance.sh) shares: the record
// file etf_conformance.erl writes and reads back, the outcome tally, the descriptions of a
// mismatch, and the one relaxation, for maps in a VM-specific order.
//
// Drivers: conformance_test.cpp (the ETF codec) and cpp/conv/test/conv_conformance_test.cpp
// (ETF through OCaml Erl.Term.t values and back). The record format is described at the top
// of etf_conformance.erl.
#pragma once

#include <camlbeam/etf/etf.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <set>
#include <span>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace camlbeam::etf::conformance {

inline constexpr std::string_view kMagic = "CBETFC2\n";
inline constexpr std::uint8_t kFlagVmSpecificMapOrder = 1;

// Only the first few mismatches of distinct kinds are described in full; the rest are
// counted. One codec bug typically breaks thousands of forms the same way.
inline constexpr std::size_t kMaxReported = 8;
// How much of a term's Erlang syntax, and how many bytes around a difference, to show.
inline constexpr std::size_t kMaxTermChars = 400;
inline constexpr std::size_t kHexBefore = 16;
inline constexpr std::size_t kHexAfter = 48;

struct Form {
  int minor_version = 1;
  int compression_level = 0;
  std::vector<std::uint8_t> bytes;
};

// Every encoding of one term. forms[0] and forms[1] are the plain minor_version 1 and 2
// encodings; any further ones are compressed.
struct Record {
  std::uint8_t flags = 0;
  std::vector<Form> forms;

  bool vm_specific_map_order() const { return (flags & kFlagVmSpecificMapOrder) != 0; }
  const Form& plain(int minor_version) const { return forms.at(minor_version == 1 ? 0 : 1); }
};

inline std::string required_env(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0')
    throw std::runtime_error(std::string(name) + " is not set; run this through run_conformance.sh");
  return value;
}

// ---- The record file ----------------------------------------------------------------

class RecordReader {
 public:
  explicit RecordReader(std::vector<std::uint8_t> data) : data_(std::move(data)) {}

  std::vector<Record> read_all() {
    std::string_view magic(reinterpret_cast<const char*>(take(kMagic.size())), kMagic.size());
    if (magic != kMagic) throw std::runtime_error("not a conformance record file (bad magic)");
    std::vector<Record> records;
    while (pos_ < data_.size()) {
      Record record;
      const std::uint32_t count = u32();
      record.flags = *take(1);
      for (std::uint32_t i = 0; i < count; ++i) {
        Form form;
        form.minor_version = *take(1);
        form.compression_level = *take(1);
        if (form.minor_version < 1 || form.minor_version > 2 || form.compression_level > 9)
          throw std::runtime_error("record " + std::to_string(records.size()) + " has a bad form header");
        const std::uint32_t size = u32();
        const std::uint8_t* bytes = take(size);
        form.bytes.assign(bytes, bytes + size);
        record.forms.push_back(std::move(form));
      }
      if (record.forms.size() < 2 || record.forms[0].minor_version != 1 ||
          record.forms[1].minor_version != 2 || record.forms[0].compression_level != 0 ||
          record.forms[1].compression_level != 0)
        throw std::runtime_error("record " + std::to_string(records.size()) +
                                 " does not start with the plain minor 1 and 2 forms");
      records.push_back(std::move(record));
    }
    return records;
  }

 private:
  const std::uint8_t* take(std::size_t n) {
    if (data_.size() - pos_ < n) throw std::runtime_error("conformance record file is truncated");
    const std::uint8_t* p = data_.data() + pos_;
    pos_ += n;
    return p;
  }
  std::uint32_t u32() {
    const std::uint8_t* p = take(4);
    return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) | p[3];
  }

  std::vector<std::uint8_t> data_;
  std::size_t pos_ = 0;
};

inline std::vector<Record> read_records(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::vector<std::uint8_t> data(static_cast<std::size_t>(in.tellg()));
  in.seekg(0);
  if (!in.read(reinterpret_cast<char*>(data.data()), static_cast<std::streamsize>(data.size())))
    throw std::runtime_error("cannot read " + path);
  return RecordReader(std::move(data)).read_all();
}

// Our encodings, for the Erlang checker: the same records and form headers as the input,
// with empty bytes where the driver produced nothing.
inline void write_records(const std::string& path, const std::vector<Record>& records) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw std::runtime_error("cannot create " + path);
  auto put_u32 = [&out](std::size_t n) {
    const auto v = static_cast<std::uint32_t>(n);
    const char be[4] = {static_cast<char>(v >> 24), static_cast<char>(v >> 16),
                        static_cast<char>(v >> 8), static_cast<char>(v)};
    out.write(be, 4);
  };
  out.write(kMagic.data(), static_cast<std::streamsize>(kMagic.size()));
  for (const Record& record : records) {
    put_u32(record.forms.size());
    out.put(static_cast<char>(record.flags));
    for (const Form& form : record.forms) {
      out.put(static_cast<char>(form.minor_version));
      out.put(static_cast<char>(form.compression_level));
      put_u32(form.bytes.size());
      out.write(reinterpret_cast<const char*>(form.bytes.data()),
                static_cast<std::streamsize>(form.bytes.size()));
    }
  }
  if (!out.flush()) throw std::runtime_error("cannot write " + path);
}

// Loaded once for all tests; a failure to load fails every test that needs the records.
inline const std::vector<Record>& erlang_records() {
  static const std::vector<Record> records = read_records(required_env("CAMLBEAM_CONF_INPUT"));
  return records;
}

// ---- Describing mismatches ------------------------------------------------------------

inline std::string hex_window(std::span<const std::uint8_t> bytes, std::size_t from, std::size_t to) {
  to = std::min(to, bytes.size());
  std::string out = from > 0 ? "... " : "";
  char buf[4];
  for (std::size_t i = from; i < to; ++i) {
    std::snprintf(buf, sizeof buf, "%02X ", bytes[i]);
    out += buf;
  }
  if (to < bytes.size()) out += "...";
  return out;
}

// The term in Erlang syntax (shortened), or why it cannot be had.
inline std::string term_text(std::span<const std::uint8_t> erlang_bytes) {
  try {
    std::string text = decode_term(erlang_bytes).to_string();
    if (text.size() > kMaxTermChars) text = text.substr(0, kMaxTermChars) + " ...";
    return text;
  } catch (const std::exception& e) {
    return std::string("(our decoder rejects it: ") + e.what() + ")";
  }
}

inline std::string form_name(std::size_t index, const Form& form) {
  std::ostringstream out;
  out << "record " << index << " (minor_version " << form.minor_version << ", compression "
      << form.compression_level << ")";
  return out.str();
}

inline std::size_t first_difference(std::span<const std::uint8_t> a, std::span<const std::uint8_t> b) {
  const std::size_t common = std::min(a.size(), b.size());
  return static_cast<std::size_t>(
      std::mismatch(a.begin(), a.begin() + static_cast<std::ptrdiff_t>(common), b.begin()).first - a.begin());
}

inline std::string describe_mismatch(std::string_view path, std::size_t index, const Form& form,
                                     std::span<const std::uint8_t> expected,
                                     std::span<const std::uint8_t> ours) {
  const std::size_t diff = first_difference(expected, ours);
  const std::size_t from = diff > kHexBefore ? diff - kHexBefore : 0;
  std::ostringstream out;
  out << path << ": " << form_name(index, form) << " re-encodes differently\n"
      << "  term:   " << term_text(form.bytes) << "\n"
      << "  first difference at byte " << diff << "\n"
      << "  Erlang (" << expected.size() << " bytes): " << hex_window(expected, from, diff + kHexAfter)
      << "\n  ours   (" << ours.size() << " bytes): " << hex_window(ours, from, diff + kHexAfter);
  return out.str();
}

inline std::string describe_error(std::string_view path, std::size_t index, const Form& form,
                                  std::string_view error) {
  std::ostringstream out;
  out << path << ": " << form_name(index, form) << " fails: " << error << "\n"
      << "  term:   " << term_text(form.bytes) << "\n"
      << "  Erlang (" << form.bytes.size() << " bytes): " << hex_window(form.bytes, 0, kHexAfter);
  return out.str();
}

// Counts outcomes, describes the first failure of each kind (up to kMaxReported), and
// prints the summary line. A kind is a short signature (the bytes where Erlang's and our
// encodings first differ, or the error code), so that one bug breaking thousands of forms
// does not hide the others.
class Tally {
 public:
  static constexpr bool may_be_empty = true;

  explicit Tally(std::string what, bool empty_is_ok = false)
      : what_(std::move(what)), empty_is_ok_(empty_is_ok) {}

  void pass() { ++passed_; }

  template <class Describe>
  void fail(const std::string& kind, const Describe& describe) {
    ++failed_;
    if (reported_kinds_.size() < kMaxReported && reported_kinds_.insert(kind).second)
      ADD_FAILURE() << describe();
  }

  void finish() const {
    std::printf("[conformance] %s: %zu passed, %zu failed\n", what_.c_str(), passed_, failed_);
    std::fflush(stdout);
    EXPECT_EQ(failed_, 0u) << what_ << ": " << failed_ << " of " << passed_ + failed_
                           << " failed (the first of each kind are described above)";
    if (!empty_is_ok_) {
      EXPECT_GT(passed_ + failed_, 0u) << what_ << ": nothing was checked";
    }
  }

 private:
  std::string what_;
  bool empty_is_ok_;
  std::size_t passed_ = 0;
  std::size_t failed_ = 0;
  std::set<std::string> reported_kinds_;
};

// The usual kind of a mismatch: the pair of bytes where the encodings first differ.
inline std::string mismatch_kind(std::span<const std::uint8_t> expected, std::span<const std::uint8_t> ours) {
  const std::size_t diff = first_difference(expected, ours);
  auto byte_at = [diff](std::span<const std::uint8_t> bytes) {
    return diff < bytes.size() ? std::to_string(bytes[diff]) : std::string("end");
  };
  return "bytes " + byte_at(expected) + " vs " + byte_at(ours);
}

// Compares our encoding with Erlang's and records the outcome. The kind of a mismatch is
// given by the caller or, by default, mismatch_kind.
inline void check_identical(Tally& tally, std::string_view path, std::size_t index, const Form& form,
                            std::span<const std::uint8_t> expected, std::span<const std::uint8_t> ours,
                            std::optional<std::string> kind = std::nullopt) {
  if (std::ranges::equal(expected, ours)) {
    tally.pass();
    return;
  }
  tally.fail(kind ? *kind : mismatch_kind(expected, ours),
             [&] { return describe_mismatch(path, index, form, expected, ours); });
}

inline void record_error(Tally& tally, std::string_view path, std::size_t index, const Form& form,
                         const std::string& kind, const std::string& error) {
  tally.fail("error " + kind, [&] { return describe_error(path, index, form, error); });
}

inline void record_error(Tally& tally, std::string_view path, std::size_t index, const Form& form,
                         const std::exception& e) {
  const auto* decode_error = dynamic_cast<const DecodeException*>(&e);
  record_error(tally, path, index, form,
               decode_error ? std::string(to_string(decode_error->error().code)) : e.what(), e.what());
}

// ---- The one relaxation ---------------------------------------------------------------

// A map of more than 32 keys whose keys hold atoms, pids, ports, references or funs is
// written by OTP in an order that depends on that VM's atom table and memory (see
// has_vm_specific_hash/1 in etf_conformance.erl); an encoder that rebuilds the map cannot
// reproduce it. Where such a record's bytes differ, ours must encode the same entries: the
// same term when decoded and, when neither side is compressed (expected_size given), the
// same size, since a wrong tag or length inside (say NEW_PORT_EXT for V4_PORT_EXT)
// changes the size.
inline bool same_entries_in_another_order(const Term& term, std::span<const std::uint8_t> ours,
                                          std::optional<std::size_t> expected_size) {
  if (expected_size && ours.size() != *expected_size) return false;
  try {
    return decode_term(ours) == term;
  } catch (const std::exception&) {
    return false;  // bytes we cannot read back hold other entries; the caller shows them
  }
}

}  // namespace camlbeam::etf::conformance
