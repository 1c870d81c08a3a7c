// Arbitrary bytes into the conversion the port worker runs on every request: ETF straight
// into the OCaml heap (conv::etf_to_ocaml) and back (conv::ocaml_to_etf), under a tiny
// minor heap so that the GC moves values in the middle of building them.
//  - It accepts exactly the inputs the Term decoder accepts (the same decoder drives both;
//    the OCaml side must add no failure of its own, and miss none: duplicate map keys).
//  - What it accepts comes back as the canonical encoding of the Term: byte for byte what
//    etf::encode makes, so nothing is lost or altered on the way through OCaml.
#include "fuzz_check.hpp"

#include <camlbeam/conv/conv.hpp>
#include <camlbeam/etf/etf.hpp>

#include <caml/callback.h>

#include <cstdint>
#include <cstdlib>
#include <span>
#include <vector>

namespace etf = camlbeam::etf;
using camlbeam::fuzz::require;

namespace {

const etf::DecodeOptions kOptions = camlbeam::fuzz::decode_options();

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  (void)argc;
  // A 4k-word minor heap: a collection every few hundred values built.
  setenv("OCAMLRUNPARAM", "s=4k", 0);
  caml_startup(*argv);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::uint8_t> input(data, size);

  etf::TermBuilder builder;
  const etf::DecodeResult by_term = etf::decode(input, builder, kOptions);
  camlbeam::conv::DecodeToOcaml by_ocaml = camlbeam::conv::etf_to_ocaml(input, kOptions);

  require(static_cast<bool>(by_term) == !by_ocaml.error.has_value(),
          "the OCaml builder accepts exactly what the Term builder accepts", input);
  if (!by_term) {
    require(by_ocaml.error->code == by_term.error->code && by_ocaml.error->offset == by_term.error->offset,
            "both builders fail with the same error at the same offset", input);
    return 0;
  }

  const std::vector<std::uint8_t> canonical = etf::encode(builder.take());
  etf::ByteBuffer through_ocaml;
  camlbeam::conv::ocaml_to_etf(by_ocaml.value.get(), through_ocaml);
  require(std::equal(canonical.begin(), canonical.end(), through_ocaml.data(), through_ocaml.data() + through_ocaml.size()) &&
              canonical.size() == through_ocaml.size(),
          "ETF -> Erl.Term.t -> ETF is the canonical encoding", canonical, through_ocaml.span());
  return 0;
}
