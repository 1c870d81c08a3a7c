#include <camlbeam/dist/tls.hpp>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <cerrno>
#include <algorithm>
#include <cstring>
#include <limits>

namespace camlbeam::dist {

namespace {

struct SslCtxFree {
  void operator()(SSL_CTX* ctx) const noexcept { SSL_CTX_free(ctx); }
};
struct SslFree {
  void operator()(SSL* ssl) const noexcept { SSL_free(ssl); }
};
using SslCtxPtr = std::unique_ptr<SSL_CTX, SslCtxFree>;
using SslPtr = std::unique_ptr<SSL, SslFree>;

// OpenSSL's queued reasons, oldest first, and the queue emptied.
std::string openssl_reasons() {
  std::string out;
  while (const unsigned long code = ERR_get_error()) {
    char text[256];
    ERR_error_string_n(code, text, sizeof text);
    if (!out.empty()) out += "; ";
    out += text;
  }
  return out;
}

SslCtxPtr make_context(const TlsRoleOptions& options, bool server) {
  SslCtxPtr ctx(SSL_CTX_new(server ? TLS_server_method() : TLS_client_method()));
  if (!ctx) throw DistError(Errc::tls_config, "SSL_CTX_new: " + openssl_reasons());
  // OTP 25 speaks TLS 1.2 and 1.3; nothing older is offered or taken.
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
  // Renegotiation would let a write wait for a read mid-connection; OTP does not need it.
  SSL_CTX_set_options(ctx.get(), SSL_OP_NO_RENEGOTIATION);
  // The unwritten rest of a connection's queue moves when frames are appended behind it.
  SSL_CTX_set_mode(ctx.get(), SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  const char* role = server ? "server" : "client";
  if (!options.certfile.empty()) {
    if (SSL_CTX_use_certificate_chain_file(ctx.get(), options.certfile.c_str()) != 1) {
      throw DistError(Errc::tls_config, std::string(role) + " certfile " + options.certfile + ": " + openssl_reasons());
    }
    const std::string& key = options.keyfile.empty() ? options.certfile : options.keyfile;
    if (SSL_CTX_use_PrivateKey_file(ctx.get(), key.c_str(), SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx.get()) != 1) {
      throw DistError(Errc::tls_config, std::string(role) + " keyfile " + key + ": " + openssl_reasons());
    }
  }
  if (!options.cacertfile.empty() && SSL_CTX_load_verify_locations(ctx.get(), options.cacertfile.c_str(), nullptr) != 1) {
    throw DistError(Errc::tls_config, std::string(role) + " cacertfile " + options.cacertfile + ": " + openssl_reasons());
  }
  int mode = SSL_VERIFY_NONE;
  if (options.verify_peer) {
    mode = SSL_VERIFY_PEER | (server && options.fail_if_no_peer_cert ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0);
  }
  SSL_CTX_set_verify(ctx.get(), mode, nullptr);
  return ctx;
}

}  // namespace

struct TlsContext::Impl {
  SslCtxPtr server;
  SslCtxPtr client;
  TlsRoleOptions client_options;
};

TlsContext::TlsContext(const TlsOptions& options)
    : impl_(std::make_unique<Impl>(
          Impl{make_context(options.server, true), make_context(options.client, false), options.client})) {}

TlsContext::~TlsContext() = default;

struct TlsStream::Impl {
  SslPtr ssl;
  bool done = false;
  bool want_write = false;

  // What an SSL call's failure means: it waits for the socket, or the peer closed; anything
  // else throws.
  enum class Outcome : std::uint8_t { wait, closed };
  Outcome classify(int rc, const char* what) {
    const int saved_errno = errno;  // before SSL_get_error, which may make calls of its own
    const int error = SSL_get_error(ssl.get(), rc);
    want_write = error == SSL_ERROR_WANT_WRITE;
    if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE) return Outcome::wait;
    if (error == SSL_ERROR_ZERO_RETURN) return Outcome::closed;  // close_notify
    const unsigned long first = ERR_peek_error();
    if (error == SSL_ERROR_SYSCALL && first == 0) {
      if (saved_errno == 0 || saved_errno == ECONNRESET || saved_errno == EPIPE) return Outcome::closed;
      throw DistError(Errc::socket_error, std::string(what) + ": " + std::strerror(saved_errno));
    }
    // OpenSSL 3 names an EOF without close_notify an error; OTP closes without one.
    if (ERR_GET_REASON(first) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
      ERR_clear_error();
      return Outcome::closed;
    }
    std::string reason = openssl_reasons();
    const long verified = SSL_get_verify_result(ssl.get());
    if (verified != X509_V_OK) {
      reason += std::string(reason.empty() ? "" : "; ") + "certificate: " + X509_verify_cert_error_string(verified);
    }
    throw DistError(Errc::tls_failed, std::string(what) + ": " + (reason.empty() ? "no reason given" : reason));
  }

