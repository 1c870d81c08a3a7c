// The control messages of Erlang distribution (erl_dist_protocol, "Protocol
// between Connected Nodes"), typed: one struct per operation, and `Control`,
// the variant of them all.
//
// Each struct lists, once, how it sits in its control tuple (`fields`: the
// member pointers in tuple order after the operation number, `unused` for the
// slot OTP fills with '') and which member is the term that follows the tuple
// in the same frame (`payload`). decode and encode are written once over that
// description (control.cpp), so an operation is added by adding its struct to
// the variant, not by writing a parser and a writer for it.
//
// Reading frames (pass-through, atom cache headers, fragments) is
// message_reader.hpp; writing them is encode_frame() below.
#pragma once

#include <camlbeam/dist/error.hpp>
#include <camlbeam/dist/flags.hpp>
#include <camlbeam/etf/encoder.hpp>
#include <camlbeam/etf/term.hpp>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <tuple>
#include <variant>

namespace camlbeam::dist {

// The operation numbers (DOP_* in OTP's dist.h).
enum class Op : std::uint8_t {
  link = 1,
  send = 2,
  exit = 3,
  unlink = 4,
  node_link = 5,
  reg_send = 6,
  group_leader = 7,
  exit2 = 8,
  send_tt = 12,
  exit_tt = 13,
  reg_send_tt = 16,
  exit2_tt = 18,
  monitor_p = 19,
  demonitor_p = 20,
  monitor_p_exit = 21,
  send_sender = 22,
  send_sender_tt = 23,
  payload_exit = 24,
  payload_exit_tt = 25,
  payload_exit2 = 26,
  payload_exit2_tt = 27,
  payload_monitor_p_exit = 28,
  spawn_request = 29,
  spawn_request_tt = 30,
  spawn_reply = 31,
  spawn_reply_tt = 32,
  alias_send = 33,
  alias_send_tt = 34,
  unlink_id = 35,
  unlink_id_ack = 36,
  altact_sig_send = 37,
};

// A process as monitors name it: its pid, or the name it is registered under on
// its node (erlang:monitor(process, {Name, Node}) sends the name).
using ProcessRef = std::variant<etf::Pid, etf::Atom>;
// What SPAWN_REPLY reports: the new process, or why there is none (an atom such
// as system_limit or badopt).
using SpawnResult = std::variant<etf::Pid, etf::Atom>;
// Where ALTACT_SIG_SEND delivers: a pid, a registered name, or an alias.
using SignalTarget = std::variant<etf::Pid, etf::Atom, etf::Reference>;

// {Module, Function, Arity} of SPAWN_REQUEST.
struct Mfa {
  etf::Atom module;
  etf::Atom function;
  std::uint8_t arity = 0;
};

// The slot of a control tuple OTP writes as '' and ignores on reading (once a
// cookie).
struct UnusedSlot {};
inline constexpr UnusedSlot unused{};

// The ALTACT_SIG_SEND flags (OTP 28, ERTS_DOP_ALTACT_SIG_FLG_* in dist.h).
namespace altact {
inline constexpr std::uint64_t prio = 1 << 0;   // a priority message
inline constexpr std::uint64_t token = 1 << 1;  // the tuple ends with a trace token
inline constexpr std::uint64_t alias = 1 << 2;  // To is an alias (a reference)
inline constexpr std::uint64_t name = 1 << 3;   // To is a registered name
inline constexpr std::uint64_t exit = 1 << 4;   // the payload is an exit reason, not a message
}  // namespace altact

// Each struct: its fields in wire order, then its description. `needs` is the
// flag the peer must have offered for us to send it (0: always allowed).
#define CAMLBEAM_CONTROL(Number, Needs)             \
  static constexpr Op op = Op::Number;              \
  static constexpr std::string_view name = #Number; \
  static constexpr std::uint64_t needs = Needs

// In a namespace of their own: `Link`, `Exit` ... are also the names of other
// things (connection.hpp's Link is the connected socket).
namespace control {

struct Link {
  etf::Pid from, to;
  CAMLBEAM_CONTROL(link, 0);
  static constexpr auto fields = std::tuple{&Link::from, &Link::to};
};
struct Send {
  etf::Pid to;
  etf::Term message;
  CAMLBEAM_CONTROL(send, 0);
  static constexpr auto fields = std::tuple{unused, &Send::to};
  static constexpr auto payload = &Send::message;
};
struct Exit {
  etf::Pid from, to;
  etf::Term reason;
  CAMLBEAM_CONTROL(exit, 0);
  static constexpr auto fields = std::tuple{&Exit::from, &Exit::to, &Exit::reason};
};
// The old link protocol; OTP 26 and later speak UNLINK_ID instead.
struct Unlink {
  etf::Pid from, to;
  CAMLBEAM_CONTROL(unlink, 0);
  static constexpr auto fields = std::tuple{&Unlink::from, &Unlink::to};
};
struct NodeLink {
  CAMLBEAM_CONTROL(node_link, 0);
  static constexpr auto fields = std::tuple{};
};
struct RegSend {
  etf::Pid from;
  etf::Atom to_name;
  etf::Term message;
  CAMLBEAM_CONTROL(reg_send, 0);
  static constexpr auto fields = std::tuple{&RegSend::from, unused, &RegSend::to_name};
  static constexpr auto payload = &RegSend::message;
};
struct GroupLeader {
  etf::Pid from, to;
  CAMLBEAM_CONTROL(group_leader, 0);
  static constexpr auto fields = std::tuple{&GroupLeader::from, &GroupLeader::to};
};
struct Exit2 {
  etf::Pid from, to;
  etf::Term reason;
  CAMLBEAM_CONTROL(exit2, 0);
  static constexpr auto fields = std::tuple{&Exit2::from, &Exit2::to, &Exit2::reason};
};
struct SendTT {
  etf::Pid to;
  etf::Term trace_token;
  etf::Term message;
  CAMLBEAM_CONTROL(send_tt, 0);
  static constexpr auto fields = std::tuple{unused, &SendTT::to, &SendTT::trace_token};
  static constexpr auto payload = &SendTT::message;
};
struct ExitTT {
  etf::Pid from, to;
  etf::Term trace_token;
  etf::Term reason;
  CAMLBEAM_CONTROL(exit_tt, 0);
  static constexpr auto fields = std::tuple{&ExitTT::from, &ExitTT::to, &ExitTT::trace_token, &ExitTT::reason};
};
struct RegSendTT {
  etf::Pid from;
  etf::Atom to_name;
  etf::Term trace_token;
  etf::Term message;
  CAMLBEAM_CONTROL(reg_send_tt, 0);
  static constexpr auto fields = std::tuple{&RegSendTT::from, unused, &RegSendTT::to_name, &RegSendTT::trace_token};
  static constexpr auto payload = &RegSendTT::message;
};
struct Exit2TT {
  etf::Pid from, to;
  etf::Term trace_token;
  etf::Term reason;
  CAMLBEAM_CONTROL(exit2_tt, 0);
  static constexpr auto fields = std::tuple{&Exit2TT::from, &Exit2TT::to, &Exit2TT::trace_token, &Exit2TT::reason};
};
struct MonitorP {
  etf::Pid from;
  ProcessRef to;
  etf::Reference ref;
  CAMLBEAM_CONTROL(monitor_p, flag::dist_monitor);
  static constexpr auto fields = std::tuple{&MonitorP::from, &MonitorP::to, &MonitorP::ref};
};
struct DemonitorP {
  etf::Pid from;
  ProcessRef to;
  etf::Reference ref;
  CAMLBEAM_CONTROL(demonitor_p, flag::dist_monitor);
  static constexpr auto fields = std::tuple{&DemonitorP::from, &DemonitorP::to, &DemonitorP::ref};
};
struct MonitorPExit {
  ProcessRef from;
  etf::Pid to;
  etf::Reference ref;
  etf::Term reason;
  CAMLBEAM_CONTROL(monitor_p_exit, flag::dist_monitor);
  static constexpr auto fields =
      std::tuple{&MonitorPExit::from, &MonitorPExit::to, &MonitorPExit::ref, &MonitorPExit::reason};
};
struct SendSender {
  etf::Pid from, to;
  etf::Term message;
  CAMLBEAM_CONTROL(send_sender, flag::send_sender);
  static constexpr auto fields = std::tuple{&SendSender::from, &SendSender::to};
  static constexpr auto payload = &SendSender::message;
};
struct SendSenderTT {
  etf::Pid from, to;
  etf::Term trace_token;
  etf::Term message;
  CAMLBEAM_CONTROL(send_sender_tt, flag::send_sender);
  static constexpr auto fields = std::tuple{&SendSenderTT::from, &SendSenderTT::to, &SendSenderTT::trace_token};
  static constexpr auto payload = &SendSenderTT::message;
};
struct PayloadExit {
  etf::Pid from, to;
  etf::Term reason;
  CAMLBEAM_CONTROL(payload_exit, flag::exit_payload);
  static constexpr auto fields = std::tuple{&PayloadExit::from, &PayloadExit::to};
  static constexpr auto payload = &PayloadExit::reason;
};
struct PayloadExitTT {
  etf::Pid from, to;
  etf::Term trace_token;
  etf::Term reason;
  CAMLBEAM_CONTROL(payload_exit_tt, flag::exit_payload);
  static constexpr auto fields = std::tuple{&PayloadExitTT::from, &PayloadExitTT::to, &PayloadExitTT::trace_token};
  static constexpr auto payload = &PayloadExitTT::reason;
};
struct PayloadExit2 {
  etf::Pid from, to;
  etf::Term reason;
  CAMLBEAM_CONTROL(payload_exit2, flag::exit_payload);
  static constexpr auto fields = std::tuple{&PayloadExit2::from, &PayloadExit2::to};
  static constexpr auto payload = &PayloadExit2::reason;
};
struct PayloadExit2TT {
  etf::Pid from, to;
  etf::Term trace_token;
  etf::Term reason;
  CAMLBEAM_CONTROL(payload_exit2_tt, flag::exit_payload);
  static constexpr auto fields = std::tuple{&PayloadExit2TT::from, &PayloadExit2TT::to, &PayloadExit2TT::trace_token};
  static constexpr auto payload = &PayloadExit2TT::reason;
};
struct PayloadMonitorPExit {
  ProcessRef from;
  etf::Pid to;
  etf::Reference ref;
  etf::Term reason;
  CAMLBEAM_CONTROL(payload_monitor_p_exit, flag::exit_payload);
  static constexpr auto fields =
      std::tuple{&PayloadMonitorPExit::from, &PayloadMonitorPExit::to, &PayloadMonitorPExit::ref};
  static constexpr auto payload = &PayloadMonitorPExit::reason;
};
struct SpawnRequest {
  etf::Reference request_id;
  etf::Pid from;
  etf::Pid group_leader;
  Mfa mfa;
  etf::Term options;  // a list: link, monitor, {opt, ...}
  etf::Term args;     // a list of mfa.arity terms
  CAMLBEAM_CONTROL(spawn_request, flag::spawn);
  static constexpr auto fields = std::tuple{&SpawnRequest::request_id, &SpawnRequest::from, &SpawnRequest::group_leader,
                                            &SpawnRequest::mfa, &SpawnRequest::options};
  static constexpr auto payload = &SpawnRequest::args;
};
struct SpawnRequestTT {
  etf::Reference request_id;
  etf::Pid from;
  etf::Pid group_leader;
  Mfa mfa;
  etf::Term options;
  etf::Term trace_token;
  etf::Term args;
  CAMLBEAM_CONTROL(spawn_request_tt, flag::spawn);
  static constexpr auto fields =
      std::tuple{&SpawnRequestTT::request_id, &SpawnRequestTT::from,    &SpawnRequestTT::group_leader,
                 &SpawnRequestTT::mfa,        &SpawnRequestTT::options, &SpawnRequestTT::trace_token};
  static constexpr auto payload = &SpawnRequestTT::args;
};
// Flags: 1 the new process is linked to `to`, 2 monitored by it.
struct SpawnReply {
  etf::Reference request_id;
  etf::Pid to;
  std::uint64_t flags = 0;
  SpawnResult result;
  CAMLBEAM_CONTROL(spawn_reply, flag::spawn);
  static constexpr auto fields =
      std::tuple{&SpawnReply::request_id, &SpawnReply::to, &SpawnReply::flags, &SpawnReply::result};
};
struct SpawnReplyTT {
  etf::Reference request_id;
  etf::Pid to;
  std::uint64_t flags = 0;
  SpawnResult result;
  etf::Term trace_token;
  CAMLBEAM_CONTROL(spawn_reply_tt, flag::spawn);
  static constexpr auto fields = std::tuple{&SpawnReplyTT::request_id, &SpawnReplyTT::to, &SpawnReplyTT::flags,
                                            &SpawnReplyTT::result, &SpawnReplyTT::trace_token};
};
struct AliasSend {
  etf::Pid from;
  etf::Reference alias;
  etf::Term message;
  CAMLBEAM_CONTROL(alias_send, flag::alias);
  static constexpr auto fields = std::tuple{&AliasSend::from, &AliasSend::alias};
  static constexpr auto payload = &AliasSend::message;
};
struct AliasSendTT {
  etf::Pid from;
  etf::Reference alias;
  etf::Term trace_token;
  etf::Term message;
  CAMLBEAM_CONTROL(alias_send_tt, flag::alias);
  static constexpr auto fields = std::tuple{&AliasSendTT::from, &AliasSendTT::alias, &AliasSendTT::trace_token};
  static constexpr auto payload = &AliasSendTT::message;
};
// The new link protocol: an UNLINK_ID must be answered by UNLINK_ID_ACK (same
// id, from/to swapped) before any other signal to its sender.
struct UnlinkId {
  std::uint64_t id = 0;
  etf::Pid from, to;
  CAMLBEAM_CONTROL(unlink_id, flag::unlink_id);
  static constexpr auto fields = std::tuple{&UnlinkId::id, &UnlinkId::from, &UnlinkId::to};
};
struct UnlinkIdAck {
  std::uint64_t id = 0;
  etf::Pid from, to;
  CAMLBEAM_CONTROL(unlink_id_ack, flag::unlink_id);
  static constexpr auto fields = std::tuple{&UnlinkIdAck::id, &UnlinkIdAck::from, &UnlinkIdAck::to};
};
// OTP 28: {37, Flags, From, To[, Token]} + message (or exit reason with
// altact::exit). The token is there exactly when flags has altact::token;
// decode checks that, encode trusts it.
struct AltactSigSend {
  std::uint64_t flags = 0;
  etf::Pid from;
  SignalTarget to;
  std::optional<etf::Term> trace_token;
  etf::Term message;
  CAMLBEAM_CONTROL(altact_sig_send, flag::altact_sig);
  static constexpr auto fields =
      std::tuple{&AltactSigSend::flags, &AltactSigSend::from, &AltactSigSend::to, &AltactSigSend::trace_token};
  static constexpr auto payload = &AltactSigSend::message;
};

}  // namespace control

#undef CAMLBEAM_CONTROL

using Control =
    std::variant<control::Link, control::Send, control::Exit, control::Unlink, control::NodeLink, control::RegSend,
                 control::GroupLeader, control::Exit2, control::SendTT, control::ExitTT, control::RegSendTT,
                 control::Exit2TT, control::MonitorP, control::DemonitorP, control::MonitorPExit, control::SendSender,
                 control::SendSenderTT, control::PayloadExit, control::PayloadExitTT, control::PayloadExit2,
                 control::PayloadExit2TT, control::PayloadMonitorPExit, control::SpawnRequest, control::SpawnRequestTT,
                 control::SpawnReply, control::SpawnReplyTT, control::AliasSend, control::AliasSendTT,
                 control::UnlinkId, control::UnlinkIdAck, control::AltactSigSend>;

Op op_of(const Control& control) noexcept;
std::string_view name_of(Op op) noexcept;  // "link", "send_tt" ...; "" when unknown

// Whether an operation carries a term after its control tuple.
bool has_payload(Op op) noexcept;

// A control tuple (and, for operations that have one, the payload term after
// it) to its typed form: bad_control when the tuple is none, or the arity, a
// field or the payload is wrong. `payload` is nullopt when the frame ended
// after the tuple.
struct ControlResult {
  std::optional<Control> control;
  std::optional<Error> error;
  explicit operator bool() const noexcept { return control.has_value(); }
};
ControlResult control_from_terms(etf::Term tuple, std::optional<etf::Term> payload);

// The control tuple of a message, and its payload term (nullopt when it has
// none).
etf::Term control_tuple(const Control& control);
const etf::Term* payload_of(const Control& control) noexcept;

// Appends the body of one data frame (what goes after the 4-byte length)
// carrying `control`: `131 68 0` (a distribution header with no atom cache
// references) when DIST_HDR_ATOM_CACHE is negotiated, otherwise `112`
// (pass-through), then the control tuple and its payload. Returns an error, and
// appends nothing, when the negotiated flags lack what the operation needs
// (bad_state: the caller must not send it), or a term cannot be encoded
// (bad_term).
std::optional<Error> encode_frame(const Control& control, std::uint64_t negotiated_flags, etf::ByteBuffer& out);

}  // namespace camlbeam::dist
