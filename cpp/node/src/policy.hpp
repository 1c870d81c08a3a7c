// What OCaml on the node may do to the cluster: where Erl.send may deliver and what
// Erl.call_erlang may run. The same meaning as the port coupling's pool option `policy'
// (erlang/src/ocaml_policy.erl), given on the command line (--send, --erl-call,
// --max-erl-calls), deny by default: sends only to a pid the running call was given, no
// Erlang calls. No sockets, no OCaml: the node (node.cpp) asks these before it sends.
#pragma once

#include <camlbeam/etf/term.hpp>

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace camlbeam::node {

enum class SendPolicy : std::uint8_t {
  none,   // nowhere
  given,  // to a pid that is one of the arguments of the call or cast running now
  any,    // to any process the node can reach
};

// One entry of --erl-call: M:F (any arity) or M:F/A.
struct AllowedCall {
  std::string module;
  std::string function;
  std::optional<std::size_t> arity;
  friend bool operator==(const AllowedCall&, const AllowedCall&) = default;
};

struct Policy {
  SendPolicy send = SendPolicy::given;
  bool erl_call_all = false;                 // --erl-call all
  std::vector<AllowedCall> erl_call_allowed;  // empty and not all: --erl-call none
  std::size_t max_erl_calls = 8;             // Erl.call_erlang waiting at once

  bool may_call(std::string_view module, std::string_view function, std::size_t arity) const noexcept;
  // `given`: the pids the running request was given (given_pids).
  bool may_send(const etf::Pid& to, const std::vector<etf::Pid>& given) const noexcept;
};

std::optional<SendPolicy> parse_send_policy(std::string_view text) noexcept;
std::string_view send_policy_name(SendPolicy send) noexcept;

// Adds one --erl-call value (none, all, or a comma list of M:F and M:F/A) to `policy`;
// why not, when it is not one. `none` and `all` stand alone: with each other or with an
// entry they contradict what was asked.
std::optional<std::string> add_erl_call(Policy& policy, std::string_view text, bool& none_given);

// The pids a host request gives OCaml: the elements of its Args that are pids, not pids
// inside another term, as ocaml_policy:given_pids/1. Request: {call, Ref, Fun, Args[,
// Timeout]} or {cast, Fun, Args} (messages.hpp).
std::vector<etf::Pid> given_pids(const etf::Term& request);

}  // namespace camlbeam::node
