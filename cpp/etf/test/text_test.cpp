// Erlang-syntax text: parse_term ∘ to_string is the identity, and errors say where.
#include <camlbeam/etf/etf.hpp>

#include <gtest/gtest.h>

namespace etf = camlbeam::etf;
using etf::Term;

TEST(Text, PrintThenParseIsIdentity) {
  const char* samples[] = {
      "{ok,[1,2|x],#{a => <<\"b\">>}}",
      "[-5,16#FFFFFFFFFFFFFFFFFFFF,-123456789012345678901234567890,2.5e-300,-0.0]",
      "{'hello world','\\n',[],'don\\'t',<<>>,<<1,2,7:3>>,\"tab\\there\"}",
      "#{#{k => v} => {}, [] => 1.0, 1 => 1}",
      "{#Pid<'a@b.c'.1.2.3>,#Port<n@h.5000000000.2>,#Ref<n@h.7.1.2.3>,fun m:f/0}",
      "'caf\xC3\xA9'",
  };
  for (const char* text : samples) {
    const Term t = etf::parse_term(text);
    EXPECT_EQ(etf::parse_term(t.to_string()), t) << text << " printed as " << t.to_string();
  }
}

// Found by the decode fuzzer: 7667942715711029356 is 0x6a6a01460000006c, whose low 32 bits
// are 108, 'l'. A list of it printed as "l".
TEST(Text, IntegersPastAByteAreNeverCharacters) {
  for (std::int64_t v : {std::int64_t{0x100} + 'a', (std::int64_t{1} << 32) + 'l', std::int64_t{7667942715711029356},
                         INT64_MAX - 255 + 'l'}) {
    const Term list = Term::list({Term::integer(v)});
    EXPECT_EQ(list.to_string(), "[" + std::to_string(v) + "]");
    EXPECT_EQ(etf::parse_term(list.to_string()), list) << v;
  }
  EXPECT_EQ(Term::list({Term::integer('l')}).to_string(), "\"l\"");
}

TEST(Text, ReadsErlangNotations) {
  EXPECT_EQ(etf::parse_term("$a"), Term::integer(97));
  EXPECT_EQ(etf::parse_term("$\\n"), Term::integer(10));
  EXPECT_EQ(etf::parse_term("2#1010"), Term::integer(10));
  EXPECT_EQ(etf::parse_term("1_000"), Term::integer(1000));
  EXPECT_EQ(etf::parse_term("\"\xCE\xB1\""), Term::list({Term::integer(0x3B1)}));
  EXPECT_EQ(etf::parse_term("{a, b}.  % shell style"), etf::parse_term("{a,b}"));
  EXPECT_EQ(etf::parse_term("<<\"ab\", 3>>"), Term::binary(std::string_view("ab\x03")));
}

TEST(Text, ErrorsSayWhere) {
  try {
    etf::parse_term("{a, ]");
    FAIL();
  } catch (const etf::ParseError& e) {
    EXPECT_EQ(e.column(), 5u);
  }
  EXPECT_THROW(etf::parse_term("#{a => 1, a => 2}"), etf::ParseError);
  EXPECT_THROW(etf::parse_term(std::string(200'000, '[')), etf::ParseError);  // depth bound
  EXPECT_THROW(etf::parse_term(std::string(20, '['), 10), etf::ParseError);
  EXPECT_THROW(etf::parse_term("<<256>>"), etf::ParseError);
  EXPECT_THROW(etf::parse_term("{a} junk"), etf::ParseError);
}
