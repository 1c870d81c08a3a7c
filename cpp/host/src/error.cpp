#include <camlbeam/host/error.hpp>

namespace camlbeam::host {

std::string_view to_string(Errc code) noexcept {
  switch (code) {
    case Errc::bad_etf: return "bad_etf";
    case Errc::bad_request: return "bad_request";
    case Errc::bad_reply: return "bad_reply";
    case Errc::reply_too_large: return "reply_too_large";
    case Errc::handler_failed: return "handler_failed";
    case Errc::cancelled: return "cancelled";
    case Errc::wrong_thread: return "wrong_thread";
    case Errc::runtime_released: return "runtime_released";
    case Errc::enoent: return "enoent";
    case Errc::not_a_plugin: return "not_a_plugin";
    case Errc::incompatible: return "incompatible";
    case Errc::already_loaded: return "already_loaded";
    case Errc::init_failed: return "init_failed";
  }
  return "unknown";
}

}  // namespace camlbeam::host
