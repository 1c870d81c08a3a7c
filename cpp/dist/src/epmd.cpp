#include "bytes.hpp"

#include <camlbeam/dist/epmd.hpp>

#include <spawn.h>
#include <sys/wait.h>

#include <cstdlib>
#include <thread>
#include <vector>

extern char** environ;

namespace camlbeam::dist {

using detail::printable;
using detail::put_bytes;
using detail::put_u16;
using detail::put_u8;
using detail::Reader;

namespace {

constexpr std::uint8_t alive2_req = 120;
constexpr std::uint8_t alive2_resp = 121;
constexpr std::uint8_t alive2_x_resp = 118;
constexpr std::uint8_t port_please2_req = 122;
constexpr std::uint8_t port2_resp = 119;
constexpr std::uint8_t names_req = 110;

void check_alive(std::string_view alive) {
  if (alive.empty() || alive.size() > max_alive_name || alive.find('@') != std::string_view::npos) {
    throw DistError(Errc::bad_name, "alive part '" + std::string(alive.substr(0, 64)) + "'");
  }
}

std::vector<std::uint8_t> with_length(const std::vector<std::uint8_t>& body) {
  std::vector<std::uint8_t> out;
  out.reserve(2 + body.size());
  put_u16(out, static_cast<std::uint16_t>(body.size()));
  put_bytes(out, body);
  return out;
}

[[noreturn]] void bad_reply(const std::string& what, std::span<const std::uint8_t> reply) {
  throw DistError(Errc::epmd_bad_reply, what + " (" + printable(reply, 32) + ")");
}

}  // namespace

std::uint16_t default_epmd_port() {
  if (const char* env = std::getenv("ERL_EPMD_PORT")) {
    char* end = nullptr;
    const long port = std::strtol(env, &end, 10);
    if (end != env && *end == '\0' && port > 0 && port < 65536) return static_cast<std::uint16_t>(port);
  }
  return 4369;
}

std::vector<std::uint8_t> alive2_request(std::string_view alive, std::uint16_t port, NodeType type,
                                         std::span<const std::uint8_t> extra) {
  check_alive(alive);
  if (extra.size() > 1024) throw DistError(Errc::bad_name, "extra of " + std::to_string(extra.size()) + " bytes");
  std::vector<std::uint8_t> body;
  put_u8(body, alive2_req);
  put_u16(body, port);
  put_u8(body, static_cast<std::uint8_t>(type));
  put_u8(body, 0);   // protocol: TCP/IPv4
  put_u16(body, 6);  // highest version
  put_u16(body, 6);  // lowest: OTP 23+ only, as the handshake
  put_u16(body, static_cast<std::uint16_t>(alive.size()));
  put_bytes(body, alive);
  put_u16(body, static_cast<std::uint16_t>(extra.size()));
  put_bytes(body, extra);
  return with_length(body);
}

std::vector<std::uint8_t> port_please2_request(std::string_view alive) {
  check_alive(alive);
  std::vector<std::uint8_t> body;
  put_u8(body, port_please2_req);
  put_bytes(body, alive);
  return with_length(body);
}

std::vector<std::uint8_t> names_request() { return with_length({names_req}); }

std::uint32_t parse_alive2_reply(std::span<const std::uint8_t> reply) {
  Reader in(reply);
  std::uint8_t tag = 0;
  std::uint8_t result = 0;
  if (!in.u8(tag) || !in.u8(result)) bad_reply("ALIVE2 reply truncated", reply);
  if (tag != alive2_x_resp && tag != alive2_resp) bad_reply("not an ALIVE2 reply", reply);
  if (result != 0) throw DistError(Errc::name_taken, "EPMD result " + std::to_string(result));
  if (tag == alive2_x_resp) {
    std::uint32_t creation = 0;
    if (!in.u32(creation) || in.left() != 0) bad_reply("ALIVE2_X_RESP not 6 bytes", reply);
    return creation;
  }
  std::uint16_t creation = 0;
  if (!in.u16(creation) || in.left() != 0) bad_reply("ALIVE2_RESP not 4 bytes", reply);
  return creation;
}

std::optional<NodeInfo> parse_port2_reply(std::span<const std::uint8_t> reply) {
  Reader in(reply);
  std::uint8_t tag = 0;
  std::uint8_t result = 0;
  if (!in.u8(tag) || !in.u8(result)) bad_reply("PORT2_RESP truncated", reply);
  if (tag != port2_resp) bad_reply("not a PORT2_RESP", reply);
  if (result != 0) return std::nullopt;
  NodeInfo info;
  std::uint16_t name_length = 0;
  std::uint16_t extra_length = 0;
  std::span<const std::uint8_t> extra;
  if (!in.u16(info.port) || !in.u8(info.type) || !in.u8(info.protocol) || !in.u16(info.highest) ||
      !in.u16(info.lowest) || !in.u16(name_length) || !in.text(name_length, info.name) || !in.u16(extra_length) ||
      !in.bytes(extra_length, extra)) {
    bad_reply("PORT2_RESP truncated", reply);
  }
  if (in.left() != 0) bad_reply("PORT2_RESP with trailing bytes", reply);
  info.extra.assign(extra.begin(), extra.end());
  return info;
}

NamesReply parse_names_reply(std::span<const std::uint8_t> reply) {
  Reader in(reply);
  NamesReply out;
  if (!in.u32(out.epmd_port)) bad_reply("NAMES_RESP truncated", reply);
  const std::string_view text(reinterpret_cast<const char*>(reply.data()) + 4, reply.size() - 4);
  std::size_t at = 0;
  while (at < text.size()) {
    const std::size_t end = text.find('\n', at);
    if (end == std::string_view::npos) bad_reply("NAMES_RESP line without newline", reply.subspan(4 + at));
    const std::string_view line = text.substr(at, end - at);
    at = end + 1;
    // "name <name> at port <port>"
    constexpr std::string_view prefix = "name ";
    constexpr std::string_view middle = " at port ";
    const std::size_t mid = line.rfind(middle);
    if (!line.starts_with(prefix) || mid == std::string_view::npos || mid < prefix.size()) {
      bad_reply("NAMES_RESP line", reply.subspan(4 + (at - line.size() - 1)));
    }
    const std::string_view digits = line.substr(mid + middle.size());
    unsigned long port = 0;
    if (digits.empty() || digits.size() > 5) bad_reply("NAMES_RESP port", reply);
    for (char c : digits) {
      if (c < '0' || c > '9') bad_reply("NAMES_RESP port", reply);
      port = port * 10 + static_cast<unsigned long>(c - '0');
    }
    if (port > 65535) bad_reply("NAMES_RESP port", reply);
    out.nodes.push_back({std::string(line.substr(prefix.size(), mid - prefix.size())), static_cast<std::uint16_t>(port)});
  }
  return out;
}

Socket EpmdClient::connect(Clock::time_point deadline) {
  try {
    return Socket::connect(endpoint_.address, endpoint_.port, deadline);
  } catch (const DistError& e) {
    throw DistError(Errc::epmd_unreachable, endpoint_.address + ":" + std::to_string(endpoint_.port) + ": " +
                                                e.error().message() + " (start it: epmd -daemon -address 127.0.0.1)");
  }
}

Registration EpmdClient::register_node(std::string_view alive, std::uint16_t port, NodeType type) {
  const auto request = alive2_request(alive, port, type);
  const auto deadline = after(endpoint_.timeout);
  Socket socket = connect(deadline);
  socket.write_all(request, deadline);
  // Tag and result first: a refusal may be shorter than a success.
  std::uint8_t head[2];
  socket.read_exact(head, deadline);
  std::vector<std::uint8_t> reply(head, head + 2);
  if (head[1] == 0 && (head[0] == alive2_x_resp || head[0] == alive2_resp)) {
    std::uint8_t creation[4];
    const std::size_t size = head[0] == alive2_x_resp ? 4 : 2;
    socket.read_exact(std::span(creation, size), deadline);
    reply.insert(reply.end(), creation, creation + size);
  }
  const std::uint32_t creation = parse_alive2_reply(reply);
  return Registration(std::move(socket), std::string(alive), creation);
}

std::optional<NodeInfo> EpmdClient::port_please(std::string_view alive) {
  const auto request = port_please2_request(alive);
  const auto deadline = after(endpoint_.timeout);
  Socket socket = connect(deadline);
  socket.write_all(request, deadline);
  // EPMD closes the connection after its reply.
  return parse_port2_reply(socket.read_to_end(max_port_reply, deadline));
}

NamesReply EpmdClient::names() {
  const auto deadline = after(endpoint_.timeout);
  Socket socket = connect(deadline);
  socket.write_all(names_request(), deadline);
  return parse_names_reply(socket.read_to_end(max_names_reply, deadline));
}

bool EpmdClient::answers() noexcept {
  try {
    names();
    return true;
  } catch (...) {
    return false;
  }
}

void ensure_local_epmd(const EpmdEndpoint& endpoint, std::chrono::milliseconds wait, const std::string& also_on) {
  if (endpoint.address != "127.0.0.1") {
    throw DistError(Errc::epmd_unreachable, "only a loopback EPMD is started here, not " + endpoint.address);
  }
  EpmdEndpoint quick = endpoint;
  quick.timeout = std::chrono::milliseconds(500);
  EpmdClient client(quick);
  if (client.answers()) return;
  const std::string port = std::to_string(endpoint.port);
  const std::string addresses = also_on == "127.0.0.1" ? also_on : "127.0.0.1," + also_on;
  std::vector<const char*> argv{"epmd", "-daemon"};
  if (also_on != "0.0.0.0") argv.insert(argv.end(), {"-address", addresses.c_str()});
  argv.insert(argv.end(), {"-port", port.c_str(), nullptr});
  pid_t pid = 0;
  // epmd -daemon forks and its parent exits at once: waiting for it is bounded.
  if (::posix_spawnp(&pid, "epmd", nullptr, nullptr, const_cast<char* const*>(argv.data()), environ) != 0) {
    throw DistError(Errc::epmd_unreachable, "cannot run epmd (is Erlang installed?)");
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  const auto deadline = after(wait);
  while (Clock::now() < deadline) {
    if (client.answers()) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  throw DistError(Errc::epmd_unreachable, "started epmd on 127.0.0.1:" + port + " but it does not answer");
}

}  // namespace camlbeam::dist
