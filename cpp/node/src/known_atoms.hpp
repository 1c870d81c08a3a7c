// The atoms an answer of the node may hold, as a peer's VM knows them: an atom travels as
// its text, and the VM that decodes it creates it, for good (atoms are never freed). So a
// plugin must not be able to fill a VM's atom table through the node, any more than through
// a port worker, whose answers a guard decodes with binary_to_term(_, [safe]). An answer
// may hold the atoms that peer sent the node (they exist in its VM), the node names of the
// pids, ports and references it sent, the atoms of the plugins the peer loaded (their
// declared atoms and the names of their modules and exports, which a pool creates when it
// loads a plugin: docs/plugins.md), and the atoms of camlbeam's own answers. The same holds
// for what the node sends a VM otherwise: Erl.send's messages, Erl.call_erlang's arguments. Any other atom makes the answer
// {error, {bad_reply, Message}}, Message as the port's guard words it.
#pragma once

#include <camlbeam/etf/term.hpp>

#include <cstddef>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>

namespace camlbeam::node {

class KnownAtoms {
 public:
  // The atoms of a request from `peer`, or of what its Erlang answered an Erl.call_erlang.
  void learn(const std::string& peer, const etf::Term& request);
  // A plugin's load answered {ok, #{atoms := Atoms, exports := Exports}} to `peer`: its
  // declared atoms and the names of its modules and exports, which the peer's pool creates.
  void learn_declared(const std::string& peer, const etf::Term& load_answer);
  // The peer is gone; what it sent goes with it.
  void forget(const std::string& peer);

  // The first atom (or node name) of `answer` that `peer` may not know, if any.
  std::optional<std::string> first_unknown(const std::string& peer, const etf::Term& answer) const;

  // {error, {bad_reply, Message}} for an answer holding `atom`.
  static etf::Term refusal(std::string_view atom);

 private:
  using Names = std::set<std::string, std::less<>>;

 public:
  // first_unknown's test one name at a time, for an answer written without a tree
  // (Processes::answered_in_place). Valid while the KnownAtoms is not changed.
  class PeerView {
   public:
    bool knows(std::string_view name) const {
      return is_camlbeams_own(name) || (names_ != nullptr && names_->contains(name));
    }

   private:
    friend class KnownAtoms;
    explicit PeerView(const Names* names) noexcept : names_(names) {}
    const Names* names_;
  };
  PeerView view_of(const std::string& peer) const {
    const auto known = known_by_peer_.find(peer);
    return PeerView(known == known_by_peer_.end() ? nullptr : &known->second);
  }

 private:
  static bool is_camlbeams_own(std::string_view name) noexcept;
  static void each_name(const etf::Term& term, const std::function<bool(std::string_view)>& visit);

  // What one peer may have sent is bounded by its own atom table (OTP's default limit is
  // 1,048,576); this bounds it whatever the peer's limit.
  static constexpr std::size_t max_per_peer = std::size_t{1} << 20;

  Names& of(const std::string& peer);

  std::map<std::string, Names, std::less<>> known_by_peer_;
};

}  // namespace camlbeam::node
