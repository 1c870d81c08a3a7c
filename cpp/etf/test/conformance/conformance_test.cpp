// The C++ half of the ETF conformance test against OTP 25 (run_conformance.sh runs the
// whole flow; etf_conformance.erl generates the terms and checks direction (b)).
//
// Direction (a): every encoding OTP wrote (term_to_binary/1, minor_version 2, compressed at
// levels 1, 6 and 9) decodes and re-encodes byte-identically, both through a Term tree
// (decode_term + encode) and through the streaming path (decode driving a Writer).
// The tree test also writes our encodings of every form, for Erlang to binary_to_term and
// compare with the original terms.
//
// One exception, flagged per record by the generator: a map of more than 32 keys whose
// keys hold atoms, pids, ports, references or funs is written by OTP in an order that
// depends on that VM's atom table and memory (see has_vm_specific_hash/1 in
// etf_conformance.erl). The tree path cannot reproduce it, so where its bytes differ it
// must encode the same entries: the same size and the same term when decoded. The
// streaming path keeps the wire order and stays byte-identical for every record.
//
// Inputs come from the environment: CAMLBEAM_CONF_INPUT (the file etf_conformance.erl
// generated) and CAMLBEAM_CONF_OUTPUT (where our encodings go). The record format is
// described at the top of etf_conformance.erl.
#include <camlbeam/etf/etf.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace etf = camlbeam::etf;

