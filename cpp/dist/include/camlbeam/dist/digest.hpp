// The handshake's proof of the cookie: MD5(cookie ++ challenge as unsigned decimal ASCII)
// (dist_util:gen_digest/2), compared in constant time.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string_view>

namespace camlbeam::dist {

using Digest = std::array<std::uint8_t, 16>;

Digest gen_digest(std::uint32_t challenge, std::string_view cookie);
// Equal in a time that does not depend on where the two differ (OpenSSL's CRYPTO_memcmp).
bool digest_equal(std::span<const std::uint8_t, 16> a, std::span<const std::uint8_t, 16> b) noexcept;
// A challenge from OpenSSL's random generator. Throws DistError(crypto_failed) if it fails.
std::uint32_t random_challenge();

}  // namespace camlbeam::dist
