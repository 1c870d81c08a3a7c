#include <camlbeam/host/etf_request.hpp>

#include "bounded_writer.hpp"

#include <camlbeam/conv/conv.hpp>
#include <camlbeam/etf/error.hpp>
#include <camlbeam/etf/visitor.hpp>

#include <string>
#include <string_view>
#include <utility>

namespace camlbeam::host {

namespace {

constexpr std::uint8_t version_byte = 131;
constexpr std::uint8_t small_tuple_ext = 104;
constexpr std::uint8_t large_tuple_ext = 105;

struct TupleStart {
  std::size_t arity;
  std::size_t first_element;  // offset of the first element's tag
};

// A frame that starts 131, then a tuple header.
std::optional<TupleStart> tuple_start(std::span<const std::uint8_t> frame) noexcept {
  if (frame.size() < 3 || frame[0] != version_byte) return std::nullopt;
  if (frame[1] == small_tuple_ext) return TupleStart{frame[2], 3};
  if (frame[1] == large_tuple_ext && frame.size() >= 6) {
    const std::size_t arity = (std::size_t{frame[2]} << 24) | (std::size_t{frame[3]} << 16) |
                              (std::size_t{frame[4]} << 8) | frame[5];
    return TupleStart{arity, 6};
  }
  return std::nullopt;
}

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
std::optional<Error> write_error_reply(value ref, etf::ByteBuffer& out, const EtfOptions& options,
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

// Appends the reply frame {Ref, Answer}, or, when the answer cannot be
// sent, one whose answer is {error, {reply_too_large, Size, Limit}} or
// {error, {bad_reply, Message}}.
Outcome write_reply(value ref, value term, etf::ByteBuffer& out, const EtfOptions& options) {
  const std::size_t start = out.size();
  std::size_t size = 0;
  std::string encode_error;
  try {
    detail::BoundedWriter writer(out, options.max_reply_size, options.minor_version);
    begin_reply(writer, ref, options.reply_layout);
    conv::walk_ocaml(term, writer);
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

conv::UnrootedDecode EtfRequest::to_ocaml() { return conv::etf_to_ocaml_unrooted(frame_, *options_); }

std::optional<RequestHead> EtfRequest::head() const noexcept {
  const std::optional<TupleStart> tuple = tuple_start(frame_);
  if (!tuple || tuple->arity == 0) return std::nullopt;
  const std::size_t at = tuple->first_element;
  if (frame_.size() < at + 2) return std::nullopt;
  const std::uint8_t tag = frame_[at];
  std::size_t length = 0;
  std::size_t name = 0;
  if (tag == 115 || tag == 119) {  // SMALL_ATOM_EXT, SMALL_ATOM_UTF8_EXT
    length = frame_[at + 1];
    name = at + 2;
  } else if ((tag == 100 || tag == 118) && frame_.size() >= at + 3) {  // ATOM_EXT, ATOM_UTF8_EXT
    length = (std::size_t{frame_[at + 1]} << 8) | frame_[at + 2];
    name = at + 3;
  } else {
    return std::nullopt;
  }
  if (frame_.size() < name + length) return std::nullopt;
  return RequestHead{{reinterpret_cast<const char*>(frame_.data() + name), length}, tuple->arity};
}

std::optional<std::span<const std::uint8_t>> EtfRequest::element(std::size_t index) const noexcept {
  const std::optional<TupleStart> tuple = tuple_start(frame_);
  if (!tuple || index >= tuple->arity) return std::nullopt;
  std::size_t at = tuple->first_element;
  try {
    for (std::size_t i = 0;; ++i) {
      etf::IgnoreTerm skip;  // where the element ends is all that is wanted
      const etf::DecodeResult element = etf::decode_body(frame_.subspan(at), skip, options_->limits, at);
      if (!element) return std::nullopt;
      if (i == index) return frame_.subspan(at, element.end - at);
      at = element.end;
    }
  } catch (...) {
    return std::nullopt;
  }
}

std::optional<std::span<const std::uint8_t>> request_ref(const Host& host, const EtfRequest& request) noexcept {
  try {
    const std::optional<std::size_t> index = host.ref_index(request);
    if (!index) return std::nullopt;
    return request.element(*index);
  } catch (...) {
    return std::nullopt;
  }
}

Outcome write_etf_reply(const Answer& answer, etf::ByteBuffer& out, const EtfOptions& options) {
  switch (answer.kind()) {
    case Answer::Kind::reply: return write_reply(answer.ref(), answer.term(), out, options);
    case Answer::Kind::no_reply: return no_reply(answer.diagnostic());
    case Answer::Kind::refused: break;
  }
  return refused(answer.error().value_or(Error{Errc::handler_failed, "refused with no reason given", {}}));
}

Outcome handle_etf(Host& host, std::span<const std::uint8_t> frame, etf::ByteBuffer& reply, const EtfOptions& options,
                   const conv::Root* context) {
  EtfRequest request(frame, options.decode);
  const Answer answer = host.run(request, context);
  return write_etf_reply(answer, reply, options);
}

}  // namespace camlbeam::host
