// Small helpers over the OCaml runtime's C interface, private to cpp/host.
#pragma once

#include <caml/callback.h>
#include <caml/memory.h>
#include <caml/mlvalues.h>
#include <caml/printexc.h>

#include <memory>
#include <string>

namespace camlbeam::host::detail {

// The text of an OCaml exception, as the runtime prints uncaught ones. Allocates nothing
// on the OCaml heap, so it is safe on a value that is not rooted.
inline std::string exception_text(value exn) {
  const std::unique_ptr<char, void (*)(caml_stat_block)> text(caml_format_exception(exn), caml_stat_free);
  return text ? std::string(text.get()) : std::string("an OCaml exception");
}

// Whether `exn` is the exception registered under `name` (Callback.register_exception),
// with or without arguments.
inline bool is_registered_exception(value exn, const char* name) noexcept {
  const value* registered = caml_named_value(name);
  if (registered == nullptr) return false;
  const value slot = Tag_hd(Hd_val(exn)) == Object_tag ? exn : Field(exn, 0);
  return slot == *registered;
}

}  // namespace camlbeam::host::detail
