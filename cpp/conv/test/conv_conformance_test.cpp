// The round-trip property test of cpp/conv against a live OTP 25 node (issue 3). Every term
// etf_conformance.erl generates (100,000 random terms of every kind plus the hand-picked
// edge cases: every encoding limit, terms nested 100,000 deep, 100,000-element lists and
// tuples, 100 kB binaries), in every form OTP wrote it (minor_version 1 and 2, some
// zlib-compressed), goes
//
//     ETF --conv::etf_to_ocaml--> Erl.Term.t --conv::ocaml_to_etf--> ETF
//
// and must come back as OTP's own bytes for that minor version (uncompressed, as
// ocaml_to_etf does not compress). Every value built must pass Erl.Term.validate, the OCaml
// library's statement of its invariants. ctest runs this with a small minor heap, so that
// minor collections move the partly built values in the middle of conversions; the summary
// line shows how many there were.
//
// The one relaxation is the ETF conformance test's, from the same shared code: a record
// flagged as holding a map of more than 32 keys in a VM-specific order may come back with
// its entries in another order, as long as it has the same size and decodes to the same
// term (conformance_support.hpp says why).
//
// run_conformance.sh runs this driver exactly as it runs the ETF codec's: the Erlang
// generator writes CAMLBEAM_CONF_INPUT, this driver writes what came out of OCaml to
// CAMLBEAM_CONF_OUTPUT, and the Erlang checker then requires binary_to_term of each of those
// to be =:= the original term, which also covers the relaxed records.
#include "conformance_support.hpp"

#include <camlbeam/conv/conv.hpp>
#include <camlbeam/etf/etf.hpp>

#include <caml/callback.h>
#include <caml/mlvalues.h>

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <exception>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace etf = camlbeam::etf;
namespace conv = camlbeam::conv;
using namespace camlbeam::etf::conformance;

namespace {

constexpr std::string_view kPath = "conv";

// Calls a function the OCaml glue registered. No OCaml exception may unwind through C++
// frames, so one is caught here and rethrown as a C++ exception.
value call_ocaml(const char* name, value arg) {
  const value* f = caml_named_value(name);
  if (f == nullptr) throw std::logic_error(std::string("OCaml callback ") + name + " is not registered");
  const value result = caml_callback_exn(*f, arg);
  if (Is_exception_result(result))
    throw std::runtime_error(std::string("OCaml callback ") + name + " raised");
  return result;
}

std::string ocaml_string(value s) { return {String_val(s), caml_string_length(s)}; }

// An Erl.Term.t in Erlang syntax as the OCaml library prints it (shortened): what the
// built value holds, next to what the Erlang bytes say in a mismatch description.
std::string ocaml_text(value term) {
  try {
    std::string text = ocaml_string(call_ocaml("test.to_string", term));
    if (text.size() > kMaxTermChars) text = text.substr(0, kMaxTermChars) + " ...";
    return text;
  } catch (const std::exception& e) {
    return std::string("(cannot print it: ") + e.what() + ")";
  }
}

// Each form through OCaml and back, checked against OTP's plain form of its minor version.
class OcamlRoundTrip {
 public:
  // Checks every form of a record; returns our encodings (empty where we failed).
  Record check(std::size_t index, const Record& record) {
    Record ours{record.flags, {}};
    for (const Form& form : record.forms) {
      ++forms_checked_;
      Form& our_form = ours.forms.emplace_back(Form{form.minor_version, form.compression_level, {}});
      try {
        our_form.bytes = check_form(index, record, form);
      } catch (const std::exception& e) {
        record_error(identical_, kPath, index, form, e);
        our_form.bytes.clear();  // tells the Erlang checker that we produced nothing
      }
    }
    return ours;
  }

  std::size_t forms_checked() const { return forms_checked_; }

  void finish() const {
    identical_.finish();
    same_entries_.finish();
    canonical_.finish();
  }

 private:
  std::vector<std::uint8_t> check_form(std::size_t index, const Record& record, const Form& form) {
    conv::DecodeToOcaml decoded = conv::etf_to_ocaml(form.bytes);
    if (decoded.error) {
      record_error(identical_, kPath, index, form, std::string(etf::to_string(decoded.error->code)),
                   decoded.error->message());
      return {};
    }
    // Every call into OCaml may collect and move the value: only the Root follows it, so
    // the value is always read afresh from there, never kept in a local.
    check_canonical(index, form, decoded.value);

    buffer_.clear();
    conv::ocaml_to_etf(decoded.value.get(), buffer_, form.minor_version);
    std::vector<std::uint8_t> ours(buffer_.data(), buffer_.data() + buffer_.size());

    const std::vector<std::uint8_t>& expected = record.plain(form.minor_version).bytes;
    if (ours == expected) {
      identical_.pass();
    } else if (record.vm_specific_map_order()) {
      // ours and expected are both uncompressed, so their sizes must agree too.
      if (same_entries_in_another_order(etf::decode_term(expected), ours, expected.size())) {
        same_entries_.pass();
      } else {
        same_entries_.fail("differ", [&] { return describe(index, form, expected, ours, decoded.value); });
      }
    } else {
      identical_.fail(mismatch_kind(expected, ours),
                      [&] { return describe(index, form, expected, ours, decoded.value); });
    }
    return ours;
  }

  void check_canonical(std::size_t index, const Form& form, const conv::Root& built) {
    const std::string why = ocaml_string(call_ocaml("test.validate", built.get()));
    if (why.empty()) {
      canonical_.pass();
      return;
    }
    // validate says "<problem> in <shape of the term>": the problem alone is the kind.
    canonical_.fail(why.substr(0, why.find(" in ")), [&] {
      return describe_error(kPath, index, form, "Erl.Term.validate: " + why) +
             "\n  OCaml value (Erl.Term.to_string): " + ocaml_text(built.get());
    });
  }

  static std::string describe(std::size_t index, const Form& form, std::span<const std::uint8_t> expected,
                              std::span<const std::uint8_t> ours, const conv::Root& built) {
    return describe_mismatch(kPath, index, form, expected, ours) +
           "\n  OCaml value (Erl.Term.to_string): " + ocaml_text(built.get());
  }

  Tally identical_{"conv round trip through Erl.Term.t byte-identical"};
  // Empty when our order happens to match OTP's everywhere, which is no failure.
  Tally same_entries_{"conv round trip of maps in VM-specific order: same size, same term",
                      Tally::may_be_empty};
  Tally canonical_{"every Erl.Term.t built passes Erl.Term.validate"};
  etf::ByteBuffer buffer_;
  std::size_t forms_checked_ = 0;
};

TEST(ConvConformance, RoundTripThroughOcamlIsByteIdentical) {
  const std::vector<Record>& records = erlang_records();
  OcamlRoundTrip round_trip;
  std::vector<Record> ours;
  ours.reserve(records.size());
  for (std::size_t index = 0; index < records.size(); ++index)
    ours.push_back(round_trip.check(index, records[index]));
  write_records(required_env("CAMLBEAM_CONF_OUTPUT"), ours);
  std::printf("[conformance] %zu forms of %zu terms through OCaml; OCaml GC: %s\n",
              round_trip.forms_checked(), records.size(),
              ocaml_string(call_ocaml("test.gc_summary", Val_unit)).c_str());
  round_trip.finish();
}

}  // namespace

int main(int argc, char** argv) {
  caml_startup(argv);
  testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
