// The port transport: requests read from one pipe, run through host::Host, replies and
// the worker's own frames (Erl.send, Erl.call_erlang, logs, heartbeats) written to the
// other. The wire protocol is in cpp/port/README.md.
#pragma once

#include "frame_io.hpp"

#include <camlbeam/host/etf_request.hpp>
#include <camlbeam/host/host.hpp>
#include <camlbeam/host/request_watch.hpp>
#include <camlbeam/host/runtime.hpp>

#include <caml/mlvalues.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace camlbeam::port {

// The exit status of a worker whose request overran its deadline by the grace period and
// could not be interrupted (timeout(1)'s).
inline constexpr int exit_overdue = 124;

struct PortOptions {
  int in_fd = 3;   // open_port(..., [nouse_stdio]) puts Erlang's end here
  int out_fd = 4;
  // The longest request frame accepted; a longer announced length ends the worker. At most
  // max_frame_limit.
  std::size_t max_request_size = std::size_t{1} << 30;
  // Limits of request and reply frames (max_reply_size also bounds Erl.send; at most
  // max_frame_limit). The reply layout is always the envelope.
  host::EtfOptions etf{};
  // Replies are written once this many bytes wait, or before the worker blocks for input,
  // or, between two requests, once the first of them has waited this long (give or take the
  // coarse clock's tick): a queue of requests each shorter than the watch's tick must not
  // hold its replies until it is drained (Erlang would see no frame for its whole length,
  // and take the worker for stalled).
  std::size_t flush_threshold = std::size_t{64} << 10;
  std::chrono::milliseconds reply_delay{2};
  // A {heartbeat, RunningMs} frame every this much of a request's running time; 0: none.
  std::chrono::milliseconds heartbeat{500};
  // How long a request may run past its deadline before the worker exits (exit_overdue).
  std::chrono::milliseconds cancel_grace{1000};
  // Frames in hand older than this: before the next request the worker reads what the pipe
  // already holds, for cancels of the requests in hand.
  std::chrono::milliseconds stale_input{5};
  // Idle buffers larger than this (grown for a large frame) go back to their usual size.
  std::size_t shrink_buffers_above = std::size_t{4} << 20;
};

// At most one per process, on the runtime thread: the OCaml side reaches it through the
// externals of Erl_port (camlbeam_port_emit, camlbeam_port_await_erl_reply).
class PortWorker {
 public:
  PortWorker(const host::Runtime& runtime, PortOptions options);
  ~PortWorker();
  PortWorker(const PortWorker&) = delete;
  PortWorker& operator=(const PortWorker&) = delete;

  // Serves requests, in the order they arrive, until Erlang closes the pipe. Throws
  // ProtocolError when the framing breaks and std::system_error on I/O errors.
  void run();

  // Erl.send and Erl.call_erlang's frame: {Envelope} then {Payload}, written at once.
  // Empty on success, else why not (for an OCaml exception raised by Erl_port). Refused,
  // with nothing touched, from any thread but the one that runs requests.
  std::string emit(value envelope, value payload);

  // Why the calling thread may not talk to Erlang (empty when it may): only the thread that
  // runs requests writes the pipe and reads Erlang's answers.
  std::string_view refusal() const noexcept;

  // What await_erl_reply found.
  struct Awaited {
    enum class Kind : std::uint8_t {
      reply,        // an {erl_reply, _, _} frame, as an Erl.Term.t (unrooted) in `term`
      closed,       // Erlang closed the pipe, or the frame is not valid ETF (logged)
      interrupted,  // a signal handler is due: the caller lets OCaml run it, then waits again
      raised,       // a signal handler raised (in the reply's decoding): the exception in `term`
    };
    Kind kind;
    value term = Val_unit;
  };
  // Reads until an {erl_reply, _, _} frame arrives, keeping requests read meanwhile for
  // run().
  Awaited await_erl_reply();

  static PortWorker* active() noexcept;

 private:
  // A request frame and its index in the stream (FrameReader::handed_out).
  struct Request {
    std::span<const std::uint8_t> bytes;
    std::uint64_t index;
  };
  // A request read while Erl.call_erlang waited, to run before anything read later.
  struct Deferred {
    std::vector<std::uint8_t> bytes;
    std::uint64_t index;
  };

  std::optional<Request> next_request();
  // Reads, waiting as `wait` says, then looks for cancels among the new frames. A caller
  // that may block writes the frames waiting first.
  FrameReader::Fill read(FrameReader::Wait wait);
  // With nothing in hand: writes the answers, gives memory back, waits for more input.
  // False at end of file.
  bool read_more();
  void give_back_memory();
  void flush();
  void serve(const Request& request);
  // Cancels among the frames just read: the unrun requests they name are answered
  // {error, timeout} when their turn comes, without running.
  void find_cancels();
  bool take_cancelled(std::uint64_t index);
  void log(std::string_view level, std::string_view message);
  // {reply, Ref} then {error, Reason}, Ref copied as it came in `request` (a call or load
  // whose Ref can be found), Reason written by write_reason. False if there is no Ref.
  template <class WriteReason>
  bool answer_through_ref(std::span<const std::uint8_t> request, WriteReason&& write_reason);
  bool answer_refusal(std::span<const std::uint8_t> request, const host::Error& error);

  // On the request watch's thread.
  bool on_long_request(std::chrono::milliseconds running, bool heartbeat) noexcept;
  [[noreturn]] void on_overdue(std::chrono::milliseconds running, std::chrono::milliseconds timeout) noexcept;

  const host::Runtime& runtime_;
  PortOptions options_;
  FrameReader reader_;
  FrameWriter writer_;
  etf::ByteBuffer heartbeat_frame_;  // the watch thread's
  host::RequestWatch watch_;
  host::Host host_;
  conv::Root context_;  // Erl_port's context, "camlbeam.port.context": every request runs in it
  std::deque<Deferred> deferred_;
  std::vector<std::uint8_t> deferred_running_;
  // The bytes of the Ref of a request that has one, found without decoding the rest
  // (host::request_ref), so that a request whose rest cannot be decoded or run still gets
  // an answer.
  std::optional<std::span<const std::uint8_t>> request_ref(std::span<const std::uint8_t> frame) const noexcept;

  // Indexes of unrun requests a cancel named, ascending.
  std::vector<std::uint64_t> cancelled_;
  std::vector<std::span<const std::uint8_t>> cancel_refs_;  // find_cancels' scratch
  std::int64_t last_read_ns_ = 0;   // CLOCK_MONOTONIC_COARSE
  std::int64_t last_flush_ns_ = 0;  // the same clock: when the replies waiting began to wait, or earlier
  bool just_read_ = false;         // no request taken since the last read that brought data
  bool end_of_input_ = false;
  bool watch_started_ = false;
};

// The Ref of a {cancel, Ref} frame, nullopt for any other frame.
std::optional<std::span<const std::uint8_t>> cancel_ref(std::span<const std::uint8_t> frame) noexcept;

// {erl_reply, Id, Result} as term_to_binary writes it: a small tuple of three whose first
// element is the atom erl_reply, in any of the four atom encodings. Compressed frames are
// requests, never answers (the Erlang side does not compress them).
bool is_erl_reply(std::span<const std::uint8_t> frame) noexcept;

}  // namespace camlbeam::port
