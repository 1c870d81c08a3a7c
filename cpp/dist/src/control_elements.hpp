// A control tuple read straight into its elements, without a Term tree for the tuple.
//
// Most control tuples hold only scalars (MONITOR_P is {19, Pid, Name, Ref}), and three of
// them come with every gen_server:call. Built as a Term tree, each pid and reference was a
// heap box, the tuple a vector, and each element moved twice through the Term variant on
// its way to the typed struct: a tenth of camlbeam-node's time per small call. The reader
// below keeps each top-level element in its typed form as the decoder reports it, and
// builds a Term only for what is a term in the struct anyway (an exit reason, a trace
// token, SPAWN_REQUEST's options) or nested (SPAWN_REQUEST's {M, F, A}).
//
// Private to cpp/dist: control.cpp reads the elements with the same struct descriptions as
// the terms of control_from_terms (which goes through the same code), and MessageReader
// drives the reader.
#pragma once

#include <camlbeam/dist/control.hpp>
#include <camlbeam/etf/term_builder.hpp>

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <variant>
#include <vector>

namespace camlbeam::dist::detail {

// control_from_terms over elements (those after the tuple's first, the operation number,
// included): the same checks and the same errors.
ControlResult control_from_elements(std::span<ControlElement> elements, std::optional<etf::Term> payload);

// An etf::Visitor for the control tuple: its top-level elements go to `elements` (cleared
// first). A control message that is no tuple is built whole, for the error that names
// what it is (take_whole).
class ControlTupleReader {
 public:
  ControlTupleReader(std::vector<ControlElement>& elements, etf::TermBuilder::Options options)
      : elements_(elements), nested_(options) {
    elements_.clear();
  }

  // False when the control message was not a tuple: take_whole() is what it was.
  bool was_tuple() const noexcept { return state_ != State::whole; }
  etf::Term take_whole() { return nested_.take(); }

  void integer(std::int64_t v) {
    if (at_top()) elements_.emplace_back(std::in_place_type<std::int64_t>, v);
    else nested_.integer(v), leaf_done();
  }
  void atom(std::string_view name) {
    if (at_top()) elements_.emplace_back(std::in_place_type<etf::Atom>, etf::Atom{std::string(name)});
    else nested_.atom(name), leaf_done();
  }
  void pid(const etf::PidView& p) {
    if (at_top())
      elements_.emplace_back(std::in_place_type<etf::Pid>, etf::Pid{std::string(p.node), p.id, p.serial, p.creation});
    else nested_.pid(p), leaf_done();
  }
  void reference(const etf::ReferenceView& r) {
    if (at_top())
      elements_.emplace_back(std::in_place_type<etf::Reference>,
                             etf::Reference{std::string(r.node), r.creation, {r.ids.begin(), r.ids.end()}});
    else nested_.reference(r), leaf_done();
  }
  // The other leaves are Terms wherever they are.
  void big_integer(bool negative, std::span<const std::uint8_t> magnitude) {
    nested_.big_integer(negative, magnitude), leaf_done();
  }
  void float64(double d) { nested_.float64(d), leaf_done(); }
  void binary(std::span<const std::uint8_t> bytes) { nested_.binary(bytes), leaf_done(); }
  void bitstring(std::span<const std::uint8_t> bytes, std::uint8_t bits) { nested_.bitstring(bytes, bits), leaf_done(); }
  void nil() { nested_.nil(), leaf_done(); }
  void string(std::span<const std::uint8_t> bytes) { nested_.string(bytes), leaf_done(); }
  void port(const etf::PortView& p) { nested_.port(p), leaf_done(); }
  void export_fun(std::string_view module, std::string_view function, std::uint8_t arity) {
    nested_.export_fun(module, function, arity), leaf_done();
  }

  void begin_tuple(std::uint32_t n) {
    if (state_ == State::start) {
      state_ = State::in_tuple;
      return;
    }
    nested_.begin_tuple(n), ++depth_;
  }
  void end_tuple() {
    if (state_ == State::in_tuple && depth_ == 0) return;  // the control tuple's own end
    nested_.end_tuple(), container_done();
  }
  void begin_list(std::uint32_t n) { opening(), nested_.begin_list(n), ++depth_; }
  void end_list() { nested_.end_list(), container_done(); }
  void begin_map(std::uint32_t n) { opening(), nested_.begin_map(n), ++depth_; }
  void end_map() { nested_.end_map(), container_done(); }
  void begin_fun(const etf::FunView& f) { opening(), nested_.begin_fun(f), ++depth_; }
  void end_fun() { nested_.end_fun(), container_done(); }

 private:
  enum class State { start, in_tuple, whole };

  bool at_top() {
    if (state_ == State::start) state_ = State::whole;
    return state_ == State::in_tuple && depth_ == 0;
  }
  // A container as the control message itself: it is no tuple.
  void opening() {
    if (state_ == State::start) state_ = State::whole;
  }
  // A leaf built by nested_: it is a whole element when no container of it is open.
  void leaf_done() {
    if (state_ == State::start) state_ = State::whole;
    if (state_ == State::in_tuple && depth_ == 0) elements_.emplace_back(nested_.take());
  }
  void container_done() {
    if (--depth_ == 0 && state_ == State::in_tuple) elements_.emplace_back(nested_.take());
  }

  std::vector<ControlElement>& elements_;
  etf::TermBuilder nested_;
  State state_ = State::start;
  std::uint32_t depth_ = 0;  // containers open inside the current element (or the whole term)
};

}  // namespace camlbeam::dist::detail
