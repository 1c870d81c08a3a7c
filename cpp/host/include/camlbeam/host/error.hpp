// What the host reports when it cannot answer: typed codes for programs, messages for people.
#pragma once

#include <camlbeam/etf/error.hpp>

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

namespace camlbeam::host {

enum class Errc : std::uint8_t {
  // Host::run refused the request: nothing can be sent back.
  bad_etf,           // the request is not valid ETF (Error::decode says where)
  bad_request,       // valid ETF, but no request and no Ref to answer (or a malformed cast)
  bad_reply,         // the request's Ref itself cannot be encoded
  reply_too_large,   // even {Ref, {error, {reply_too_large, ...}}} exceeds the limit: a huge Ref
  handler_failed,    // the OCaml handler raised: an asynchronous exception (a signal handler's,
                     // Out_of_memory, Stack_overflow), in the handler or in a conversion
  cancelled,         // the same with Erl.Cancelled: the request's deadline passed
  // Misuse: the call did not reach OCaml.
  wrong_thread,      // not the thread that started the Runtime
  runtime_released,  // inside a BlockingSection
  // Host::load, and the Kind of {load_failed, Kind, Message} (same names).
  enoent,            // no such file
  not_a_plugin,      // not a plugin for this kind of host (.cmxs native, .cma/.cmo bytecode)
  incompatible,      // built against other versions of the units it uses, or needs a missing one
  already_loaded,    // a unit of that name is already in the program
  init_failed,       // the plugin's initialisation raised
};

std::string_view to_string(Errc code) noexcept;

struct Error {
  Errc code;
  std::string message;
  std::optional<etf::DecodeError> decode;  // for Errc::bad_etf

  friend bool operator==(const Error&, const Error&) = default;
};

// Misuse of the runtime itself, reported by constructors: a second Runtime, an OCaml
// initialiser that raised at start-up, a host executable linked without camlbeam.host.
class RuntimeError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace camlbeam::host
