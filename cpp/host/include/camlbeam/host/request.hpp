// What a transport hands the host (a request, read from wherever its terms are) and what
// it gets back (the answer, as OCaml values it writes to wherever its terms go).
//
//   transport bytes/terms --RequestSource--> Erl.Term.t --Host::run--> Answer (rooted)
//   Answer --conv::walk_ocaml into the transport's term sink--> reply
//
// The port and node transports read and write ETF (etf_request.hpp); the NIF reads
// ERL_NIF_TERMs and builds them. Nothing here knows which.
#pragma once

#include <camlbeam/conv/conv.hpp>
#include <camlbeam/host/error.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace camlbeam::host {

// The start of a request that is a tuple whose first element is an atom: {Tag, ...} of
// `arity` elements. The host tells from it alone whether the request carries a Ref.
struct RequestHead {
  std::string_view tag;  // valid as long as the source's terms are
  std::size_t arity = 0;
};

// One request, as its transport has it. Read on the runtime thread, while Host::run runs;
// the terms it reads stay where they are until then (OCaml may run transport code in the
// middle of the conversion: Erl.call_erlang reads more input).
class RequestSource {
 public:
  virtual ~RequestSource() = default;

  // The whole request converted into an Erl.Term.t, driving conv::OcamlBuilder: unrooted,
  // valid until the next allocation on the OCaml heap (Host::run hands it to OCaml at
  // once). std::bad_alloc propagates.
  virtual conv::UnrootedDecode to_ocaml() = 0;

  // The request's tag and arity, read without converting anything: nullopt when it is not
  // a tuple starting with an atom (or cannot be read that far).
  virtual std::optional<RequestHead> head() const noexcept = 0;
};

// What Host::run made of a request: a reply to write, nothing, or a refusal.
//
// A reply's Ref and answer are OCaml values rooted by the Answer (conv::Root): they stay
// valid across OCaml allocations until the Answer is destroyed, which must happen on the
// runtime thread. The transport walks them into its term sink (conv::walk_ocaml), in the
// layout and within the size limits of its own wire: write_etf_reply for ETF.
class Answer {
 public:
  enum class Kind : std::uint8_t {
    reply,     // ref() and term(): send {Ref, Answer} (or the transport's layout of it)
    no_reply,  // a cast ran: nothing to send; diagnostic() says why it failed, if it did
    refused,   // no reply can be made: error() says why (the transport may still answer
               // the request's Ref, which the host finds: Host::ref_index)
  };

  static Answer reply(value reply_block);
  static Answer no_reply(std::string diagnostic = {});
  static Answer refused(Error error);

  Kind kind() const noexcept { return kind_; }
  bool is_reply() const noexcept { return kind_ == Kind::reply; }
  // Kind::reply only. Out of line: inlined, GCC sees the Val_unit of an empty Root and
  // warns of Field(Val_unit, 1) on the paths where kind() is not reply.
  value ref() const noexcept;
  value term() const noexcept;
  // Kind::no_reply: why the cast failed ({error, Reason}, shortened), or empty.
  const std::string& diagnostic() const noexcept { return diagnostic_; }
  // Kind::refused.
  const std::optional<Error>& error() const noexcept { return error_; }

 private:
  Kind kind_ = Kind::refused;
  conv::Root reply_;  // Erl_host.Reply (ref, answer)
  std::string diagnostic_;
  std::optional<Error> error_;
};

}  // namespace camlbeam::host
