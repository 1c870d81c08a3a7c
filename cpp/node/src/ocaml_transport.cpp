#include "ocaml_transport.hpp"
#include "term_request.hpp"

#include <camlbeam/etf/term_builder.hpp>
#include <camlbeam/host/error.hpp>
#include <camlbeam/host/runtime.hpp>

#include <chrono>
#include <exception>
#include <string>
#include <string_view>

#include <caml/alloc.h>
#include <caml/callback.h>
#include <caml/memory.h>
#include <caml/mlvalues.h>
#include <caml/signals.h>

namespace camlbeam::node {

namespace {

// The node whose requests run on this process's runtime thread: there is one.
Node* serving_node = nullptr;

etf::Term to_etf(value term) {
  etf::TermBuilder builder;
  conv::walk_ocaml(term, builder);
  return builder.take();
}

// Unrooted: valid until the next OCaml allocation.
conv::UnrootedDecode to_ocaml(const etf::Term& term) { return TermRequest(term).to_ocaml(); }

// type awaited = Reply of Term.t | Raised of exn | Refused of string (erl_node.ml)
enum class Awaited : tag_t { reply = 0, raised = 1, refused = 2 };

struct Outcome {
  Awaited kind;
  value payload = Val_unit;  // reply, raised; unrooted
  std::string why;           // refused
};

// How often a waiting Erl.call_erlang looks at the runtime's pending signals: the cancel
// signal at the request's deadline does not end a wait on a condition variable.
constexpr std::chrono::milliseconds signal_poll{10};

Outcome call_erlang(Node& node, const host::Runtime& runtime, value module, value function, value args) {
  ErlCallStart start = node.start_erl_call(std::string_view(String_val(module), caml_string_length(module)),
                                           std::string_view(String_val(function), caml_string_length(function)),
                                           to_etf(args));
  const auto answer = [](const etf::Term& term) -> Outcome {
    const conv::UnrootedDecode decoded = to_ocaml(term);
    if (decoded.raised) return {Awaited::raised, *decoded.raised, {}};
    if (decoded.error) return {Awaited::refused, Val_unit, "Erlang's answer could not be converted"};
    return {Awaited::reply, decoded.term, {}};
  };
  switch (start.kind) {
    case ErlCallStart::Kind::refused: return {Awaited::refused, Val_unit, start.why};
    case ErlCallStart::Kind::answered: return answer(start.term);
    case ErlCallStart::Kind::started: break;
  }
  for (;;) {
    std::optional<etf::Term> result;
    {
      const host::BlockingSection released(runtime);
      result = node.wait_erl_call(start.term, signal_poll);
    }
    if (result) return answer(*result);
    if (caml_check_pending_actions()) {
      // Its OCaml handler runs now; what it raises (Erl.Cancelled at the deadline) reaches
      // the caller as a value, never as an OCaml exception through these C++ frames.
      const value raised = caml_process_pending_actions_exn();
      if (Is_exception_result(raised)) {
        node.abandon_erl_call(start.term);
        return {Awaited::raised, Extract_exception(raised), {}};
      }
    }
  }
}

const host::Runtime* serving_runtime = nullptr;

}  // namespace

conv::Root make_ocaml_context(Node& node, const host::Runtime& runtime, std::uint32_t worker_id) {
  const value* make = caml_named_value("camlbeam.node.context");
  if (make == nullptr) throw host::RuntimeError("camlbeam-node's OCaml half (erl_node.ml) is not linked in");
  const conv::UnrootedDecode self = to_ocaml(etf::Term::pid(node.ocaml_pid()));
  if (self.error || self.raised) throw host::RuntimeError("the node's pid could not be converted");
  const conv::Root self_root(self.term);
  const value context = caml_callback2_exn(*make, self_root.get(), Val_long(worker_id));
  if (Is_exception_result(context)) throw host::RuntimeError("camlbeam.node.context raised");
  serving_node = &node;
  serving_runtime = &runtime;
  return conv::Root(context);
}

}  // namespace camlbeam::node

extern "C" value camlbeam_node_send(value pid, value message) noexcept {
  CAMLparam2(pid, message);
  std::string why;
  try {
    camlbeam::node::Node* node = camlbeam::node::serving_node;
    if (node == nullptr) {
      why = "camlbeam-node is not serving";
    } else {
      camlbeam::etf::Term to = camlbeam::node::to_etf(pid);
      const auto* to_pid = to.get_if<camlbeam::etf::Boxed<camlbeam::etf::Pid>>();
      why = to_pid == nullptr ? "not a pid" : node->send_from_ocaml(**to_pid, camlbeam::node::to_etf(message));
    }
  } catch (const std::exception& e) {
    why = e.what();  // a term Erlang cannot hold (etf::EncodeError), or out of memory
  } catch (...) {
    why = "the message could not be sent";
  }
  CAMLreturn(caml_copy_string(why.c_str()));
}

extern "C" value camlbeam_node_call_erlang(value module, value function, value args) noexcept {
  CAMLparam3(module, function, args);
  CAMLlocal2(payload, result);
  using camlbeam::node::Awaited;
  camlbeam::node::Outcome outcome{Awaited::refused, Val_unit, "camlbeam-node is not serving"};
  try {
    if (camlbeam::node::serving_node != nullptr && camlbeam::node::serving_runtime != nullptr) {
      outcome = camlbeam::node::call_erlang(*camlbeam::node::serving_node, *camlbeam::node::serving_runtime, module,
                                            function, args);
    }
  } catch (const std::exception& e) {
    outcome = {Awaited::refused, Val_unit, e.what()};
  } catch (...) {
    outcome = {Awaited::refused, Val_unit, "the call could not be made"};
  }
  payload = outcome.kind == Awaited::refused ? caml_copy_string(outcome.why.c_str()) : outcome.payload;
  result = caml_alloc_small(1, static_cast<tag_t>(outcome.kind));
  Field(result, 0) = payload;
  CAMLreturn(result);
}
