#include <camlbeam/host/host.hpp>

#include "ocaml_util.hpp"

#include <camlbeam/conv/conv.hpp>

#include <caml/alloc.h>
#include <caml/callback.h>
// minor_gc.h, unlike the runtime's other headers, has no extern "C" of its own.
extern "C" {
#include <caml/minor_gc.h>
}
#include <caml/memory.h>
#include <caml/mlvalues.h>
#include <caml/version.h>

#include <malloc.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <string>
#include <utility>

// ocaml/src/context_stubs.c: the number of the calling thread's context slot (-1: none),
// given it when `assign` is non-zero.
extern "C" int camlbeam_context_thread_index(int assign);

#if OCAML_VERSION_MAJOR >= 5
// The size in bytes of a domain's major heap: exported by both runtimes of OCaml 5, declared
// in caml/shared_heap.h only under CAML_INTERNALS.
extern "C" uintnat caml_heap_size(struct caml_heap_state* heap);
#endif

namespace camlbeam::host {

// The OCaml closures of the request path, registered by ocaml/host/erl_host.ml. The named
// value table keeps them alive and in place for the life of the runtime.
struct Host::Callbacks {
  const value* handle;              // Erl.Term.t -> Erl_host.answer
  const value* standalone_context;  // Erl_host.standalone_context
  const value* context_slots;       // Erl's context array, one slot per thread that runs requests
  const value* load;     // string -> (unit, Erl_host.load_error * string) result
  const value* compact;  // Gc.compact
  const value* find_export;  // string -> string -> Erl.Private.export option
  const value* call_export;  // Erl.Private.export -> Erl.Term.t -> int -> Erl_host.answer
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

// An exception from the request path's own OCaml code (`where`): Erl.Cancelled when the
// watch stopped the request, anything else an asynchronous exception that met it.
Error handler_failed(const char* where, value exn) {
  const Errc code = detail::is_registered_exception(exn, "camlbeam.cancelled") ? Errc::cancelled : Errc::handler_failed;
  return {code, std::string(where) + " raised " + detail::exception_text(exn), {}};
}

// The major heap's size in words. OCaml 4 keeps it in Caml_state. OCaml 5 keeps a heap per
// domain: this is the one of the domain running requests, where they allocate (the heaps of
// a plugin's domains are not counted; Gc.compact compacts them all). Gc.quick_stat would
// add up all of them, but it walks the statistics of every possible domain (128): it
// doubled the instructions of a small request (bench/ocaml5).
std::size_t major_heap_words() noexcept {
#if OCAML_VERSION_MAJOR >= 5
  return Wsize_bsize(caml_heap_size(Caml_state->shared_heap));
#else
  return static_cast<std::size_t>(Caml_state->stat_heap_wsz);
#endif
}

// The end of the minor heap's allocation area (OCaml 5 renamed the field).
value* young_area_end() noexcept {
#if OCAML_VERSION_MAJOR >= 5
  return Caml_state->young_end;
#else
  return Caml_state->young_alloc_end;
#endif
}

// give_back_memory's threshold after a heap of `words`.
std::size_t compact_above(std::size_t words) noexcept {
  constexpr std::size_t floor_words = (std::size_t{64} << 20) / sizeof(value);
  return std::max(floor_words, 2 * words);
}

}  // namespace

Host::Host(const Runtime& runtime, RequestWatch* watch)
    : runtime_(runtime),
      watch_(watch),
      shapes_with_ref_{{"call", 4}, {"call", 5}, {"load", 3}, {"load", 4}},
      compact_above_words_(0) {
  if (!runtime_.held_by_this_thread()) throw RuntimeError("camlbeam::host::Host: create it on the runtime thread");
  const value* handle = caml_named_value("camlbeam.host.handle");
  const value* load = caml_named_value("camlbeam.host.load");
  const value* compact = caml_named_value("camlbeam.host.compact");
  const value* standalone_context = caml_named_value("camlbeam.host.standalone_context");
  const value* context_slots = caml_named_value("camlbeam.context_slots");
  const value* find_export = caml_named_value("camlbeam.host.find_export");
  const value* call_export = caml_named_value("camlbeam.host.call_export");
  if (handle == nullptr || load == nullptr || compact == nullptr || standalone_context == nullptr ||
      context_slots == nullptr || find_export == nullptr || call_export == nullptr) {
    throw RuntimeError(
        "the OCaml request handler is missing: link the executable's OCaml object with the library "
        "camlbeam.host (-linkall), e.g. through the CMake target camlbeam::ocaml_native");
  }
  callbacks_ = std::make_unique<const Callbacks>(
      Callbacks{handle, standalone_context, context_slots, load, compact, find_export, call_export});
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

// The transport's context is the thread's from before the request is converted (a signal
// handler may run in the conversion, in map_of_array) until its answer is made; the
// thread's previous one comes back however run() returns. The slot is set here, in C:
// calling OCaml to set it would poll, and run a pending signal handler before it is set.
class Host::ContextScope {
 public:
  ContextScope(const Callbacks& callbacks, value context) {
    const int index = camlbeam_context_thread_index(1);
    const value slots = *callbacks.context_slots;
    if (index < 0 || static_cast<std::size_t>(index) >= Wosize_val(slots)) {
      failed_ = Error{Errc::handler_failed,
                      "more than " + std::to_string(Wosize_val(slots)) + " threads have run requests in this process", {}};
      return;
    }
    slot_ = static_cast<std::size_t>(index);
    outer_ = conv::Root(Field(slots, slot_));
    slots_ = callbacks.context_slots;
    caml_modify(&Field(*slots_, slot_), context);
  }
  ~ContextScope() {
    if (slots_ != nullptr) caml_modify(&Field(*slots_, slot_), outer_.get());
  }
  ContextScope(const ContextScope&) = delete;
  ContextScope& operator=(const ContextScope&) = delete;

  std::optional<Error>& failed() noexcept { return failed_; }

 private:
  const value* slots_ = nullptr;  // the named value: the array never moves under it
  std::size_t slot_ = 0;
  conv::Root outer_;
  std::optional<Error> failed_;
};

Answer Host::run(RequestSource& request, const conv::Root* context) {
  return run_converted(request, context, [&](value term) { return caml_callback_exn(*callbacks_->handle, term); });
}

Answer Host::call(const conv::Root& export_, RequestSource& args, std::optional<std::chrono::milliseconds> timeout,
                  const conv::Root* context) {
  const value deadline = Val_long(timeout ? std::clamp<std::int64_t>(timeout->count(), 0, Max_long) : -1);
  return run_converted(args, context, [&](value term) {
    return caml_callback3_exn(*callbacks_->call_export, export_.get(), term, deadline);
  });
}

template <class Handler>
Answer Host::run_converted(RequestSource& request, const conv::Root* context, Handler&& handler) {
  if (std::optional<Error> misuse = check_thread()) return Answer::refused(std::move(*misuse));

  const RequestWatch::Running running(watch_);
  ContextScope in_context(*callbacks_, context != nullptr ? context->get() : *callbacks_->standalone_context);
  if (in_context.failed()) return Answer::refused(std::move(*in_context.failed()));
  const conv::UnrootedDecode decoded = request.to_ocaml();
  if (decoded.raised) return Answer::refused(handler_failed("the decoding of the request", *decoded.raised));
  if (decoded.error) {
    return Answer::refused(
        {Errc::bad_etf, "the request is not valid ETF: " + decoded.error->message(), decoded.error});
  }
  // Straight into OCaml, which roots its argument (the request needs no Root, and is
  // garbage once the handler is done with it). A *_exn callback: an exception comes back
  // as a value, never unwinds through C++.
  const value result = handler(decoded.term);
  if (Is_exception_result(result)) {
    return Answer::refused(handler_failed("camlbeam.host.handle", Extract_exception(result)));
  }
  if (Is_long(result)) return Answer::no_reply();  // No_reply

  // Nothing allocates on the OCaml heap before `result` is rooted or read (leaving the
  // context, after the Answer is made, allocates nothing either).
  switch (conv::tag_of(result)) {
    case answer_tag::reply: return Answer::reply(result);
    case answer_tag::cast_failed: return Answer::no_reply(std::string(conv::detail::string_view_of(Field(result, 0))));
    case answer_tag::refused:
      return Answer::refused({Errc::bad_request, std::string(conv::detail::string_view_of(Field(result, 0))), {}});
    default:
      return Answer::refused({Errc::handler_failed, "camlbeam.host.handle answered an unknown constructor", {}});
  }
}

std::optional<conv::Root> Host::find_export(std::string_view module, std::string_view function) {
  if (check_thread()) return std::nullopt;
  const conv::Root module_name(caml_alloc_initialized_string(module.size(), module.data()));
  const value function_name = caml_alloc_initialized_string(function.size(), function.data());
  const value found = caml_callback2_exn(*callbacks_->find_export, module_name.get(), function_name);
  if (Is_exception_result(found) || Is_long(found)) return std::nullopt;  // an exception, or None
  return conv::Root(Field(found, 0));
}

std::optional<std::size_t> Host::ref_index(const RequestSource& request) const {
  const std::optional<RequestHead> head = request.head();
  if (!head) return std::nullopt;
  for (const RequestShape& shape : shapes_with_ref_) {
    if (shape.arity == head->arity && shape.tag == head->tag) return 1;
  }
  return std::nullopt;
}

void Host::add_request_with_ref(std::string tag, std::size_t arity) {
  shapes_with_ref_.push_back({std::move(tag), arity});
}

Answer Answer::reply(value reply_block) {
  Answer answer;
  answer.kind_ = Kind::reply;
  answer.reply_ = conv::Root(reply_block);
  return answer;
}

value Answer::ref() const noexcept { return Field(reply_.get(), 0); }

value Answer::term() const noexcept { return Field(reply_.get(), 1); }

Answer Answer::no_reply(std::string diagnostic) {
  Answer answer;
  answer.kind_ = Kind::no_reply;
  answer.diagnostic_ = std::move(diagnostic);
  return answer;
}

Answer Answer::refused(Error error) {
  Answer answer;
  answer.kind_ = Kind::refused;
  answer.error_ = std::move(error);
  return answer;
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
  const auto used_words = static_cast<std::size_t>(young_area_end() - Caml_state->young_ptr);
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
