// The request path for transports that carry ETF (the port's frames, the node's messages):
// a RequestSource over an ETF frame, and the term sink that writes an Answer as a reply
// frame, in the transport's layout and within its size limit.
#pragma once

#include <camlbeam/etf/decoder.hpp>
#include <camlbeam/etf/encoder.hpp>
#include <camlbeam/host/host.hpp>
#include <camlbeam/host/request.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>

namespace camlbeam::host {

// How a reply frame is laid out. The answer is the same; only the wrapping differs.
enum class ReplyLayout : std::uint8_t {
  // One term, {Ref, Answer}: a message as Erlang sends it (the node transport).
  tuple,
  // Two terms back to back, <<131, {reply, Ref}, 131, Answer>>: the receiver routes on the
  // small envelope and decodes the answer where it is wanted, as a sub-binary of the frame
  // (the port transport, cpp/port/README.md).
  envelope,
};

struct EtfOptions {
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

// One request frame (131 ...). The bytes, and the options, must stay where they are while
// Host::run runs.
class EtfRequest final : public RequestSource {
 public:
  explicit EtfRequest(std::span<const std::uint8_t> frame,
                      const etf::DecodeOptions& options = etf::default_decode_options) noexcept
      : frame_(frame), options_(&options) {}

  conv::UnrootedDecode to_ocaml() override;
  std::optional<RequestHead> head() const noexcept override;

  // The bytes of the top tuple's element `index` (no version byte), found by skipping the
  // elements before it within the decode limits: nullopt when the frame is no tuple of
  // that many elements or is broken before the element ends. What a reply echoes as Ref.
  std::optional<std::span<const std::uint8_t>> element(std::size_t index) const noexcept;

  std::span<const std::uint8_t> bytes() const noexcept { return frame_; }

 private:
  std::span<const std::uint8_t> frame_;
  const etf::DecodeOptions* options_;
};

// The bytes of the Ref of a request frame, where the host's shapes say one is
// (Host::ref_index), for answering a request that was refused or never run.
std::optional<std::span<const std::uint8_t>> request_ref(const Host& host, const EtfRequest& request) noexcept;

// What became of a request frame on an ETF transport.
struct Outcome {
  enum class Kind : std::uint8_t {
    replied,   // one reply frame (EtfOptions::reply_layout) was appended to the reply buffer
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

// Appends the reply frame of `answer` to `out` when it is a reply: {Ref, Answer} in the
// options' layout, or, when the answer cannot be sent, the same Ref with
// {error, {reply_too_large, Size, Limit}} or {error, {bad_reply, Message}} (diagnostic
// says which). When even that cannot be sent (a Ref too large or not encodable), appends
// nothing and refuses. Only std::bad_alloc propagates; `out` may then hold part of a frame.
// Reads OCaml values and allocates none.
Outcome write_etf_reply(const Answer& answer, etf::ByteBuffer& out, const EtfOptions& options);

// The whole path for one frame: Host::run on an EtfRequest, then write_etf_reply. Call it
// from the runtime thread; `frame` stays where it is until it returns.
Outcome handle_etf(Host& host, std::span<const std::uint8_t> frame, etf::ByteBuffer& reply,
                   const EtfOptions& options = {}, const conv::Root* context = nullptr);

}  // namespace camlbeam::host
