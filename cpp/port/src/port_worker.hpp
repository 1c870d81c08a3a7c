// The port transport: requests read from one pipe, run through host::Host, replies and
// the worker's own frames (Erl.send, Erl.call_erlang, logs) written to the other.
// The wire protocol is in cpp/port/README.md.
#pragma once

#include "frame_io.hpp"

#include <camlbeam/host/host.hpp>
#include <camlbeam/host/runtime.hpp>

#include <caml/mlvalues.h>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace camlbeam::port {

struct PortOptions {
  int in_fd = 3;   // open_port(..., [nouse_stdio]) puts Erlang's end here
  int out_fd = 4;
  // The longest request frame accepted; a longer announced length ends the worker.
  std::size_t max_request_size = std::size_t{1} << 30;
  // Limits of the request path (host::HostOptions::max_reply_size also bounds Erl.send).
  host::HostOptions host{};
  // Replies are written once this many bytes wait, or before the worker blocks for input.
  std::size_t flush_threshold = std::size_t{64} << 10;
  // Run once, right after the first replies are written: start-up work that need not delay
  // the first answer (the Erlang side is busy reading it meanwhile).
  std::function<void()> after_first_reply;
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
  // Empty on success, else why not (for an OCaml exception raised by Erl_port).
  std::string emit(value envelope, value payload);
  // Reads until an {erl_reply, _, _} frame arrives, keeping requests read meanwhile for
  // run(). The frame as an Erl.Term.t (unrooted), or nullopt if Erlang closed the pipe or
  // the frame is not valid ETF (logged).
  std::optional<value> await_erl_reply();

  static PortWorker* active() noexcept;

 private:
  std::optional<std::span<const std::uint8_t>> next_request();
  bool read_more();  // false at end of file
  void flush();
  void serve(std::span<const std::uint8_t> request);
  void log(std::string_view level, std::string_view message);
  void answer_undecodable(std::span<const std::uint8_t> ref, std::string_view why);

  const host::Runtime& runtime_;
  PortOptions options_;
  host::Host host_;
  FrameReader reader_;
  FrameWriter writer_;
  // Requests read while Erl.call_erlang waited, to run before anything read later.
  std::deque<std::vector<std::uint8_t>> deferred_;
  std::vector<std::uint8_t> deferred_running_;
  bool end_of_input_ = false;
};

// The bytes of the Ref of a {call, Ref, Fun, Args} or {load, Ref, Path} request whose rest
// cannot be decoded (Args nested deeper than the limits, say), so that its caller still
// gets an answer: nullopt if the frame does not start like one of those two.
std::optional<std::span<const std::uint8_t>> salvage_ref(std::span<const std::uint8_t> frame,
                                                         const etf::Limits& limits);

// {erl_reply, Id, Result} as term_to_binary writes it: a small tuple of three whose first
// element is the atom erl_reply, in any of the four atom encodings. Compressed frames are
// requests, never answers (the Erlang side does not compress them).
bool is_erl_reply(std::span<const std::uint8_t> frame) noexcept;

}  // namespace camlbeam::port
