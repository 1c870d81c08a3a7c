// Conversion between Erlang terms and OCaml Erl.Term.t values, with no tree in between:
// a term source (the ETF decoder now, the NIF reader later) drives OcamlBuilder, and
// walk_ocaml drives any term sink (the ETF Writer now, the NIF term builder later).
//
// Everything here runs on a thread that holds the OCaml runtime. The layout of Erl.Term.t
// it allocates and reads is documented in ocaml/src/term.mli; this folder is the only C++
// that knows it.
#pragma once

#include <camlbeam/etf/decoder.hpp>
#include <camlbeam/etf/encoder.hpp>
#include <camlbeam/etf/visitor.hpp>

#include <caml/mlvalues.h>

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

namespace camlbeam::conv {

// The tag of a block: use it instead of Tag_val, which in OCaml 4.13 indexes with
// -sizeof(value), an unsigned offset that wraps around (undefined behaviour, reported by
// clang's UBSan on every call).
inline tag_t tag_of(value block) noexcept { return Tag_hd(Hd_val(block)); }

// An OCaml value kept alive and tracked by the GC while C++ holds it. Move-only; create,
// use and destroy it on a thread holding the runtime.
//
// It holds a slot of a process-wide pool of global roots, each registered with the GC once,
// when the pool grows: taking and returning one is a free-list operation. Registering a
// root per value (caml_register_generational_global_root) costs a skip-list insertion and
// removal with a malloc and a free, several times the cost of converting a small term.
// The GC scans every slot of the pool at each collection; the pool is as large as the
// most Roots ever alive at once.
class Root {
 public:
  Root() noexcept = default;
  explicit Root(value v);
  Root(Root&& other) noexcept;
  Root& operator=(Root&& other) noexcept;
  Root(const Root&) = delete;
  Root& operator=(const Root&) = delete;
  ~Root();

  value get() const noexcept { return slot_ != nullptr ? *slot_ : Val_unit; }
  void set(value v);

 private:
  value* slot_ = nullptr;
};

// An etf::Visitor that builds one Erl.Term.t on the OCaml heap, bottom-up: every finished
// value waits on a C++ vector that the GC scans as roots (caml_scan_roots_hook), and a
// container's block is allocated when it closes, initialised with plain stores. Maps are
// sorted by the OCaml side ("camlbeam.map_of_array").
//
// Construct, use and destroy it only on a thread holding the OCaml runtime (OCaml 5: the
// domain it was made in): it links itself into the list of builders the hook scans, and
// allocates through that domain's state. etf_to_ocaml reuses builders from a pool, so a
// call registers nothing with the GC.
class OcamlBuilder {
 public:
  OcamlBuilder();
  ~OcamlBuilder();
  OcamlBuilder(const OcamlBuilder&) = delete;
  OcamlBuilder& operator=(const OcamlBuilder&) = delete;

  void integer(std::int64_t v);
  void big_integer(bool negative, std::span<const std::uint8_t> magnitude);
  void float64(double d);
  void atom(std::string_view utf8);
  void binary(std::span<const std::uint8_t> bytes);
  void bitstring(std::span<const std::uint8_t> bytes, std::uint8_t bits);
  void nil();
  void string(std::span<const std::uint8_t> bytes);
  void begin_list(std::uint32_t n);
  // A list whose elements are counted only as they come, then its tail, then end_list: for
  // a source that learns a list's length by walking it (the NIF reader). Not part of
  // etf::Visitor.
  void begin_list_of_unknown_length();
  void end_list();
  void begin_tuple(std::uint32_t n);
  void end_tuple();
  void begin_map(std::uint32_t n);
  void end_map();
  void pid(const etf::PidView& pid);
  void port(const etf::PortView& port);
  void reference(const etf::ReferenceView& ref);
  void begin_fun(const etf::FunView& fun);
  void end_fun();
  void export_fun(std::string_view module, std::string_view function, std::uint8_t arity);
  // Erl.Term.Handle of `handle` (an Erl.Term.handle), which the caller keeps alive: a term
  // source that holds OCaml values for Erlang (the NIF's resources) hands them back here.
  // Not part of etf::Visitor: no ETF carries a handle.
  void handle(value handle);

