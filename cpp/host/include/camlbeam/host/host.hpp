// The request path shared by every transport: one request frame in, at most one reply
// frame out. It knows nothing of pipes, sockets or NIF environments.
//
//   {call, Ref, Fun, Args}  ->  {Ref, {ok, Result}} | {Ref, {error, Reason}}
//   {cast, Fun, Args}       ->  nothing
//   {load, Ref, Path}       ->  {Ref, ok} | {Ref, {error, {load_failed, Kind, Message}}}
//
// The request is converted straight into an Erl.Term.t (conv::etf_to_ocaml) and handed to
// the OCaml function registered as "camlbeam.host.handle" (ocaml/host/erl_host.ml), which
// owns the shapes above and the errors a request can get back. The reply {Ref, Answer} is
// written from the OCaml values straight to ETF. See cpp/host/README.md for every reply.
#pragma once

#include <camlbeam/etf/encoder.hpp>
#include <camlbeam/etf/limits.hpp>
#include <camlbeam/host/error.hpp>
#include <camlbeam/host/request_watch.hpp>
#include <camlbeam/host/runtime.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace camlbeam::host {

// How a reply frame is laid out. The answer is the same; only the wrapping differs.
enum class ReplyLayout : std::uint8_t {
  // One term, {Ref, Answer}: a message as Erlang sends it (node and NIF transports).
  tuple,
  // Two terms back to back, <<131, {reply, Ref}, 131, Answer>>: the receiver routes on the
  // small envelope and decodes the answer where it is wanted, as a sub-binary of the frame
  // (the port transport, cpp/port/README.md).
  envelope,
};

struct HostOptions {
  // Limits on request frames (depth, size, inflated size), as for etf::decode.
  etf::DecodeOptions decode{};
  // The largest reply frame, in bytes. A larger answer is replaced by
  // {error, {reply_too_large, Size, Limit}}, Size being the exact size of the frame that was
  // not sent; building it costs at most about Limit bytes of memory.
  std::size_t max_reply_size = std::size_t{64} << 20;
  // ETF minor version of replies: 1 writes Latin-1 atoms as ATOM_EXT, as term_to_binary/1.
  int minor_version = 1;
  ReplyLayout reply_layout = ReplyLayout::tuple;
};

struct Outcome {
  enum class Kind : std::uint8_t {
    replied,   // one reply frame (HostOptions::reply_layout) was appended to the reply buffer
    no_reply,  // a cast: nothing to send
    refused,   // nothing can be sent back: error says why
  };

  Kind kind = Kind::refused;
  std::size_t reply_size = 0;  // replied: the bytes appended
  // For the log. replied: why the answer was replaced (reply_too_large, bad_reply), or
  // empty. no_reply: why the cast failed (its {error, Reason}, shortened), or empty.
  std::string diagnostic;
  std::optional<Error> error;  // refused

  bool replied() const noexcept { return kind == Kind::replied; }
};

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
  // not linked with camlbeam.host (ocaml/host). With a watch, every request handle() runs
  // is watched (its begin and end, the deadline of its Timeout); the watch must outlive
  // the Host.
  explicit Host(const Runtime& runtime, HostOptions options = {}, RequestWatch* watch = nullptr);
  ~Host();
  Host(const Host&) = delete;
  Host& operator=(const Host&) = delete;

  // Runs one request frame (131 ...). On Kind::replied, appends the reply frame to
  // `reply`, which is otherwise left as it was. Never lets an OCaml exception or a C++
  // exception from the request escape: an export that raises, overflows the stack or
  // answers too much is an {error, _} answer, and the next request runs as usual. An
  // exception that meets the request path's own OCaml code (Erl.Cancelled from the watch,
  // a plugin's signal handler, Out_of_memory) is refused as Errc::cancelled or
  // Errc::handler_failed: the transport answers the request's Ref if it can find it. Only
  // std::bad_alloc propagates (C++ memory, or a block the OCaml heap cannot make room for
  // while the request is decoded): `reply` may then hold part of a frame. Call it from the
  // runtime thread. OCaml may run transport code while handle() runs (Erl.send,
  // Erl.call_erlang), in the middle of the decode too: `request` must stay where it is
  // until handle() returns.
  Outcome handle(std::span<const std::uint8_t> request, etf::ByteBuffer& reply);

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

  const HostOptions& options() const noexcept { return options_; }

 private:
  struct Callbacks;

  std::optional<Error> check_thread() const;
  // give_back_memory's test, inline: it runs whenever the transport is about to wait.
  bool major_heap_grown() const noexcept;
  bool give_back_memory_now(bool freed_c_memory) noexcept;

  const Runtime& runtime_;
  HostOptions options_;
  RequestWatch* watch_;
  std::unique_ptr<const Callbacks> callbacks_;
  std::size_t compact_above_words_;
};

}  // namespace camlbeam::host
