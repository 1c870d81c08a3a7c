// The request path shared by every transport: one request in, at most one answer out. It
// knows nothing of pipes, sockets or NIF environments, nor of how its answers are laid out
// on a wire: a transport reads a request through a RequestSource, runs it with Host::run,
// and writes the Answer with its own term sink (request.hpp; ETF: etf_request.hpp).
//
//   {call, Ref, Fun, Args}  ->  {Ref, {ok, Result}} | {Ref, {error, Reason}}
//   {cast, Fun, Args}       ->  nothing
//   {load, Ref, Path}       ->  {Ref, ok} | {Ref, {error, {load_failed, Kind, Message}}}
//
// The request is converted straight into an Erl.Term.t and handed, with the transport's
// context, to the OCaml function registered as "camlbeam.host.handle"
// (ocaml/host/erl_host.ml), which owns the shapes above and the errors a request can get
// back. See cpp/host/README.md for every answer.
#pragma once

#include <camlbeam/conv/conv.hpp>
#include <camlbeam/host/error.hpp>
#include <camlbeam/host/request.hpp>
#include <camlbeam/host/request_watch.hpp>
#include <camlbeam/host/runtime.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace camlbeam::host {

// When the minor heap is more than 1/32 full, or young blocks hold as much memory off the
// heap (large binaries), empties it now, while nothing a request made is alive any more:
// the next request's values have room to die young instead of being promoted to the major
// heap, and are allocated in memory still in cache. A collection with nothing live costs
// only its roots. Only on a thread that holds the OCaml runtime; Erl_host's
// apply_worker_gc_defaults is the other half of a worker's GC policy.
void collect_between_requests() noexcept;

class Host {
 public:
  // Finds the OCaml side of the request path. Throws RuntimeError if the executable was
  // not linked with camlbeam.host (ocaml/host). With a watch, every request run() runs is
  // watched (its begin and end, the deadline of its Timeout); the watch must outlive the
  // Host.
  explicit Host(const Runtime& runtime, RequestWatch* watch = nullptr);
  ~Host();
  Host(const Host&) = delete;
  Host& operator=(const Host&) = delete;

  // Runs one request in `context`, an Erl.Private.context: what Erl.send, Erl.call_erlang,
  // Erl.worker and cancellation answer while it runs (the transport's, made by its OCaml
  // half; null: the standalone context of Erl_host, in which they raise No_transport).
  // Never lets an OCaml exception or a C++ exception from the request escape: an export
  // that raises or overflows the stack is an {error, _} answer, and the next request runs
  // as usual. An exception that meets the request path's own OCaml code (Erl.Cancelled from
  // the watch, a plugin's signal handler, Out_of_memory) is refused as Errc::cancelled or
  // Errc::handler_failed; a request that cannot be converted as Errc::bad_etf (the
  // source's decode error) or Errc::bad_request: the transport answers the request's Ref
  // where ref_index() finds one. Only std::bad_alloc propagates (C++ memory, or a block the
  // OCaml heap cannot make room for while the request is converted). Call it from the
  // runtime thread; from any other it refuses with wrong_thread, inside a BlockingSection
  // with runtime_released, without touching OCaml.
  Answer run(RequestSource& request, const conv::Root* context = nullptr);

  // The export `function` of the OCaml module `module` (Erl.Private.find_export), rooted,
  // for calls of it without its names (call()); nullopt when there is none, or on a thread
  // that does not hold the runtime. A load of its module replaces it: find it again after
  // every load (the old one still runs the code it ran).
  std::optional<conv::Root> find_export(std::string_view module, std::string_view function);

  // Runs a call of `export_` (find_export) in `context`, as run() runs {call, 0, {Module,
  // Function}, Args, Timeout}, whose answer it gives (Ref 0): `args` is the list of its
  // arguments, `timeout` nullopt for infinity. No request tuple to convert, no look-up by
  // names.
  Answer call(const conv::Root& export_, RequestSource& args, std::optional<std::chrono::milliseconds> timeout,
              const conv::Root* context = nullptr);

  // Where the request's Ref is, for answering a request run() refused (or one the
  // transport cannot run at all, such as one cancelled before it began): the index of the
  // Ref in the request's tuple (1) when its head is one of the shapes that carry a Ref,
  // {call, Ref, Fun, Args[, Timeout]}, {load, Ref, Path[, Timeout]}, and those added with
  // add_request_with_ref; nullopt otherwise. Reads only the head: it works on a request
  // that cannot be converted.
  std::optional<std::size_t> ref_index(const RequestSource& request) const;

  // A request of the transport's own (Erl_host.add_request) of the shape {tag, Ref, ...}
  // with `arity` elements: ref_index finds its Ref (the port's {hello, Ref, Info}).
  void add_request_with_ref(std::string tag, std::size_t arity);

  // Call between requests, on the runtime thread: collect_between_requests().
  void between_requests() noexcept;

  // Call when the transport is idle (no request in hand, about to wait for one), on the
  // runtime thread: gives memory back to the system after an outsized request. When the
  // major heap has grown past its threshold, max(64 MiB, twice its size when the Host was
  // made, or after the last compaction), it compacts it (Gc.compact); then, or when the
  // transport says it freed C memory of its own (`freed_c_memory`), it returns the C
  // heap's free memory to the system (malloc_trim). A plugin that keeps a large heap
  // alive costs one compaction, after which the threshold is twice that heap. Returns
  // whether it compacted.
  bool give_back_memory(bool freed_c_memory = false) noexcept {
    return (freed_c_memory || major_heap_grown()) && give_back_memory_now(freed_c_memory);
  }

  // Loads a plugin (.cmxs in a native host, .cma/.cmo in a bytecode host), as the request
  // {load, Ref, Path} does. nullopt when it loaded; its exports are then callable.
  [[nodiscard]] std::optional<Error> load(std::string_view path);

 private:
  struct Callbacks;
  class ContextScope;

  struct RequestShape {
    std::string tag;
    std::size_t arity;
  };

  std::optional<Error> check_thread() const;
  // run() and call(): the request converted in the context, then `handler` (OCaml,
  // through a *_exn callback) given the term, and its Erl_host.answer read.
  template <class Handler>
  Answer run_converted(RequestSource& request, const conv::Root* context, Handler&& handler);
  // give_back_memory's test, inline: it runs whenever the transport is about to wait.
  bool major_heap_grown() const noexcept;
  bool give_back_memory_now(bool freed_c_memory) noexcept;

  const Runtime& runtime_;
  RequestWatch* watch_;
  std::vector<RequestShape> shapes_with_ref_;
  std::unique_ptr<const Callbacks> callbacks_;
  std::size_t compact_above_words_;
};

}  // namespace camlbeam::host
