// What Erlang's own tools send to camlbeam-node's processes, and what they expect back, as
// terms (cpp/etf), with no sockets and no OCaml: the gen_server protocol of the `ocaml`
// process and of `net_kernel` (net_adm:ping), the spawn request behind rpc:call and
// erpc:call, and the host's request shapes these become (cpp/host/README.md).
#pragma once

#include <camlbeam/etf/term.hpp>

#include <cstdint>
#include <optional>
#include <variant>
#include <vector>

namespace camlbeam::node {

// {'$gen_call', {From, Tag}, Request}: gen:call's message. Tag is opaque (in OTP 25 the
// improper list [alias | Ref]) and goes back as it came, in {Tag, Reply} to From.
struct GenCall {
  etf::Pid from;
  etf::Term tag;
  etf::Term request;
};

// {'$gen_cast', Request}.
struct GenCast {
  etf::Term request;
};

// What a message to a gen_server-like process of the node is; nullopt for anything else
// (a plain message, which such a process drops). The terms here take their arguments by
// value: a request's arguments are moved along, never copied.
std::optional<std::variant<GenCall, GenCast>> gen_message(etf::Term message);

// The host's request for what a caller of the `ocaml` process asked:
//   {call, Fun, Args}           ->  {call, Ref, Fun, Args[, Timeout]}   (an answer comes back)
//   {call, Fun, Args, Timeout}  ->  the same, with the shorter of Timeout and `timeout_ms`
//   {cast, Fun, Args}           ->  {cast, Fun, Args}                   (gen_server:cast, no answer)
//   {cast, Fun, Args, Timeout}  ->  {call, cast, Fun, Args, Timeout}    (its answer goes nowhere)
//                                   (also a plain cast while `timeout_ms` is set: a cast that
//                                   runs for ever would stop the node's every later request)
// Fun is Function or {Module, Function}, as ocaml:call takes it; `timeout_ms` (the node's
// --call-timeout) and Timeout (milliseconds or infinity: what the caller has left to wait,
// the `transport => node` pools give it) are the request's deadline from when it starts
// running, none when both are empty. nullopt when the request is not of these shapes: the
// node answers {error, {bad_request, Message}}.
std::optional<etf::Term> host_call(etf::Term request, etf::Term ref, std::optional<std::uint32_t> timeout_ms);
std::optional<etf::Term> host_cast(etf::Term request, std::optional<std::uint32_t> timeout_ms);

// {error, {Kind, Message}}, Message a binary: {error, {bad_request, _}} for a request the
// node cannot run, {error, {request_failed, _}} for one the host refused.
etf::Term error_answer(std::string_view kind, std::string_view message);
inline etf::Term bad_request(std::string_view message) { return error_answer("bad_request", message); }

// What rpc:call and erpc:call run on a node (OTP 23+): a process spawned as
// erpc:execute_call(Ref, Module, Function, Args), whose exit reason carries the result.
struct ExecuteCall {
  etf::Term ref;
  etf::Term module;    // an atom
  etf::Term function;  // an atom
  etf::Term args;      // a list
};

// The arguments of a SPAWN_REQUEST of {erpc, execute_call, 4}; nullopt for any other
// function (the node spawns nothing else: the request is refused with notsup).
std::optional<ExecuteCall> execute_call(const etf::Term& module, const etf::Term& function, etf::Term args);

// The exit reason of that process, which erpc turns into the call's result: {Ref, return,
// Result} for {ok, Result}; for {error, Reason}, {Ref, error, Reason, Stack}, where Reason is
// Erlang's `undef` when no plugin exports the function (as for an Erlang module), else
// camlbeam's reason as ocaml:call gives it; Stack is [{Module, Function, Args, []}].
etf::Term execute_call_exit(const ExecuteCall& call, etf::Term answer);

// What rpc:call returns for that answer, as the rex server answers {rex, Result}: Result for
// {ok, Result}, else {badrpc, {'EXIT', {Reason, Stack}}} with Reason and Stack as above.
etf::Term rpc_result(const ExecuteCall& call, etf::Term answer);

// A tuple of these terms, moved in: Term::tuple's initializer list would copy each (its
// elements are const), which for a request's arguments or a call's answer is all of it.
template <class... Terms>
etf::Term tuple_of(Terms&&... elements) {
  std::vector<etf::Term> moved;
  moved.reserve(sizeof...(elements));
  (moved.push_back(etf::Term(std::forward<Terms>(elements))), ...);
  return etf::Term::tuple(std::move(moved));
}

}  // namespace camlbeam::node
