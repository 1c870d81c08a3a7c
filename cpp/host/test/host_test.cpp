// The host end to end: a real OCaml runtime, real plugins (.cmxs in the native test
// executable, .cma in the bytecode one, from the same source), full ETF request frames in,
// reply frames out, checked as terms and byte for byte against camlbeam::etf's encoder
// (term_to_binary's bytes). The whole suite runs in one process and one runtime, so every
// test after an error is also a test that the error left the worker usable.
#include <camlbeam/conv/conv.hpp>
#include <camlbeam/etf/etf.hpp>
#include <camlbeam/etf/term_builder.hpp>
#include <camlbeam/host/etf_request.hpp>
#include <camlbeam/host/host.hpp>
#include <camlbeam/host/runtime.hpp>

#include <gtest/gtest.h>

#include <caml/version.h>
#include <caml/callback.h>
extern "C" {
#include <caml/minor_gc.h>
}
#include <caml/memory.h>
#include <caml/mlvalues.h>

#include <sys/resource.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/allocator_interface.h>
#else
#include <malloc.h>
#endif

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <optional>
#include <span>
#include <utility>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

// Gc.get and Gc.set, whose primitives no public header declares.
extern "C" value caml_gc_get(value unit);
extern "C" value caml_gc_set(value control);

namespace {

namespace conv = camlbeam::conv;
namespace etf = camlbeam::etf;
namespace host = camlbeam::host;
using etf::Term;
using Kind = host::Outcome::Kind;

constexpr bool native = CAMLBEAM_TEST_NATIVE;
host::Runtime* runtime = nullptr;

std::string plugin(std::string_view name, bool own_flavour = true) {
  return std::string(CAMLBEAM_TEST_PLUGINS) + "/" + std::string(name) +
         ((native == own_flavour) ? ".cmxs" : ".cma");
}

Term t(std::string_view text) { return etf::parse_term(text); }
const Term& ref() {
  static const Term r = t("#Ref<'test@host'.1.2.3.4>");
  return r;
}
Term atom(std::string_view name) { return Term::atom(name); }
Term binary(std::string_view bytes) { return Term::binary(bytes); }

Term call(std::string_view fn, Term args) { return Term::tuple({atom("call"), ref(), atom(fn), std::move(args)}); }
Term cast(std::string_view fn, Term args) { return Term::tuple({atom("cast"), atom(fn), std::move(args)}); }
Term load(Term path) { return Term::tuple({atom("load"), ref(), std::move(path)}); }
Term answer(Term a) { return Term::tuple({ref(), std::move(a)}); }
Term ok(Term v) { return answer(Term::tuple({atom("ok"), std::move(v)})); }
Term error(Term reason) { return answer(Term::tuple({atom("error"), std::move(reason)})); }

std::string describe(const host::Outcome& o) {
  std::string s = o.kind == Kind::replied ? "replied" : o.kind == Kind::no_reply ? "no_reply" : "refused";
  if (o.error) s += std::string(": ") + std::string(host::to_string(o.error->code)) + ": " + o.error->message;
  if (!o.diagnostic.empty()) s += " (" + o.diagnostic + ")";
  return s;
}

// Failure messages show at most the start of a term.
std::string shorten(std::string text) {
  if (text.size() > 400) text = text.substr(0, 400) + "...";
  return text;
}

bool contains(std::string_view s, std::string_view part) { return s.find(part) != std::string_view::npos; }

// The tests' transport: a Host that runs ETF frames and writes replies with these options.
class EtfHost : public host::Host {
 public:
  explicit EtfHost(const host::Runtime& started, host::EtfOptions options = {}, host::RequestWatch* watch = nullptr)
      : host::Host(started, watch), options_(std::move(options)) {}

  host::Outcome handle(std::span<const std::uint8_t> frame, etf::ByteBuffer& reply) {
    return host::handle_etf(*this, frame, reply, options_);
  }

