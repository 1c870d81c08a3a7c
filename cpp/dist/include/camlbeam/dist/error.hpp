// Typed errors of the distribution protocol: programs branch on the code, people read
// message(). The pure parts (handshake, framing) report them as values; the socket and
// EPMD calls throw them inside DistError.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

namespace camlbeam::dist {

enum class Errc : std::uint8_t {
  // Transport
  timeout,               // no answer within the deadline
  connection_closed,     // the peer closed the socket (in the middle of a message, or early)
  connect_failed,        // TCP connect refused or unreachable
  unknown_host,          // the host part of a peer's name resolves to no IPv4 address
  socket_error,          // any other system call error (detail holds errno's text)
  // EPMD
  epmd_unreachable,      // no EPMD answers (and none could be started)
  epmd_bad_reply,        // a reply EPMD never sends: wrong tag, wrong size
  name_taken,            // ALIVE2_X_RESP with a non-zero result
  // Handshake and framing: the peer broke the protocol
  frame_too_long,        // a declared length above the limit
  truncated,             // a message shorter than its fields
  unexpected_message,    // a tag not expected in this state ('n' of old nodes included)
  bad_status,            // a status text no OTP release sends
  bad_name,              // a node name that is not alive@host, or too long
  wrong_peer,            // the acceptor answered with another name than the one we called
  missing_flags,         // the peer lacks flags we require (mandatory for OTP 25, 26+)
  name_me_refused,       // NAME_ME (dynamic node names) asked for: not supported
  bad_digest,            // the challenge reply or ack digest does not match: wrong cookie
  // The peer refused us
  refused_nok,           // status "nok": a simultaneous connect the peer wins
  refused_not_allowed,   // status "not_allowed": our flags or our name are not accepted
  refused_alive,         // status "alive" answered false by us (an older connection stays)
  // Cookie
  no_cookie,             // none given, none in the environment, no cookie file
  bad_cookie_file,       // unreadable, not owner-only, not a regular file, empty or too long
  // Connected phase
  peer_silent,           // nothing received for longer than the tick timeout
  send_queue_full,       // the peer does not read: its queued bytes passed the bound
  closed_locally,        // disconnect() asked for it, or the endpoint is stopping
  replaced,              // the peer connected anew (status alive, answered true)
  bad_state,             // an operation the state machine is not in a state for (caller's bug)
  crypto_failed,         // OpenSSL's MD5 or random generator failed
  // Control messages (control.hpp)
  bad_term,              // a term, or a distribution header, the ETF decoder refuses
  bad_control,           // not a control message: unknown operation, wrong arity or field, payload
                         // missing or in excess, bytes after the message
  bad_fragment,          // a continuation of no sequence, a fragment out of order, a sequence reused
  fragment_limit,        // partial messages held past the bytes or the count allowed
  // TLS distribution (tls.hpp)
  bad_optfile,           // an ssl_dist_optfile that is no term of the subset read, or lacks a file
  unsupported_tls_option,  // an option OTP knows that we do not implement: refused, never ignored
  tls_config,            // OpenSSL refused a certificate, key or CA file
  tls_failed,            // the TLS handshake or a TLS record failed: an untrusted certificate, a
                         // peer that speaks no TLS, an alert (detail: OpenSSL's reason)
};

std::string_view to_string(Errc code) noexcept;

struct Error {
  Errc code = Errc::bad_state;
  std::string detail;  // what was seen: a length, a status text, a name, errno's text

  std::string message() const;
};

class DistError : public std::runtime_error {
 public:
  explicit DistError(Error error);
  DistError(Errc code, std::string detail) : DistError(Error{code, std::move(detail)}) {}
  Errc code() const noexcept { return error_.code; }
  const Error& error() const noexcept { return error_; }

 private:
  Error error_;
};

}  // namespace camlbeam::dist
