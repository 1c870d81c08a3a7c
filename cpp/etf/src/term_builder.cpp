#include <camlbeam/etf/term_builder.hpp>

#include <algorithm>
#include <cmath>
#include <utility>

namespace camlbeam::etf {

void TermBuilder::big_integer(bool negative, std::span<const std::uint8_t> magnitude) {
  emit(Term::big_integer(negative, {magnitude.begin(), magnitude.end()}));
}

// A list in tail position ([1 | [2, 3]]) is folded into the list being built rather than
// built and merged afterwards: merging would copy, and a chain of such tails would cost
// quadratic time.
void TermBuilder::begin_list(std::uint32_t n) {
  if (at_list_tail()) {
    // No reserve here: growing by exactly n per link would make a chain quadratic.
    stack_.back().list_elements += n;
    ++stack_.back().merged_tails;
    return;
  }
  open(Kind::list, std::size_t{n} + 1);
  stack_.back().list_elements = n;
}

// STRING_EXT is a proper list of small integers: built through the list path, so that it
// folds into an open list when it is that list's tail.
void TermBuilder::string(std::span<const std::uint8_t> bytes) {
  begin_list(static_cast<std::uint32_t>(bytes.size()));
  std::vector<Term>& items = stack_.back().items;
  for (std::uint8_t b : bytes) items.emplace_back(std::in_place_type<std::int64_t>, b);
  items.emplace_back();  // the tail, []
  end_list();
}

void TermBuilder::open(Kind kind, std::size_t capacity) {
  Open frame{kind, {}, nullptr};
  frame.items.reserve(capacity);
  stack_.push_back(std::move(frame));
}

void TermBuilder::end_list() {
  if (stack_.back().merged_tails > 0) {
    --stack_.back().merged_tails;
    return;
  }
  std::vector<Term> items = std::move(stack_.back().items);
  stack_.pop_back();
  Term tail = std::move(items.back());
  items.pop_back();
  emit(Term::list(std::move(items), std::move(tail)));  // merges a tail that is a list
}

void TermBuilder::end_tuple() {
  Term t = Term::from_repr(Tuple{std::move(stack_.back().items)});
  stack_.pop_back();
  emit(std::move(t));
}

namespace {

// The signs of a term's floats, in a walk of its tree: terms equal under compare have the
// same shape, so theirs differ exactly where OTP 27 holds them apart.
std::vector<bool> float_signs(const Term& term) {
  std::vector<bool> signs;
  std::vector<const Term*> todo{&term};
  while (!todo.empty()) {
    const Term* t = todo.back();
    todo.pop_back();
    if (const double* f = t->get_if<double>()) signs.push_back(std::signbit(*f));
    for (const Term& child : t->children()) todo.push_back(&child);
  }
  return signs;
}

// Sorted keys (every other item of `flat`) that are equal under compare must differ in
// their floats' signs; sorting each run of equal keys by those signs keeps this
// O(n log n) whatever a peer sends.
void refuse_keys_equal_with_their_zeros(const std::vector<Term>& flat) {
  for (std::size_t begin = 0; begin < flat.size();) {
    std::size_t end = begin + 2;
    while (end < flat.size() && compare(flat[begin], flat[end]) == 0) end += 2;
    if (end - begin > 2) {
      std::vector<std::vector<bool>> signs;
      for (std::size_t i = begin; i < end; i += 2) signs.push_back(float_signs(flat[i]));
      std::sort(signs.begin(), signs.end());
      if (std::adjacent_find(signs.begin(), signs.end()) != signs.end()) throw Reject{Errc::duplicate_map_key};
    }
    begin = end;
  }
}

}  // namespace

void TermBuilder::end_map() {
  std::vector<Term> flat = std::move(stack_.back().items);
  stack_.pop_back();
  if (sort_map_entries(flat) != npos) {
    if (!options_.zero_signs_apart) throw Reject{Errc::duplicate_map_key};
    refuse_keys_equal_with_their_zeros(flat);
  }
  emit(Term::from_repr(Map{std::move(flat)}));
}

namespace {

Pid to_pid(const PidView& v) { return Pid{std::string(v.node), v.id, v.serial, v.creation}; }

}  // namespace

void TermBuilder::pid(const PidView& pid) { emit(Term::from_repr(Boxed<Pid>(to_pid(pid)))); }

void TermBuilder::port(const PortView& port) {
  emit(Term::from_repr(Boxed<Port>(Port{std::string(port.node), port.id, port.creation})));
}

void TermBuilder::reference(const ReferenceView& ref) {
  emit(Term::from_repr(Boxed<Reference>(
      Reference{std::string(ref.node), ref.creation, {ref.ids.begin(), ref.ids.end()}})));
}

void TermBuilder::begin_fun(const FunView& fun) {
  open(Kind::fun, fun.free_count);
  stack_.back().fun = std::make_unique<Fun>(Fun{fun.arity, fun.uniq, fun.index, std::string(fun.module),
                                                fun.old_index, fun.old_uniq, to_pid(fun.pid), {}});
}

void TermBuilder::end_fun() {
  Fun fun = std::move(*stack_.back().fun);
  fun.free_vars = std::move(stack_.back().items);
  stack_.pop_back();
  emit(Term::from_repr(Boxed<Fun>(std::move(fun))));
}

void TermBuilder::export_fun(std::string_view module, std::string_view function, std::uint8_t arity) {
  emit(Term::from_repr(Boxed<ExportFun>(ExportFun{std::string(module), std::string(function), arity})));
}

Term decode_term(std::span<const std::uint8_t> bytes, const DecodeOptions& options) {
  TermBuilder builder;
  if (auto result = decode(bytes, builder, options); !result) throw DecodeException(*result.error);
  return builder.take();
}

}  // namespace camlbeam::etf
