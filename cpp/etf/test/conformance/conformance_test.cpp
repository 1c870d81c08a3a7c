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
// described at the top of etf_conformance.erl; its reader and writer, and the reporting,
// are in conformance_support.hpp, shared with cpp/conv/test/conv_conformance_test.cpp.
#include "conformance_support.hpp"

#include <camlbeam/etf/etf.hpp>

#include <gtest/gtest.h>

#include <cstdint>
#include <exception>
#include <optional>
#include <string>
#include <vector>

namespace etf = camlbeam::etf;

namespace {

using namespace camlbeam::etf::conformance;

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
      // The streaming check compares the very same records byte for byte, so the Writer
      // itself is fully checked there.
      const std::optional<std::size_t> expected_size =
          form.compression_level == 0 ? std::optional(form.bytes.size()) : std::nullopt;
      if (same_entries_in_another_order(term, our_bytes, expected_size)) {
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
