// Terms as Erlang-syntax text, for people and the camlbeam-etf tool. Printing is
// Term::to_string(); this is the way back.
#pragma once

#include <camlbeam/etf/term.hpp>

#include <cstddef>
#include <stdexcept>
#include <string>
#include <string_view>

namespace camlbeam::etf {

class ParseError : public std::runtime_error {
 public:
  ParseError(std::size_t column, const std::string& what);
  std::size_t column() const noexcept { return column_; }

 private:
  std::size_t column_;
};

// Parses one term in Erlang syntax: integers (any size, 16#FF, $c), floats, atoms (bare
// and quoted), "strings", <<"binaries">>, <<1,2,3:5>> bitstrings, tuples, lists with |,
// #{K => V} maps, fun M:F/A, and the #Pid<...>/#Port<...>/#Ref<...> forms to_string() writes.
// Iterative: nesting costs heap, not stack; max_depth bounds it like the decoder's limit.
Term parse_term(std::string_view text, std::size_t max_depth = 100'000);

}  // namespace camlbeam::etf
