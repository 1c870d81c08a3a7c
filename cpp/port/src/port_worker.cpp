#include "port_worker.hpp"

#include <camlbeam/conv/conv.hpp>
#include <camlbeam/etf/encoder.hpp>
#include <camlbeam/host/etf_request.hpp>
#include <camlbeam/etf/error.hpp>

#include <caml/alloc.h>
#include <caml/callback.h>
#include <caml/memory.h>
#include <caml/signals.h>

#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <exception>
#include <new>
#include <stdexcept>
#include <utility>

namespace camlbeam::port {

namespace {

PortWorker* active_worker = nullptr;

// The time of the last read, checked before every request: the clock the kernel last
// ticked (CLOCK_MONOTONIC_COARSE, 1 to 4 ms behind), for a fifth of the cost of the exact
// one, which a threshold of a few milliseconds does not need.
std::int64_t coarse_now_ns() noexcept {
  timespec t{};
  ::clock_gettime(CLOCK_MONOTONIC_COARSE, &t);
  return std::int64_t{t.tv_sec} * 1'000'000'000 + t.tv_nsec;
}

// A frame {Name, ...} of `arity` elements.
bool is_tagged(const host::EtfRequest& frame, std::size_t arity, std::string_view name) noexcept {
  const std::optional<host::RequestHead> head = frame.head();
  return head && head->arity == arity && head->tag == name;
}

std::span<const std::uint8_t> bytes_of(std::string_view text) {
  return {reinterpret_cast<const std::uint8_t*>(text.data()), text.size()};
}

bool less_bytes(std::span<const std::uint8_t> a, std::span<const std::uint8_t> b) {
  return std::lexicographical_compare(a.begin(), a.end(), b.begin(), b.end());
}

}  // namespace

bool is_erl_reply(std::span<const std::uint8_t> frame) noexcept {
  return is_tagged(host::EtfRequest(frame), 3, "erl_reply");
}

std::optional<std::span<const std::uint8_t>> cancel_ref(std::span<const std::uint8_t> frame) noexcept {
  const host::EtfRequest request(frame);
  if (!is_tagged(request, 2, "cancel")) return std::nullopt;
  return request.element(1);
}

PortWorker::PortWorker(const host::Runtime& runtime, PortOptions options)
    : runtime_(runtime),
      options_(std::move(options)),
      reader_(options_.in_fd, options_.max_request_size),
      writer_(options_.out_fd, options_.etf.max_reply_size),
      heartbeat_frame_(64),
      watch_(runtime,
             {.heartbeat = options_.heartbeat, .cancel_grace = options_.cancel_grace},
             {[this](std::chrono::milliseconds running, bool heartbeat) { return on_long_request(running, heartbeat); },
              [this](std::chrono::milliseconds running, std::chrono::milliseconds timeout) { on_overdue(running, timeout); }}),
      host_(runtime, &watch_) {
  if (active_worker != nullptr) throw std::logic_error("camlbeam::port::PortWorker: one per process");
  options_.etf.reply_layout = host::ReplyLayout::envelope;
  host_.add_request_with_ref("hello", 3);
  const value* context = caml_named_value("camlbeam.port.context");
  if (context == nullptr) {
    throw host::RuntimeError("the port's OCaml half is missing: link the worker with camlbeam.port (ocaml/port)");
  }
  context_ = conv::Root(*context);
  active_worker = this;
}

std::optional<std::span<const std::uint8_t>> PortWorker::request_ref(std::span<const std::uint8_t> frame) const noexcept {
  return host::request_ref(host_, host::EtfRequest(frame, options_.etf.decode));
}

PortWorker::~PortWorker() { active_worker = nullptr; }

PortWorker* PortWorker::active() noexcept { return active_worker; }

void PortWorker::flush() {
  const bool replies = writer_.pending() > 0;
  {
    host::BlockingSection released(runtime_);
    writer_.flush();
  }
  // The watch's thread starts once the first answer (hello's) is on its way, rather than
  // before it: starting a thread is a good part of a worker's start-up.
  if (replies && !watch_started_) {
    watch_.start();
    watch_started_ = true;
  }
}

FrameReader::Fill PortWorker::read(FrameReader::Wait wait) {
  FrameReader::Fill filled{};
  {
    host::BlockingSection released(runtime_);
    filled = reader_.fill(wait);
  }
  if (filled == FrameReader::Fill::end_of_file) end_of_input_ = true;
  if (filled != FrameReader::Fill::interrupted) last_read_ns_ = coarse_now_ns();
  just_read_ = filled == FrameReader::Fill::data;
  if (filled == FrameReader::Fill::data) find_cancels();
  return filled;
}

bool PortWorker::read_more() {
  if (end_of_input_) return false;
  flush();  // the answers first: giving memory back can take a while
  give_back_memory();
  const bool data = read(FrameReader::Wait::blocking) == FrameReader::Fill::data;
  // Nothing waited to be written during the read: the next replies wait from now on.
  last_flush_ns_ = last_read_ns_;
  return data;
}

void PortWorker::give_back_memory() {
  // Only with nothing in hand: a frame read in pieces keeps the buffer it is growing into.
  if (!reader_.empty()) return;
  const bool reader_shrank = reader_.shrink(options_.shrink_buffers_above);
  const bool writer_shrank = writer_.shrink(options_.shrink_buffers_above);
  host_.give_back_memory(reader_shrank || writer_shrank);
}

std::optional<PortWorker::Request> PortWorker::next_request() {
  for (;;) {
    // What was read a while ago (before a long request) may have been cancelled since. The
    // first request after a read is fresh: no need to look at the clock (a round trip with
    // one caller never does).
    if (!just_read_ && !end_of_input_) {
      const std::int64_t now = coarse_now_ns();
      // Replies made a while ago go out before the next request runs, rather than once the
      // requests in hand are all served (or 64 kB of replies wait): a queue of requests each
      // shorter than the watch's tick (which writes what waits while a long one runs) would
      // otherwise keep every reply back, and Erlang hear nothing, for as long as the queue.
      if (writer_.pending() > 0 && now - last_flush_ns_ > std::chrono::nanoseconds(options_.reply_delay).count()) {
        flush();
        last_flush_ns_ = now;
      }
      if (now - last_read_ns_ > std::chrono::nanoseconds(options_.stale_input).count()) read(FrameReader::Wait::none);
    }
    // Erlang hung up: nobody will read the answers of the requests still in hand.
    if (end_of_input_) return std::nullopt;
    just_read_ = false;
    Request request;
    if (!deferred_.empty()) {
      deferred_running_ = std::move(deferred_.front().bytes);
      request = {deferred_running_, deferred_.front().index};
      deferred_.pop_front();
    } else {
      const std::optional<std::span<const std::uint8_t>> frame = reader_.next();
      if (!frame) return std::nullopt;
      request = {*frame, reader_.handed_out() - 1};
    }
    // A cancel did its work when it was read; an erl_reply here answers a call_erlang that
    // was given up (its request was cancelled).
    if (cancel_ref(request.bytes) || is_erl_reply(request.bytes)) continue;
    return request;
  }
}

void PortWorker::run() {
  while (!writer_.closed()) {
    if (const std::optional<Request> request = next_request()) {
      serve(*request);
      host_.between_requests();
      if (writer_.pending() >= options_.flush_threshold) flush();
    } else if (!read_more()) {
      break;
    }
  }
  flush();
}

void PortWorker::find_cancels() {
  reader_.visit_new_frames([&](std::uint64_t, std::span<const std::uint8_t> frame) {
    if (const auto ref = cancel_ref(frame)) cancel_refs_.push_back(*ref);
  });
  if (cancel_refs_.empty()) return;
  std::sort(cancel_refs_.begin(), cancel_refs_.end(), less_bytes);
  const auto named = [&](std::span<const std::uint8_t> frame) {
    const auto ref = request_ref(frame);
    return ref && std::binary_search(cancel_refs_.begin(), cancel_refs_.end(), *ref, less_bytes);
  };
  const auto mark = [&](std::uint64_t index) {
    const auto at = std::lower_bound(cancelled_.begin(), cancelled_.end(), index);
    if (at == cancelled_.end() || *at != index) cancelled_.insert(at, index);
  };
  for (const Deferred& d : deferred_) {
    if (named(d.bytes)) mark(d.index);
  }
  reader_.visit_unread_frames([&](std::uint64_t index, std::span<const std::uint8_t> frame) {
    if (named(frame)) mark(index);
  });
  cancel_refs_.clear();
}

bool PortWorker::take_cancelled(std::uint64_t index) {
  // Requests are served in stream order: marks below `index` belong to frames that were not
  // served (a cancel of a cancel, say) and are dropped on the way.
  auto passed = std::lower_bound(cancelled_.begin(), cancelled_.end(), index);
  const bool cancelled = passed != cancelled_.end() && *passed == index;
  if (cancelled) ++passed;
  cancelled_.erase(cancelled_.begin(), passed);
  return cancelled;
}

void PortWorker::serve(const Request& request) {
  // Host::run runs OCaml, which may read more input (Erl.call_erlang), also in the
  // middle of the decode: the request's bytes stay where they are until the answer is
  // written.
  const FrameReader::Pin pin(reader_);
  // Replies already made may go out while this request runs (on_long_request).
  writer_.hand_over();
  if (!cancelled_.empty() && take_cancelled(request.index)) {
    answer_through_ref(request.bytes, [](etf::Writer& w) { w.atom("timeout"); });
    return;
  }
  writer_.open();
  host::Outcome outcome;
  try {
    outcome = host::handle_etf(host_, request.bytes, writer_.buffer(), options_.etf, &context_);
  } catch (const std::bad_alloc&) {
    writer_.abandon();
    const host::Error out_of_memory{host::Errc::handler_failed, "out of memory while the request was decoded or its reply written", {}};
    if (!answer_refusal(request.bytes, out_of_memory)) log("error", "request skipped: " + out_of_memory.message);
    return;
  }
  if (!outcome.replied()) {
    writer_.abandon();
  } else if (!writer_.close()) {
    log("error", "a reply over the frame limit was dropped");
  }
  switch (outcome.kind) {
    case host::Outcome::Kind::replied:
    case host::Outcome::Kind::no_reply:
      if (!outcome.diagnostic.empty()) log("warning", outcome.diagnostic);
      break;
    case host::Outcome::Kind::refused:
      if (!outcome.error) {
        log("warning", "request skipped: no reason given");
      } else if (!answer_refusal(request.bytes, *outcome.error)) {
        log("warning", "request skipped: " + outcome.error->message);
      }
      break;
  }
}

// bad_etf: {error, {bad_request, Message}}; cancelled: {error, timeout}; anything else the
// host refused a request for (an exception in its own OCaml code, no memory):
// {error, {request_failed, Message}}.
bool PortWorker::answer_refusal(std::span<const std::uint8_t> request, const host::Error& error) {
  if (error.code == host::Errc::cancelled) {
    return answer_through_ref(request, [](etf::Writer& w) { w.atom("timeout"); });
  }
  const bool undecodable = error.code == host::Errc::bad_etf;
  const std::string message = undecodable ? "the request could not be decoded: " + (error.decode ? error.decode->message() : error.message)
                                          : "the worker could not run the request: " + error.message;
  return answer_through_ref(request, [&](etf::Writer& w) {
    w.begin_tuple(2);
    w.atom(undecodable ? "bad_request" : "request_failed");
    w.binary(bytes_of(message));
    w.end_tuple();
  });
}

template <class WriteReason>
bool PortWorker::answer_through_ref(std::span<const std::uint8_t> request, WriteReason&& write_reason) {
  const std::optional<std::span<const std::uint8_t>> ref = request_ref(request);
  if (!ref) return false;
  return writer_.append([&](etf::ByteBuffer& out) {
    etf::Writer w(out, options_.etf.minor_version);
    w.version();
    w.begin_tuple(2);
    w.atom("reply");
    out.append(*ref);
    w.end_tuple();
    w.version();
    w.begin_tuple(2);
    w.atom("error");
    write_reason(w);
    w.end_tuple();
  });
}

void PortWorker::log(std::string_view level, std::string_view message) {
  writer_.append([&](etf::ByteBuffer& out) {
    etf::Writer w(out, options_.etf.minor_version);
    w.version();
    w.begin_tuple(2);
    w.atom("log");
    w.atom(level);
    w.end_tuple();
    w.version();
    w.binary(bytes_of(message));
  });
}

std::string_view PortWorker::refusal() const noexcept {
  // Another thread (an OCaml systhread or domain of a plugin) would race the one that
  // writes, and take answers meant for it.
  if (runtime_.held_by_this_thread()) return {};
  return "only the thread that runs the worker's requests may send to Erlang, not a thread or domain the plugin "
         "started: hand the message to that thread (docs/ocaml5.md)";
}

std::string PortWorker::emit(value envelope, value payload) {
  if (const std::string_view why = refusal(); !why.empty()) return std::string(why);
  if (writer_.closed()) return "the pipe to Erlang is closed";
  try {
    const bool fits = writer_.append([&](etf::ByteBuffer& out) {
      etf::Writer w(out, options_.etf.minor_version);
      w.version();
      conv::walk_ocaml(envelope, w);
      w.version();
      conv::walk_ocaml(payload, w);
    });
    if (!fits) return "the message is larger than max_reply_size (" + std::to_string(options_.etf.max_reply_size) + " bytes)";
  } catch (const etf::EncodeError& e) {
    return std::string("the message cannot be encoded: ") + e.what();
  }
  // Sent now, not with the next batch: the export may run for a long time yet.
  flush();
  return writer_.closed() ? "the pipe to Erlang is closed" : "";
}

PortWorker::Awaited PortWorker::await_erl_reply() {
  for (;;) {
    const std::optional<std::span<const std::uint8_t>> frame = reader_.next();
    if (!frame) {
      if (end_of_input_) return {Awaited::Kind::closed};
      flush();
      switch (read(FrameReader::Wait::interruptible)) {
        case FrameReader::Fill::interrupted: return {Awaited::Kind::interrupted};
        case FrameReader::Fill::end_of_file: return {Awaited::Kind::closed};
        case FrameReader::Fill::data:
        case FrameReader::Fill::nothing: continue;
      }
    }
    if (cancel_ref(*frame)) continue;  // done when it was read
    if (!is_erl_reply(*frame)) {
      deferred_.push_back({{frame->begin(), frame->end()}, reader_.handed_out() - 1});
      continue;
    }
    // A signal handler that runs in the decoding (map_of_array) may call Erlang and read more.
    const FrameReader::Pin pin(reader_);
    const conv::UnrootedDecode decoded = conv::etf_to_ocaml_unrooted(*frame, options_.etf.decode);
    if (decoded.raised) return {Awaited::Kind::raised, *decoded.raised};  // a signal handler's, in map_of_array
    if (decoded.error) {
      log("error", "an erl_reply frame is not valid ETF: " + decoded.error->message());
      return {Awaited::Kind::closed};
    }
    return {Awaited::Kind::reply, decoded.term};
  }
}

bool PortWorker::on_long_request(std::chrono::milliseconds running, bool heartbeat) noexcept {
  if (!heartbeat) {
    writer_.write_aside({});  // the replies of the requests before this one
    return false;
  }
  try {
    heartbeat_frame_.clear();
    append_frame(heartbeat_frame_, max_frame_limit, [&](etf::ByteBuffer& out) {
      etf::Writer w(out, options_.etf.minor_version);
      w.version();
      w.begin_tuple(2);
      w.atom("heartbeat");
      w.integer(running.count());
      w.end_tuple();
      w.version();
      w.nil();
    });
  } catch (...) {
    return false;  // no memory for 30 bytes: the next tick tries again
  }
  return writer_.write_aside(heartbeat_frame_.span());
}

void PortWorker::on_overdue(std::chrono::milliseconds running, std::chrono::milliseconds timeout) noexcept {
  writer_.write_aside({});  // replies already made, if the pipe takes them now
  char line[256];
  const int n = std::snprintf(line, sizeof line,
                              "camlbeam-port[%d]: a request overran its deadline (%lld ms) by the grace period and "
                              "could not be interrupted (it has run %lld ms); exiting with status %d\n",
                              static_cast<int>(::getpid()), static_cast<long long>(timeout.count()),
                              static_cast<long long>(running.count()), exit_overdue);
  if (n > 0) {
    [[maybe_unused]] const ssize_t written = ::write(STDERR_FILENO, line, std::min<std::size_t>(static_cast<std::size_t>(n), sizeof line - 1));
  }
  ::_exit(exit_overdue);
}

}  // namespace camlbeam::port

