#include <camlbeam/dist/message_reader.hpp>
#include <camlbeam/etf/term_builder.hpp>

#include "control_elements.hpp"

#include <algorithm>
#include <string>
#include <utility>

namespace camlbeam::dist {
namespace {

constexpr std::uint8_t pass_through = 112;
constexpr std::uint8_t version_magic = 131;
// The control tuple's elements kept between messages: SPAWN_REQUEST_TT, the longest, has 8.
constexpr std::size_t kept_elements = 16;

std::string term_error(const char* what, const etf::DecodeError& e) { return std::string(what) + ": " + e.message(); }

}  // namespace

MessageReader::MessageReader(std::uint64_t negotiated_flags, Limits limits)
    : flags_(flag::expand(negotiated_flags)), limits_(limits) {}

MessageReader::Outcome MessageReader::fail(Error error) {
  broken_ = error;
  partials_.clear();
  partial_bytes_ = 0;
  reserved_bytes_ = 0;
  return {std::nullopt, std::move(error)};
}

MessageReader::Outcome MessageReader::read(std::span<const std::uint8_t> body) {
  if (broken_) return {std::nullopt, broken_};
  if (body.empty()) return fail({Errc::truncated, "an empty data frame"});
  if (body[0] == pass_through) return decode(body.subspan(1), nullptr);
  if (body[0] == version_magic) return read_header_frame(body);
  return fail({Errc::bad_control, "a frame starting with " + std::to_string(body[0]) + ", not 112 or 131"});
}

MessageReader::Outcome MessageReader::read_header_frame(std::span<const std::uint8_t> body) {
  // The header kinds a peer may use are those it negotiated: a header we did not offer is a
  // peer out of step with the handshake.
  if (body.size() >= 2) {
    const bool fragment = body[1] != static_cast<std::uint8_t>(etf::DistHeader::Kind::normal);
    const std::uint64_t needed = fragment ? flag::fragments : flag::dist_hdr_atom_cache | flag::fragments;
    if ((flags_ & needed) == 0)
      return fail({Errc::bad_control, "distribution header " + std::to_string(body[1]) + " without its flag"});
  }
  const auto encoding = (flags_ & flag::utf8_atoms) != 0 ? etf::AtomTextEncoding::utf8 : etf::AtomTextEncoding::latin1;
  // A first fragment's refs go to its sequence; parse into the scratch refs_ first, so that
  // a header that fails leaves every sequence as it was.
  const auto header = etf::parse_dist_header(body, encoding, cache_, refs_);
  if (!header) return fail({Errc::bad_term, term_error("distribution header", *header.error)});
  const auto rest = body.subspan(header.end);
  switch (header.header.kind) {
    case etf::DistHeader::Kind::normal:
      return decode(rest, &refs_);
    case etf::DistHeader::Kind::fragment_start:
      return start_sequence(header.header.sequence_id, header.header.fragment_id, rest);
    case etf::DistHeader::Kind::fragment_continuation:
      return continue_sequence(header.header.sequence_id, header.header.fragment_id, rest);
  }
  return fail({Errc::bad_term, "distribution header of no known kind"});
}

MessageReader::Outcome MessageReader::start_sequence(std::uint64_t sequence, std::uint64_t fragment_id,
                                                     std::span<const std::uint8_t> rest) {
  if (fragment_id == 0)
    return fail({Errc::bad_fragment, "sequence " + std::to_string(sequence) + " starts at fragment 0"});
  if (fragment_id == 1) return decode(rest, &refs_);  // a message in one fragment
  if (partials_.contains(sequence))
    return fail({Errc::bad_fragment, "sequence " + std::to_string(sequence) + " started twice"});
  if (partials_.size() >= limits_.max_partial_sequences)
    return fail({Errc::fragment_limit, std::to_string(partials_.size()) + " partial messages"});
  const std::size_t budget = limits_.max_partial_bytes - partial_bytes_;
  if (rest.size() > budget)
    return fail({Errc::fragment_limit, std::to_string(partial_bytes_ + rest.size()) + " bytes of partial messages"});
  Partial& partial = partials_[sequence];
  partial.refs = refs_;
  // Room for all the fragments announced, if they are the size of the first (OTP's are,
  // but the last): a 1 MB message is then copied once, not again at each doubling of its
  // buffer. Only for a message the limit would take whole, and only while the room
  // reserved and not yet filled stays within max_room_ahead: fragments that announce
  // more than comes cannot make the reader hold more than its limits say.
  if (!rest.empty() && fragment_id <= budget / rest.size()) {
    const std::size_t announced = static_cast<std::size_t>(fragment_id) * rest.size();
    const std::size_t ahead = reserved_bytes_ - partial_bytes_;
    if (announced - rest.size() <= limits_.max_room_ahead - std::min(ahead, limits_.max_room_ahead)) {
      partial.bytes.reserve(announced);
    }
  }
  partial.bytes.assign(rest.begin(), rest.end());
  partial.next_fragment_id = fragment_id - 1;
  partial_bytes_ += rest.size();
  reserved_bytes_ += partial.bytes.capacity();
  return {};
}

MessageReader::Outcome MessageReader::continue_sequence(std::uint64_t sequence, std::uint64_t fragment_id,
                                                        std::span<const std::uint8_t> rest) {
  const auto found = partials_.find(sequence);
  if (found == partials_.end())
    return fail({Errc::bad_fragment, "a continuation of sequence " + std::to_string(sequence) + ", never started"});
  Partial& partial = found->second;
  if (fragment_id != partial.next_fragment_id)
    return fail({Errc::bad_fragment, "sequence " + std::to_string(sequence) + ": fragment " +
                                         std::to_string(fragment_id) + " where " +
                                         std::to_string(partial.next_fragment_id) + " was due"});
  if (rest.size() > limits_.max_partial_bytes - partial_bytes_)
    return fail({Errc::fragment_limit, std::to_string(partial_bytes_ + rest.size()) + " bytes of partial messages"});
  const std::size_t held = partial.bytes.capacity();
  partial.bytes.insert(partial.bytes.end(), rest.begin(), rest.end());
  partial_bytes_ += rest.size();
  reserved_bytes_ += partial.bytes.capacity() - held;
  if (fragment_id > 1) {
    partial.next_fragment_id = fragment_id - 1;
    return {};
  }
  Partial complete = std::move(partial);
  partials_.erase(found);
  partial_bytes_ -= complete.bytes.size();
  reserved_bytes_ -= complete.bytes.capacity();
  return decode(complete.bytes, &complete.refs);
}

// The control tuple, straight into its elements (control_elements.hpp), then the payload
// term if any bytes are left. `refs` null: the pass-through form, where each term is a
// whole external term (131 ...).
MessageReader::Outcome MessageReader::decode(std::span<const std::uint8_t> bytes, const etf::AtomCacheRefs* refs) {
  etf::DecodeOptions options{.limits = limits_.terms, .allow_trailing_bytes = true, .atom_cache_refs = refs};
  // A peer may be OTP 27 or later, for which 0.0 and -0.0 are two map keys.
  const etf::TermBuilder::Options terms{.zero_signs_apart = true};
  auto decode_one = [&](std::span<const std::uint8_t> input, auto& visitor) {
    return refs != nullptr ? etf::decode_body(input, visitor, options) : etf::decode(input, visitor, options);
  };
  // The elements go once the message is read, or refused: a control tuple is a few elements,
  // and the room a hostile one of millions took is not kept for the connection's life.
  struct Release {
    std::vector<detail::ControlElement>& elements;
    ~Release() {
      elements.clear();
      if (elements.capacity() > kept_elements) std::vector<detail::ControlElement>().swap(elements);
    }
  } release{elements_};
  detail::ControlTupleReader tuple(elements_, terms);
  const auto control = decode_one(bytes, tuple);
  if (!control) return fail({Errc::bad_term, term_error("control message", *control.error)});
  std::optional<etf::Term> payload;
  if (control.end < bytes.size()) {
    options.allow_trailing_bytes = false;
    const auto rest = bytes.subspan(control.end);
    etf::TermBuilder builder(terms);
    const auto message = decode_one(rest, builder);
    if (!message) {
      // decode_body stops after one term: bytes past it are the peer's, not ours.
      if (message.error->code == etf::Errc::trailing_bytes)
        return fail({Errc::bad_control, std::to_string(message.error->detail) + " bytes after the payload"});
      return fail({Errc::bad_term, term_error("payload", *message.error)});
    }
    if (message.end != rest.size())
      return fail({Errc::bad_control, std::to_string(rest.size() - message.end) + " bytes after the payload"});
    payload = builder.take();
  }
  auto typed = tuple.was_tuple() ? detail::control_from_elements(elements_, std::move(payload))
                                 : control_from_terms(tuple.take_whole(), std::move(payload));
  if (!typed) return fail(std::move(*typed.error));
  return {std::move(typed.control), std::nullopt};
}

}  // namespace camlbeam::dist
