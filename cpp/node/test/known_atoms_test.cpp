#include "known_atoms.hpp"

#include <camlbeam/etf/etf.hpp>

#include <gtest/gtest.h>

namespace camlbeam::node {
namespace {

using etf::Term;

Term parse(std::string_view text) { return etf::parse_term(text); }

TEST(KnownAtoms, AnAnswerMayHoldWhatItsPeerSentAndCamlbeamsOwnAtoms) {
  KnownAtoms known;
  known.learn("erl@h", parse("{call, tag, {m, f}, [apple, #Pid<'erl@h'.1.2.3>, [#{pear => <<\"x\">>}]]}"));
  EXPECT_EQ(known.first_unknown("erl@h", parse("{ok, {apple, pear, [true, undefined], 'erl@h'}}")), std::nullopt);
  EXPECT_EQ(known.first_unknown("erl@h", parse("{error, {ocaml_exception, <<\"N\">>, <<\"M\">>, <<>>}}")),
            std::nullopt);
  EXPECT_EQ(known.first_unknown("erl@h", parse("{ok, [apple, {plum}]}")), "plum");
  // Another peer sent none of them.
  EXPECT_EQ(known.first_unknown("other@h", parse("{ok, apple}")), "apple");
}

TEST(KnownAtoms, NodeNamesOfPidsPortsReferencesAndFunsCountAsAtoms) {
  KnownAtoms known;
  known.learn("erl@h", parse("{x, #Ref<'erl@h'.1.2.3.4>}"));
  EXPECT_EQ(known.first_unknown("erl@h", parse("{ok, #Pid<'erl@h'.1.2.3>}")), std::nullopt);
  EXPECT_EQ(known.first_unknown("erl@h", parse("{ok, #Pid<'made_up@h'.1.2.3>}")), "made_up@h");
  EXPECT_EQ(known.first_unknown("erl@h", parse("{ok, #Port<'made_up@h'.1.2>}")), "made_up@h");
  EXPECT_EQ(known.first_unknown("erl@h", parse("{ok, #Ref<'made_up@h'.1.2.3.4>}")), "made_up@h");
  EXPECT_EQ(known.first_unknown("erl@h", parse("{ok, fun lists:reverse/1}")), "lists");
}

TEST(KnownAtoms, APluginsDeclaredAtomsAndExportNamesAreKnownToThePeerThatLoadedIt) {
  KnownAtoms known;
  known.learn_declared("pool@h", parse("{ok, #{atoms => [<<\"not_found\">>], exports => [{<<\"mathlib\">>, "
                                       "<<\"fib\">>, 1, <<\"fun((integer()) -> integer())\">>}]}}"));
  EXPECT_EQ(known.first_unknown("pool@h", parse("{error, {not_found, mathlib, fib}}")), std::nullopt);
  // Another VM's pool did not create them.
  EXPECT_EQ(known.first_unknown("other@h", parse("{error, not_found}")), "not_found");
  // A failed load declares nothing; nor does a signature's text.
  known.learn_declared("pool@h", parse("{error, {load_failed, enoent, <<\"no\">>}}"));
  EXPECT_EQ(known.first_unknown("pool@h", parse("{ok, integer}")), "integer");
}

TEST(KnownAtoms, APeerGoneTakesWhatItSentWithIt) {
  KnownAtoms known;
  known.learn("erl@h", parse("[apple]"));
  known.forget("erl@h");
  EXPECT_EQ(known.first_unknown("erl@h", parse("apple")), "apple");
}

TEST(KnownAtoms, DeepTermsAreWalkedWithoutRecursion) {
  Term deep = Term::atom("leaf");
  for (int i = 0; i < 200000; ++i) {
    std::vector<Term> one;  // moved in: an initializer list would copy the whole nest each time
    one.push_back(std::move(deep));
    deep = Term::list(std::move(one));
  }
  KnownAtoms known;
  EXPECT_EQ(known.first_unknown("erl@h", deep), "leaf");
  known.learn("erl@h", deep);
  EXPECT_EQ(known.first_unknown("erl@h", deep), std::nullopt);
}

TEST(KnownAtoms, TheRefusalIsThePortGuardsWords) {
  EXPECT_EQ(KnownAtoms::refusal("x"), parse("{error, {bad_reply, <<\"the atom 'x' is not known to this VM (a worker's "
                                            "answer cannot create atoms)\">>}}"));
}

}  // namespace
}  // namespace camlbeam::node
