#include <camlbeam/dist/error.hpp>

namespace camlbeam::dist {

std::string_view to_string(Errc code) noexcept {
  switch (code) {
    case Errc::timeout: return "timeout";
    case Errc::connection_closed: return "connection closed by the peer";
    case Errc::connect_failed: return "connect failed";
    case Errc::unknown_host: return "unknown host";
    case Errc::socket_error: return "socket error";
    case Errc::epmd_unreachable: return "no EPMD answers";
    case Errc::epmd_bad_reply: return "malformed EPMD reply";
    case Errc::name_taken: return "node name already registered in EPMD";
    case Errc::frame_too_long: return "declared length above the limit";
    case Errc::truncated: return "message shorter than its fields";
    case Errc::unexpected_message: return "unexpected message";
    case Errc::bad_status: return "unknown handshake status";
    case Errc::bad_name: return "invalid node name";
    case Errc::wrong_peer: return "peer answered with another node name";
    case Errc::missing_flags: return "peer lacks mandatory distribution flags";
    case Errc::name_me_refused: return "NAME_ME (dynamic node name) not supported";
    case Errc::bad_digest: return "digest mismatch (wrong cookie)";
    case Errc::refused_nok: return "peer refused: nok (simultaneous connect)";
    case Errc::refused_not_allowed: return "peer refused: not_allowed";
    case Errc::refused_alive: return "peer has a connection already (alive)";
    case Errc::no_cookie: return "no cookie";
    case Errc::bad_cookie_file: return "unusable cookie file";
    case Errc::peer_silent: return "peer silent past the tick timeout";
    case Errc::send_queue_full: return "peer does not read: send queue over its bound";
    case Errc::closed_locally: return "connection closed by this node";
    case Errc::replaced: return "replaced by a new connection from the peer";
    case Errc::bad_state: return "operation not valid in this state";
    case Errc::crypto_failed: return "OpenSSL failed";
    case Errc::bad_term: return "malformed term or distribution header";
    case Errc::bad_control: return "malformed control message";
    case Errc::bad_fragment: return "fragment out of sequence";
    case Errc::fragment_limit: return "partial messages past the limit";
    case Errc::bad_optfile: return "malformed ssl_dist_optfile";
    case Errc::unsupported_tls_option: return "TLS option not supported";
    case Errc::tls_config: return "unusable TLS certificate, key or CA file";
    case Errc::tls_failed: return "TLS failed";
  }
  return "unknown error";
}

std::string Error::message() const {
  std::string out(to_string(code));
  if (!detail.empty()) {
    out += ": ";
    out += detail;
  }
  return out;
}

DistError::DistError(Error error) : std::runtime_error(error.message()), error_(std::move(error)) {}

}  // namespace camlbeam::dist
