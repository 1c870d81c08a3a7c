// The node's term source and sink for the host: a request that is already an etf::Term
// (the dispatch thread decoded it from its frame) converted straight into an Erl.Term.t,
// and an answer walked straight back into an etf::Term, with no ETF bytes in between.
#pragma once

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

// Runs `request` through the host and gives its answer as a term: {ok, _} or {error, _}
// for a call (the host's own errors included), nullopt for a cast. An answer the cluster
// cannot hold (a value that breaks Erl.Term.t's invariants) is {error, {bad_reply,
// Message}}; a request the host refuses is {error, {request_failed, Message}}. Call it on
// the runtime thread; only std::bad_alloc propagates. `context`: Host::run's.
std::optional<etf::Term> run_request(host::Host& host, const etf::Term& request, std::string* cast_diagnostic,
                                     const conv::Root* context = nullptr);

}  // namespace camlbeam::node
