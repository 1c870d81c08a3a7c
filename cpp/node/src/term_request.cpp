#include "term_request.hpp"

#include "messages.hpp"

#include <camlbeam/conv/conv.hpp>
#include <camlbeam/etf/encoder.hpp>
#include <camlbeam/etf/term_builder.hpp>

#include <string>

namespace camlbeam::node {

using etf::Term;

conv::UnrootedDecode TermRequest::to_ocaml() {
  conv::UnrootedDecode out;
  try {
    const conv::BuilderLease builder;
    etf::walk(*request_, *builder);
    out.term = (*builder).take();
  } catch (const etf::Reject& reject) {
    // A map whose keys Erlang holds apart but Erl.Term.compare does not.
    out.error = etf::DecodeError{reject.code, 0, reject.detail};
  } catch (const conv::CallbackRaised& raised) {
    out.raised = raised.exception;
  }
  return out;
}

std::optional<host::RequestHead> TermRequest::head() const noexcept {
  const auto elements = request_->tuple_elements();
  if (elements.empty()) return std::nullopt;
  const std::optional<std::string_view> tag = elements[0].atom_name();
  if (!tag) return std::nullopt;
  return host::RequestHead{*tag, elements.size()};
}

std::optional<Term> run_request(host::Host& host, const Term& request, std::string* cast_diagnostic,
                                const conv::Root* context) {
  TermRequest source(request);
  const host::Answer answer = host.run(source, context);
  switch (answer.kind()) {
    case host::Answer::Kind::no_reply:
      if (cast_diagnostic != nullptr) *cast_diagnostic = answer.diagnostic();
      return std::nullopt;
    case host::Answer::Kind::refused:
      return error_answer("request_failed", answer.error() ? answer.error()->message : "refused");
    case host::Answer::Kind::reply:
      break;
  }
  try {
    etf::TermBuilder builder;
    conv::walk_ocaml(answer.term(), builder);
    return builder.take();
  } catch (const etf::EncodeError& e) {
    return error_answer("bad_reply", e.what());
  }
}

}  // namespace camlbeam::node
