#include "messages.hpp"

#include <algorithm>
#include <string>
#include <utility>

namespace camlbeam::node {

namespace {

using etf::Term;

bool is_function_name(const Term& fun) {
  if (fun.kind() == etf::Kind::atom) return true;
  const auto qualified = fun.tuple_elements();
  return qualified.size() == 2 && qualified[0].kind() == etf::Kind::atom && qualified[1].kind() == etf::Kind::atom;
}

bool is_proper_list(const Term& term) {
  if (term.kind() == etf::Kind::nil) return true;
  const auto* list = term.get_if<etf::List>();
  return list != nullptr && list->items.back().kind() == etf::Kind::nil;
}

// {Tag, Fun, Args} with a function name and an argument list (and, where `timeout` is
// given, {Tag, Fun, Args, Timeout}): whether `request` is one.
bool is_fun_and_args(const Term& request, std::string_view tag, std::optional<std::uint32_t>* timeout_ms = nullptr) {
  const auto elements = request.tuple_elements();
  const bool with_timeout = timeout_ms != nullptr && elements.size() == 4;
  if ((elements.size() != 3 && !with_timeout) || !elements[0].is_atom(tag)) return false;
  if (!is_function_name(elements[1]) || !is_proper_list(elements[2])) return false;
  if (!with_timeout) return true;
  if (elements[3].is_atom("infinity")) return true;
  const auto* ms = elements[3].get_if<std::int64_t>();
  if (ms == nullptr || *ms < 0 || *ms > std::int64_t{UINT32_MAX}) return false;
  const auto given = static_cast<std::uint32_t>(*ms);
  *timeout_ms = *timeout_ms ? std::min(**timeout_ms, given) : given;
  return true;
}

}  // namespace

std::optional<std::variant<GenCall, GenCast>> gen_message(Term message) {
  auto* tuple = std::get_if<etf::Tuple>(&message.repr());
  if (tuple == nullptr) return std::nullopt;
  auto& elements = tuple->elements;
  if (elements.size() == 3 && elements[0].is_atom("$gen_call")) {
    auto* from = std::get_if<etf::Tuple>(&elements[1].repr());
    if (from == nullptr || from->elements.size() != 2) return std::nullopt;
    auto* pid = std::get_if<etf::Boxed<etf::Pid>>(&from->elements[0].repr());
    if (pid == nullptr) return std::nullopt;
    return GenCall{std::move(**pid), std::move(from->elements[1]), std::move(elements[2])};
  }
  if (elements.size() == 2 && elements[0].is_atom("$gen_cast")) return GenCast{std::move(elements[1])};
  return std::nullopt;
}

namespace {

// {Tag, Fun, Args[, Timeout]} taken apart, Fun and Args moved out of it; a Timeout, where
// `timeout_ms` takes one, shortens it.
std::optional<std::pair<Term, Term>> take_fun_and_args(Term& request, std::string_view tag,
                                                       std::optional<std::uint32_t>* timeout_ms = nullptr) {
  if (!is_fun_and_args(request, tag, timeout_ms)) return std::nullopt;
  auto& elements = std::get<etf::Tuple>(request.repr()).elements;
  return std::pair{std::move(elements[1]), std::move(elements[2])};
}

}  // namespace

std::optional<Term> host_call(Term request, Term ref, std::optional<std::uint32_t> timeout_ms) {
  auto parts = take_fun_and_args(request, "call", &timeout_ms);
  if (!parts) return std::nullopt;
  std::vector<Term> elements;
  elements.reserve(5);
  elements.push_back(Term::atom("call"));
  elements.push_back(std::move(ref));
  elements.push_back(std::move(parts->first));
  elements.push_back(std::move(parts->second));
  if (timeout_ms) elements.push_back(Term::integer(*timeout_ms));
  return Term::tuple(std::move(elements));
}

std::optional<Term> host_cast(Term request, std::optional<std::uint32_t> timeout_ms) {
  auto parts = take_fun_and_args(request, "cast", &timeout_ms);
  if (!parts) return std::nullopt;
  if (!timeout_ms) return tuple_of(Term::atom("cast"), std::move(parts->first), std::move(parts->second));
  // The host's casts have no deadline: a call whose answer nobody gets (Ref: cast).
  return tuple_of(Term::atom("call"), Term::atom("cast"), std::move(parts->first), std::move(parts->second),
                  Term::integer(*timeout_ms));
}

Term error_answer(std::string_view kind, std::string_view message) {
  return tuple_of(Term::atom("error"), tuple_of(Term::atom(kind), Term::binary(message)));
}

std::optional<ExecuteCall> execute_call(const Term& module, const Term& function, Term args) {
  if (!module.is_atom("erpc") || !function.is_atom("execute_call")) return std::nullopt;
  auto* list = std::get_if<etf::List>(&args.repr());
  // [Ref, M, F, A]: four items and the [] tail.
  if (list == nullptr || list->items.size() != 5 || list->items[4].kind() != etf::Kind::nil) return std::nullopt;
  auto& items = list->items;
  if (items[1].kind() != etf::Kind::atom || items[2].kind() != etf::Kind::atom || !is_proper_list(items[3])) {
    return std::nullopt;
  }
  return ExecuteCall{std::move(items[0]), std::move(items[1]), std::move(items[2]), std::move(items[3])};
}

namespace {

// The Reason of a failed call as Erlang would raise it, and the stack it came from.
std::pair<Term, Term> failure(const ExecuteCall& call, Term answer) {
  auto* elements = std::get_if<etf::Tuple>(&answer.repr());
  Term reason = elements != nullptr && elements->elements.size() == 2 ? std::move(elements->elements[1])
                                                                      : std::move(answer);
  // {undef, {M, F}} or {undef, F}: what calling a missing Erlang function raises.
  if (const auto why = reason.tuple_elements(); why.size() == 2 && why[0].is_atom("undef")) {
    reason = Term::atom("undef");
  }
  return {std::move(reason), Term::list({Term::tuple({call.module, call.function, call.args, Term::nil()})})};
}

// The Result of {ok, Result}, moved out.
std::optional<Term> ok_result(Term& answer) {
  auto* tuple = std::get_if<etf::Tuple>(&answer.repr());
  if (tuple == nullptr || tuple->elements.size() != 2 || !tuple->elements[0].is_atom("ok")) return std::nullopt;
  return std::move(tuple->elements[1]);
}

}  // namespace

Term execute_call_exit(const ExecuteCall& call, Term answer) {
  if (auto result = ok_result(answer)) return tuple_of(call.ref, Term::atom("return"), std::move(*result));
  auto [reason, stack] = failure(call, std::move(answer));
  return tuple_of(call.ref, Term::atom("error"), std::move(reason), std::move(stack));
}

Term rpc_result(const ExecuteCall& call, Term answer) {
  if (auto result = ok_result(answer)) return std::move(*result);
  auto [reason, stack] = failure(call, std::move(answer));
  return tuple_of(Term::atom("badrpc"), tuple_of(Term::atom("EXIT"), tuple_of(std::move(reason), std::move(stack))));
}

}  // namespace camlbeam::node