// The externals of ocaml/port/erl_port.ml. No C++ exception and no OCaml exception leaves
// them: failures are values that Erl_port turns into OCaml exceptions. A noexcept C++
// function that lets an exception out ends the process (std::terminate), which is better
// than unwinding into OCaml frames; catch (...) makes that unreachable.

namespace {

value ocaml_string_of(const std::string& s) { return caml_alloc_initialized_string(s.size(), s.data()); }

}  // namespace

extern "C" value camlbeam_port_emit(value envelope, value payload) noexcept {
  CAMLparam2(envelope, payload);
  std::string why;
  try {
    if (auto* worker = camlbeam::port::PortWorker::active()) {
      why = worker->emit(envelope, payload);
    } else {
      why = "no port worker is running";
    }
  } catch (const std::exception& e) {
    why = e.what();
  } catch (...) {
    why = "the worker failed to write the frame";
  }
  CAMLreturn(ocaml_string_of(why));
}

// Erl_port.awaited: Closed is the immediate 0; Reply of Term.t and Raised of exn are blocks
// of tags 0 and 1.
extern "C" value camlbeam_port_await_erl_reply(value unit) noexcept {
  CAMLparam1(unit);
  CAMLlocal2(payload, result);
  using Kind = camlbeam::port::PortWorker::Awaited::Kind;
  constexpr tag_t reply_tag = 0;
  constexpr tag_t raised_tag = 1;
  for (;;) {
    camlbeam::port::PortWorker::Awaited awaited{Kind::closed};
    try {
      if (auto* worker = camlbeam::port::PortWorker::active()) awaited = worker->await_erl_reply();
    } catch (...) {
      // The framing broke, or the pipe: the main loop meets the same error on its next read.
      awaited = {Kind::closed};
    }
    if (awaited.kind == Kind::closed) CAMLreturn(Val_int(0));
    if (awaited.kind == Kind::interrupted) {
      // A signal interrupted the wait: its OCaml handler runs now, and what it raises
      // (Erl.Cancelled when the request's deadline passed) reaches the caller as a value,
      // never as an OCaml exception through the C++ frames above.
      payload = caml_process_pending_actions_exn();
      if (!Is_exception_result(payload)) continue;
      awaited = {Kind::raised, Extract_exception(payload)};
    }
    payload = awaited.term;
    result = caml_alloc_small(1, awaited.kind == Kind::reply ? reply_tag : raised_tag);
    Field(result, 0) = payload;
    CAMLreturn(result);
  }
}

extern "C" value camlbeam_port_refusal(value unit) noexcept {
  CAMLparam1(unit);
  std::string_view why = "no port worker is running";
  if (const auto* worker = camlbeam::port::PortWorker::active()) why = worker->refusal();
  CAMLreturn(caml_alloc_initialized_string(why.size(), why.data()));
}

extern "C" value camlbeam_port_os_pid(value unit) noexcept {
  (void)unit;
  return Val_long(::getpid());
}
