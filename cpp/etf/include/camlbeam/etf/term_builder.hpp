// A Visitor that builds a Term tree, and the one-call decode entry points on top of it.
#pragma once

#include <camlbeam/etf/decoder.hpp>
#include <camlbeam/etf/term.hpp>

#include <vector>

namespace camlbeam::etf {

class TermBuilder {
 public:
  struct Options {
    // OTP 27 holds 0.0 and -0.0 apart (=:= and as map keys); OTP 25, whose order Term's
    // compare follows, does not, and refuses a map that holds both. Set, a map whose keys
    // are equal only up to the sign of a zero keeps them all, as an OTP 27 peer meant them:
    // such a Term holds keys that compare equal, for its consumer to refuse (Erl.Term.compare
    // holds them equal too) rather than the whole message being malformed.
    bool zero_signs_apart = false;
  };
  TermBuilder() = default;
  explicit TermBuilder(Options options) : options_(options) {}

  void integer(std::int64_t v) { emplace<std::int64_t>(v); }
  void big_integer(bool negative, std::span<const std::uint8_t> magnitude);
  void float64(double d) { emplace<double>(d); }
  void atom(std::string_view name) { emplace<Atom>(Atom{std::string(name)}); }
  void binary(std::span<const std::uint8_t> bytes) {
    emplace<Binary>(Binary{{bytes.begin(), bytes.end()}});
  }
  void bitstring(std::span<const std::uint8_t> bytes, std::uint8_t bits) {
    emplace<Bitstring>(Bitstring{{bytes.begin(), bytes.end()}, bits});
  }
  void nil() { emplace<Nil>(); }
  void string(std::span<const std::uint8_t> bytes);
  void begin_list(std::uint32_t n);
  void end_list();
  void begin_tuple(std::uint32_t n) { open(Kind::tuple, n); }
  void end_tuple();
  void begin_map(std::uint32_t n) { open(Kind::map, std::size_t{n} * 2); }
  void end_map();
  void pid(const PidView& pid);
  void port(const PortView& port);
  void reference(const ReferenceView& ref);
  void begin_fun(const FunView& fun);
  void end_fun();
  void export_fun(std::string_view module, std::string_view function, std::uint8_t arity);

  // The finished term; the builder is empty afterwards.
  Term take() { return std::move(result_); }

 private:
  struct Open {
    Kind kind;
    std::vector<Term> items;
    std::unique_ptr<Fun> fun;       // the header of a fun being built
    std::size_t list_elements = 0;  // for lists: elements before the tail
    std::size_t merged_tails = 0;   // for lists: tail lists folded into this one
  };
  Options options_;
  // True when the next term is the tail of the list being built.
  bool at_list_tail() const noexcept {
    return !stack_.empty() && stack_.back().kind == Kind::list &&
           stack_.back().items.size() == stack_.back().list_elements;
  }
  void open(Kind kind, std::size_t capacity);
  void emit(Term t) {
    if (stack_.empty()) result_ = std::move(t);
    else stack_.back().items.push_back(std::move(t));
  }
  // Constructs the leaf where it goes: no temporary Term to move and destroy.
  template <class T, class... Args>
  void emplace(Args&&... args) {
    if (stack_.empty()) result_ = Term(std::in_place_type<T>, std::forward<Args>(args)...);
    else stack_.back().items.emplace_back(std::in_place_type<T>, std::forward<Args>(args)...);
  }

  std::vector<Open> stack_;
  Term result_;
};

static_assert(Visitor<TermBuilder>);

// Decode a complete external term (131 ...) into a Term; throws DecodeException.
Term decode_term(std::span<const std::uint8_t> bytes, const DecodeOptions& options = default_decode_options);

}  // namespace camlbeam::etf
