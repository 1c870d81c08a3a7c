// The NIF's term source and sink: ERL_NIF_TERMs straight into Erl.Term.t values and back,
// through cpp/conv's one builder (conv::OcamlBuilder) and one walker (conv::walk_ocaml).
// No ETF in between, except for the kinds the NIF API cannot take apart or build (pids,
// ports, references, funs, bignums: read with enif_term_to_binary and fed to the builder
// through etf's decoder; built with enif_binary_to_term, ERL_NIF_BIN2TERM_SAFE).
//
// Everything here runs on a thread that holds the OCaml runtime; the env it reads or writes
// is a process-independent one the caller owns (enif_alloc_env), or the calling process's.
#pragma once

#include <camlbeam/conv/conv.hpp>
#include <camlbeam/etf/decoder.hpp>
#include <camlbeam/host/request.hpp>

#include <erl_nif.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

namespace camlbeam::nif {

// Limits of a term read from Erlang, as etf::DecodeOptions has them for ETF.
struct ReadLimits {
  std::size_t max_depth = 100'000;  // nesting of lists, tuples, maps and funs
};

// One request, {call, Ref, Fun, Args, Timeout} and the rest of the shapes of
// cpp/host/README.md, as terms of `env`. The terms must stay valid while Host::run runs.
class NifRequestSource final : public host::RequestSource {
 public:
  NifRequestSource(ErlNifEnv* env, ERL_NIF_TERM request, ReadLimits limits = {}) noexcept
      : env_(env), request_(request), limits_(limits) {}

  conv::UnrootedDecode to_ocaml() override;
  std::optional<host::RequestHead> head() const noexcept override;

 private:
  ErlNifEnv* env_;
  ERL_NIF_TERM request_;
  ReadLimits limits_;
  // head()'s tag, as UTF-8: the NIF API copies an atom's text out rather than pointing at
  // it, and RequestHead::tag must outlive the call.
  mutable etf::detail::AtomText head_text_;
};

// Any term of `env` converted to an Erl.Term.t (unrooted, as NifRequestSource::to_ocaml).
conv::UnrootedDecode nif_to_ocaml(ErlNifEnv* env, ERL_NIF_TERM term, ReadLimits limits = {});

// Why an Erl.Term.t could not become a term of the VM.
struct BuildError {
  enum class Kind {
    unknown_atom,  // an atom the VM does not have: answers never create atoms (docs/api.md)
    // A reference of more than three words not of this node (BuildOptions): the port's
    // guard refuses it too (erlang/src/ocaml_etf_guard.erl).
    forged_reference,
    invalid,       // a value no Erlang term matches (Erl.Term.validate's cases: a NaN...)
    // A fun whose free variables hold a map of more than 32 keys: OTP 25 builds such a map
    // with the scheduler's data, and enif_binary_to_term crashes the VM on a thread that
    // is no scheduler. The caller has the whole term made on a scheduler instead
    // (binary_to_term of its ETF, in the worker's process).
    needs_scheduler,
    // Larger than BuildOptions::max_bytes: `size` is what was counted when the limit was
    // passed, a lower bound of the whole answer's.
    too_large,
  };
  Kind kind;
  std::string message;
  std::size_t size = 0;
};

// How answers become terms of the VM. Nothing OCaml writes may hurt the VM, as
// erlang/src/ocaml_etf_guard.erl says for the port's frames: no atom is created
// (enif_make_existing_atom_len; an unknown atom is BuildError::unknown_atom), and a
// reference of more than three words (trailing zero words not counted) is refused unless it
// names `local_node` with `local_creation` (OTP 25 hashes three words of a reference: forged
// cousins as map keys overflow the VM's C stack).
struct BuildOptions {
  bool existing_atoms_only = true;
  std::string local_node;         // atom_to_binary(node())
  std::uint32_t local_creation = 0;  // erlang:system_info(creation)
  // The most memory an answer may take in the VM (a term's words, and binaries' bytes, as
  // erts_debug:flat_size and byte_size count them, about); 0: no limit. Past it the build
  // stops with BuildError::too_large: a plugin answering a 2 GB term costs about this much.
  std::size_t max_bytes = 0;
};

// An Erl.Term.t → a term of `env`, or why not. Allocates nothing on the OCaml heap.
struct BuiltTerm {
  ERL_NIF_TERM term = 0;
  std::optional<BuildError> error;
};
BuiltTerm ocaml_to_nif(ErlNifEnv* env, value term, const BuildOptions& options);

}  // namespace camlbeam::nif