namespace {

constexpr std::string_view kMagic = "CBETFC2\n";
constexpr std::uint8_t kFlagVmSpecificMapOrder = 1;

// Only the first few mismatches of distinct kinds are described in full; the rest are
// counted. One codec bug typically breaks thousands of forms the same way.
constexpr std::size_t kMaxReported = 8;
// How much of a term's Erlang syntax, and how many bytes around a difference, to show.
constexpr std::size_t kMaxTermChars = 400;
constexpr std::size_t kHexBefore = 16;
constexpr std::size_t kHexAfter = 48;

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

std::string required_env(const char* name) {
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

std::vector<Record> read_records(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::vector<std::uint8_t> data(static_cast<std::size_t>(in.tellg()));
  in.seekg(0);
  if (!in.read(reinterpret_cast<char*>(data.data()), static_cast<std::streamsize>(data.size())))
    throw std::runtime_error("cannot read " + path);
  return RecordReader(std::move(data)).read_all();
}

void write_records(const std::string& path, const std::vector<Record>& records) {
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
const std::vector<Record>& erlang_records() {
  static const std::vector<Record> records = read_records(required_env("CAMLBEAM_CONF_INPUT"));
  return records;
}

// ---- Describing mismatches ------------------------------------------------------------

std::string hex_window(std::span<const std::uint8_t> bytes, std::size_t from, std::size_t to) {
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
std::string term_text(std::span<const std::uint8_t> erlang_bytes) {
  try {
    std::string text = etf::decode_term(erlang_bytes).to_string();
    if (text.size() > kMaxTermChars) text = text.substr(0, kMaxTermChars) + " ...";
    return text;
  } catch (const std::exception& e) {
    return std::string("(our decoder rejects it: ") + e.what() + ")";
  }
}

std::string form_name(std::size_t index, const Form& form) {
  std::ostringstream out;
  out << "record " << index << " (minor_version " << form.minor_version << ", compression "
      << form.compression_level << ")";
  return out.str();
}

std::size_t first_difference(std::span<const std::uint8_t> a, std::span<const std::uint8_t> b) {
  const std::size_t common = std::min(a.size(), b.size());
  return static_cast<std::size_t>(
      std::mismatch(a.begin(), a.begin() + static_cast<std::ptrdiff_t>(common), b.begin()).first - a.begin());
}

std::string describe_mismatch(std::string_view path, std::size_t index, const Form& form,
                              std::span<const std::uint8_t> expected, std::span<const std::uint8_t> ours) {
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

std::string describe_error(std::string_view path, std::size_t index, const Form& form,
                           std::string_view error) {
  std::ostringstream out;
  out << path << ": " << form_name(index, form) << " fails: " << error << "\n"
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

// Compares our encoding with Erlang's and records the outcome. The kind of a mismatch is
// given by the caller or, by default, the pair of bytes where the encodings first differ.
void check_identical(Tally& tally, std::string_view path, std::size_t index, const Form& form,
                     std::span<const std::uint8_t> expected, std::span<const std::uint8_t> ours,
                     std::optional<std::string> kind = std::nullopt) {
  if (std::ranges::equal(expected, ours)) {
    tally.pass();
    return;
  }
  if (!kind) {
    const std::size_t diff = first_difference(expected, ours);
    auto byte_at = [diff](std::span<const std::uint8_t> bytes) {
      return diff < bytes.size() ? std::to_string(bytes[diff]) : std::string("end");
    };
    kind = "bytes " + byte_at(expected) + " vs " + byte_at(ours);
  }
  tally.fail(*kind, [&] { return describe_mismatch(path, index, form, expected, ours); });
}

void record_error(Tally& tally, std::string_view path, std::size_t index, const Form& form,
                  const std::string& kind, const std::string& error) {
  tally.fail("error " + kind, [&] { return describe_error(path, index, form, error); });
}

void record_error(Tally& tally, std::string_view path, std::size_t index, const Form& form,
                  const std::exception& e) {
  const auto* decode_error = dynamic_cast<const etf::DecodeException*>(&e);
  record_error(tally, path, index, form,
               decode_error ? std::string(etf::to_string(decode_error->error().code)) : e.what(), e.what());
}

// ---- The tests --------------------------------------------------------------------------

// The tree path: decode_term + encode with the form's options must reproduce OTP's bytes,
// and every form of a record must decode to the same Term.
class TreeCheck {
 public:
  // Checks every form of a record; returns our encodings (empty where we failed).
  Record check(std::size_t index, const Record& record) {
    Record ours{record.flags, {}};
    std::optional<etf::Term> first_term;
    for (const Form& form : record.forms) {
      Form& our_form = ours.forms.emplace_back(Form{form.minor_version, form.compression_level, {}});
      try {
        etf::Term term = etf::decode_term(form.bytes);
        our_form.bytes = etf::encode(term, {form.minor_version, form.compression_level});
        check_encoding(index, record, ours, form, term, our_form.bytes);
        check_same_term(index, record, form, term, first_term);
      } catch (const std::exception& e) {
        record_error(identical_, "tree", index, form, e);
        our_form.bytes.clear();  // tells the Erlang checker that we produced nothing
      }
    }
    return ours;
  }

  void finish() const {
    identical_.finish();
    same_entries_.finish();
    same_term_.finish();
  }

 private:
  void check_encoding(std::size_t index, const Record& record, const Record& ours, const Form& form,
                      const etf::Term& term, const std::vector<std::uint8_t>& our_bytes) {
    if (our_bytes != form.bytes && record.vm_specific_map_order()) {
      // Only the order of map entries may differ. Our bytes must decode to the same term
      // and, uncompressed, have the same size: a wrong tag or length inside (say
      // NEW_PORT_EXT for V4_PORT_EXT) changes the size. The streaming check compares the
      // very same records byte for byte, so the Writer itself is fully checked there.
      const bool same_size = form.compression_level != 0 || our_bytes.size() == form.bytes.size();
      bool same_term = false;
      try {
        same_term = etf::decode_term(our_bytes) == term;
      } catch (const std::exception&) {
        // Bytes we cannot read back hold other entries; the description shows them.
      }
      if (same_size && same_term) {
        same_entries_.pass();
      } else {
        same_entries_.fail("differ", [&] {
          return describe_mismatch("tree", index, form, form.bytes, our_bytes);
        });
      }
      return;
    }
    std::optional<std::string> kind;
    if (form.compression_level != 0) {
      // A compressed form of a term we already encode wrongly uncompressed is that bug
      // again, not a zlib one. The plain forms come first in a record.
      const bool plain_matched =
          ours.forms.at(form.minor_version - 1).bytes == record.plain(form.minor_version).bytes;
      kind = plain_matched ? "compressed bytes differ" : "compressed form of a mismatching term";
    }
    check_identical(identical_, "tree", index, form, form.bytes, our_bytes, kind);
  }

  void check_same_term(std::size_t index, const Record& record, const Form& form, etf::Term& term,
                       std::optional<etf::Term>& first_term) {
    if (!first_term) {
      first_term = std::move(term);
    } else if (term == *first_term) {
      same_term_.pass();
    } else {
      same_term_.fail("differ", [&] {
        return form_name(index, form) + " decodes to " + term_text(form.bytes) +
               "\n  but the minor_version 1 form decodes to " + term_text(record.forms[0].bytes);
      });
    }
  }

  Tally identical_{"tree re-encode byte-identical"};
  // Empty when our order happens to match OTP's everywhere, which is no failure.
  Tally same_entries_{"tree re-encode of maps in VM-specific order: same size, same term",
                      Tally::may_be_empty};
  Tally same_term_{"every form of a record decodes to the same term"};
};

TEST(ErlangConformance, TreeReencodeIsByteIdentical) {
  const std::vector<Record>& records = erlang_records();
  TreeCheck tree;
  std::vector<Record> ours;
  ours.reserve(records.size());
  for (std::size_t index = 0; index < records.size(); ++index)
    ours.push_back(tree.check(index, records[index]));
  write_records(required_env("CAMLBEAM_CONF_OUTPUT"), ours);
  tree.finish();
}

// decode(bytes, writer) re-encodes without a tree. A Writer does not compress, so a
// compressed form must come out as the plain form of the same minor version.
TEST(ErlangConformance, StreamingReencodeIsByteIdentical) {
  const std::vector<Record>& records = erlang_records();
  Tally identical("streaming re-encode byte-identical");
  etf::ByteBuffer buffer;

  for (std::size_t index = 0; index < records.size(); ++index) {
    const Record& record = records[index];
    for (const Form& form : record.forms) {
      const std::vector<std::uint8_t>& expected = record.plain(form.minor_version).bytes;
      buffer.clear();
      try {
        etf::Writer writer(buffer, form.minor_version);
        writer.version();
        const etf::DecodeResult result = etf::decode(form.bytes, writer);
        if (result)
          check_identical(identical, "streaming", index, form, expected, buffer.span());
        else
          record_error(identical, "streaming", index, form,
                       std::string(etf::to_string(result.error->code)), result.error->message());
      } catch (const std::exception& e) {
        record_error(identical, "streaming", index, form, e);
      }
    }
  }
  identical.finish();
}

}  // namespace