  // One SSL_read or SSL_write (`op`, given how many bytes it may move) of `size` bytes: the
  // bytes moved, 0 when the peer closed, nullopt when it waits for the socket.
  template <class Op>
  std::optional<std::size_t> transfer(Op op, std::size_t size, const char* what) {
    ERR_clear_error();  // the queue is per thread: an earlier failure must not be read as ours
    errno = 0;          // nor an earlier system call's errno, on an SSL_ERROR_SYSCALL that sets none
    const int rc = op(static_cast<int>(std::min<std::size_t>(size, std::numeric_limits<int>::max())));
    if (rc > 0) {
      want_write = false;
      return static_cast<std::size_t>(rc);
    }
    if (classify(rc, what) == Outcome::closed) return 0;
    return std::nullopt;
  }
};

TlsStream::TlsStream(const TlsContext& context, Role role, int fd, std::string_view peer_host)
    : impl_(std::make_unique<Impl>()) {
  const auto& contexts = context.impl();
  impl_->ssl.reset(SSL_new(role == Role::server ? contexts.server.get() : contexts.client.get()));
  if (!impl_->ssl || SSL_set_fd(impl_->ssl.get(), fd) != 1) {
    throw DistError(Errc::tls_failed, "SSL_new: " + openssl_reasons());
  }
  if (role == Role::server) {
    SSL_set_accept_state(impl_->ssl.get());
    return;
  }
  SSL_set_connect_state(impl_->ssl.get());
  const TlsRoleOptions& client = contexts.client_options;
  if (!client.check_host) return;
  const std::string host = client.server_name ? *client.server_name : std::string(peer_host);
  // As OTP's client: the name goes out as SNI, and with verify_peer the server's certificate
  // must hold it (X509_check_host's rules: subjectAltName first, wildcards in the leftmost label).
  // SSL_set_tlsext_host_name, whose macro casts in C's way (-Wold-style-cast); SSL_ctrl only reads the name.
  const long sni_set = SSL_ctrl(impl_->ssl.get(), SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name,
                                const_cast<char*>(host.c_str()));
  if (sni_set != 1 || SSL_set1_host(impl_->ssl.get(), host.c_str()) != 1) {
    throw DistError(Errc::tls_failed, "server name '" + host + "': " + openssl_reasons());
  }
}

TlsStream::~TlsStream() = default;
TlsStream::TlsStream(TlsStream&&) noexcept = default;
TlsStream& TlsStream::operator=(TlsStream&&) noexcept = default;

bool TlsStream::handshake() {
  if (impl_->done) return true;
  ERR_clear_error();  // the queue is per thread: an earlier failure must not be read as ours
  errno = 0;
  const int rc = SSL_do_handshake(impl_->ssl.get());
  if (rc == 1) {
    impl_->done = true;
    impl_->want_write = false;
    return true;
  }
  if (impl_->classify(rc, "TLS handshake") == Impl::Outcome::closed) {
    throw DistError(Errc::connection_closed, "during the TLS handshake");
  }
  return false;
}

bool TlsStream::handshake_done() const noexcept { return impl_->done; }

std::optional<std::size_t> TlsStream::try_read(std::span<std::uint8_t> buffer) {
  return impl_->transfer([&](int n) { return SSL_read(impl_->ssl.get(), buffer.data(), n); }, buffer.size(), "TLS read");
}

std::size_t TlsStream::try_write(std::span<const std::uint8_t> bytes) {
  if (bytes.empty()) return 0;
  const auto n =
      impl_->transfer([&](int size) { return SSL_write(impl_->ssl.get(), bytes.data(), size); }, bytes.size(), "TLS write");
  if (n && *n == 0) throw DistError(Errc::connection_closed, "TLS write");
  return n.value_or(0);
}

bool TlsStream::wants_write() const noexcept { return impl_->want_write; }
bool TlsStream::has_buffered() const noexcept { return SSL_pending(impl_->ssl.get()) > 0; }

}  // namespace camlbeam::dist
