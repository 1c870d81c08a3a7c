#include "port_worker.hpp"

#include <camlbeam/conv/conv.hpp>
#include <camlbeam/etf/encoder.hpp>
#include <camlbeam/etf/error.hpp>

#include <caml/alloc.h>
#include <caml/memory.h>

#include <algorithm>
#include <exception>
#include <stdexcept>
#include <utility>

namespace camlbeam::port {

namespace {

PortWorker* active_worker = nullptr;

constexpr std::string_view erl_reply_atom = "erl_reply";

}  // namespace

namespace {

// A frame that starts 131, SMALL_TUPLE_EXT `arity`, then an atom named `name` in any of the
// four atom encodings: the offset just past the atom, or 0.
std::size_t tagged_tuple_start(std::span<const std::uint8_t> frame, std::uint8_t arity, std::string_view name) noexcept {
  if (frame.size() < 5 || frame[0] != 131 || frame[1] != 104 || frame[2] != arity) return 0;
  const std::uint8_t tag = frame[3];
  std::size_t length = 0;
  std::size_t at = 0;
  if (tag == 115 || tag == 119) {  // SMALL_ATOM_EXT, SMALL_ATOM_UTF8_EXT
    length = frame[4];
    at = 5;
  } else if ((tag == 100 || tag == 118) && frame.size() >= 6) {  // ATOM_EXT, ATOM_UTF8_EXT
    length = (std::size_t{frame[4]} << 8) | frame[5];
    at = 6;
  } else {
    return 0;
  }
  const bool named = length == name.size() && frame.size() >= at + length &&
                     std::equal(name.begin(), name.end(), frame.begin() + static_cast<std::ptrdiff_t>(at));
  return named ? at + length : 0;
}

}  // namespace

bool is_erl_reply(std::span<const std::uint8_t> frame) noexcept {
  return tagged_tuple_start(frame, 3, erl_reply_atom) != 0;
}

std::optional<std::span<const std::uint8_t>> salvage_ref(std::span<const std::uint8_t> frame,
                                                         const etf::Limits& limits) {
  std::size_t at = tagged_tuple_start(frame, 4, "call");
  if (at == 0) at = tagged_tuple_start(frame, 3, "load");
  if (at == 0) return std::nullopt;
  etf::IgnoreTerm skip;  // where the Ref ends is all that is wanted
  const etf::DecodeResult ref = etf::decode_body(frame.subspan(at), skip, limits, at);
  if (!ref) return std::nullopt;
  return frame.subspan(at, ref.end - at);
}

PortWorker::PortWorker(const host::Runtime& runtime, PortOptions options)
    : runtime_(runtime),
      options_(std::move(options)),
      host_(runtime, [&] {
        host::HostOptions host = options_.host;
        host.reply_layout = host::ReplyLayout::envelope;
        return host;
      }()),
      reader_(options_.in_fd, options_.max_request_size),
      writer_(options_.out_fd, options_.host.max_reply_size) {
  if (active_worker != nullptr) throw std::logic_error("camlbeam::port::PortWorker: one per process");
  active_worker = this;
}

PortWorker::~PortWorker() { active_worker = nullptr; }

PortWorker* PortWorker::active() noexcept { return active_worker; }

void PortWorker::flush() {
  const bool replies = writer_.pending() > 0;
  {
    host::BlockingSection released(runtime_);
    writer_.flush();
  }
  if (replies && options_.after_first_reply) std::exchange(options_.after_first_reply, nullptr)();
}

bool PortWorker::read_more() {
  if (end_of_input_) return false;
  flush();
  FrameReader::Fill filled{};
  {
    host::BlockingSection released(runtime_);
    filled = reader_.fill();
  }
  end_of_input_ = filled == FrameReader::Fill::end_of_file;
  return !end_of_input_;
}

std::optional<std::span<const std::uint8_t>> PortWorker::next_request() {
  if (!deferred_.empty()) {
    deferred_running_ = std::move(deferred_.front());
    deferred_.pop_front();
    return deferred_running_;
  }
  return reader_.next();
}

void PortWorker::run() {
  while (!writer_.closed()) {
    std::optional<std::span<const std::uint8_t>> request = next_request();
    if (request) {
      serve(*request);
      host_.between_requests();
      if (writer_.pending() >= options_.flush_threshold) flush();
    } else if (!read_more()) {
      break;
    }
  }
  flush();
}

void PortWorker::serve(std::span<const std::uint8_t> request) {
  // Host::handle reads `request` only before it runs OCaml: what OCaml does meanwhile
  // (Erl.call_erlang reads more input) may move the bytes it points to.
  writer_.open();
  host::Outcome outcome = host_.handle(request, writer_.buffer());
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
      // bad_etf: the request never reached OCaml, so its bytes are still where they were.
      if (outcome.error && outcome.error->code == host::Errc::bad_etf) {
        if (auto ref = salvage_ref(request, options_.host.decode.limits)) {
          answer_undecodable(*ref, outcome.error->decode ? outcome.error->decode->message() : outcome.error->message);
          break;
        }
      }
      log("warning", "request skipped: " + (outcome.error ? outcome.error->message : std::string("no reason given")));
      break;
  }
}