 private:
  host::EtfOptions options_;
};

struct Reply {
  host::Outcome outcome;
  etf::ByteBuffer bytes;
  Term term;
};

Reply run_frame(EtfHost& h, std::span<const std::uint8_t> frame) {
  Reply r;
  r.outcome = h.handle(frame, r.bytes);
  if (r.outcome.replied()) r.term = etf::decode_term(r.bytes.span());
  return r;
}
Reply run(EtfHost& h, const Term& request) { return run_frame(h, etf::encode(request)); }

// The reply is `expected`, as a term and as term_to_binary's bytes.
void expect_reply(EtfHost& h, const Term& request, const Term& expected) {
  SCOPED_TRACE("request " + shorten(request.to_string()));
  const Reply r = run(h, request);
  ASSERT_EQ(r.outcome.kind, Kind::replied) << describe(r.outcome);
  EXPECT_EQ(r.term, expected) << shorten(r.term.to_string()) << "\n  expected " << shorten(expected.to_string());
  EXPECT_EQ(r.bytes.to_vector(), etf::encode(expected));
  EXPECT_EQ(r.outcome.reply_size, r.bytes.size());
}

// After an error, the worker still answers.
void expect_alive(EtfHost& h) { expect_reply(h, call("fib", t("[20]")), ok(t("6765"))); }

// {Ref, {error, {ocaml_exception, Name, Message, Backtrace}}}: returns the three binaries.
std::vector<std::string> ocaml_exception(const Term& reply) {
  const auto outer = reply.tuple_elements();
  if (outer.size() != 2 || outer[0] != ref()) return {};
  const auto err = outer[1].tuple_elements();
  if (err.size() != 2 || !err[0].is_atom("error")) return {};
  const auto exn = err[1].tuple_elements();
  if (exn.size() != 4 || !exn[0].is_atom("ocaml_exception")) return {};
  std::vector<std::string> fields;
  for (std::size_t i = 1; i < 4; ++i) {
    const auto* b = exn[i].get_if<etf::Binary>();
    if (b == nullptr) return {};
    fields.emplace_back(b->bytes.begin(), b->bytes.end());
  }
  return fields;
}

// {Ref, {error, {load_failed, Kind, Message}}}: returns Kind and Message.
std::pair<std::string, std::string> load_failed(const Term& reply) {
  const auto outer = reply.tuple_elements();
  if (outer.size() != 2) return {};
  const auto err = outer[1].tuple_elements();
  if (err.size() != 2 || !err[0].is_atom("error")) return {};
  const auto why = err[1].tuple_elements();
  if (why.size() != 3 || !why[0].is_atom("load_failed") || !why[1].atom_name()) return {};
  const auto* message = why[2].get_if<etf::Binary>();
  if (message == nullptr) return {};
  return {std::string(*why[1].atom_name()), std::string(message->bytes.begin(), message->bytes.end())};
}

// ---------------------------------------------------------------------------------------
// The runtime

TEST(Runtime, StartsOncePerProcess) {
  try {
    host::Runtime second(std::vector<std::string>{"second"});
    FAIL() << "a second runtime started";
  } catch (const host::RuntimeError& e) {
    EXPECT_TRUE(contains(e.what(), "already started")) << e.what();
  }
  EtfHost h(*runtime);
  expect_alive(h);
}

// ---------------------------------------------------------------------------------------
// Calls

TEST(Calls, Fib) {
  EtfHost h(*runtime);
  expect_reply(h, call("fib", t("[30]")), ok(t("832040")));
}

TEST(Calls, FloatListSum) {
  EtfHost h(*runtime);
  expect_reply(h, call("sum", t("[[1.5, 2.25, -0.75]]")), ok(t("3.0")));
  expect_reply(h, call("sum", t("[[]]")), ok(t("0.0")));
}

TEST(Calls, IdentityReturnsEveryKindOfTermUnchanged) {
  EtfHost h(*runtime);
  etf::Fun fun;
  fun.arity = 2;
  fun.uniq = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
  fun.index = 3;
  fun.module = "m";
  fun.old_index = 3;
  fun.old_uniq = 123456;
  fun.pid = {"a@h", 1, 2, 3};
  etf::Fun closed = fun;  // no free variables, as `fun() -> ok end`
  closed.free_vars.clear();
  fun.free_vars = {t("{x, 1}"), t("<<\"free\">>"), Term::fun(closed)};
  std::vector<std::pair<Term, Term>> wide;  // over 32 keys: OTP's HAMT order on the wire
  for (int i = 0; i < 40; ++i) wide.emplace_back(Term::integer(i), Term::integer(i * i));
  Term deep = atom("bottom");  // the conversions are iterative both ways
  for (int i = 0; i < 10'000; ++i) {
    std::vector<Term> one;  // not an initializer list, which would copy the whole term
    one.push_back(std::move(deep));
    deep = Term::list(std::move(one));
  }
  const Term everything = Term::tuple({
      t("[0, -1, 255, 256, -2147483648, 2147483647, 4611686018427387903, 4611686018427387904, "
        "-4611686018427387905, 123456789012345678901234567890, -98765432109876543210]"),
      t("[0.0, -0.0, 1.5, -2.5e-300, 1.7976931348623157e308]"),
      t("['', ok, 'Quoted atom', 'ατομο', '\xF0\x9F\x98\x80']"),
      t("[<<>>, <<\"bin\">>, <<1, 2, 3:5>>, <<1:1>>]"),
      t("[[], \"string\", [1, 2 | 3], [a | b], [1000, 2000]]"),
      t("{{}, #{}, #{a => 1, <<\"k\">> => [v]}}"),
      Term::map(std::move(wide)),
      Term::list({t("#Pid<'a@h'.1.2.3>"), t("#Port<'a@h'.5.6>"), t("#Port<'a@h'.18446744073709551615.7>"), ref(),
                  t("#Ref<'a@h'.1.0>"), t("fun lists:map/2")}),
      Term::fun(fun),
      Term::fun(closed),
      std::move(deep),
  });
  expect_reply(h, call("identity", Term::list({everything})), ok(everything));
}

// C memory in use now (ASan's allocator under ASan, whose quarantine keeps freed memory
// mapped: only its own count says what is still allocated).
std::size_t c_memory_in_use() {
#if defined(__SANITIZE_ADDRESS__)
  return __sanitizer_get_current_allocated_bytes();
#else
  const struct mallinfo2 info = mallinfo2();
  return info.uordblks + info.hblkhd;
#endif
}

// A binary past Erl.Binary.heap_max lives off the OCaml heap. Under the worker's GC policy
// the host collects the minor heap between requests once such memory passes 256 KB, so a
// 1 MB binary is freed after its request, not 8 requests later when the runtime itself
// would ask (1/8 of the 8 MB minor heap each): C memory grows by what one request holds.
// (Under OCAMLRUNPARAM=s=4k, the gc_stress run, the policy steps aside and the tiny minor
// heap collects as often.)
TEST(Calls, LargeBinariesAreFreedAfterTheirRequest) {
  const value saved_gc = caml_gc_get(Val_unit);
  caml_register_generational_global_root(const_cast<value*>(&saved_gc));
  caml_callback(*caml_named_value("camlbeam.host.worker_gc_defaults"), Val_unit);
  EtfHost h(*runtime);
  const Term big = binary(std::string(1 << 20, 'b'));
  const std::vector<std::uint8_t> request = etf::encode(call("identity", Term::list({big})));
  const std::size_t before = c_memory_in_use();
  std::size_t peak = before;
  for (int i = 0; i < 200; ++i) {
    const Reply r = run_frame(h, request);
    ASSERT_EQ(r.outcome.kind, Kind::replied) << describe(r.outcome);
    if (i == 0) {
      EXPECT_EQ(r.term, ok(big));
    }
    h.between_requests();
    peak = std::max(peak, c_memory_in_use());
  }
  caml_gc_set(saved_gc);
  caml_remove_generational_global_root(const_cast<value*>(&saved_gc));
  // The request frame and the reply's Term are the test's own; the reply buffer, the
  // binary off the heap, and malloc's slack are the worker's.
  EXPECT_LT(peak - before, std::size_t{6} << 20) << "C memory grew from " << before << " to " << peak << " bytes";
}

TEST(Calls, ArgumentErrorsAreAnswered) {
  EtfHost h(*runtime);
  expect_reply(h, call("nosuch", t("[1]")), error(t("{undef, nosuch}")));
  expect_reply(h, call("fib", t("[1, 2]")), error(t("{badarity, 1, 2}")));
  expect_reply(h, call("sum", t("[[1, 2]]")),
               error(t("{badarg, #{argument => 1, expected => <<\"[float()]\">>, got => [1, 2]}}")));
  expect_alive(h);
}

// ---------------------------------------------------------------------------------------
// Exports that fail

TEST(Failures, ExceptionIsAnsweredThenTheNextCallWorks) {
  EtfHost h(*runtime);
  for (int i = 0; i < 3; ++i) {
    const Reply r = run(h, call("lookup", t("[<<\"two\">>]")));
    ASSERT_EQ(r.outcome.kind, Kind::replied) << describe(r.outcome);
    const auto exn = ocaml_exception(r.term);
    ASSERT_EQ(exn.size(), 3u) << shorten(r.term.to_string());
    EXPECT_EQ(exn[0], "Not_found");
    EXPECT_EQ(exn[1], "Not_found");
    // The plugin and the host are compiled with -g: the backtrace names the plugin's source.
    EXPECT_TRUE(contains(exn[2], "hosttest.ml")) << exn[2];
    expect_alive(h);
  }
  expect_reply(h, call("lookup", t("[<<\"one\">>]")), ok(t("1")));
}

TEST(Failures, StackOverflowIsAnsweredThenTheNextCallWorks) {
  EtfHost h(*runtime);
  for (int i = 0; i < 3; ++i) {
    const Reply r = run(h, call("overflow", t("[0]")));
    ASSERT_EQ(r.outcome.kind, Kind::replied) << describe(r.outcome);
    const auto exn = ocaml_exception(r.term);
    ASSERT_EQ(exn.size(), 3u) << shorten(r.term.to_string());
    EXPECT_EQ(exn[0], "Stack_overflow");
    expect_alive(h);
  }
}

TEST(Failures, ReplyOverTheSizeLimitIsReplacedByAnError) {
  constexpr std::size_t limit = std::size_t{1} << 20;
  host::EtfOptions options;
  options.max_reply_size = limit;
  EtfHost h(*runtime, options);
  // The frame {Ref, {ok, <<N bytes>>}} is `base + N` bytes long.
  const std::size_t base = etf::encode(ok(binary(""))).size();

  // Exactly at the limit: sent.
  const std::size_t fits = limit - base;
  const Reply at_limit = run(h, call("big_binary", Term::list({Term::integer(static_cast<std::int64_t>(fits))})));
  ASSERT_EQ(at_limit.outcome.kind, Kind::replied) << describe(at_limit.outcome);
  EXPECT_EQ(at_limit.bytes.size(), limit);
  EXPECT_EQ(at_limit.term, ok(binary(std::string(fits, 'x'))));

  // One byte over, and far over: {error, {reply_too_large, Size, Limit}} with the exact size.
  for (const std::size_t n : {fits + 1, std::size_t{50'000'000}}) {
    const Reply r = run(h, call("big_binary", Term::list({Term::integer(static_cast<std::int64_t>(n))})));
    ASSERT_EQ(r.outcome.kind, Kind::replied) << describe(r.outcome);
    const Term expected = error(Term::tuple({atom("reply_too_large"), Term::integer(static_cast<std::int64_t>(base + n)),
                                             Term::integer(static_cast<std::int64_t>(limit))}));
    EXPECT_EQ(r.term, expected) << shorten(r.term.to_string());
    EXPECT_EQ(r.bytes.to_vector(), etf::encode(expected));
    EXPECT_TRUE(contains(r.outcome.diagnostic, "exceeds max_reply_size")) << r.outcome.diagnostic;
    expect_alive(h);
  }

  // Too large through many small terms (no single large leaf), inside a fun's free
  // variables too: still the exact size.
  std::vector<Term> many;
  for (int i = 0; i < 300'000; ++i) many.push_back(Term::integer(i));  // 5 bytes each
  etf::Fun fun;
  fun.module = "m";
  fun.pid = {"a@h", 1, 2, 3};
  fun.free_vars = {Term::list(many)};
  for (const Term& big : {Term::list(many), Term::fun(fun)}) {
    const Reply r = run(h, call("identity", Term::list({big})));
    const Term expected = error(Term::tuple({atom("reply_too_large"),
                                             Term::integer(static_cast<std::int64_t>(etf::encode(ok(big)).size())),
                                             Term::integer(static_cast<std::int64_t>(limit))}));
    EXPECT_EQ(r.term, expected) << shorten(r.term.to_string()) << " expected " << expected.to_string();
  }
  expect_alive(h);
}

TEST(Failures, AnswerErlangCannotHoldIsReplacedByAnError) {
  EtfHost h(*runtime);
  const Reply r = run(h, call("nan", t("[]")));
  ASSERT_EQ(r.outcome.kind, Kind::replied) << describe(r.outcome);
  const Term expected =
      error(Term::tuple({atom("bad_reply"), binary("the answer cannot be encoded: Erlang has no NaN or infinite floats")}));
  EXPECT_EQ(r.term, expected) << r.term.to_string();
  EXPECT_EQ(r.outcome.diagnostic, "the answer cannot be encoded: Erlang has no NaN or infinite floats");
  expect_alive(h);
}

// ---------------------------------------------------------------------------------------
// Requests

TEST(Requests, MalformedRequestWithARefIsAnswered) {
  EtfHost h(*runtime);
  expect_reply(h, Term::tuple({atom("call"), ref(), Term::integer(42), t("[]")}),
               error(t("{bad_request, <<\"call: Fun must be an atom or a tuple {Module, Function} of two atoms, "
                       "got 42\">>}")));
  expect_reply(h, Term::tuple({atom("call"), ref(), t("{hosttest, 7}"), t("[1]")}),
               error(t("{bad_request, <<\"call: Fun must be an atom or a tuple {Module, Function} of two atoms, "
                       "got {hosttest,7}\">>}")));
  expect_reply(h, Term::tuple({atom("call"), ref(), atom("fib"), t("[1 | 2]")}),
               error(t("{bad_request, <<\"call: Args must be a proper list, got [1|2]\">>}")));
  expect_reply(h, Term::tuple({atom("call"), ref()}),
               error(t("{bad_request, <<\"expected {call, Ref, Fun, Args} or {call, Ref, Fun, Args, Timeout}, got a tuple "
                       "of 2 elements\">>}")));
  expect_reply(h, Term::tuple({atom("call"), ref(), atom("fib"), t("[20]"), t("-5")}),
               error(t("{bad_request, <<\"call: Timeout must be a non-negative integer or infinity, got -5\">>}")));
  expect_reply(h, load(Term::integer(7)),
               error(t("{bad_request, <<\"load: Path must be a binary or a string, got 7\">>}")));
  expect_alive(h);
}

TEST(Requests, WhatCannotBeAnsweredIsATypedError) {
  EtfHost h(*runtime);
  const std::vector<std::uint8_t> garbage = {131, 255, 1, 2};
  etf::ByteBuffer reply;
  host::Outcome o = h.handle(garbage, reply);
  ASSERT_EQ(o.kind, Kind::refused);
  ASSERT_TRUE(o.error);
  EXPECT_EQ(o.error->code, host::Errc::bad_etf);
  ASSERT_TRUE(o.error->decode);
  EXPECT_EQ(o.error->decode->code, etf::Errc::unknown_tag);
  EXPECT_EQ(o.error->decode->offset, 1u);
  EXPECT_EQ(reply.size(), 0u);

  o = h.handle({}, reply);
  EXPECT_EQ(o.kind, Kind::refused);
  EXPECT_EQ(o.error->code, host::Errc::bad_etf);

  for (const char* text : {"hello", "{cast, 1, []}", "{cast, f, [a | b]}", "{cast, {hosttest}, []}", "{}",
                           "[call, 1, f, []]",
                           "{reply, #Ref<'test@host'.1.2.3.4>, ok}"}) {
    o = h.handle(etf::encode(t(text)), reply);
    ASSERT_EQ(o.kind, Kind::refused) << text;
    EXPECT_EQ(o.error->code, host::Errc::bad_request) << text;
    EXPECT_TRUE(contains(o.error->message, "{call, Ref, Fun, Args}, {call, Ref, Fun, Args, Timeout}, {cast, Fun, Args}, "
                                           "{load, Ref, Path} or {load, Ref, Path, Timeout}"))
        << o.error->message;
  }
  EXPECT_EQ(reply.size(), 0u);
  expect_alive(h);
}

TEST(Requests, CastRunsWithoutReply) {
  EtfHost h(*runtime);
  etf::ByteBuffer reply;
  for (const char* note : {"<<\"one\">>", "<<\"two\">>"}) {
    const host::Outcome o = h.handle(etf::encode(cast("note", Term::list({t(note)}))), reply);
    EXPECT_EQ(o.kind, Kind::no_reply) << describe(o);
    EXPECT_TRUE(o.diagnostic.empty()) << o.diagnostic;
  }
  EXPECT_EQ(reply.size(), 0u);
  expect_reply(h, call("notes", t("[]")), ok(t("[<<\"one\">>, <<\"two\">>]")));

  // A failing cast has nobody to answer: the outcome says why, for the log.
  host::Outcome o = h.handle(etf::encode(cast("nosuch", t("[]"))), reply);
  EXPECT_EQ(o.kind, Kind::no_reply);
  EXPECT_EQ(o.diagnostic, "cast nosuch: {error,{undef,nosuch}}");
  o = h.handle(etf::encode(Term::tuple({atom("cast"), t("{hosttest, nosuch}"), t("[]")})), reply);
  EXPECT_EQ(o.kind, Kind::no_reply);
  EXPECT_EQ(o.diagnostic, "cast {hosttest,nosuch}: {error,{undef,{hosttest,nosuch}}}");
  o = h.handle(etf::encode(Term::tuple({atom("cast"), t("{hosttest, note}"), t("[<<\"three\">>]")})), reply);
  EXPECT_EQ(o.kind, Kind::no_reply) << describe(o);
  EXPECT_TRUE(o.diagnostic.empty()) << o.diagnostic;
  expect_reply(h, call("notes", t("[]")), ok(t("[<<\"one\">>, <<\"two\">>, <<\"three\">>]")));
  o = h.handle(etf::encode(cast("overflow", t("[0]"))), reply);
  EXPECT_EQ(o.kind, Kind::no_reply);
  EXPECT_TRUE(contains(o.diagnostic, "cast overflow: {error,{ocaml_exception,<<\"Stack_overflow\">>"))
      << o.diagnostic.substr(0, 300);
  EXPECT_EQ(reply.size(), 0u);
  expect_alive(h);
}

TEST(Requests, ReplyIsAppendedToWhatTheBufferHolds) {
  EtfHost h(*runtime);
  etf::ByteBuffer reply;
  reply.push(0xAB);  // e.g. a transport's header
  const host::Outcome o = h.handle(etf::encode(call("fib", t("[10]"))), reply);
  ASSERT_EQ(o.kind, Kind::replied);
  const std::vector<std::uint8_t> expected = etf::encode(ok(t("55")));
  ASSERT_EQ(reply.size(), 1 + expected.size());
  EXPECT_EQ(o.reply_size, expected.size());
  EXPECT_EQ(reply.data()[0], 0xAB);
  EXPECT_EQ(std::vector<std::uint8_t>(reply.data() + 1, reply.data() + reply.size()), expected);
}

// ---------------------------------------------------------------------------------------
// Sources, answers and contexts: the seams the transports use

// A request that is no ETF: built straight into OCaml by the source, as a NIF reads its
// terms, and its answer walked into a sink that is no ETF writer either.
class BuiltRequest final : public host::RequestSource {
 public:
  conv::UnrootedDecode to_ocaml() override {
    builder_.begin_tuple(4);
    builder_.atom("call");
    builder_.atom("built_ref");
    builder_.atom("fib");
    builder_.begin_list(1);
    builder_.integer(10);
    builder_.nil();  // the tail
    builder_.end_list();
    builder_.end_tuple();
    conv::UnrootedDecode built;
    built.term = builder_.take();
    return built;
  }
  std::optional<host::RequestHead> head() const noexcept override { return host::RequestHead{"call", 4}; }

 private:
  conv::OcamlBuilder builder_;
};

TEST(Sources, ARequestNeedNotBeEtf) {
  host::Host h(*runtime);
  BuiltRequest request;
  const host::Answer answer = h.run(request);
  ASSERT_EQ(answer.kind(), host::Answer::Kind::reply);
  // The answer is rooted: it survives a collection before the transport writes it.
  caml_minor_collection();
  etf::TermBuilder ref_sink;
  conv::walk_ocaml(answer.ref(), ref_sink);
  EXPECT_EQ(ref_sink.take(), atom("built_ref"));
  etf::TermBuilder answer_sink;
  conv::walk_ocaml(answer.term(), answer_sink);
  const Term answered = answer_sink.take();
  EXPECT_EQ(answered, t("{ok, 55}")) << answered.to_string();
  EXPECT_EQ(h.ref_index(request), std::optional<std::size_t>{1});
}

TEST(Sources, RequestsRunInTheirTransportsContext) {
  host::Host h(*runtime);
  const value* named = caml_named_value("hosttest.context");
  ASSERT_NE(named, nullptr);
  const conv::Root context(*named);
  const std::vector<std::uint8_t> frame = etf::encode(call("ask_erlang", t("[]")));
  etf::ByteBuffer reply;
  host::Outcome o = host::handle_etf(h, frame, reply, {}, &context);
  ASSERT_TRUE(o.replied()) << describe(o);
  EXPECT_EQ(etf::decode_term(reply.span()), ok(t("{answered_by, test_transport, erlang, node}")));

  // Without one, the host's standalone context: Erl.call_erlang has no Erlang to call.
  reply.clear();
  o = host::handle_etf(h, frame, reply);
  ASSERT_TRUE(o.replied()) << describe(o);
  const auto exn = ocaml_exception(etf::decode_term(reply.span()));
  ASSERT_EQ(exn.size(), 3u);
  EXPECT_EQ(exn[0], "Erl.No_transport");
}

TEST(Sources, TheHostFindsTheRefOfARequestItCannotRun) {
  host::Host h(*runtime);
  const Term the_ref = t("#Ref<'test@host'.1.2.3.4>");
  const auto ref_of = [&](const std::vector<std::uint8_t>& frame) {
    const std::optional<std::span<const std::uint8_t>> ref = host::request_ref(h, host::EtfRequest(frame));
    return ref ? std::optional<std::vector<std::uint8_t>>(std::vector<std::uint8_t>(ref->begin(), ref->end()))
               : std::nullopt;
  };
  std::vector<std::uint8_t> ref_bytes = etf::encode(the_ref);
  ref_bytes.erase(ref_bytes.begin());  // no version byte: the Ref as it sits in a tuple

  // {call, Ref, fib, <broken>}: the Ref is found before the broken part.
  std::vector<std::uint8_t> broken = etf::encode(Term::tuple({atom("call"), the_ref, atom("fib"), t("[1]")}));
  broken.back() = 255;
  broken.push_back(255);
  host::EtfRequest broken_request(broken);
  EXPECT_EQ(h.run(broken_request).error()->code, host::Errc::bad_etf);
  EXPECT_EQ(ref_of(broken), ref_bytes);
  EXPECT_EQ(ref_of(etf::encode(Term::tuple({atom("load"), the_ref, t("<<\"p\">>"), t("10")}))), ref_bytes);

  // Shapes without a Ref: a cast, a call of the wrong size, no tuple, no atom first.
  EXPECT_EQ(ref_of(etf::encode(t("{cast, fib, [1]}"))), std::nullopt);
  EXPECT_EQ(ref_of(etf::encode(Term::tuple({atom("call"), the_ref, atom("fib")}))), std::nullopt);
  EXPECT_EQ(ref_of(etf::encode(t("[call, 1]"))), std::nullopt);
  EXPECT_EQ(ref_of(etf::encode(t("{1, 2, 3, 4}"))), std::nullopt);
  EXPECT_EQ(ref_of({131, 104}), std::nullopt);

  // A transport's own request: once the host knows its shape.
  const std::vector<std::uint8_t> hello = etf::encode(Term::tuple({atom("hello"), the_ref, t("#{}")}));
  EXPECT_EQ(ref_of(hello), std::nullopt);
  h.add_request_with_ref("hello", 3);
  EXPECT_EQ(ref_of(hello), ref_bytes);
}

// ---------------------------------------------------------------------------------------
// Plugins

TEST(Plugins, LoadByRequest) {
  EtfHost h(*runtime);
  const std::string path = plugin("extra");
  expect_reply(h, call("extra.hello", t("[<<\"you\">>]")), error(t("{undef, 'extra.hello'}")));
  // The path as a string (a list of character codes), as Erlang code usually has it. The
  // answer reports the plugin's exports, in the module named after its file, for the pool.
  const Reply loaded = run(h, load(Term::string(path)));
  ASSERT_EQ(loaded.outcome.kind, Kind::replied) << describe(loaded.outcome);
  EXPECT_TRUE(contains(loaded.term.to_string(), "{ok,#{"));
  EXPECT_TRUE(contains(loaded.term.to_string(),
                       "{<<\"extra\">>,<<\"extra.hello\">>,1,<<\"fun((binary()) -> binary())\">>}"))
      << shorten(loaded.term.to_string());
  expect_reply(h, call("extra.hello", t("[<<\"you\">>]")), ok(binary("hello, you")));
  expect_reply(h, Term::tuple({atom("call"), ref(), t("{extra, 'extra.hello'}"), t("[<<\"you\">>]")}),
               ok(binary("hello, you")));
  expect_reply(h, Term::tuple({atom("call"), ref(), t("{hosttest, 'extra.hello'}"), t("[<<\"you\">>]")}),
               error(t("{undef, {hosttest, 'extra.hello'}}")));
  // Loaded twice.
  const Reply r = run(h, load(binary(path)));
  ASSERT_EQ(r.outcome.kind, Kind::replied);
  const auto [kind, message] = load_failed(r.term);
  EXPECT_EQ(kind, "already_loaded") << r.term.to_string();
  EXPECT_TRUE(contains(message, "Extra")) << message;
  expect_reply(h, call("extra.hello", t("[<<\"again\">>]")), ok(binary("hello, again")));
}

TEST(Plugins, LoadErrorsAreTypedAndTheWorkerGoesOn) {
  EtfHost h(*runtime);
  struct Case {
    std::string path;
    host::Errc code;
    std::string kind;
    std::string says;
  };
  const std::string dir = CAMLBEAM_TEST_PLUGINS;
  const std::vector<Case> cases = {
      {dir + "/nosuch.cmxs", host::Errc::enoent, "enoent", "no such file"},
      {plugin("hosttest", false), host::Errc::not_a_plugin, "not_a_plugin",
       native ? "a native host loads .cmxs files" : "a bytecode host loads .cma and .cmo files"},
      {plugin("not_a_plugin"), host::Errc::not_a_plugin, "not_a_plugin", "not_a_plugin"},
      {plugin("stale"), host::Errc::incompatible, "incompatible", "Erl"},
      {plugin("init_fails"), host::Errc::init_failed, "init_failed", "init_fails: refusing to start"},
      {plugin("hosttest"), host::Errc::already_loaded, "already_loaded", "Hosttest"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.path);
    // Through the C++ API ...
    const std::optional<host::Error> e = h.load(c.path);
    ASSERT_TRUE(e);
    EXPECT_EQ(e->code, c.code) << host::to_string(e->code) << ": " << e->message;
    EXPECT_TRUE(contains(e->message, c.says)) << e->message;
    expect_alive(h);
    // ... and through a request frame. A plugin whose initialisation failed counts as
    // loaded: the second attempt says so.
    const Reply r = run(h, load(binary(c.path)));
    ASSERT_EQ(r.outcome.kind, Kind::replied);
    const auto [kind, message] = load_failed(r.term);
    EXPECT_EQ(kind, c.code == host::Errc::init_failed ? "already_loaded" : c.kind) << r.term.to_string();
    expect_alive(h);
  }
  // What init_fails exported before it raised stays exported.
  expect_reply(h, call("init_fails.before", t("[]")), ok(t("1")));
}

#ifdef CAMLBEAM_OTHER_OCAML_VERSION
// A plugin compiled by Debian's OCaml, loaded by a host built for another (5.3): refused as
// incompatible before Dynlink opens it, with both versions named.
TEST(Plugins, APluginOfAnotherOcamlIsRefusedNamingBothVersions) {
  EtfHost h(*runtime);
  const std::string path = plugin("other_ocaml");
  const std::optional<host::Error> e = h.load(path);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code, host::Errc::incompatible) << e->message;
  const std::string other(CAMLBEAM_OTHER_OCAML_VERSION);
  EXPECT_TRUE(contains(e->message, "compiled by OCaml " + other.substr(0, other.rfind('.')))) << e->message;
  EXPECT_TRUE(contains(e->message, "runs OCaml " OCAML_VERSION_STRING)) << e->message;
  const Reply r = run(h, load(binary(path)));
  ASSERT_EQ(r.outcome.kind, Kind::replied);
  EXPECT_EQ(load_failed(r.term).first, "incompatible") << r.term.to_string();
  expect_alive(h);
}
#endif

// ---------------------------------------------------------------------------------------
// The request watch: deadlines, heartbeats, a request that cannot be stopped

Term call_within(std::string_view fn, Term args, Term timeout) {
  return Term::tuple({atom("call"), ref(), atom(fn), std::move(args), std::move(timeout)});
}

// What the watch's hooks saw, from its thread.
struct Watched {
  std::mutex mutex;
  std::vector<std::pair<std::chrono::milliseconds, bool>> running;  // (running time, heartbeat)
  std::vector<std::pair<std::chrono::steady_clock::time_point, std::chrono::milliseconds>> overdue;

