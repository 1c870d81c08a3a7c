// OCaml 5: ETF -> Erl.Term.t -> ETF in several domains at once, under a minor heap small
// enough that collections stop every domain in the middle of its conversions. Each domain's
// builders are that domain's roots (cpp/conv/README.md), and Root's pool is shared: a
// builder or root the GC missed, or one scanned for the wrong domain, shows up as a term
// that comes back changed, or as a crash.
#include <camlbeam/conv/conv.hpp>
#include <camlbeam/etf/etf.hpp>

#include <caml/alloc.h>
#include <caml/callback.h>
#include <caml/memory.h>
#include <caml/minor_gc.h>
#include <caml/mlvalues.h>

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

namespace etf = camlbeam::etf;
namespace conv = camlbeam::conv;

// The round trip one domain runs (conv_domains_glue.ml): the bytes are copied out first,
// since the GC may move the OCaml string; a failure answers "", which the caller sees as a
// changed sample.
extern "C" value conv_domains_test_round_trip(value bytes) noexcept {
  CAMLparam1(bytes);
  CAMLlocal1(result);
  std::string out;
  try {
    const std::vector<std::uint8_t> in(Bytes_val(bytes), Bytes_val(bytes) + caml_string_length(bytes));
    conv::DecodeToOcaml decoded = conv::etf_to_ocaml(in);
    if (!decoded.error && !decoded.raised) {
      // A second root held across a collection, taken and given back while other domains
      // do the same.
      const conv::Root again(decoded.value.get());
      caml_minor_collection();
      etf::ByteBuffer buffer;
      conv::ocaml_to_etf(again.get(), buffer);
      const std::vector<std::uint8_t> written = buffer.to_vector();
      out.assign(written.begin(), written.end());
    }
  } catch (...) {
    out.clear();
  }
  result = caml_alloc_initialized_string(out.size(), out.data());
  CAMLreturn(result);
}

namespace {

std::vector<std::string> samples() {
  std::vector<std::string> texts = {
      "{ok, [{<<\"x\">>, 1.25}], #{list => [a, \"b\", <<\"c\">>]}}",
      "123456789012345678901234567890", "[1,2,3|tail]", "#{#{k => v} => [1], {x} => <<>>}",
      "fun lists:map/2", "#Pid<n@h.1.2.3>", "#Ref<n@h.3.1.2.3>", "{a,{b,{c,{d,[[[[]]]]}}}}"};
  std::string list = "[";
  for (int i = 0; i < 3000; ++i) list += (i ? "," : "") + std::to_string(i * 7919);
  texts.push_back(list + "]");
  std::string map = "#{";
  for (int i = 0; i < 100; ++i) map += (i ? "," : "") + std::to_string(i) + " => {" + std::to_string(i) + ", <<\"v\">>}";
  texts.push_back(map + "}");
  std::vector<std::string> encoded;
  for (const std::string& t : texts) {
    const std::vector<std::uint8_t> bytes = etf::encode(etf::parse_term(t));
    encoded.emplace_back(bytes.begin(), bytes.end());
  }
  // A binary past Erl.Binary.heap_max: off the OCaml heap, in a custom block.
  const std::vector<std::uint8_t> large = etf::encode(etf::Term::binary(std::string(100000, 'x')));
  encoded.emplace_back(large.begin(), large.end());
  return encoded;
}

}  // namespace

TEST(ConvDomains, ConversionsInFourDomainsAtOnceComeBackUnchanged) {
  const std::vector<std::string> encoded = samples();
  CAMLparam0();
  CAMLlocal2(array, result);
  array = caml_alloc(encoded.size(), 0);
  for (std::size_t i = 0; i < encoded.size(); ++i)
    Store_field(array, i, caml_alloc_initialized_string(encoded[i].size(), encoded[i].data()));
  const value* run = caml_named_value("conv_domains.run");
  ASSERT_NE(run, nullptr);
  result = caml_callback3(*run, array, Val_int(4), Val_int(60));
  EXPECT_EQ(std::string(String_val(result), caml_string_length(result)), "");
  CAMLdrop;
}

int main(int argc, char** argv) {
  caml_startup(argv);
  testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
