#include "options.hpp"

#include <arpa/inet.h>

#include <charconv>
#include <string_view>

namespace camlbeam::node {

namespace {

template <class Integer>
std::optional<Integer> parse_number(std::string_view text, Integer low, Integer high) {
  Integer value{};
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc{} || end != text.data() + text.size() || value < low || value > high) return std::nullopt;
  return value;
}

// An alive part as erl takes it: letters, digits, '_' and '-', 1 to 255 bytes.
bool valid_alive(std::string_view alive) {
  if (alive.empty() || alive.size() > 255) return false;
  for (const char c : alive) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

}  // namespace

std::string usage() {
  return "usage: camlbeam-node (--sname NAME | --name NAME[@HOST]) [--cookie COOKIE] [--load PLUGIN]...\n"
         "                     [--hidden] [--port PORT] [--listen-address IPV4] [--net-ticktime SECONDS]\n"
         "                     [--call-timeout MS] [--max-reply-size BYTES]\n"
         "                     [--send none|given|any] [--erl-call none|all|M:F|M:F/A[,...]]...\n"
         "                     [--max-erl-calls N] [--allow-load] [--stop-on-eof] [--worker-id N]\n"
         "                     [--proto-dist inet_tcp | --proto-dist inet_tls --ssl-dist-optfile FILE]\n";
}

std::variant<Options, UsageError> parse_options(const std::vector<std::string>& args, const std::string& short_host,
                                                const std::string& long_host) {
  Options options;
  std::optional<std::string> name;
  bool short_name = false;
  bool erl_call_none = false;
  bool tls = false;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string_view arg = args[i];
    const auto value = [&]() -> std::optional<std::string> {
      if (i + 1 >= args.size()) return std::nullopt;
      return args[++i];
    };
    const auto missing = [&] { return UsageError{std::string(arg) + " needs a value"}; };
    if (arg == "--sname" || arg == "--name") {
      if (name) return UsageError{"give one of --sname and --name, once"};
      name = value();
      if (!name) return missing();
      short_name = arg == "--sname";
    } else if (arg == "--cookie") {
      options.cookie = value();
      if (!options.cookie) return missing();
    } else if (arg == "--load") {
      auto plugin = value();
      if (!plugin) return missing();
      options.plugins.push_back(std::move(*plugin));
    } else if (arg == "--hidden") {
      options.hidden = true;
    } else if (arg == "--stop-on-eof") {
      options.stop_on_eof = true;
    } else if (arg == "--allow-load") {
      options.allow_load = true;
    } else if (arg == "--worker-id") {
      const auto text = value();
      if (!text) return missing();
      const auto id = parse_number<std::uint32_t>(*text, 0, 1U << 30);
      if (!id) return UsageError{"--worker-id takes a worker's number in its pool, not " + *text};
      options.worker_id = *id;
    } else if (arg == "--port") {
      const auto text = value();
      if (!text) return missing();
      const auto port = parse_number<std::uint16_t>(*text, 0, 65535);
      if (!port) return UsageError{"--port takes a TCP port, 0 to 65535, not " + *text};
      options.port = *port;
    } else if (arg == "--listen-address") {
      options.listen_address = value().value_or("");
      if (options.listen_address.empty()) return missing();
      in_addr parsed{};
      if (::inet_pton(AF_INET, options.listen_address.c_str(), &parsed) != 1) {
        return UsageError{"--listen-address takes an IPv4 address (0.0.0.0: every interface), not " +
                          options.listen_address};
      }
    } else if (arg == "--net-ticktime") {
      const auto text = value();
      if (!text) return missing();
      // OTP's own bounds: at least 4 s (ticks every second), at most what fits its timers.
      const auto seconds = parse_number<std::uint32_t>(*text, 4, 86400);
      if (!seconds) return UsageError{"--net-ticktime takes seconds, 4 to 86400, not " + *text};
      options.net_ticktime = std::chrono::seconds(*seconds);
    } else if (arg == "--call-timeout") {
      const auto text = value();
      if (!text) return missing();
      const auto ms = parse_number<std::uint32_t>(*text, 0, 4294967295U);
      if (!ms) return UsageError{"--call-timeout takes milliseconds, not " + *text};
      options.call_timeout_ms = *ms;
    } else if (arg == "--max-reply-size") {
      const auto text = value();
      if (!text) return missing();
      const auto max = parse_number<std::size_t>(*text, 1, 4294967295U);
      if (!max) return UsageError{"--max-reply-size takes bytes, 1 to 4294967295, not " + *text};
      options.max_reply_size = *max;
    } else if (arg == "--send") {
      const auto text = value();
      if (!text) return missing();
      const auto send = parse_send_policy(*text);
      if (!send) return UsageError{"--send takes none, given or any, not " + *text};
      options.policy.send = *send;
    } else if (arg == "--erl-call") {
      const auto text = value();
      if (!text) return missing();
      if (auto why = add_erl_call(options.policy, *text, erl_call_none)) return UsageError{std::move(*why)};
    } else if (arg == "--max-erl-calls") {
      const auto text = value();
      if (!text) return missing();
      const auto max = parse_number<std::size_t>(*text, 1, 1000000);
      if (!max) return UsageError{"--max-erl-calls takes a count, 1 to 1000000, not " + *text};
      options.policy.max_erl_calls = *max;
    } else if (arg == "--proto-dist") {
      const auto proto = value();
      if (!proto) return missing();
      if (*proto != "inet_tcp" && *proto != "inet_tls") {
        return UsageError{"--proto-dist takes inet_tcp or inet_tls, not " + *proto};
      }
      tls = *proto == "inet_tls";
    } else if (arg == "--ssl-dist-optfile") {
      options.ssl_dist_optfile = value();
      if (!options.ssl_dist_optfile) return missing();
    } else {
      return UsageError{"unknown argument " + std::string(arg)};
    }
  }
  if (!name) return UsageError{"a node needs a name: --sname NAME or --name NAME@HOST"};
  // Either alone is a mistake worth stopping for: TLS without its certificates, or
  // certificates that would be ignored while the node talks in the clear.
  if (tls && !options.ssl_dist_optfile) return UsageError{"--proto-dist inet_tls needs --ssl-dist-optfile FILE"};
  if (!tls && options.ssl_dist_optfile) return UsageError{"--ssl-dist-optfile is for --proto-dist inet_tls"};
  const std::size_t at = name->find('@');
  const std::string alive = name->substr(0, at);
  if (!valid_alive(alive)) {
    return UsageError{"the name " + *name + " is not a node name: letters, digits, _ and - before the @"};
  }
  std::string host = at == std::string::npos ? (short_name ? short_host : long_host) : name->substr(at + 1);
  if (host.empty()) return UsageError{"no host part for " + *name};
  if (short_name && host.find('.') != std::string::npos) {
    return UsageError{"--sname takes a short host name, not " + host + ": use --name"};
  }
  options.node_name = alive + "@" + host;
  return options;
}

}  // namespace camlbeam::node