  host::RequestWatchHooks hooks() {
    return {[this](std::chrono::milliseconds ran, bool heartbeat) {
              const std::lock_guard lock(mutex);
              running.emplace_back(ran, heartbeat);
              return true;
            },
            [this](std::chrono::milliseconds, std::chrono::milliseconds timeout) {
              const std::lock_guard lock(mutex);
              overdue.emplace_back(std::chrono::steady_clock::now(), timeout);
            }};
  }
  std::size_t heartbeats() {
    const std::lock_guard lock(mutex);
    return static_cast<std::size_t>(std::count_if(running.begin(), running.end(), [](auto& r) { return r.second; }));
  }
};

using namespace std::chrono_literals;
constexpr host::RequestWatchOptions quick_watch{.tick = 20ms, .heartbeat = 100ms, .cancel_grace = 200ms, .idle_after = 100ms};

// A Host whose requests a watch with quick_watch's times watches.
class Watch : public testing::Test {
 protected:
  void SetUp() override { watch.start(); }
  Watched seen;
  host::RequestWatch watch{*runtime, quick_watch, seen.hooks()};
  EtfHost h{*runtime, {}, &watch};
};

TEST_F(Watch, ADeadlineInterruptsAnExportThatPolls) {
  const auto start = std::chrono::steady_clock::now();
  expect_reply(h, call_within("spin_alloc", t("[5000]"), t("100")), error(atom("timeout")));
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_GE(took, 100ms);
  EXPECT_LT(took, 1000ms);
  EXPECT_TRUE(seen.overdue.empty());
  // The same export with a later deadline, with none, with infinity: not interrupted.
  expect_reply(h, call_within("spin_alloc", t("[50]"), t("2000")), ok(t("50")));
  expect_reply(h, call("spin_alloc", t("[150]")), ok(t("150")));
  expect_reply(h, call_within("spin_alloc", t("[150]"), atom("infinity")), ok(t("150")));
  expect_alive(h);
}

TEST_F(Watch, HeartbeatsOnlyWhileARequestRunsLong) {
  for (int i = 0; i < 20; ++i) expect_reply(h, call("spin_alloc", t("[5]")), ok(t("5")));
  EXPECT_EQ(seen.heartbeats(), 0u);
  {
    const std::lock_guard lock(seen.mutex);
    seen.running.clear();  // a short call that a busy machine stretched past a tick
  }
  const auto start = std::chrono::steady_clock::now();
  expect_reply(h, call("spin_alloc", t("[450]")), ok(t("450")));
  const auto ran = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
  // One per 100 ms of its running time: at least 4 (450 ms of CPU time take at least as
  // long on the clock), and no more than its time on the clock allows (more on a busy
  // machine).
  EXPECT_GE(seen.heartbeats(), 4u);
  EXPECT_LE(seen.heartbeats(), static_cast<std::size_t>(ran / 100ms));
  const std::lock_guard lock(seen.mutex);
  for (std::size_t i = 1; i < seen.running.size(); ++i) EXPECT_GE(seen.running[i].first, seen.running[i - 1].first);
}

// A deadline that passes while the request catches Erl.Cancelled and ends at once: the
// signals the watch keeps sending until it sees the end must not reach the next request,
// which runs to its end.
TEST_F(Watch, ALateCancelSignalNeverStopsTheNextRequest) {
  for (int i = 0; i < 20; ++i) {
    expect_reply(h, call_within("survive_cancel", t("[2000]"), t("10")), ok(atom("survived")));
    expect_reply(h, call_within("spin_alloc", t("[30]"), t("1000")), ok(t("30")));
  }
}

// OCaml 4.13.1 polls at loop back edges, also in native code: a loop that allocates
// nothing is stopped as well.
TEST_F(Watch, ALoopThatAllocatesNothingIsInterruptedToo) {
  const auto start = std::chrono::steady_clock::now();
  expect_reply(h, call_within("spin", t("[5000]"), t("100")), error(atom("timeout")));
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1000ms);
}

