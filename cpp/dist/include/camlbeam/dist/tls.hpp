// TLS distribution, as OTP's `-proto_dist inet_tls`: EPMD as for TCP, then a TLS handshake
// on the connection, then the ordinary version-6 handshake and frames inside TLS.
//
// - TlsOptions: the subset of OTP's ssl options that an `ssl_dist_optfile` gives, one set
//   per role (we are the server on accepted connections, the client on our calls).
// - read_ssl_dist_optfile / parse_ssl_dist_optfile: that file, Erlang terms
//   (`[{server, [...]}, {client, [...]}].`), read strictly: an option we do not implement is
//   an `unsupported_tls_option` error naming it, never ignored.
// - TlsContext: the two OpenSSL contexts built from TlsOptions (certificates loaded once).
// - TlsStream: one connection's TLS over a non-blocking socket the caller owns and polls.
#pragma once

#include <camlbeam/dist/error.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>

namespace camlbeam::dist {

struct TlsRoleOptions {
  std::string certfile;    // PEM: our certificate, then any intermediates
  std::string keyfile;     // PEM; OTP's default: the certfile
  std::string cacertfile;  // PEM: the CAs whose certificates we trust from peers
  bool verify_peer = false;  // {verify, verify_peer}; OTP's default is verify_none
  // Server only: a client without a certificate is refused (needs verify_peer, as in OTP).
  bool fail_if_no_peer_cert = false;
  // Client only, with verify_peer: the server's certificate must name the host part of the
  // node called (sent as SNI too), as with OTP's default server_name_indication; false with
  // {server_name_indication, disable}: the chain is verified, the name is not.
  bool check_host = true;
  std::optional<std::string> server_name;  // {server_name_indication, "name"}: this name instead
};

struct TlsOptions {
  TlsRoleOptions server;
  TlsRoleOptions client;
};

// The optfile's text (what `file:consult` reads: one term and a dot).
std::variant<TlsOptions, Error> parse_ssl_dist_optfile(std::string_view text);
// The file itself; an unreadable file is bad_optfile naming it.
std::variant<TlsOptions, Error> read_ssl_dist_optfile(const std::string& path);

class TlsContext {
 public:
  // Loads the certificates, keys and CAs; throws DistError(tls_config) naming the file.
  explicit TlsContext(const TlsOptions& options);
  ~TlsContext();
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;

  struct Impl;
  const Impl& impl() const noexcept { return *impl_; }

 private:
  std::unique_ptr<Impl> impl_;
};

class TlsStream {
 public:
  enum class Role : std::uint8_t { client, server };
  // `fd` stays the caller's and must outlive the stream. `peer_host`: the host part of the
  // node called (client role), for the name check and SNI.
  TlsStream(const TlsContext& context, Role role, int fd, std::string_view peer_host);
  ~TlsStream();
  TlsStream(TlsStream&&) noexcept;
  TlsStream& operator=(TlsStream&&) noexcept;

  // One step of the TLS handshake: true once it is done, false while it waits for the
  // socket (wants_write() tells which way). Throws DistError: tls_failed with OpenSSL's
  // reason (and the certificate check's), connection_closed when the peer hung up.
  bool handshake();
  bool handshake_done() const noexcept;
  // Plain bytes read: nullopt when nothing can be read now, 0 when the peer closed.
  std::optional<std::size_t> try_read(std::span<std::uint8_t> buffer);
  // Plain bytes taken, 0 when the socket cannot take any now. Between calls the unwritten
  // rest may move (the caller's buffer grows) but must start with the same bytes.
  std::size_t try_write(std::span<const std::uint8_t> bytes);
  // The last call stopped because the socket could not take TLS bytes: wait for writable.
  bool wants_write() const noexcept;
  // Decrypted bytes OpenSSL holds already: the socket will not signal them again.
  bool has_buffered() const noexcept;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace camlbeam::dist
