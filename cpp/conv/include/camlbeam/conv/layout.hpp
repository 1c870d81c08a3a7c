// The block layout of Erl.Term.t (ocaml/src/term.mli, "Memory layout"). Only cpp/conv
// includes this; the OCaml side promises that constructors are only ever added at the end.
#pragma once

#include <camlbeam/conv/conv.hpp>

#include <caml/mlvalues.h>

namespace camlbeam::conv::layout {

namespace term_tag {
inline constexpr tag_t int_ = 0;
inline constexpr tag_t bigint = 1;
inline constexpr tag_t float_ = 2;
inline constexpr tag_t atom = 3;
inline constexpr tag_t ref = 4;
inline constexpr tag_t fun = 5;
inline constexpr tag_t port = 6;
inline constexpr tag_t pid = 7;
inline constexpr tag_t tuple = 8;
inline constexpr tag_t map = 9;
inline constexpr tag_t list = 10;
inline constexpr tag_t improper = 11;
inline constexpr tag_t binary = 12;
inline constexpr tag_t bitstring = 13;
inline constexpr tag_t handle = 14;
}  // namespace term_tag

// Erl.Binary.t: Heap of string | Off_heap of bigstring (a managed Bigarray of char).
namespace binary_tag {
inline constexpr tag_t heap = 0;
inline constexpr tag_t off_heap = 1;
}  // namespace binary_tag

// The longest binary the builders keep in the OCaml heap: the longest string the runtime
// allocates in the minor heap. A longer one would go straight to the major heap, which
// only a major cycle reclaims; off the heap, its memory is freed at the minor collection
// after its last use, ready for the next request.
inline constexpr std::size_t heap_binary_max = Max_young_wosize * sizeof(value) - 1;

namespace fun_tag {
inline constexpr tag_t local = 0;
inline constexpr tag_t export_ = 1;
}  // namespace fun_tag

// Erl.Term.handle: the fields the converters read; the rest are OCaml's own.
namespace handle_field {
inline constexpr mlsize_t id = 0;       // immediate int
inline constexpr mlsize_t monitor = 1;  // pid option
}  // namespace handle_field

// Fields of the Local record of Erl.Term.fun_, in declaration order.
namespace local_field {
inline constexpr mlsize_t arity = 0;
inline constexpr mlsize_t uniq = 1;
inline constexpr mlsize_t index = 2;
inline constexpr mlsize_t module_ = 3;
inline constexpr mlsize_t old_index = 4;
inline constexpr mlsize_t old_uniq = 5;
inline constexpr mlsize_t pid = 6;
inline constexpr mlsize_t free_vars = 7;
inline constexpr mlsize_t count = 8;
}  // namespace local_field

}  // namespace camlbeam::conv::layout
