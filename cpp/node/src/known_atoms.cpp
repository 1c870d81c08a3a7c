#include "known_atoms.hpp"

#include "messages.hpp"

#include <algorithm>
#include <array>
#include <vector>

namespace camlbeam::node {

using etf::Term;

namespace {

// The atoms camlbeam's own answers are made of (messages.hpp, the host's errors,
// Erl.Private.dispatch's, a load's answer, erpc's and rex's results, what Erl.call_erlang
// answers when it cannot run), and the booleans.
constexpr std::array<std::string_view, 45> camlbeams_own = {
    "ok",          "error",        "true",          "false",         "undefined",   "infinity",
    "nil",         "timeout",      "undef",         "badarg",        "badarity",    "ambiguous",
    "ocaml_exception", "reply_too_large", "bad_request", "request_failed", "bad_reply", "overloaded",
    "load_failed", "enoent",       "not_a_plugin",  "incompatible",  "already_loaded", "init_failed",
    "argument",    "expected",     "got",           "atoms",         "exports",     "any",
    "os_pid",      "ocaml_version", "flavour",      "native",        "return",      "badrpc",
    "EXIT",        "not_allowed",  "too_many_erl_calls", "bad_erl_call", "erpc",    "noconnection",
    "noproc",      "throw",        "exit"};

}  // namespace

bool KnownAtoms::is_camlbeams_own(std::string_view name) noexcept {
  return std::find(camlbeams_own.begin(), camlbeams_own.end(), name) != camlbeams_own.end();
}

void KnownAtoms::each_name(const Term& term, const std::function<bool(std::string_view)>& visit) {
  // Iterative: a request or an answer may be nested as deep as the ETF limits allow.
  std::vector<const Term*> pending{&term};
  while (!pending.empty()) {
    const Term* next = pending.back();
    pending.pop_back();
    bool go_on = true;
    switch (next->kind()) {
      case etf::Kind::atom: go_on = visit(next->get_if<etf::Atom>()->name); break;
      case etf::Kind::pid: go_on = visit((*next->get_if<etf::Boxed<etf::Pid>>())->node); break;
      case etf::Kind::port: go_on = visit((*next->get_if<etf::Boxed<etf::Port>>())->node); break;
      case etf::Kind::reference: go_on = visit((*next->get_if<etf::Boxed<etf::Reference>>())->node); break;
      case etf::Kind::export_fun: {
        const auto& fun = **next->get_if<etf::Boxed<etf::ExportFun>>();
        go_on = visit(fun.module) && visit(fun.function);
        break;
      }
      case etf::Kind::fun: {
        const auto& fun = **next->get_if<etf::Boxed<etf::Fun>>();
        go_on = visit(fun.module) && visit(fun.pid.node);
        break;
      }
      default: break;
    }
    if (!go_on) return;
    for (const Term& child : next->children()) {
      // Numbers and binaries hold no name: not worth a trip through the stack.
      const etf::Kind kind = child.kind();
      if (kind == etf::Kind::integer || kind == etf::Kind::float64 || kind == etf::Kind::binary ||
          kind == etf::Kind::nil) {
        continue;
      }
      pending.push_back(&child);
    }
  }
}

KnownAtoms::Names& KnownAtoms::of(const std::string& peer) {
  auto found = known_by_peer_.find(peer);
  if (found == known_by_peer_.end()) found = known_by_peer_.emplace(peer, Names{}).first;
  return found->second;
}

void KnownAtoms::learn(const std::string& peer, const Term& request) {
  Names& names = of(peer);
  each_name(request, [&](std::string_view name) {
    if (names.size() >= max_per_peer) return false;
    // A request's names are mostly known already: the set first, then the list of 45.
    if (!names.contains(name) && !is_camlbeams_own(name)) names.emplace(name);
    return true;
  });
}

void KnownAtoms::learn_declared(const std::string& peer, const Term& load_answer) {
  const auto outcome = load_answer.tuple_elements();
  if (outcome.size() != 2 || !outcome[0].is_atom("ok")) return;
  const auto* declared = outcome[1].get_if<etf::Map>();
  if (declared == nullptr) return;
  Names& names = of(peer);
  const auto text_of = [](const Term& term) -> std::optional<std::string> {
    const auto* binary = term.get_if<etf::Binary>();
    if (binary == nullptr) return std::nullopt;
    return std::string(binary->bytes.begin(), binary->bytes.end());
  };
  for (std::size_t i = 0; i + 1 < declared->flat.size(); i += 2) {
    const Term& key = declared->flat[i];
    const auto* list = declared->flat[i + 1].get_if<etf::List>();
    if (list == nullptr) continue;
    for (std::size_t item = 0; item + 1 < list->items.size(); ++item) {
      const Term& entry = list->items[item];
      if (key.is_atom("atoms")) {
        if (auto text = text_of(entry); text && names.size() < max_per_peer) names.insert(std::move(*text));
      } else if (key.is_atom("exports")) {
        // {Module, Function, Arity, Signature}
        const auto export_ = entry.tuple_elements();
        if (export_.size() != 4) continue;
        for (const Term& name : export_.first(2)) {
          if (auto text = text_of(name); text && names.size() < max_per_peer) names.insert(std::move(*text));
        }
      }
    }
  }
}

void KnownAtoms::forget(const std::string& peer) { known_by_peer_.erase(peer); }

std::optional<std::string> KnownAtoms::first_unknown(const std::string& peer, const Term& answer) const {
  const PeerView known = view_of(peer);
  std::optional<std::string> unknown;
  each_name(answer, [&](std::string_view name) {
    if (known.knows(name)) return true;
    unknown = std::string(name);
    return false;
  });
  return unknown;
}

Term KnownAtoms::refusal(std::string_view atom) {
  return error_answer("bad_reply", "the atom '" + std::string(atom) +
                                       "' is not known to this VM (a worker's answer cannot create atoms)");
}

}  // namespace camlbeam::node
