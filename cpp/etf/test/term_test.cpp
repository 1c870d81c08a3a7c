// The term model: construction rules, exact term order, value semantics on deep trees.
#include <camlbeam/etf/etf.hpp>

#include <gtest/gtest.h>

namespace etf = camlbeam::etf;
using etf::Term;

namespace {

Term atom(std::string_view name) { return Term::atom(name); }
Term i(std::int64_t v) { return Term::integer(v); }

// 2^64 + 5 and its negation.
Term big(bool negative) { return Term::big_integer(negative, {5, 0, 0, 0, 0, 0, 0, 0, 1}); }

// A term nested `depth` deep: {{{...{leaf}...}}} or [[[...]]].
Term nested_tuples(std::size_t depth, Term leaf) {
  // Not Term::tuple({std::move(t)}): an initializer_list copies its elements.
  Term t = std::move(leaf);
  for (std::size_t k = 0; k < depth; ++k) {
    std::vector<Term> one;
    one.push_back(std::move(t));
    t = Term::tuple(std::move(one));
  }
  return t;
}

}  // namespace

TEST(Term, BignumsThatFitAreIntegers) {
  EXPECT_EQ(Term::big_integer(false, {1, 0, 0}).kind(), etf::Kind::integer);
  EXPECT_EQ(Term::big_integer(true, {0, 0, 0, 0, 0, 0, 0, 0x80}).as_int64(), INT64_MIN);
  EXPECT_EQ(Term::big_integer(false, {0, 0, 0, 0, 0, 0, 0, 0x80}).kind(), etf::Kind::big_integer);
  EXPECT_EQ(Term::big_integer(true, {}).as_int64(), 0);  // -0 is 0
}

TEST(Term, ExactOrderAcrossKinds) {
  // number < atom < reference < fun < port < pid < tuple < map < nil < list < bitstring
  const std::vector<Term> ascending = {
      big(true), i(-1), i(0), big(false), Term::float64(-1.0e300), Term::float64(0.5), atom("a"),
      Term::reference({"n@h", 1, {1, 2, 3}}), Term::export_fun("m", "f", 1),
      Term::port({"n@h", 1, 0}), Term::pid({"n@h", 1, 0, 0}), Term::tuple({}),
      Term::tuple({i(1)}), Term::map({}), Term::nil(), Term::list({i(1)}),
      Term::binary(std::string_view("")), Term::binary(std::string_view("a"))};
  for (std::size_t a = 0; a < ascending.size(); ++a) {
    for (std::size_t b = 0; b < ascending.size(); ++b) {
      EXPECT_TRUE(compare(ascending[a], ascending[b]) == (a <=> b))
          << ascending[a].to_string() << " vs " << ascending[b].to_string();
    }
  }
}

TEST(Term, IntegersSortBeforeFloatsWhateverTheirValue) {
  EXPECT_LT(i(2), Term::float64(1.0));
  EXPECT_NE(i(1), Term::float64(1.0));
  EXPECT_EQ(Term::float64(0.0), Term::float64(-0.0));  // OTP 25: 0.0 =:= -0.0
}

TEST(Term, ListsCompareElementWiseThenByTail) {
  EXPECT_LT(Term::list({i(1), i(2)}), Term::list({i(1), i(2), i(3)}));
  EXPECT_LT(Term::list({i(1)}, atom("z")), Term::list({i(1), i(0)}));  // atom < list
  EXPECT_GT(Term::list({i(2)}), Term::list({i(1), i(9), i(9)}));
  EXPECT_EQ(Term::list({i(1)}, Term::list({i(2)})), Term::list({i(1), i(2)}));
}

TEST(Term, ListTailsThatAreListsAreMerged) {
  const Term merged = Term::list({i(1)}, Term::list({i(2), i(3)}, atom("t")));
  ASSERT_EQ(merged.kind(), etf::Kind::list);
  EXPECT_EQ(merged.get_if<etf::List>()->items.size(), 4u);
  EXPECT_EQ(Term::list({}, atom("t")), atom("t"));
}