TEST_F(Watch, ARequestThatWillNotStopIsReportedOverdueOnce) {
  const auto start = std::chrono::steady_clock::now();
  const Reply r = run(h, call_within("stubborn", t("[700]"), t("100")));
  {
    const std::lock_guard lock(seen.mutex);
    ASSERT_EQ(seen.overdue.size(), 1u);
    EXPECT_EQ(seen.overdue[0].second, 100ms);
    const auto at = seen.overdue[0].first - start;
    EXPECT_GE(at, 300ms);  // deadline + grace
    EXPECT_LT(at, 650ms);
  }
  // It returned by itself at last; the watch's last signals may still have raised
  // Erl.Cancelled after the export, in dispatch (answered) or in Erl_host (refused as
  // cancelled, for the transport to answer through the Ref).
  if (r.outcome.replied()) {
    EXPECT_TRUE(r.term == ok(t("700")) || r.term == error(atom("timeout"))) << r.term.to_string();
  } else {
    ASSERT_TRUE(r.outcome.error);
    EXPECT_EQ(r.outcome.error->code, host::Errc::cancelled) << describe(r.outcome);
  }
  expect_alive(h);
}

// The answer of Host::call as terms: {Ref, Answer}.
Term called(host::Host& host, const conv::Root& export_, const Term& args,
            std::optional<std::chrono::milliseconds> timeout = std::nullopt) {
  const std::vector<std::uint8_t> frame = etf::encode(args);
  host::EtfRequest source(frame);
  const host::Answer answer = host.call(export_, source, timeout);
  if (answer.kind() != host::Answer::Kind::reply) return atom("not_a_reply");
  etf::TermBuilder ref_sink, answer_sink;
  conv::walk_ocaml(answer.ref(), ref_sink);
  conv::walk_ocaml(answer.term(), answer_sink);
  return Term::tuple({ref_sink.take(), answer_sink.take()});
}

