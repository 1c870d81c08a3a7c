#include <camlbeam/host/host.hpp>

#include "bounded_writer.hpp"
#include "ocaml_util.hpp"

#include <camlbeam/conv/conv.hpp>

#include <caml/alloc.h>
#include <caml/callback.h>
// minor_gc.h, unlike the runtime's other headers, has no extern "C" of its own.
extern "C" {
#include <caml/minor_gc.h>
}
#include <caml/mlvalues.h>

#include <malloc.h>

#include <algorithm>
#include <array>
#include <string>
#include <utility>

namespace camlbeam::host {

// The OCaml closures of the request path, registered by ocaml/host/erl_host.ml. The named
// value table keeps them alive and in place for the life of the runtime.
struct Host::Callbacks {
  const value* handle;   // Erl.Term.t -> Erl_host.answer
  const value* load;     // string -> (unit, Erl_host.load_error * string) result
  const value* compact;  // Gc.compact
};

namespace {

// The layout of Erl_host.answer (erl_host.mli): No_reply is the immediate 0; the others
// are blocks with these tags.
namespace answer_tag {
constexpr tag_t reply = 0;        // Reply (ref, answer): two Erl.Term.t
constexpr tag_t cast_failed = 1;  // Cast_failed of string
constexpr tag_t refused = 2;      // Refused of string
}  // namespace answer_tag

// Erl_host.load_error's constant constructors, in their order.
constexpr std::array<Errc, 5> load_errors = {Errc::enoent, Errc::not_a_plugin, Errc::incompatible,
                                             Errc::already_loaded, Errc::init_failed};

Outcome refused(Error error) {
  Outcome outcome;
  outcome.kind = Outcome::Kind::refused;
  outcome.error = std::move(error);
  return outcome;
}

Outcome replied(std::size_t size, std::string diagnostic = {}) {
  Outcome outcome;
  outcome.kind = Outcome::Kind::replied;
  outcome.reply_size = size;
  outcome.diagnostic = std::move(diagnostic);
  return outcome;
}

Outcome no_reply(std::string diagnostic = {}) {
  Outcome outcome;
  outcome.kind = Outcome::Kind::no_reply;
  outcome.diagnostic = std::move(diagnostic);
  return outcome;
}

// An exception from the request path's own OCaml code (`where`): Erl.Cancelled when the
// watch stopped the request, anything else an asynchronous exception that met it.
Error handler_failed(const char* where, value exn) {
  const Errc code = detail::is_registered_exception(exn, "camlbeam.cancelled") ? Errc::cancelled : Errc::handler_failed;
  return {code, std::string(where) + " raised " + detail::exception_text(exn), {}};
}

// The major heap's size in words.
std::size_t major_heap_words() noexcept { return static_cast<std::size_t>(Caml_state->stat_heap_wsz); }

// give_back_memory's threshold after a heap of `words`.
std::size_t compact_above(std::size_t words) noexcept {
  constexpr std::size_t floor_words = (std::size_t{64} << 20) / sizeof(value);
  return std::max(floor_words, 2 * words);
}

// The start of a reply frame up to its answer: `131 {Ref, ` or `131 {reply, Ref} 131 `.
void begin_reply(detail::BoundedWriter& writer, value ref, ReplyLayout layout) {
  writer.version();
  writer.begin_tuple(2);
  if (layout == ReplyLayout::envelope) {
    writer.atom("reply");
    conv::walk_ocaml(ref, writer);
    writer.end_tuple();
    writer.version();
  } else {
    conv::walk_ocaml(ref, writer);
  }
}

void end_reply(detail::BoundedWriter& writer, ReplyLayout layout) {
  if (layout == ReplyLayout::tuple) writer.end_tuple();
}

// Appends the reply {error, Reason} to Ref, Reason written by write_reason. The answer it replaces
// could not be sent; if this one cannot either (because of the Ref: the rest is small),
// nothing is appended and the error says why.
template <class WriteReason>
std::optional<Error> write_error_reply(value ref, etf::ByteBuffer& out, const HostOptions& options,
                                       WriteReason write_reason) {
  const std::size_t start = out.size();
  try {
    detail::BoundedWriter writer(out, options.max_reply_size, options.minor_version);
    begin_reply(writer, ref, options.reply_layout);
    writer.begin_tuple(2);
    writer.atom("error");
    write_reason(writer);
    writer.end_tuple();
    end_reply(writer, options.reply_layout);
    if (!writer.over()) return std::nullopt;
    const std::size_t size = writer.size();
    out.truncate(start);
    return Error{Errc::reply_too_large,
                 "even an error reply takes " + std::to_string(size) + " bytes, over max_reply_size " +
                     std::to_string(options.max_reply_size) + ": the request's Ref is too large",
                 {}};
  } catch (const etf::EncodeError& e) {
    out.truncate(start);
    return Error{Errc::bad_reply, std::string("the request's Ref cannot be encoded: ") + e.what(), {}};
  }
}

// Appends the reply frame of a Reply block (ref, answer), or, when the answer cannot be
// sent, one whose answer is {error, {reply_too_large, Size, Limit}} or
// {error, {bad_reply, Message}}.
// Walking reads OCaml values and allocates none, so `reply` stays valid throughout.
Outcome write_reply(value reply, etf::ByteBuffer& out, const HostOptions& options) {
  const std::size_t start = out.size();
  const value ref = Field(reply, 0);
  std::size_t size = 0;
  std::string encode_error;
  try {
    detail::BoundedWriter writer(out, options.max_reply_size, options.minor_version);
    begin_reply(writer, ref, options.reply_layout);
    conv::walk_ocaml(Field(reply, 1), writer);
    end_reply(writer, options.reply_layout);
    if (!writer.over()) return replied(out.size() - start);
    size = writer.size();
  } catch (const etf::EncodeError& e) {
    // An export_raw built a term Erlang cannot have (NaN, a 300-character atom ...).
    encode_error = e.what();
  }
  out.truncate(start);

  std::optional<Error> failed;
  std::string diagnostic;
  if (encode_error.empty()) {
    diagnostic = "an answer of " + std::to_string(size) + " bytes exceeds max_reply_size " +
                 std::to_string(options.max_reply_size);
    failed = write_error_reply(ref, out, options, [&](detail::BoundedWriter& w) {
      w.begin_tuple(3);
      w.atom("reply_too_large");
      w.integer(static_cast<std::int64_t>(size));
      w.integer(static_cast<std::int64_t>(options.max_reply_size));
      w.end_tuple();
    });
  } else {
    diagnostic = "the answer cannot be encoded: " + encode_error;
    failed = write_error_reply(ref, out, options, [&](detail::BoundedWriter& w) {
      w.begin_tuple(2);
      w.atom("bad_reply");
      w.binary({reinterpret_cast<const std::uint8_t*>(diagnostic.data()), diagnostic.size()});
      w.end_tuple();
    });
  }
  if (failed) return refused(std::move(*failed));
  return replied(out.size() - start, std::move(diagnostic));
}

}  // namespace

Host::Host(const Runtime& runtime, HostOptions options, RequestWatch* watch)
    : runtime_(runtime), options_(std::move(options)), watch_(watch), compact_above_words_(0) {
  if (!runtime_.held_by_this_thread()) throw RuntimeError("camlbeam::host::Host: create it on the runtime thread");
  const value* handle = caml_named_value("camlbeam.host.handle");
  const value* load = caml_named_value("camlbeam.host.load");
  const value* compact = caml_named_value("camlbeam.host.compact");
  if (handle == nullptr || load == nullptr || compact == nullptr) {
    throw RuntimeError(
        "the OCaml request handler is missing: link the executable's OCaml object with the library "
        "camlbeam.host (-linkall), e.g. through the CMake target camlbeam::ocaml_native");
  }
  callbacks_ = std::make_unique<const Callbacks>(Callbacks{handle, load, compact});
  compact_above_words_ = compact_above(major_heap_words());
}

Host::~Host() = default;

std::optional<Error> Host::check_thread() const {
  if (runtime_.held_by_this_thread()) return std::nullopt;
  if (runtime_.is_runtime_thread()) {
    return Error{Errc::runtime_released, "called inside a BlockingSection, which released the OCaml runtime", {}};
  }
  return Error{Errc::wrong_thread, "called from a thread that does not hold the OCaml runtime", {}};
}

Outcome Host::handle(std::span<const std::uint8_t> request, etf::ByteBuffer& reply) {
  if (std::optional<Error> misuse = check_thread()) return refused(std::move(*misuse));

  const RequestWatch::Running running(watch_);
  const conv::UnrootedDecode decoded = conv::etf_to_ocaml_unrooted(request, options_.decode);
  if (decoded.raised) return refused(handler_failed("the decoding of the request", *decoded.raised));
  if (decoded.error) {
    return refused({Errc::bad_etf, "the request is not valid ETF: " + decoded.error->message(), decoded.error});
  }
  // Straight into OCaml, which roots its argument (the request needs no Root, and is
  // garbage once the handler is done with it). caml_callback_exn: an exception comes back
  // as a value, never unwinds through C++.
  const value result = caml_callback_exn(*callbacks_->handle, decoded.term);
  if (Is_exception_result(result)) return refused(handler_failed("camlbeam.host.handle", Extract_exception(result)));
  if (Is_long(result)) return no_reply();  // No_reply

  // From here on nothing allocates on the OCaml heap, so `result` needs no root.
  switch (conv::tag_of(result)) {
    case answer_tag::reply: return write_reply(result, reply, options_);
    case answer_tag::cast_failed: return no_reply(std::string(conv::detail::string_view_of(Field(result, 0))));
    case answer_tag::refused:
      return refused({Errc::bad_request, std::string(conv::detail::string_view_of(Field(result, 0))), {}});
    default:
      return refused({Errc::handler_failed, "camlbeam.host.handle answered an unknown constructor", {}});
  }
}

void collect_between_requests() noexcept {
  // Nothing a request made is alive between requests, so a collection now only pays for
  // the roots. Past 1/warm_fraction of the minor heap (256 KB with the worker's 8 MB one)
  // it is worth it: the next requests allocate again where the last ones did, in memory
  // still in L2, instead of walking on through the rest of the minor heap (binary_1k's
  // round trip 40.7 -> 37.2 ns; at 1/4, the former rule, 1/128 and 1/512 it was slower).
  // extra_heap_resources_minor is the memory that young custom blocks hold off the heap
  // (large binaries) as a fraction of what makes the runtime ask for a minor collection
  // itself, the minor heap's size under the worker's GC policy: the same fraction frees it
  // while it is still in cache, and the next request's binary gets the same memory.
  constexpr std::size_t warm_fraction = 32;
  const auto used_words = static_cast<std::size_t>(Caml_state->young_alloc_end - Caml_state->young_ptr);
  if (used_words * warm_fraction > Caml_state->minor_heap_wsz ||
      Caml_state->extra_heap_resources_minor * warm_fraction > 1.0)
    caml_minor_collection();
}

void Host::between_requests() noexcept {
  if (runtime_.held_by_this_thread()) collect_between_requests();
}

bool Host::major_heap_grown() const noexcept { return major_heap_words() > compact_above_words_; }

bool Host::give_back_memory_now(bool freed_c_memory) noexcept {
  if (!runtime_.held_by_this_thread()) return false;
  const bool compact = major_heap_grown();
  if (compact) {
    // Gc.compact runs finalisers, which may raise; nothing can be done about that here.
    const value result = caml_callback_exn(*callbacks_->compact, Val_unit);
    (void)result;
    compact_above_words_ = compact_above(major_heap_words());
  }
  // The heap's chunks are malloc's: compaction frees them, and trimming returns what
  // malloc keeps of them (and of the transport's buffers) to the system.
  if (compact || freed_c_memory) ::malloc_trim(0);
  return compact;
}

std::optional<Error> Host::load(std::string_view path) {
  if (std::optional<Error> misuse = check_thread()) return misuse;

  const conv::Root path_value(caml_alloc_initialized_string(path.size(), path.data()));
  const value result = caml_callback_exn(*callbacks_->load, path_value.get());
  if (Is_exception_result(result)) return handler_failed("camlbeam.host.load", Extract_exception(result));
  // Ok () is a block of tag 0; Error (kind, message) one of tag 1 holding the pair.
  if (conv::tag_of(result) == 0) return std::nullopt;
  const value pair = Field(result, 0);
  const auto kind = static_cast<std::size_t>(Long_val(Field(pair, 0)));
  std::string message(conv::detail::string_view_of(Field(pair, 1)));
  if (kind >= load_errors.size()) return Error{Errc::handler_failed, "unknown load error: " + message, {}};
  return Error{load_errors[kind], std::move(message), {}};
}

}  // namespace camlbeam::host
