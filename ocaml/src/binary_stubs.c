/* The copies and comparisons of Erl.Binary that the standard library has no
   primitive for: between an off-heap Bigarray of char and OCaml strings.
   None of them allocates or raises; the OCaml side checks every range. */
#include <caml/bigarray.h>
#include <caml/mlvalues.h>

#include <string.h>

value camlbeam_blit_bigstring_to_bytes(value src, value src_pos, value dst, value dst_pos,
                                       value len) {
  memcpy(Bytes_val(dst) + Long_val(dst_pos), (const char*)Caml_ba_data_val(src) + Long_val(src_pos),
         Long_val(len));
  return Val_unit;
}

/* Bytewise, then a prefix first: Erlang's order of binaries. */
static value compare_bytes(const void* a, size_t la, const void* b, size_t lb) {
  const int c = memcmp(a, b, la < lb ? la : lb);
  if (c != 0) return Val_int(c < 0 ? -1 : 1);
  return Val_int(la < lb ? -1 : la > lb ? 1 : 0);
}

value camlbeam_compare_bigstrings(value a, value b) {
  return compare_bytes(Caml_ba_data_val(a), (size_t)Caml_ba_array_val(a)->dim[0],
                       Caml_ba_data_val(b), (size_t)Caml_ba_array_val(b)->dim[0]);
}

value camlbeam_compare_string_bigstring(value a, value b) {
  return compare_bytes(String_val(a), caml_string_length(a), Caml_ba_data_val(b),
                       (size_t)Caml_ba_array_val(b)->dim[0]);
}
