// EPMD client (erl_dist_protocol, "EPMD Protocol"): register a node and keep the
// registration, look a node up, list the names. Requests are a u16 length and a body;
// replies have no length. The request encoders and reply parsers are pure (tested and
// fuzzed without a daemon); EpmdClient does the I/O with a deadline on each request.
#pragma once

#include <camlbeam/dist/error.hpp>
#include <camlbeam/dist/socket.hpp>

#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace camlbeam::dist {

enum class NodeType : std::uint8_t { normal = 77, hidden = 72 };

// ERL_EPMD_PORT if set and valid, else 4369.
std::uint16_t default_epmd_port();

struct EpmdEndpoint {
  std::string address = "127.0.0.1";
  std::uint16_t port = default_epmd_port();
  std::chrono::milliseconds timeout{3000};  // per request
};

struct NodeInfo {  // PORT2_RESP
  std::uint16_t port = 0;
  std::uint8_t type = 0;      // 77 normal, 72 hidden
  std::uint8_t protocol = 0;  // 0: TCP/IPv4
  std::uint16_t highest = 0;
  std::uint16_t lowest = 0;
  std::string name;
  std::vector<std::uint8_t> extra;
};

struct NamesReply {  // NAMES_RESP
  struct Entry {
    std::string name;
    std::uint16_t port = 0;
    friend bool operator==(const Entry&, const Entry&) = default;
  };
  std::uint32_t epmd_port = 0;
  std::vector<Entry> nodes;
};

// The longest alive part EPMD accepts (MAXSYMLEN in epmd_int.h).
inline constexpr std::size_t max_alive_name = 255 * 4;
// Bounds on what a reply may hold.
inline constexpr std::size_t max_port_reply = 2 + 10 + max_alive_name + 2 + 65535;
inline constexpr std::size_t max_names_reply = std::size_t{1} << 20;

// Whole requests, length included. Throw DistError(bad_name) for an empty, too long or
// '@'-holding alive name.
std::vector<std::uint8_t> alive2_request(std::string_view alive, std::uint16_t port, NodeType type,
                                         std::span<const std::uint8_t> extra = {});
std::vector<std::uint8_t> port_please2_request(std::string_view alive);
std::vector<std::uint8_t> names_request();

// Reply parsers: a DistError(epmd_bad_reply) for anything EPMD never sends, name_taken for
// a refused registration.
// ALIVE2_X_RESP (118, result, u32 creation) or the older ALIVE2_RESP (121, result, u16).
std::uint32_t parse_alive2_reply(std::span<const std::uint8_t> reply);
// nullopt: no such node (119, 1).
std::optional<NodeInfo> parse_port2_reply(std::span<const std::uint8_t> reply);
// u32 EPMD port, then lines "name <n> at port <p>\n".
NamesReply parse_names_reply(std::span<const std::uint8_t> reply);

// A node's registration: lives as long as this object (its socket) does.
class Registration {
 public:
  Registration(Socket socket, std::string alive, std::uint32_t creation)
      : socket_(std::move(socket)), alive_(std::move(alive)), creation_(creation) {}
  const std::string& alive() const noexcept { return alive_; }
  std::uint32_t creation() const noexcept { return creation_; }
  // Unregisters now (closing the socket is how EPMD learns it).
  void release() noexcept { socket_.close(); }
  bool active() const noexcept { return socket_.is_open(); }

 private:
  Socket socket_;
  std::string alive_;
  std::uint32_t creation_;
};

class EpmdClient {
 public:
  explicit EpmdClient(EpmdEndpoint endpoint = {}) : endpoint_(std::move(endpoint)) {}

  Registration register_node(std::string_view alive, std::uint16_t port, NodeType type = NodeType::normal);
  std::optional<NodeInfo> port_please(std::string_view alive);
  NamesReply names();
  // Whether an EPMD answers a NAMES request.
  bool answers() noexcept;
  const EpmdEndpoint& endpoint() const noexcept { return endpoint_; }

 private:
  Socket connect(Clock::time_point deadline);
  EpmdEndpoint endpoint_;
};

// If no EPMD answers on 127.0.0.1:endpoint.port, starts `epmd -daemon -address 127.0.0.1`
// (with that port) and waits for it, at most `wait`. epmd_unreachable if it still does not
// answer. endpoint.address must be 127.0.0.1. `also_on`, an IPv4 address the node listens
// on: the EPMD started listens there too (0.0.0.0: on every interface, as epmd's default).
void ensure_local_epmd(const EpmdEndpoint& endpoint = {}, std::chrono::milliseconds wait = std::chrono::seconds(5),
                       const std::string& also_on = "127.0.0.1");

}  // namespace camlbeam::dist
