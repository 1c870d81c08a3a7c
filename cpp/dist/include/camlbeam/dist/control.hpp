// The control messages of Erlang distribution (erl_dist_protocol, "Protocol between
// Connected Nodes"), typed: one struct per operation, and `Control`, the variant of them all.
//
// Each struct lists, once, how it sits in its control tuple (`fields`: the member pointers
// in tuple order after the operation number, `unused` for the slot OTP fills with '') and
// which member is the term that follows the tuple in the same frame (`payload`). Decoding
// and encoding are written once over that description (control.cpp), so an operation is
// added by adding its struct to the variant, not by writing a parser and a writer for it.
// Operations whose tuples have the same layout share one template.
//
// Reading frames (pass-through, atom cache headers, fragments) is message_reader.hpp;
// writing them is encode_frame() below.
#pragma once

#include <camlbeam/dist/error.hpp>
#include <camlbeam/dist/flags.hpp>
#include <camlbeam/etf/encoder.hpp>
#include <camlbeam/etf/term.hpp>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string_view>
#include <tuple>
#include <variant>
#include <vector>

namespace camlbeam::dist {

// The operations (DOP_* in OTP's dist.h), listed once: X(name, number) for the enum below
// and for name_of().
// clang-format off
#define CAMLBEAM_DIST_OPERATIONS(X) \
  X(link, 1) \
  X(send, 2) \
  X(exit, 3) \
  X(unlink, 4) \
  X(node_link, 5) \
  X(reg_send, 6) \
  X(group_leader, 7) \
  X(exit2, 8) \
  X(send_tt, 12) \
  X(exit_tt, 13) \
  X(reg_send_tt, 16) \
  X(exit2_tt, 18) \
  X(monitor_p, 19) \
  X(demonitor_p, 20) \
  X(monitor_p_exit, 21) \
  X(send_sender, 22) \
  X(send_sender_tt, 23) \
  X(payload_exit, 24) \
  X(payload_exit_tt, 25) \
  X(payload_exit2, 26) \
  X(payload_exit2_tt, 27) \
  X(payload_monitor_p_exit, 28) \
  X(spawn_request, 29) \
  X(spawn_request_tt, 30) \
  X(spawn_reply, 31) \
  X(spawn_reply_tt, 32) \
  X(alias_send, 33) \
  X(alias_send_tt, 34) \
  X(unlink_id, 35) \
  X(unlink_id_ack, 36) \
  X(altact_sig_send, 37)
// clang-format on

enum class Op : std::uint8_t {
#define CAMLBEAM_DIST_OP_ENUMERATOR(name, number) name = number,
  CAMLBEAM_DIST_OPERATIONS(CAMLBEAM_DIST_OP_ENUMERATOR)
#undef CAMLBEAM_DIST_OP_ENUMERATOR
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

// Each struct: its fields in wire order, then its description. `needs` is the flag the peer
// must have offered for us to send it (0: always allowed).
#define CAMLBEAM_CONTROL(Number, Needs) \
  static constexpr Op op = Number;      \
  static constexpr std::uint64_t needs = Needs

// In a namespace of their own: `Link`, `Exit` ... are also the names of other things
// (connection.hpp's Link is the connected socket).
namespace control {

// {Op, From, To}: LINK, UNLINK (the old link protocol; OTP 26 and later speak UNLINK_ID),
// GROUP_LEADER.
template <Op Number>
struct FromTo {
  etf::Pid from, to;
  CAMLBEAM_CONTROL(Number, 0);
  static constexpr auto fields = std::tuple{&FromTo::from, &FromTo::to};
};
using Link = FromTo<Op::link>;
using Unlink = FromTo<Op::unlink>;
using GroupLeader = FromTo<Op::group_leader>;

// {Op, From, To, Reason}: EXIT (a linked process died), EXIT2 (exit/2).
template <Op Number>
struct ExitSignal {
  etf::Pid from, to;
  etf::Term reason;
  CAMLBEAM_CONTROL(Number, 0);
  static constexpr auto fields = std::tuple{&ExitSignal::from, &ExitSignal::to, &ExitSignal::reason};
};
using Exit = ExitSignal<Op::exit>;
using Exit2 = ExitSignal<Op::exit2>;

template <Op Number>
struct ExitSignalTT {
  etf::Pid from, to;
  etf::Term trace_token;
  etf::Term reason;
  CAMLBEAM_CONTROL(Number, 0);
  static constexpr auto fields =
      std::tuple{&ExitSignalTT::from, &ExitSignalTT::to, &ExitSignalTT::trace_token, &ExitSignalTT::reason};
};
using ExitTT = ExitSignalTT<Op::exit_tt>;
using Exit2TT = ExitSignalTT<Op::exit2_tt>;

// {Op, From, To} + Reason: PAYLOAD_EXIT, PAYLOAD_EXIT2 (EXIT_PAYLOAD negotiated).
template <Op Number>
struct PayloadExitSignal {
  etf::Pid from, to;
  etf::Term reason;
  CAMLBEAM_CONTROL(Number, flag::exit_payload);
  static constexpr auto fields = std::tuple{&PayloadExitSignal::from, &PayloadExitSignal::to};
  static constexpr auto payload = &PayloadExitSignal::reason;
};
using PayloadExit = PayloadExitSignal<Op::payload_exit>;
using PayloadExit2 = PayloadExitSignal<Op::payload_exit2>;

template <Op Number>
struct PayloadExitSignalTT {
  etf::Pid from, to;
  etf::Term trace_token;
  etf::Term reason;
  CAMLBEAM_CONTROL(Number, flag::exit_payload);
  static constexpr auto fields =
      std::tuple{&PayloadExitSignalTT::from, &PayloadExitSignalTT::to, &PayloadExitSignalTT::trace_token};
  static constexpr auto payload = &PayloadExitSignalTT::reason;
};
using PayloadExitTT = PayloadExitSignalTT<Op::payload_exit_tt>;
using PayloadExit2TT = PayloadExitSignalTT<Op::payload_exit2_tt>;

// {Op, From, PidOrName, Ref}: MONITOR_P, DEMONITOR_P.
template <Op Number>
struct MonitorSignal {
  etf::Pid from;
  ProcessRef to;
  etf::Reference ref;
  CAMLBEAM_CONTROL(Number, flag::dist_monitor);
  static constexpr auto fields = std::tuple{&MonitorSignal::from, &MonitorSignal::to, &MonitorSignal::ref};
};
using MonitorP = MonitorSignal<Op::monitor_p>;
using DemonitorP = MonitorSignal<Op::demonitor_p>;

// The new link protocol: an UNLINK_ID must be answered by UNLINK_ID_ACK (same id, from/to
// swapped) before any other signal to its sender.
template <Op Number>
struct UnlinkSignal {
  std::uint64_t id = 0;
  etf::Pid from, to;
  CAMLBEAM_CONTROL(Number, flag::unlink_id);
  static constexpr auto fields = std::tuple{&UnlinkSignal::id, &UnlinkSignal::from, &UnlinkSignal::to};
};
using UnlinkId = UnlinkSignal<Op::unlink_id>;
using UnlinkIdAck = UnlinkSignal<Op::unlink_id_ack>;

struct Send {
  etf::Pid to;
  etf::Term message;
  CAMLBEAM_CONTROL(Op::send, 0);
  static constexpr auto fields = std::tuple{unused, &Send::to};
  static constexpr auto payload = &Send::message;
};
struct SendTT {
  etf::Pid to;
  etf::Term trace_token;
  etf::Term message;
  CAMLBEAM_CONTROL(Op::send_tt, 0);
  static constexpr auto fields = std::tuple{unused, &SendTT::to, &SendTT::trace_token};
  static constexpr auto payload = &SendTT::message;
};
struct NodeLink {
  CAMLBEAM_CONTROL(Op::node_link, 0);
  static constexpr auto fields = std::tuple{};
};
struct RegSend {
  etf::Pid from;
  etf::Atom to_name;
  etf::Term message;
  CAMLBEAM_CONTROL(Op::reg_send, 0);
  static constexpr auto fields = std::tuple{&RegSend::from, unused, &RegSend::to_name};
  static constexpr auto payload = &RegSend::message;
};
struct RegSendTT {
  etf::Pid from;
  etf::Atom to_name;
  etf::Term trace_token;
  etf::Term message;
  CAMLBEAM_CONTROL(Op::reg_send_tt, 0);
  static constexpr auto fields = std::tuple{&RegSendTT::from, unused, &RegSendTT::to_name, &RegSendTT::trace_token};
  static constexpr auto payload = &RegSendTT::message;
};
struct MonitorPExit {
  ProcessRef from;
  etf::Pid to;
  etf::Reference ref;
  etf::Term reason;
  CAMLBEAM_CONTROL(Op::monitor_p_exit, flag::dist_monitor);
  static constexpr auto fields =
      std::tuple{&MonitorPExit::from, &MonitorPExit::to, &MonitorPExit::ref, &MonitorPExit::reason};
};
struct PayloadMonitorPExit {
  ProcessRef from;
  etf::Pid to;
  etf::Reference ref;
  etf::Term reason;
  CAMLBEAM_CONTROL(Op::payload_monitor_p_exit, flag::exit_payload);
  static constexpr auto fields =
      std::tuple{&PayloadMonitorPExit::from, &PayloadMonitorPExit::to, &PayloadMonitorPExit::ref};
  static constexpr auto payload = &PayloadMonitorPExit::reason;
};
struct SendSender {
  etf::Pid from, to;
  etf::Term message;
  CAMLBEAM_CONTROL(Op::send_sender, flag::send_sender);
  static constexpr auto fields = std::tuple{&SendSender::from, &SendSender::to};
  static constexpr auto payload = &SendSender::message;
};
struct SendSenderTT {
  etf::Pid from, to;
  etf::Term trace_token;
  etf::Term message;
  CAMLBEAM_CONTROL(Op::send_sender_tt, flag::send_sender);
  static constexpr auto fields = std::tuple{&SendSenderTT::from, &SendSenderTT::to, &SendSenderTT::trace_token};
  static constexpr auto payload = &SendSenderTT::message;
};
struct SpawnRequest {
  etf::Reference request_id;
  etf::Pid from;
  etf::Pid group_leader;
  Mfa mfa;
  etf::Term options;  // a list: link, monitor, {opt, ...}
  etf::Term args;     // a list of mfa.arity terms
  CAMLBEAM_CONTROL(Op::spawn_request, flag::spawn);
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
  CAMLBEAM_CONTROL(Op::spawn_request_tt, flag::spawn);
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
  CAMLBEAM_CONTROL(Op::spawn_reply, flag::spawn);
  static constexpr auto fields =
      std::tuple{&SpawnReply::request_id, &SpawnReply::to, &SpawnReply::flags, &SpawnReply::result};
};
struct SpawnReplyTT {
  etf::Reference request_id;
  etf::Pid to;
  std::uint64_t flags = 0;
  SpawnResult result;
  etf::Term trace_token;
  CAMLBEAM_CONTROL(Op::spawn_reply_tt, flag::spawn);
  static constexpr auto fields = std::tuple{&SpawnReplyTT::request_id, &SpawnReplyTT::to, &SpawnReplyTT::flags,
                                            &SpawnReplyTT::result, &SpawnReplyTT::trace_token};
};
struct AliasSend {
  etf::Pid from;
  etf::Reference alias;
  etf::Term message;
  CAMLBEAM_CONTROL(Op::alias_send, flag::alias);
  static constexpr auto fields = std::tuple{&AliasSend::from, &AliasSend::alias};
  static constexpr auto payload = &AliasSend::message;
};
struct AliasSendTT {
  etf::Pid from;
  etf::Reference alias;
  etf::Term trace_token;
  etf::Term message;
  CAMLBEAM_CONTROL(Op::alias_send_tt, flag::alias);
  static constexpr auto fields = std::tuple{&AliasSendTT::from, &AliasSendTT::alias, &AliasSendTT::trace_token};
  static constexpr auto payload = &AliasSendTT::message;
};
// OTP 28: {37, Flags, From, To[, Token]} + message (or exit reason with
// altact::exit). Read as OTP reads it, with room for later releases: more
// elements are ignored, flags is any non-negative integer whose low byte counts,
// the token is read only when flags has altact::token, and To must be of the
// type the flags say. Written as given: the token exactly when flags says so.
struct AltactSigSend {
  std::uint64_t flags = 0;
  etf::Pid from;
  SignalTarget to;
  std::optional<etf::Term> trace_token;
  etf::Term message;
  CAMLBEAM_CONTROL(Op::altact_sig_send, flag::altact_sig);
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

namespace detail {
// One element of a control tuple as MessageReader reads it (src/control_elements.hpp): a
// scalar in the form the structs' fields take it, or a Term for anything else.
using ControlElement = std::variant<etf::Term, std::int64_t, etf::Atom, etf::Pid, etf::Reference>;
}  // namespace detail

Op op_of(const Control& control) noexcept;
std::string_view name_of(Op op) noexcept;  // "link", "send_tt" ...; "" for no operation

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

// Writes one term, a message's payload, with the writer it is given: for a payload the
// sender has in another form than an etf::Term (camlbeam-node writes an answer straight
// from OCaml values, with no tree between).
using PayloadWriter = std::function<void(etf::Writer&)>;

// encode_frame with the payload written by `write_payload` in place of the control's own
// (which is not read): bad_state for an operation without a payload. An etf::EncodeError it
// throws is bad_term; any other exception propagates, with nothing appended.
std::optional<Error> encode_frame(const Control& control, std::uint64_t negotiated_flags, etf::ByteBuffer& out,
                                  const PayloadWriter& write_payload);

// The fragment size of OTP (ERTS_DIST_FRAGMENT_SIZE in erts/emulator/beam/dist.h).
inline constexpr std::size_t otp_fragment_size = std::size_t{64} << 10;

// The frame bodies of one message, appended to `bodies`: encode_frame's one frame, or, when
// FRAGMENTS and DIST_HDR_ATOM_CACHE are negotiated and the terms are longer than
// `fragment_size` bytes, fragments: `131 69 Sequence N 0` (no atom cache references) then
// `131 70 Sequence N-1` ... down to 1, each with at most `fragment_size` bytes of the terms.
// `sequence_id` must not be that of another message whose fragments are still being sent
// on the connection. Errors as encode_frame's (nothing appended); fragment_size 0 is
// bad_state.
std::optional<Error> encode_frames(const Control& control, std::uint64_t negotiated_flags, std::uint64_t sequence_id,
                                   std::vector<std::vector<std::uint8_t>>& bodies,
                                   std::size_t fragment_size = otp_fragment_size);

}  // namespace camlbeam::dist