TEST(Exports, AnExportFoundOnceIsCalledWithItsArgumentsAlone) {
  host::Host h(*runtime);
  const std::optional<conv::Root> fib = h.find_export("hosttest", "fib");
  ASSERT_TRUE(fib.has_value());
  EXPECT_FALSE(h.find_export("hosttest", "no_such_export").has_value());
  EXPECT_FALSE(h.find_export("no_such_module", "fib").has_value());
  // Its answer is the one the request by names gets, with Ref 0.
  EXPECT_EQ(called(h, *fib, t("[20]")), t("{0, {ok, 6765}}"));
  caml_minor_collection();  // rooted: found once, called after collections
  EXPECT_EQ(called(h, *fib, t("[30]"), std::chrono::milliseconds(5000)), t("{0, {ok, 832040}}"));
  // Arguments that do not fit: the same errors as by names.
  EtfHost by_names(*runtime);
  for (const char* args : {"[<<\"x\">>]", "[1, 2]"}) {
    const Term direct = called(h, *fib, t(args));
    const Term named = run(by_names, call("fib", t(args))).term;
    ASSERT_EQ(direct.tuple_elements().size(), 2u) << direct.to_string();
    ASSERT_EQ(named.tuple_elements().size(), 2u) << named.to_string();
    EXPECT_EQ(direct.tuple_elements()[1], named.tuple_elements()[1]) << args;
  }
  // Arguments that are no proper list: bad_request, as a request by names gets.
  for (const char* args : {"{20}", "[20 | 21]"}) {
    const Term direct = called(h, *fib, t(args));
    ASSERT_EQ(direct.tuple_elements().size(), 2u) << direct.to_string();
    const Term answer = direct.tuple_elements()[1];
    ASSERT_EQ(answer.tuple_elements().size(), 2u) << answer.to_string();
    EXPECT_EQ(answer.tuple_elements()[0], atom("error"));
    ASSERT_EQ(answer.tuple_elements()[1].tuple_elements().size(), 2u) << answer.to_string();
    EXPECT_EQ(answer.tuple_elements()[1].tuple_elements()[0], atom("bad_request")) << answer.to_string();
  }
}