// {reply, Ref} then {error, {bad_request, Message}}, Ref copied as it came: the request
// around it could not be read, but its caller waits for an answer.
void PortWorker::answer_undecodable(std::span<const std::uint8_t> ref, std::string_view why) {
  const std::string message = "the request could not be decoded: " + std::string(why);
  writer_.append([&](etf::ByteBuffer& out) {
    etf::Writer w(out, options_.host.minor_version);
    w.version();
    w.begin_tuple(2);
    w.atom("reply");
    out.append(ref);
    w.end_tuple();
    w.version();
    w.begin_tuple(2);
    w.atom("error");
    w.begin_tuple(2);
    w.atom("bad_request");
    w.binary({reinterpret_cast<const std::uint8_t*>(message.data()), message.size()});
    w.end_tuple();
    w.end_tuple();
  });
}

void PortWorker::log(std::string_view level, std::string_view message) {
  writer_.append([&](etf::ByteBuffer& out) {
    etf::Writer w(out, options_.host.minor_version);
    w.version();
    w.begin_tuple(2);
    w.atom("log");
    w.atom(level);
    w.end_tuple();
    w.version();
    w.binary({reinterpret_cast<const std::uint8_t*>(message.data()), message.size()});
  });
}

std::string PortWorker::emit(value envelope, value payload) {
  if (writer_.closed()) return "the pipe to Erlang is closed";
  try {
    const bool fits = writer_.append([&](etf::ByteBuffer& out) {
      etf::Writer w(out, options_.host.minor_version);
      w.version();
      conv::walk_ocaml(envelope, w);
      w.version();
      conv::walk_ocaml(payload, w);
    });
    if (!fits) return "the message is larger than max_reply_size (" + std::to_string(options_.host.max_reply_size) + " bytes)";
  } catch (const etf::EncodeError& e) {
    return std::string("the message cannot be encoded: ") + e.what();
  }
  // Sent now, not with the next batch: the export may run for a long time yet.
  flush();
  return writer_.closed() ? "the pipe to Erlang is closed" : "";
}

std::optional<value> PortWorker::await_erl_reply() {
  for (;;) {
    std::optional<std::span<const std::uint8_t>> frame = reader_.next();
    if (!frame) {
      if (!read_more()) return std::nullopt;
      continue;
    }
    if (!is_erl_reply(*frame)) {
      deferred_.emplace_back(frame->begin(), frame->end());
      continue;
    }
    const conv::UnrootedDecode decoded = conv::etf_to_ocaml_unrooted(*frame, options_.host.decode);
    if (decoded.error) {
      log("error", "an erl_reply frame is not valid ETF: " + decoded.error->message());
      return std::nullopt;
    }
    return decoded.term;
  }
}

}  // namespace camlbeam::port

// The externals of ocaml/port/erl_port.ml. No C++ exception and no OCaml exception leaves
// them: failures are values that Erl_port turns into OCaml exceptions.

extern "C" value camlbeam_port_emit(value envelope, value payload) {
  CAMLparam2(envelope, payload);
  std::string why;
  if (auto* worker = camlbeam::port::PortWorker::active()) {
    try {
      why = worker->emit(envelope, payload);
    } catch (const std::exception& e) {
      why = e.what();
    }
  } else {
    why = "no port worker is running";
  }
  CAMLreturn(caml_alloc_initialized_string(why.size(), why.data()));
}

extern "C" value camlbeam_port_await_erl_reply(value unit) {
  CAMLparam1(unit);
  CAMLlocal1(reply);
  std::optional<value> frame;
  if (auto* worker = camlbeam::port::PortWorker::active()) {
    try {
      frame = worker->await_erl_reply();
    } catch (const std::exception&) {
      // The framing broke: the main loop meets the same error on its next read.
      frame.reset();
    }
  }
  if (!frame) CAMLreturn(Val_none);
  reply = *frame;
  CAMLreturn(caml_alloc_some(reply));
}
