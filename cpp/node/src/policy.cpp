#include "policy.hpp"

#include <algorithm>
#include <charconv>

namespace camlbeam::node {

namespace {

bool same_pid(const etf::Pid& a, const etf::Pid& b) noexcept {
  return a.id == b.id && a.serial == b.serial && a.creation == b.creation && a.node == b.node;
}

// An atom's text as the VM takes it: 1 to 255 bytes (a quoted atom may hold anything else).
bool atom_text(std::string_view text) noexcept { return !text.empty() && text.size() <= 255; }

std::optional<AllowedCall> parse_entry(std::string_view entry) {
  const std::size_t colon = entry.find(':');
  if (colon == std::string_view::npos) return std::nullopt;
  AllowedCall call;
  call.module = std::string(entry.substr(0, colon));
  std::string_view rest = entry.substr(colon + 1);
  if (const std::size_t slash = rest.rfind('/'); slash != std::string_view::npos) {
    const std::string_view digits = rest.substr(slash + 1);
    std::size_t arity = 0;
    const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), arity);
    // 255: the most arguments an Erlang function takes.
    if (error != std::errc{} || end != digits.data() + digits.size() || digits.empty() || arity > 255) {
      return std::nullopt;
    }
    call.arity = arity;
    rest = rest.substr(0, slash);
  }
  call.function = std::string(rest);
  if (!atom_text(call.module) || !atom_text(call.function)) return std::nullopt;
  return call;
}

}  // namespace

bool Policy::may_call(std::string_view module, std::string_view function, std::size_t arity) const noexcept {
  if (erl_call_all) return true;
  return std::any_of(erl_call_allowed.begin(), erl_call_allowed.end(), [&](const AllowedCall& allowed) {
    return allowed.module == module && allowed.function == function && (!allowed.arity || *allowed.arity == arity);
  });
}

bool Policy::may_send(const etf::Pid& to, const std::vector<etf::Pid>& given) const noexcept {
  switch (send) {
    case SendPolicy::none: return false;
    case SendPolicy::any: return true;
    case SendPolicy::given:
      return std::any_of(given.begin(), given.end(), [&](const etf::Pid& pid) { return same_pid(pid, to); });
  }
  return false;
}

std::optional<SendPolicy> parse_send_policy(std::string_view text) noexcept {
  if (text == "none") return SendPolicy::none;
  if (text == "given") return SendPolicy::given;
  if (text == "any") return SendPolicy::any;
  return std::nullopt;
}

std::string_view send_policy_name(SendPolicy send) noexcept {
  switch (send) {
    case SendPolicy::none: return "none";
    case SendPolicy::given: return "given";
    case SendPolicy::any: return "any";
  }
  return "given";
}

std::optional<std::string> add_erl_call(Policy& policy, std::string_view text, bool& none_given) {
  const auto contradiction = [] {
    return std::string("--erl-call none and all stand alone: give one of them, or M:F and M:F/A entries");
  };
  if (text == "none" || text == "all") {
    const bool entries = !policy.erl_call_allowed.empty();
    if (entries || none_given || policy.erl_call_all) return contradiction();
    (text == "none" ? none_given : policy.erl_call_all) = true;
    return std::nullopt;
  }
  if (none_given || policy.erl_call_all) return contradiction();
  std::size_t start = 0;
  for (;;) {
    const std::size_t comma = text.find(',', start);
    const std::string_view entry = text.substr(start, comma == std::string_view::npos ? text.npos : comma - start);
    const std::optional<AllowedCall> call = parse_entry(entry);
    if (!call) {
      return "--erl-call takes none, all, or Module:Function and Module:Function/Arity separated by commas, not '" +
             std::string(entry) + "'";
    }
    policy.erl_call_allowed.push_back(*call);
    if (comma == std::string_view::npos) return std::nullopt;
    start = comma + 1;
  }
}

std::vector<etf::Pid> given_pids(const etf::Term& request) {
  const auto elements = request.tuple_elements();
  // {call, Ref, Fun, Args[, Timeout]}: Args is the 4th; {cast, Fun, Args}: the 3rd.
  std::size_t args_at = 0;
  if (!elements.empty() && elements[0].is_atom("call") && elements.size() >= 4) args_at = 3;
  if (!elements.empty() && elements[0].is_atom("cast") && elements.size() == 3) args_at = 2;
  std::vector<etf::Pid> pids;
  if (args_at == 0) return pids;
  const auto* args = elements[args_at].get_if<etf::List>();
  if (args == nullptr) return pids;
  for (std::size_t i = 0; i + 1 < args->items.size(); ++i) {
    if (const auto* pid = args->items[i].get_if<etf::Boxed<etf::Pid>>()) pids.push_back(**pid);
  }
  return pids;
}

}  // namespace camlbeam::node