TEST_F(Watch, ACallOfAFoundExportEndsAtItsDeadline) {
  const std::optional<conv::Root> spin = h.find_export("hosttest", "spin_alloc");
  ASSERT_TRUE(spin.has_value());
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(called(h, *spin, t("[5000]"), 100ms), t("{0, {error, timeout}}"));
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1000ms);
  EXPECT_EQ(called(h, *spin, t("[50]"), 2000ms), t("{0, {ok, 50}}"));
  EXPECT_EQ(called(h, *spin, t("[150]")), t("{0, {ok, 150}}"));
  expect_alive(h);
}

// A transport starts the watch's thread after its first answer; a request with a deadline
// that comes before starts it.
TEST(WatchStart, TheFirstDeadlineStartsTheThread) {
  host::RequestWatch watch(*runtime, quick_watch, {});
  EtfHost h(*runtime, {}, &watch);
  expect_reply(h, call_within("spin_alloc", t("[5000]"), t("50")), error(atom("timeout")));
}

// A signal's OCaml handler is global: a second watch of the same signal is refused, and the
// first one keeps working.
TEST_F(Watch, OnePerSignal) {
  EXPECT_THROW(host::RequestWatch second(*runtime, quick_watch, {}), host::RuntimeError);
  expect_reply(h, call_within("spin_alloc", t("[5000]"), t("50")), error(atom("timeout")));
}

