// What the live Endpoint tests read and write: 'p' frames (no atom cache header), and the
// answer to net_adm:ping's is_auth call.
#pragma once

#include <camlbeam/etf/etf.hpp>

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

namespace camlbeam::dist::live {

constexpr std::uint8_t pass_through = 112;  // 'p': a frame without a distribution header

// A frame without DIST_HDR_ATOM_CACHE: 'p', the control tuple, the message if any.
struct PassThrough {
  etf::Term control;
  std::optional<etf::Term> message;
};

inline std::optional<PassThrough> parse_frame(std::span<const std::uint8_t> frame) {
  if (frame.empty() || frame[0] != pass_through) return std::nullopt;
  PassThrough out;
  etf::TermBuilder builder;
  etf::DecodeOptions first_of_two;  // the message follows the control tuple
  first_of_two.allow_trailing_bytes = true;
  const auto control = etf::decode(frame.subspan(1), builder, first_of_two);
  if (!control) return std::nullopt;
  out.control = builder.take();
  const auto rest = frame.subspan(1 + control.end);
  if (!rest.empty()) {
    etf::TermBuilder message_builder;
    if (!etf::decode(rest, message_builder)) return std::nullopt;
    out.message = message_builder.take();
  }
  return out;
}

inline std::vector<std::uint8_t> make_frame(const etf::Term& control, const etf::Term& message) {
  std::vector<std::uint8_t> out{pass_through};
  for (const auto& term : {&control, &message}) {
    const auto bytes = etf::encode(*term);
    out.insert(out.end(), bytes.begin(), bytes.end());
  }
  return out;
}

// net_kernel's {'$gen_call', {From, Tag}, {is_auth, Node}} (what net_adm:ping sends) as a
// REG_SEND: the SEND frame answering it with {Tag, yes}, which makes ping say pong.
inline std::optional<std::vector<std::uint8_t>> answer_is_auth(const PassThrough& f) {
  const auto control = f.control.tuple_elements();
  if (control.size() != 4 || control[0].as_int64() != 6 || !control[3].is_atom("net_kernel") || !f.message) {
    return std::nullopt;
  }
  const auto call = f.message->tuple_elements();
  if (call.size() != 3 || !call[0].is_atom("$gen_call")) return std::nullopt;
  const auto from = call[1].tuple_elements();
  const auto request = call[2].tuple_elements();
  if (from.size() != 2 || request.size() != 2 || !request[0].is_atom("is_auth")) return std::nullopt;
  return make_frame(etf::Term::tuple({etf::Term::integer(2), etf::Term::atom(""), from[0]}),
                    etf::Term::tuple({from[1], etf::Term::atom("yes")}));
}

// REG_SEND {6, From, '', Name} + Message: what `{Name, Node} ! Message` sends.
inline std::vector<std::uint8_t> reg_send_frame(const etf::Term& from, std::string_view name, const etf::Term& message) {
  return make_frame(etf::Term::tuple({etf::Term::integer(6), from, etf::Term::atom(""), etf::Term::atom(name)}), message);
}

// The start of an erl script that waits for one message from us: it registers `inbox`,
// says "ready", then "nodeup <our node>" (bound to N) and "got <message>".
inline const char* const erl_inbox_greeting =
    "register(inbox, self()), net_kernel:monitor_nodes(true), io:format(\"ready~n\"),"
    "receive {nodeup, N} -> io:format(\"nodeup ~s~n\", [N]) end,"
    "receive M -> io:format(\"got ~p~n\", [M]) end,";

}  // namespace camlbeam::dist::live