TEST(Term, MapsAreKeptInKeyOrderAndRejectDuplicates) {
  const Term m = Term::map({{atom("b"), i(1)}, {i(2), i(2)}, {Term::float64(1.0), i(3)}});
  const auto& flat = m.get_if<etf::Map>()->flat;
  EXPECT_EQ(flat[0], i(2));
  EXPECT_EQ(flat[2], Term::float64(1.0));
  EXPECT_EQ(flat[4], atom("b"));
  EXPECT_THROW(Term::map({{Term::float64(0.0), i(1)}, {Term::float64(-0.0), i(2)}}), etf::EncodeError);
  // Maps order by size, then keys, then values.
  EXPECT_LT(Term::map({{i(9), i(9)}}), Term::map({{i(1), i(1)}, {i(2), i(2)}}));
  EXPECT_LT(Term::map({{i(1), i(9)}}), Term::map({{i(2), i(0)}}));
  EXPECT_LT(Term::map({{i(1), i(1)}}), Term::map({{i(1), i(2)}}));
}

TEST(Term, BitstringsCompareAsBitSequences) {
  const Term one_bit = Term::bitstring({0x80}, 1);
  EXPECT_GT(one_bit, Term::binary(std::string_view("\x00", 1)));
  EXPECT_LT(Term::bitstring({0x00}, 1), Term::binary(std::string_view("\x00", 1)));
  EXPECT_EQ(Term::bitstring({0xFF}, 3), Term::bitstring({0xE0}, 3));  // unused bits masked
  EXPECT_EQ(Term::bitstring({1, 2}, 8).kind(), etf::Kind::binary);
}

TEST(Term, ConstructionRejectsWhatTheWireCannotCarry) {
  EXPECT_THROW(Term::atom(std::string(256, 'a')), etf::EncodeError);
  EXPECT_NO_THROW(Term::atom([] {
    std::string s;
    for (int k = 0; k < 255; ++k) s += "\xF0\x9F\x98\x80";  // 255 four-byte characters
    return s;
  }()));
  EXPECT_THROW(Term::atom("\xC0\x80"), etf::EncodeError);
  EXPECT_THROW(Term::float64(std::numeric_limits<double>::quiet_NaN()), etf::EncodeError);
  EXPECT_THROW(Term::reference({"n@h", 0, {1, 2, 3, 4, 5, 6}}), etf::EncodeError);
  EXPECT_THROW(Term::bitstring({1}, 0), etf::EncodeError);
}

TEST(Term, CopiesAreDeepAndIndependent) {
  Term original = Term::tuple({Term::list({i(1), Term::map({{atom("k"), i(2)}})}), i(3)});
  Term copy = original;
  EXPECT_EQ(copy, original);
  copy.children()[1] = i(4);
  EXPECT_NE(copy, original);
  EXPECT_EQ(original.children()[1], i(3));
}

TEST(Term, DeepTreesCostHeapNotStack) {
  // Each operation below would overflow an 8 MB stack if it recursed per level.
  constexpr std::size_t depth = 1'000'000;
  Term deep = nested_tuples(depth, atom("leaf"));
  Term copy = deep;
  EXPECT_TRUE(compare(copy, deep) == 0);
  EXPECT_NE(copy, nested_tuples(depth, atom("leag")));
  const std::string text = deep.to_string();
  EXPECT_EQ(text.size(), 2 * depth + 4);
  EXPECT_EQ(text.substr(depth - 2, 8), "{{leaf}}");
  Term assigned;
  assigned = copy;
  assigned = Term();  // destroys a million levels
}

TEST(Term, PrintsErlangSyntax) {
  const Term t = Term::tuple({atom("ok"), atom("Quoted atom"), Term::string("hi\n"),
                              Term::list({i(1), i(2)}, atom("t")), Term::binary(std::string_view("bin")),
                              Term::bitstring({1, 0xA0}, 3), Term::float64(1e20), Term::float64(0.1),
                              big(true), Term::map({{atom("a"), Term::nil()}}),
                              Term::export_fun("lists", "map", 2), Term::pid({"n@h", 80, 1, 3})});
  EXPECT_EQ(t.to_string(),
            "{ok,'Quoted atom',\"hi\\n\",[1,2|t],<<\"bin\">>,<<1,5:3>>,1.0e20,0.1,"
            "-18446744073709551621,#{a => []},fun lists:map/2,#Pid<n@h.80.1.3>}");
}
