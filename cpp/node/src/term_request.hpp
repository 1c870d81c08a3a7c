// The node's term source and sinks for the host: a request that is already an etf::Term
// (decoded from its frame) converted straight into an Erl.Term.t; an answer written
// straight into the frame of its reply (write_answer), or walked into an etf::Term where
// the node takes it apart (answer_term).
#pragma once

#include "known_atoms.hpp"

#include <camlbeam/etf/encoder.hpp>
#include <camlbeam/etf/term.hpp>
#include <camlbeam/host/host.hpp>
#include <camlbeam/host/request.hpp>

namespace camlbeam::node {

class TermRequest final : public host::RequestSource {
 public:
  // `request` must stay where it is while Host::run runs.
  explicit TermRequest(const etf::Term& request) noexcept : request_(&request) {}

  conv::UnrootedDecode to_ocaml() override;
  std::optional<host::RequestHead> head() const noexcept override;

 private:
  const etf::Term* request_;
};

// A host's answer (Host::run's, for a TermRequest) as a term: {ok, _} or {error, _} for a
// call (the host's own errors included), nullopt for a cast. An answer the cluster cannot
// hold (a value that breaks Erl.Term.t's invariants) is {error, {bad_reply, Message}}; a
// request the host refused is {error, {request_failed, Message}}. Call it on the runtime
// thread; only std::bad_alloc propagates.
std::optional<etf::Term> answer_term(const host::Answer& answer, std::string* cast_diagnostic);

// A reply's answer (Answer::Kind::reply) written by `writer`, on the runtime thread: throws
// Processes::AnswerRefused with what goes instead when it cannot go as it is, an answer the
// cluster cannot hold ({error, {bad_reply, Message}}, as answer_term words it) or one
// holding an atom `known` lacks (KnownAtoms::refusal).
void write_answer(const host::Answer& answer, etf::Writer& writer, const KnownAtoms::PeerView& known);

}  // namespace camlbeam::node
