#include "messages.hpp"

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

// {Tag, Fun, Args} with a function name and an argument list: Fun and Args.
std::optional<std::pair<const Term*, const Term*>> fun_and_args(const Term& request, std::string_view tag) {
  const auto elements = request.tuple_elements();
  if (elements.size() != 3 || !elements[0].is_atom(tag)) return std::nullopt;
  if (!is_function_name(elements[1]) || !is_proper_list(elements[2])) return std::nullopt;
  return std::pair{&elements[1], &elements[2]};
}

}  // namespace

std::optional<std::variant<GenCall, GenCast>> gen_message(const Term& message) {
  const auto elements = message.tuple_elements();
  if (elements.size() == 3 && elements[0].is_atom("$gen_call")) {
    const auto from = elements[1].tuple_elements();
    if (from.size() != 2 || from[0].kind() != etf::Kind::pid) return std::nullopt;
    return GenCall{from[0], from[1], elements[2]};
  }
  if (elements.size() == 2 && elements[0].is_atom("$gen_cast")) return GenCast{elements[1]};
  return std::nullopt;
}

std::optional<Term> host_call(const Term& request, const Term& ref, std::optional<std::uint32_t> timeout_ms) {
  const auto parts = fun_and_args(request, "call");
  if (!parts) return std::nullopt;
  std::vector<Term> elements{Term::atom("call"), ref, *parts->first, *parts->second};
  if (timeout_ms) elements.push_back(Term::integer(*timeout_ms));
  return Term::tuple(std::move(elements));
}

std::optional<Term> host_cast(const Term& request) {
  const auto parts = fun_and_args(request, "cast");
  if (!parts) return std::nullopt;
  return Term::tuple({Term::atom("cast"), *parts->first, *parts->second});
}

Term bad_request(std::string_view message) {
  return Term::tuple({Term::atom("error"), Term::tuple({Term::atom("bad_request"), Term::binary(message)})});
}

std::optional<ExecuteCall> execute_call(const Term& module, const Term& function, const Term& args) {
  if (!module.is_atom("erpc") || !function.is_atom("execute_call")) return std::nullopt;
  const auto* list = args.get_if<etf::List>();
  // [Ref, M, F, A]: four items and the [] tail.
  if (list == nullptr || list->items.size() != 5 || list->items[4].kind() != etf::Kind::nil) return std::nullopt;
  const auto& items = list->items;
  if (items[1].kind() != etf::Kind::atom || items[2].kind() != etf::Kind::atom || !is_proper_list(items[3])) {
    return std::nullopt;
  }
  return ExecuteCall{items[0], items[1], items[2], items[3]};
}

Term execute_call_exit(const ExecuteCall& call, const Term& answer) {
  const auto elements = answer.tuple_elements();
  if (elements.size() == 2 && elements[0].is_atom("ok")) {
    return Term::tuple({call.ref, Term::atom("return"), elements[1]});
  }
  Term reason = elements.size() == 2 ? elements[1] : answer;
  // {undef, {M, F}} or {undef, F}: what calling a missing Erlang function raises.
  if (const auto why = reason.tuple_elements(); why.size() == 2 && why[0].is_atom("undef")) {
    reason = Term::atom("undef");
  }
  Term stack = Term::list({Term::tuple({call.module, call.function, call.args, Term::nil()})});
  return Term::tuple({call.ref, Term::atom("error"), std::move(reason), std::move(stack)});
}

}  // namespace camlbeam::node
