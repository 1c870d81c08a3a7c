// Erl.Term.t → term sinks: the non-template parts of walk_ocaml.
#include <camlbeam/conv/conv.hpp>

#include <camlbeam/etf/term_builder.hpp>

#include <gmp.h>
#include <zarith.h>

namespace camlbeam::conv {

namespace detail {

BigDigits big_digits(value z) {
  BigDigits out;
  mpz_t m;
  ml_z_mpz_init_set_z(m, z);  // reads the Z.t; allocates only GMP memory
  if (mpz_fits_slong_p(m)) {
    out.fits_int64 = true;
    out.small = mpz_get_si(m);
  } else {
    out.negative = mpz_sgn(m) < 0;
    out.magnitude.resize((mpz_sizeinbase(m, 2) + 7) / 8);
    std::size_t written = 0;
    mpz_export(out.magnitude.data(), &written, -1, 1, 0, 0, m);  // little-endian bytes of |m|
    out.magnitude.resize(written);
  }
  mpz_clear(m);
  return out;
}

// The HAMT order is defined on etf::Term (etf/map_order.hpp); large maps are rare enough
// that building their keys as Terms once is the simple, correct way to share it.
std::vector<std::uint32_t> ocaml_hashmap_order(value bindings) {
  const std::size_t n = Wosize_val(bindings);
  std::vector<etf::Term> flat;
  flat.reserve(2 * n);
  for (std::size_t i = 0; i < n; ++i) {
    etf::TermBuilder builder;
    walk_ocaml(Field(Field(bindings, i), 0), builder);
    flat.push_back(builder.take());
    flat.emplace_back();  // values do not affect the order
  }
  return etf::hashmap_encoding_order(flat);
}

}  // namespace detail

void ocaml_to_etf(value term, etf::ByteBuffer& out, int minor_version) {
  etf::Writer writer(out, minor_version);
  writer.version();
  walk_ocaml(term, writer);
}

}  // namespace camlbeam::conv
