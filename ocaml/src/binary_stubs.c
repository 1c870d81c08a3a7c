/* The copies, comparisons and hashes of Erl.Binary that the standard library
   has no primitive for: between an off-heap Bigarray of char and OCaml strings.
   None of them allocates or raises; the OCaml side checks every range. */
#include <caml/bigarray.h>
#include <caml/hash.h>
#include <caml/mlvalues.h>

#include <stdint.h>

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

/* One hash of the bytes for both representations (Hashtbl.hash of a string and
   of a Bigarray differ, and the latter reads only a prefix): every byte, four at
   a time through the runtime's own mixing step, then the length and
   MurmurHash3's final avalanche. 30 bits, as Hashtbl.hash. */
static value hash_bytes(const unsigned char* p, size_t len) {
  uint32_t h = 0;
  size_t i = 0;
  for (; i + 4 <= len; i += 4) {
    uint32_t w;
    memcpy(&w, p + i, 4);
    h = caml_hash_mix_uint32(h, w);
  }
  if (i < len) {
    uint32_t w = 0;
    memcpy(&w, p + i, len - i);
    h = caml_hash_mix_uint32(h, w);
  }
  h ^= (uint32_t)len;
  h ^= h >> 16;
  h *= 0x85ebca6bu;
  h ^= h >> 13;
  h *= 0xc2b2ae35u;
  h ^= h >> 16;
  return Val_long(h & 0x3FFFFFFFu);
}

value camlbeam_hash_string(value s) {
  return hash_bytes(Bytes_val(s), caml_string_length(s));
}

value camlbeam_hash_bigstring(value b) {
  return hash_bytes(Caml_ba_data_val(b), (size_t)Caml_ba_array_val(b)->dim[0]);
}
