#include "term_request.hpp"

#include "messages.hpp"
#include "processes.hpp"

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

std::optional<Term> answer_term(const host::Answer& answer, std::string* cast_diagnostic) {
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

namespace {

// etf::Writer, refusing each name the peer's VM may not know as it comes.
class KnownAtomsWriter {
 public:
  KnownAtomsWriter(etf::Writer& writer, const KnownAtoms::PeerView& known) noexcept : out_(writer), known_(known) {}

  void integer(std::int64_t v) { out_.integer(v); }
  void big_integer(bool negative, std::span<const std::uint8_t> magnitude) { out_.big_integer(negative, magnitude); }
  void float64(double d) { out_.float64(d); }
  void atom(std::string_view name) {
    check(name);
    out_.atom(name);
  }
  void binary(std::span<const std::uint8_t> bytes) { out_.binary(bytes); }
  void bitstring(std::span<const std::uint8_t> bytes, std::uint8_t bits) { out_.bitstring(bytes, bits); }
  void nil() { out_.nil(); }
  void string(std::span<const std::uint8_t> bytes) { out_.string(bytes); }
  void begin_list(std::uint32_t n) { out_.begin_list(n); }
  void end_list() { out_.end_list(); }
  void begin_tuple(std::uint32_t n) { out_.begin_tuple(n); }
  void end_tuple() { out_.end_tuple(); }
  void begin_map(std::uint32_t n) { out_.begin_map(n); }
  void end_map() { out_.end_map(); }
  void pid(const etf::PidView& pid) {
    check(pid.node);
    out_.pid(pid);
  }
  void port(const etf::PortView& port) {
    check(port.node);
    out_.port(port);
  }
  void reference(const etf::ReferenceView& ref) {
    check(ref.node);
    out_.reference(ref);
  }
  void begin_fun(const etf::FunView& fun) {
    check(fun.module);
    check(fun.pid.node);
    out_.begin_fun(fun);
  }
  void end_fun() { out_.end_fun(); }
  void export_fun(std::string_view module, std::string_view function, std::uint8_t arity) {
    check(module);
    check(function);
    out_.export_fun(module, function, arity);
  }

 private:
  void check(std::string_view name) const {
    if (!known_.knows(name)) throw Processes::AnswerRefused{KnownAtoms::refusal(name)};
  }

  etf::Writer& out_;
  const KnownAtoms::PeerView& known_;
};

}  // namespace

void write_answer(const host::Answer& answer, etf::Writer& writer, const KnownAtoms::PeerView& known) {
  KnownAtomsWriter checked(writer, known);
  try {
    conv::walk_ocaml(answer.term(), checked);
  } catch (const etf::EncodeError& e) {
    throw Processes::AnswerRefused{error_answer("bad_reply", e.what())};
  }
}

}  // namespace camlbeam::node
