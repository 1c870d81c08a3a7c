// camlbeam-node's command line.
//
//   camlbeam-node (--sname NAME | --name NAME[@HOST]) [--cookie COOKIE] [--load PLUGIN]...
//                 [--hidden] [--port PORT] [--listen-address IPV4] [--net-ticktime SECONDS]
//                 [--call-timeout MS] [--max-reply-size BYTES]
//                 [--send none|given|any] [--erl-call none|all|M:F|M:F/A[,...]]...
//                 [--max-erl-calls N]
//                 [--allow-load] [--stop-on-eof] [--worker-id N]
//                 [--proto-dist inet_tcp | --proto-dist inet_tls --ssl-dist-optfile FILE]
#pragma once

#include "policy.hpp"

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace camlbeam::node {

struct Options {
  std::string node_name;              // alive@host, as the cluster spells it
  std::optional<std::string> cookie;  // else $CAMLBEAM_COOKIE, else ~/.erlang.cookie
  std::vector<std::string> plugins;   // loaded in order before the node registers
  bool hidden = false;                // not in other nodes' nodes(), only nodes(hidden)
  std::uint16_t port = 0;             // the listening port; 0: the kernel picks one
  std::size_t max_reply_size = std::size_t{64} << 20;  // NodeConfig::max_reply_size
  // Where it listens: loopback unless told (0.0.0.0: every interface, as OTP's default).
  std::string listen_address = "127.0.0.1";
  std::chrono::seconds net_ticktime{60};
  // The deadline of a call from when it starts running (the caller's own timeout is not on
  // the wire); none: calls run to their end.
  std::optional<std::uint32_t> call_timeout_ms;
  // Exit at once when standard input ends: the node's owner (an Erlang port) is gone.
  bool stop_on_eof = false;
  // Peers may load plugins ({load, Path} to the ocaml process): as a pool does into the nodes
  // it starts or is given.
  bool allow_load = false;
  // (Erl.worker ()).id: the worker's number in the pool that started the node; 0 for none.
  std::uint32_t worker_id = 0;
  // What Erl.send and Erl.call_erlang may do (policy.hpp): deny by default.
  Policy policy;
  // --proto-dist inet_tls: TLS distribution as erl's -proto_dist inet_tls, configured by
  // this file in erl's -ssl_dist_optfile format (always given with inet_tls).
  std::optional<std::string> ssl_dist_optfile;
};

struct UsageError {
  std::string message;
};

// `short_host` and `long_host` complete names given without a host: --sname takes this
// machine's name up to its first dot, as erl -sname does, --name the whole name.
std::variant<Options, UsageError> parse_options(const std::vector<std::string>& args, const std::string& short_host,
                                                const std::string& long_host);

std::string usage();

}  // namespace camlbeam::node