  // The finished value (unrooted: root it before the next allocation); the builder is
  // empty and reusable afterwards.
  value take();
  // Drops a partial build (after a decode error); the builder is reusable afterwards.
  void reset() noexcept;

 private:
  struct Frame;
  friend struct BuilderRoots;
  friend class BuilderLease;

  bool at_list_tail() const noexcept;
  void child_done() noexcept;
  void push_child(value v);
  void wrap_top(tag_t tag);
  value block_of(std::size_t first, std::size_t n, tag_t tag);
  void cons_onto(std::size_t acc, std::size_t base, std::size_t n);

  std::vector<value> vals_;  // GC roots: finished values, in event order
  std::vector<Frame> frames_;
  // Caml_state of the domain it builds in, read when it is made or leased: under OCaml 5
  // each read of Caml_state is a call (a thread-local in a shared library).
  caml_domain_state* domain_;
  OcamlBuilder* prev_ = nullptr;  // the list of live builders the GC hook scans
  OcamlBuilder* next_ = nullptr;
};

static_assert(etf::Visitor<OcamlBuilder>);

// Thrown by OcamlBuilder when an OCaml callback it makes ("camlbeam.map_of_array") raised.
// That is never the input's fault: an asynchronous exception (a signal handler's, such as
// Erl.Cancelled, or Out_of_memory, Stack_overflow) met the callback's OCaml code. The
// decoder lets it through; etf_to_ocaml reports it as `raised`. Unrooted: valid until the
// next OCaml allocation.
struct CallbackRaised {
  value exception;
};

// ETF bytes (131 ...) → Erl.Term.t. The returned Root holds the value. Exactly one of
// value (set), error and raised: raised is the exception of CallbackRaised, rooted.
// std::bad_alloc propagates (the C++ memory of the build, or a block the major heap cannot
// make room for).
struct DecodeToOcaml {
  Root value;
  std::optional<etf::DecodeError> error;
  std::optional<Root> raised;
};
DecodeToOcaml etf_to_ocaml(std::span<const std::uint8_t> bytes, const etf::DecodeOptions& options = {});

// The same, unrooted: `term` stays valid only until the next allocation on the OCaml heap.
// For a caller that hands it to OCaml at once (caml_callback roots its arguments) or only
// reads it (ocaml_to_etf allocates nothing), as a request does: taking and returning a Root
// was a quarter of the time of converting a small term.
struct UnrootedDecode {
  value term = Val_unit;
  std::optional<etf::DecodeError> error;
  std::optional<value> raised;  // CallbackRaised's exception; unrooted too
};
UnrootedDecode etf_to_ocaml_unrooted(std::span<const std::uint8_t> bytes,
                                     const etf::DecodeOptions& options = {});

namespace detail {
struct BuilderPool;  // ocaml_builder.cpp
}

// A builder lent by the pool etf_to_ocaml takes its builders from, for the other term
// sources (the NIF's reader): a conversion then makes no builder and registers nothing
// with the GC, whichever source drives it. The builder is reset and given back when the
// lease ends. Take and end a lease on the thread holding the runtime (OCaml 5: of the
// domain it was taken in).
class BuilderLease {
 public:
  BuilderLease();
  ~BuilderLease();
  BuilderLease(const BuilderLease&) = delete;
  BuilderLease& operator=(const BuilderLease&) = delete;
  OcamlBuilder& operator*() const noexcept { return *builder_; }

 private:
  explicit BuilderLease(caml_domain_state* domain);

  detail::BuilderPool& pool_;  // looked up once: the function-local static's guard costs each time
  OcamlBuilder* builder_;
};

// Feeds an Erl.Term.t to a sink in the decoder's event order. Reads only: no OCaml
// allocation happens, so the raw values it holds stay valid. Throws etf::EncodeError for
// a value that breaks Erl.Term.t's invariants (which Erl.Term.validate describes).
template <etf::Visitor V>
void walk_ocaml(value term, V& sink);

// Erl.Term.t → ETF bytes (131 ...), appended to out.
void ocaml_to_etf(value term, etf::ByteBuffer& out, int minor_version = 1);

}  // namespace camlbeam::conv

#include <camlbeam/conv/detail/walk_ocaml.hpp>