// ---------------------------------------------------------------------------------------
// Threads

TEST(Threads, AnotherThreadIsRefused) {
  EtfHost h(*runtime);
  host::Outcome o;
  etf::ByteBuffer reply;
  const std::vector<std::uint8_t> frame = etf::encode(call("fib", t("[10]")));
  std::optional<host::Error> load_error;
  std::thread other([&] {
    o = h.handle(frame, reply);
    load_error = h.load(plugin("extra"));
  });
  other.join();
  ASSERT_EQ(o.kind, Kind::refused);
  EXPECT_EQ(o.error->code, host::Errc::wrong_thread);
  ASSERT_TRUE(load_error);
  EXPECT_EQ(load_error->code, host::Errc::wrong_thread);
  EXPECT_EQ(reply.size(), 0u);
  expect_alive(h);
}

TEST(Threads, BlockingSectionReleasesTheRuntime) {
  EtfHost h(*runtime);
  etf::ByteBuffer reply;
  {
    host::BlockingSection released(*runtime);
    EXPECT_FALSE(runtime->held_by_this_thread());
    const host::Outcome o = h.handle(etf::encode(call("fib", t("[10]"))), reply);
    ASSERT_EQ(o.kind, Kind::refused);
    EXPECT_EQ(o.error->code, host::Errc::runtime_released);
    EXPECT_THROW(host::BlockingSection nested(*runtime), host::RuntimeError);
  }
  EXPECT_TRUE(runtime->held_by_this_thread());
  EXPECT_EQ(reply.size(), 0u);
  expect_alive(h);
}

}  // namespace

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  // With an unlimited stack, unbounded recursion would eat all memory before overflowing.
  // The soft limit of the main thread's stack is read when the stack grows, so lowering it
  // now is enough.
  rlimit stack{};
  if (getrlimit(RLIMIT_STACK, &stack) == 0 && (stack.rlim_cur == RLIM_INFINITY || stack.rlim_cur > (rlim_t{64} << 20))) {
    stack.rlim_cur = rlim_t{8} << 20;
    setrlimit(RLIMIT_STACK, &stack);
  }
  host::Runtime started(argc, argv);
  runtime = &started;
  {
    EtfHost h(started);
    if (const std::optional<host::Error> e = h.load(plugin("hosttest"))) {
      std::fprintf(stderr, "cannot load the test plugin: %s: %s\n", std::string(host::to_string(e->code)).c_str(),
                   e->message.c_str());
      return 1;
    }
  }
  return RUN_ALL_TESTS();
}
