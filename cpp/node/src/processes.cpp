#include "processes.hpp"

#include <algorithm>
#include <type_traits>
#include <utility>

namespace camlbeam::node {

namespace {

using etf::Term;
namespace control = dist::control;

template <class... Ts>
struct Overloaded : Ts... {
  using Ts::operator()...;
};
template <class... Ts>
Overloaded(Ts...) -> Overloaded<Ts...>;

constexpr std::uint64_t ocaml_number = 1;
constexpr std::uint64_t net_kernel_number = 2;
constexpr std::uint64_t rex_number = 3;

// The number make_pid made `pid` from.
std::uint64_t number_of(const etf::Pid& pid) noexcept { return (std::uint64_t{pid.serial} << 32) | pid.id; }

bool same_pid(const etf::Pid& a, const etf::Pid& b) noexcept {
  return a.id == b.id && a.serial == b.serial && a.creation == b.creation && a.node == b.node;
}

bool has_option(const Term& options, std::string_view name) {
  const auto* list = options.get_if<etf::List>();
  if (list == nullptr) return false;
  return std::any_of(list->items.begin(), list->items.end() - 1, [&](const Term& item) { return item.is_atom(name); });
}

// [alias | Ref]: the tag of an OTP 24+ gen call, whose reply may go to the alias.
const etf::Reference* alias_of(const Term& tag) {
  const auto* list = tag.get_if<etf::List>();
  if (list == nullptr || list->items.size() != 2 || !list->items[0].is_atom("alias")) return nullptr;
  const auto* ref = list->items[1].get_if<etf::Boxed<etf::Reference>>();
  return ref == nullptr ? nullptr : &**ref;
}

// What OCaml gets for rex's answer to an Erl.call_erlang (start_erl_call): rex catches
// the exit of erpc:execute_call/4, {Tag, Class, ...}, as {badrpc, {'EXIT', Reason}}.
Term erl_call_result(const Term& tag, Term reply) {
  const auto error = [](std::string_view kind, Term reason) {
    return Term::tuple({Term::atom("error"), Term::tuple({Term::atom(kind), std::move(reason)})});
  };
  const auto badrpc = reply.tuple_elements();
  if (badrpc.size() != 2 || !badrpc[0].is_atom("badrpc")) return error("exit", std::move(reply));
  const auto caught = badrpc[1].tuple_elements();
  if (caught.size() != 2 || !caught[0].is_atom("EXIT")) return error("exit", std::move(reply));
  const auto reason = caught[1].tuple_elements();
  if (reason.size() < 3 || reason[0] != tag) return error("exit", caught[1]);  // rex's own exit (system_limit)
  const Term& value = reason[2];
  if (reason.size() == 3 && reason[1].is_atom("return")) return Term::tuple({Term::atom("ok"), value});
  if (reason.size() == 3 && reason[1].is_atom("throw")) return error("throw", value);
  if (reason.size() == 3 && reason[1].is_atom("exit")) return error("exit", value);
  if (reason[1].is_atom("error")) {
    // {Tag, error, {erpc, Reason}}: apply/3 itself failed (undef, badarg on its arguments).
    const auto erpc = value.tuple_elements();
    if (reason.size() == 3 && erpc.size() == 2 && erpc[0].is_atom("erpc")) return error("error", erpc[1]);
    return error("error", value);  // {Tag, error, Reason, Stack}
  }
  return error("exit", caught[1]);
}

Term erl_call_failed(std::string_view why) {
  return Term::tuple({Term::atom("error"),
                      Term::tuple({Term::atom("error"), Term::tuple({Term::atom("erpc"), Term::atom(why)})})});
}

}  // namespace

Processes::Processes(std::string node_name, std::uint32_t creation, std::optional<std::uint32_t> call_timeout_ms,
                     Limits limits)
    : node_name_(std::move(node_name)),
      creation_(creation),
      call_timeout_ms_(call_timeout_ms),
      limits_(limits),
      ocaml_(make_pid(ocaml_number)),
      net_kernel_(make_pid(net_kernel_number)),
      rex_(make_pid(rex_number)) {}

etf::Pid Processes::make_pid(std::uint64_t number) const {
  return etf::Pid{node_name_, static_cast<std::uint32_t>(number), static_cast<std::uint32_t>(number >> 32), creation_};
}

void Processes::connected(const std::string& peer, std::uint64_t flags) {
  flags_[peer] = flags;
  // The peer knows this node's name: it is connected to it (pids of the node's processes).
  known_atoms_.learn(peer, Term::atom(node_name_));
}

void Processes::disconnected(const std::string& peer, Effects& out) {
  for (auto call = erl_calls_.begin(); call != erl_calls_.end();) {
    if (call->second != peer) {
      ++call;
      continue;
    }
    out.erl_calls_done.push_back({call->first, erl_call_failed("noconnection")});
    call = erl_calls_.erase(call);
  }
  flags_.erase(peer);
  known_atoms_.forget(peer);
  watches_.erase(peer);
  std::erase_if(spawned_, [&](const auto& entry) { return entry.second.peer == peer; });
}

std::optional<std::uint64_t> Processes::peer_flags(const std::string& peer) const noexcept {
  const auto found = flags_.find(peer);
  if (found == flags_.end()) return std::nullopt;
  return found->second;
}

std::size_t Processes::watches() const noexcept {
  std::size_t count = 0;
  for (const auto& [peer, set] : watches_) count += set.size();
  return count;
}

bool Processes::is_ours(const etf::Pid& pid) const noexcept {
  return pid.node == node_name_ && pid.creation == creation_;
}

std::optional<Processes::Registered> Processes::registered(const dist::ProcessRef& to) const noexcept {
  if (const auto* name = std::get_if<etf::Atom>(&to)) {
    if (name->name == "ocaml") return Registered::ocaml;
    if (name->name == "net_kernel") return Registered::net_kernel;
    if (name->name == "rex") return Registered::rex;
    return std::nullopt;
  }
  const auto& pid = std::get<etf::Pid>(to);
  if (same_pid(pid, ocaml_)) return Registered::ocaml;
  if (same_pid(pid, net_kernel_)) return Registered::net_kernel;
  if (same_pid(pid, rex_)) return Registered::rex;
  return std::nullopt;
}

bool Processes::exists(const etf::Pid& pid) const noexcept {
  return registered(pid).has_value() || (is_ours(pid) && spawned_.contains(number_of(pid)));
}

void Processes::receive(const std::string& peer, dist::Control message, Effects& out) {
  // A message to a name or pid of ours; the sender's pid where the operation gives it.
  const auto deliver_to = [&](const dist::ProcessRef& to, Term& payload) {
    const auto* pid = std::get_if<etf::Pid>(&to);
    if (pid != nullptr && same_pid(*pid, ocaml_) && erl_call_replied(peer, payload, out)) return;
    if (const auto process = registered(to)) deliver(peer, *process, std::move(payload), out);
    // Messages to spawned processes and to nobody are dropped, as Erlang drops them.
  };
  const auto link = [&](const etf::Pid& from, const etf::Pid& to) {
    if (exists(to) && watches_[peer].size() < limits_.max_watches_per_peer) {
      watch(peer, Watch{Watch::Kind::link, number_of(to), from, {}});
    } else {
      send_exit(peer, to, from, Term::atom("noproc"), out);
    }
  };
  const auto monitor = [&](const etf::Pid& from, const dist::ProcessRef& to, const etf::Reference& ref) {
    const auto* pid = std::get_if<etf::Pid>(&to);
    const std::optional<Registered> name = registered(to);
    const bool alive = name.has_value() || (pid != nullptr && exists(*pid));
    if (alive && watches_[peer].size() < limits_.max_watches_per_peer) {
      const std::uint64_t target = name ? registered_number(*name) : number_of(*pid);
      watch(peer, Watch{Watch::Kind::monitor, target, from, ref});
    } else {
      send_down(peer, to, from, ref, Term::atom("noproc"), out);
    }
  };
  const auto demonitor = [&](const etf::Pid& from, const dist::ProcessRef& to, const etf::Reference& ref) {
    const std::optional<Registered> name = registered(to);
    const auto* pid = std::get_if<etf::Pid>(&to);
    if (!name && pid == nullptr) return;
    const std::uint64_t target = name ? registered_number(*name) : number_of(*pid);
    unwatch(peer, Watch{Watch::Kind::monitor, target, from, ref});
    // erpc's caller gave up (call_abandon): the monitor its spawn request set goes, and the
    // call runs on, as an Erlang process would; its exit is then sent to nobody.
    if (pid != nullptr && is_ours(*pid)) {
      const auto spawned = spawned_.find(number_of(*pid));
      if (spawned != spawned_.end() && same_pid(spawned->second.caller, from) &&
          Term::reference(spawned->second.request_id) == Term::reference(ref)) {
        spawned->second.monitor = false;
      }
    }
  };
  std::visit(
      Overloaded{
          [&](control::Send& m) { deliver_to(m.to, m.message); },
          [&](control::SendTT& m) { deliver_to(m.to, m.message); },
          [&](control::SendSender& m) { deliver_to(m.to, m.message); },
          [&](control::SendSenderTT& m) { deliver_to(m.to, m.message); },
          [&](control::RegSend& m) { deliver_to(m.to_name, m.message); },
          [&](control::RegSendTT& m) { deliver_to(m.to_name, m.message); },
          [&](const control::Link& m) { link(m.from, m.to); },
          [&](const control::Unlink& m) {
            unwatch(peer, Watch{Watch::Kind::link, number_of(m.to), m.from, {}});
          },
          [&](const control::UnlinkId& m) {
            unwatch(peer, Watch{Watch::Kind::link, number_of(m.to), m.from, {}});
            out.send.push_back({peer, control::UnlinkIdAck{m.id, m.to, m.from}});
          },
          [&](const control::MonitorP& m) { monitor(m.from, m.to, m.ref); },
          [&](const control::DemonitorP& m) { demonitor(m.from, m.to, m.ref); },
          [&](control::SpawnRequest& m) { spawn(peer, m.request_id, m.from, m.mfa, m.options, std::move(m.args), out); },
          [&](control::SpawnRequestTT& m) {
            spawn(peer, m.request_id, m.from, m.mfa, m.options, std::move(m.args), out);
          },
          // A peer's process that exits while linked to one of ours: the link goes. Our
          // processes trap exits (the registered ones are servers) or finish on their own
          // (spawned ones), so no exit signal ends them.
          [&](const control::Exit& m) {
            unwatch(peer, Watch{Watch::Kind::link, number_of(m.to), m.from, {}});
          },
          [&](const control::ExitTT& m) {
            unwatch(peer, Watch{Watch::Kind::link, number_of(m.to), m.from, {}});
          },
          [&](const control::PayloadExit& m) {
            unwatch(peer, Watch{Watch::Kind::link, number_of(m.to), m.from, {}});
          },
          [&](const control::PayloadExitTT& m) {
            unwatch(peer, Watch{Watch::Kind::link, number_of(m.to), m.from, {}});
          },
          // OTP 28's sends to an alias, priority messages and exit signals with either
          // (when ALTACT_SIG is negotiated). The node makes no alias, so what goes to one
          // is dropped, as a VM drops what reaches an alias no longer active; a priority
          // message is an ordinary one here; an exit signal changes nothing (below).
          [&](control::AltactSigSend& m) {
            if ((m.flags & dist::altact::exit) != 0) return;
            if (const auto* pid = std::get_if<etf::Pid>(&m.to)) return deliver_to(*pid, m.message);
            if (const auto* name = std::get_if<etf::Atom>(&m.to)) return deliver_to(*name, m.message);
          },
          [&](control::MonitorPExit& m) { erl_call_down(m.ref, std::move(m.reason), out); },
          [&](control::PayloadMonitorPExit& m) { erl_call_down(m.ref, std::move(m.reason), out); },
          // Everything else (exit2, group leaders) changes nothing here.
          [&](const auto&) {},
      },
      message);
}

std::uint64_t Processes::registered_number(Registered process) noexcept {
  switch (process) {
    case Registered::ocaml: return ocaml_number;
    case Registered::net_kernel: return net_kernel_number;
    case Registered::rex: return rex_number;
  }
  return ocaml_number;
}

void Processes::deliver(const std::string& peer, Registered to, Term message, Effects& out) {
  if (to == Registered::rex) return deliver_to_rex(peer, std::move(message), out);
  auto gen = gen_message(std::move(message));
  if (!gen) return;
  if (to == Registered::net_kernel) {
    const auto* call = std::get_if<GenCall>(&*gen);
    if (call == nullptr) return;
    const auto request = call->request.tuple_elements();
    const bool is_auth = request.size() == 2 && request[0].is_atom("is_auth");
    send_message(peer, net_kernel_, call->from, call->tag,
                 Term::tuple({call->tag, Term::atom(is_auth ? "yes" : "no")}), out);
    return;
  }
  std::visit(Overloaded{
                 [&](GenCall& call) { serve_ocaml_call(peer, call, out); },
                 [&](GenCast& cast) {
                   if (auto request = host_cast(std::move(cast.request), call_timeout_ms_)) {
                     add_work({peer, std::move(*request), std::monostate{}, std::nullopt, {}}, out);
                   }
                 },
             },
             *gen);
}

void Processes::serve_ocaml_call(const std::string& peer, GenCall& call, Effects& out) {
  const etf::Pid& from = call.from;
  const auto reply = [&](Term answer) {
    send_message(peer, ocaml_, from, call.tag, tuple_of(call.tag, std::move(answer)), out);
  };
  if (call.request.is_atom("pid")) {
    // Its own pid, for erlang:link/1 (a link needs a pid, a monitor takes the name).
    return reply(Term::pid(ocaml_));
  }
  if (call.request.is_atom("in_flight")) return reply(Term::integer(static_cast<std::int64_t>(outstanding_)));
  if (call.request.is_atom("info")) return reply(info_);
  if (const auto load = call.request.tuple_elements();
      (load.size() == 2 || load.size() == 3) && load[0].is_atom("load")) {
    if (!loads_allowed_) {
      return reply(bad_request("this node loads no plugin on request: it was started without --allow-load"));
    }
    std::string path;
    if (const auto* binary = load[1].get_if<etf::Binary>()) {
      path.assign(binary->bytes.begin(), binary->bytes.end());
      if (const auto known = loaded_.find(path); known != loaded_.end()) {
        known_atoms_.learn_declared(peer, known->second);  // this peer's pool creates them now
        return reply(known->second);
      }
    }
    // {load, Path, Timeout}: the host's {load, Ref, Path, Timeout}, whose deadline stops an
    // initialiser that does not end (the host checks Timeout).
    Term request = load.size() == 2 ? tuple_of(Term::atom("load"), call.tag, load[1])
                                    : tuple_of(Term::atom("load"), call.tag, load[1], load[2]);
    return add_work(
        {peer, std::move(request), HostWork::GenReply{from, call.tag, true, std::move(path)}, std::nullopt, {}}, out);
  }
  std::optional<std::uint32_t> caller_timeout;
  if (const auto asked = call.request.tuple_elements(); asked.size() == 4 && asked[0].is_atom("call")) {
    if (const auto* ms = asked[3].get_if<std::int64_t>(); ms != nullptr && *ms >= 0 && *ms <= UINT32_MAX) {
      caller_timeout = static_cast<std::uint32_t>(*ms);
    }
  }
  // The host's Ref is 0: the answer goes into the reply's frame, whose tag is GenReply's,
  // and OCaml needs none (a tag made for OCaml would be a reference converted, per call).
  // Its names (alias, the caller's node) are the peer's own all the same: an answer may
  // hold them, as when the request carried the tag.
  known_atoms_.learn(peer, call.tag);
  if (auto request = host_call(std::move(call.request), Term::integer(0), call_timeout_ms_)) {
    return add_work(
        {peer, std::move(*request), HostWork::GenReply{from, std::move(call.tag), false, {}}, caller_timeout, {}},
        out);
  }
  reply(bad_request("the ocaml process answers {call, Function, Args[, Timeout]}, {load, Path[, Timeout]}, pid, info "
                    "and in_flight; a cast is {cast, Function, Args}"));
}

void Processes::add_work(HostWork work, Effects& out) {
  ++outstanding_;
  known_atoms_.learn(work.peer, work.request);
  out.work.push_back(std::move(work));
}

namespace {

// Whether a load's answer is what every later load of the same file gets: ok, {ok, _}, or
// {error, {load_failed, init_failed, _}} (Dynlink counts a plugin whose initialiser raised as
// loaded). Not the other failures: the file may appear, or be replaced by one that loads.
bool is_final_load_answer(const Term& answer) {
  if (answer.is_atom("ok")) return true;
  const auto outcome = answer.tuple_elements();
  if (outcome.size() != 2) return false;
  if (outcome[0].is_atom("ok")) return true;
  const auto failure = outcome[1].tuple_elements();
  return outcome[0].is_atom("error") && failure.size() == 3 && failure[0].is_atom("load_failed") &&
         failure[1].is_atom("init_failed");
}

}  // namespace

void Processes::deliver_to_rex(const std::string& peer, Term message, Effects& out) {
  // {From, {call, M, F, A, GroupLeader}}; anything else is dropped, as rex drops it.
  const auto outer = message.tuple_elements();
  if (outer.size() != 2) return;
  const auto* from = outer[0].get_if<etf::Boxed<etf::Pid>>();
  const auto call = outer[1].tuple_elements();
  if (from == nullptr || call.size() != 5 || !call[0].is_atom("call")) return;
  if (call[1].kind() != etf::Kind::atom || call[2].kind() != etf::Kind::atom) return;
  auto request = host_call(Term::tuple({Term::atom("call"), Term::tuple({call[1], call[2]}), call[3]}),
                           Term::atom("rex"), call_timeout_ms_);
  if (!request) return;
  add_work({peer, std::move(*request),
            HostWork::RexReply{**from, ExecuteCall{Term::atom("rex"), call[1], call[2], call[3]}}, std::nullopt, {}},
           out);
}

bool Processes::send_from_ocaml(const etf::Pid& to, Term message, Effects& out) const {
  const std::optional<std::uint64_t> flags = peer_flags(to.node);
  if (!flags) return false;
  if ((*flags & dist::flag::send_sender) != 0) {
    out.send.push_back(
        {.peer = to.node, .control = control::SendSender{ocaml_, to, std::move(message)}, .sent_by_ocaml = true});
  } else {
    out.send.push_back({.peer = to.node, .control = control::Send{to, std::move(message)}, .sent_by_ocaml = true});
  }
  return true;
}

void Processes::start_erl_call(const std::string& peer, const etf::Reference& tag, std::string_view module,
                               std::string_view function, Term args, Effects& out) {
  const Term tag_term = Term::reference(tag);
  Term call = Term::tuple({Term::atom("call"), Term::atom("erpc"), Term::atom("execute_call"),
                           Term::list({tag_term, Term::atom(module), Term::atom(function), std::move(args)}),
                           Term::atom("user")});
  Term gen_call = Term::tuple({Term::atom("$gen_call"), Term::tuple({Term::pid(ocaml_), tag_term}), std::move(call)});
  // The monitor first: a peer without rex answers it noproc before the call is lost.
  out.send.push_back({peer, control::MonitorP{ocaml_, etf::Atom{"rex"}, tag}});
  out.send.push_back({peer, control::RegSend{ocaml_, etf::Atom{"rex"}, std::move(gen_call)}});
  erl_calls_.insert_or_assign(tag_term, peer);
}

void Processes::abandon_erl_call(const Term& tag, Effects& out) {
  const auto found = erl_calls_.find(tag);
  if (found == erl_calls_.end()) return;
  const auto* ref = tag.get_if<etf::Boxed<etf::Reference>>();
  if (ref != nullptr && flags_.contains(found->second)) {
    out.send.push_back({found->second, control::DemonitorP{ocaml_, etf::Atom{"rex"}, **ref}});
  }
  erl_calls_.erase(found);
}

bool Processes::erl_call_replied(const std::string& peer, Term& message, Effects& out) {
  const auto reply = message.tuple_elements();
  if (reply.size() != 2 || reply[0].kind() != etf::Kind::reference) return false;
  const auto found = erl_calls_.find(reply[0]);
  // Only the node that runs the call answers it: another cannot end it by guessing its tag.
  if (found == erl_calls_.end() || found->second != peer) return false;
  Term tag = found->first;
  known_atoms_.learn(peer, reply[1]);  // the atoms of an Erlang answer exist in its VM
  abandon_erl_call(tag, out);  // its monitor goes
  out.erl_calls_done.push_back({tag, erl_call_result(tag, reply[1])});
  return true;
}

void Processes::erl_call_down(const etf::Reference& ref, Term reason, Effects& out) {
  const auto found = erl_calls_.find(Term::reference(ref));
  if (found == erl_calls_.end()) return;
  Term tag = found->first;
  known_atoms_.learn(found->second, reason);
  erl_calls_.erase(found);
  // noproc: the peer runs no rex (a C node); noconnection: it went.
  if (reason.is_atom("noproc") || reason.is_atom("noconnection")) {
    out.erl_calls_done.push_back({std::move(tag), erl_call_failed(*reason.atom_name())});
  } else {
    out.erl_calls_done.push_back(
        {std::move(tag), Term::tuple({Term::atom("error"), Term::tuple({Term::atom("exit"), std::move(reason)})})});
  }
}

void Processes::spawn(const std::string& peer, const etf::Reference& request_id, const etf::Pid& from,
                      const dist::Mfa& mfa, const Term& options, Term args, Effects& out) {
  const bool link = has_option(options, "link");
  const bool monitor = has_option(options, "monitor");
  const auto refuse = [&](std::string_view why) {
    out.send.push_back({peer, control::SpawnReply{request_id, from, 0, etf::Atom{std::string(why)}}});
  };
  auto call = execute_call(Term::atom(mfa.module.name), Term::atom(mfa.function.name), std::move(args));
  if (!call) return refuse("notsup");
  if (spawned_.size() >= limits_.max_spawned) return refuse("system_limit");
  const std::uint64_t number = next_spawned_++;
  const etf::Pid process = make_pid(number);
  Term request = *host_call(Term::tuple({Term::atom("call"), Term::tuple({call->module, call->function}), call->args}),
                            Term::reference(request_id), call_timeout_ms_);
  spawned_.emplace(number, Spawned{peer, from, request_id, link, monitor, std::move(*call)});
  const std::uint64_t reply_flags = (link ? 1 : 0) | (monitor ? 2 : 0);
  out.send.push_back({peer, control::SpawnReply{request_id, from, reply_flags, process}});
  add_work({peer, std::move(request), HostWork::ProcessExit{number}, std::nullopt, {}}, out);
}

void Processes::answered(const HostWork& work, Term answer, Effects& out) {
  if (outstanding_ > 0) --outstanding_;
  if (std::holds_alternative<std::monostate>(work.reply_to)) return;  // a cast: nobody to answer
  if (const auto* reply = std::get_if<HostWork::GenReply>(&work.reply_to); reply != nullptr && reply->load) {
    known_atoms_.learn_declared(work.peer, answer);
  }
  if (const std::optional<std::string> unknown = known_atoms_.first_unknown(work.peer, answer)) {
    answer = KnownAtoms::refusal(*unknown);
  }
  // The messages that carry the answer, made by a function of it alone: each can be made
  // again with another answer in its place (Outgoing::with_answer).
  const auto answer_with = [&](std::function<void(const Processes&, Term, Effects&)> make) {
    const std::size_t first = out.send.size();
    make(*this, std::move(answer), out);
    const auto shared = std::make_shared<decltype(make)>(std::move(make));
    for (std::size_t i = first; i < out.send.size(); ++i) {
      out.send[i].with_answer = [this, shared, nth = i - first](Term other) {
        Effects again;
        (*shared)(*this, std::move(other), again);
        return std::move(again.send.at(nth).control);
      };
    }
  };
  std::visit(Overloaded{
                 [](std::monostate) {},
                 [&](const HostWork::GenReply& reply) {
                   if (!reply.loaded_path.empty() && is_final_load_answer(answer)) {
                     loaded_.insert_or_assign(reply.loaded_path, answer);
                   }
                   if (!flags_.contains(work.peer)) return;
                   answer_with([peer = work.peer, reply](const Processes& self, Term a, Effects& e) {
                     self.send_reply(peer, reply, std::move(a), e);
                   });
                 },
                 [&](const HostWork::RexReply& reply) {
                   if (!flags_.contains(work.peer)) return;
                   answer_with([peer = work.peer, reply](const Processes&, Term a, Effects& e) {
                     e.send.push_back(
                         {peer, control::Send{reply.to, tuple_of(Term::atom("rex"), rpc_result(reply.call, std::move(a)))}});
                   });
                 },
                 [&](const HostWork::ProcessExit& exit) {
                   const auto found = spawned_.find(exit.process);
                   if (found == spawned_.end()) return;  // its peer went meanwhile
                   const Spawned spawned = std::move(found->second);
                   spawned_.erase(found);
                   auto& peer_watches = watches_[spawned.peer];
                   std::erase_if(peer_watches, [&](const Watch& w) { return w.target == exit.process; });
                   answer_with([spawned, process = make_pid(exit.process)](const Processes& self, Term a, Effects& e) {
                     Term reason = execute_call_exit(spawned.call, std::move(a));
                     if (spawned.link) self.send_exit(spawned.peer, process, spawned.caller, reason, e);
                     if (spawned.monitor) {
                       self.send_down(spawned.peer, process, spawned.caller, spawned.request_id, std::move(reason), e);
                     }
                   });
                 },
             },
             work.reply_to);
}

bool Processes::answered_in_place(HostWork& work, AnswerWriter write_answer, Effects& out) {
  auto* reply = std::get_if<HostWork::GenReply>(&work.reply_to);
  if (reply == nullptr || reply->load) return false;
  if (outstanding_ > 0) --outstanding_;
  if (!flags_.contains(work.peer)) return true;
  // The message's place holds nil; `payload` writes {Tag, Answer} there. Both writers share
  // the reply, taken from the work.
  send_message(work.peer, ocaml_, reply->to, reply->tag, Term::nil(), out);
  const auto shared = std::make_shared<const HostWork::GenReply>(std::move(*reply));
  Outgoing& sent = out.send.back();
  sent.payload = [this, peer = work.peer, shared, write = std::move(write_answer)](etf::Writer& writer) {
    writer.begin_tuple(2);
    etf::walk(shared->tag, writer);
    write(writer, known_atoms_.view_of(peer));
    writer.end_tuple();
  };
  sent.with_answer = [this, peer = std::move(work.peer), shared](Term other) {
    Effects again;
    send_reply(peer, *shared, std::move(other), again);
    return std::move(again.send.back().control);
  };
  return true;
}

void Processes::send_reply(const std::string& peer, const HostWork::GenReply& reply, Term answer, Effects& out) const {
  send_message(peer, ocaml_, reply.to, reply.tag, tuple_of(reply.tag, std::move(answer)), out);
}

void Processes::watch(const std::string& peer, Watch watch) { watches_[peer].insert(std::move(watch)); }

void Processes::unwatch(const std::string& peer, const Watch& watch) {
  const auto found = watches_.find(peer);
  if (found != watches_.end()) found->second.erase(watch);
}

void Processes::send_message(const std::string& peer, const etf::Pid& from, const etf::Pid& to, const Term& tag,
                             Term message, Effects& out) const {
  // To the caller's alias when it made one: a reply that comes after the caller gave up is
  // then dropped by its VM instead of landing in its mailbox.
  const std::uint64_t flags = peer_flags(peer).value_or(0);
  if (const etf::Reference* alias = alias_of(tag); alias != nullptr && (flags & dist::flag::altact_sig) != 0) {
    // OTP 28 sends to an alias this way, and OTP 30 takes no ALIAS_SEND.
    out.send.push_back({peer, control::AltactSigSend{dist::altact::alias, from, *alias, std::nullopt, std::move(message)}});
  } else if (alias != nullptr && (flags & dist::flag::alias) != 0) {
    out.send.push_back({peer, control::AliasSend{from, *alias, std::move(message)}});
  } else {
    out.send.push_back({peer, control::Send{to, std::move(message)}});
  }
}

void Processes::send_down(const std::string& peer, dist::ProcessRef from, const etf::Pid& to,
                          const etf::Reference& ref, Term reason, Effects& out) const {
  if ((peer_flags(peer).value_or(0) & dist::flag::exit_payload) != 0) {
    out.send.push_back({peer, control::PayloadMonitorPExit{std::move(from), to, ref, std::move(reason)}});
  } else {
    out.send.push_back({peer, control::MonitorPExit{std::move(from), to, ref, std::move(reason)}});
  }
}

void Processes::send_exit(const std::string& peer, const etf::Pid& from, const etf::Pid& to, Term reason,
                          Effects& out) const {
  if ((peer_flags(peer).value_or(0) & dist::flag::exit_payload) != 0) {
    out.send.push_back({peer, control::PayloadExit{from, to, std::move(reason)}});
  } else {
    out.send.push_back({peer, control::Exit{from, to, std::move(reason)}});
  }
}

}  // namespace camlbeam::node
