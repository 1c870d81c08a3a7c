#include <camlbeam/dist/digest.hpp>
#include <camlbeam/dist/error.hpp>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <memory>
#include <string>

namespace camlbeam::dist {

Digest gen_digest(std::uint32_t challenge, std::string_view cookie) {
  const std::string decimal = std::to_string(challenge);
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
  Digest out{};
  unsigned int size = 0;
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_md5(), nullptr) != 1 ||
      EVP_DigestUpdate(ctx.get(), cookie.data(), cookie.size()) != 1 ||
      EVP_DigestUpdate(ctx.get(), decimal.data(), decimal.size()) != 1 ||
      EVP_DigestFinal_ex(ctx.get(), out.data(), &size) != 1 || size != out.size()) {
    throw DistError(Errc::crypto_failed, "MD5");
  }
  return out;
}

bool digest_equal(std::span<const std::uint8_t, 16> a, std::span<const std::uint8_t, 16> b) noexcept {
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::uint32_t random_challenge() {
  unsigned char bytes[4];
  if (RAND_bytes(bytes, sizeof bytes) != 1) throw DistError(Errc::crypto_failed, "RAND_bytes");
  return (std::uint32_t{bytes[0]} << 24) | (std::uint32_t{bytes[1]} << 16) | (std::uint32_t{bytes[2]} << 8) | bytes[3];
}

}  // namespace camlbeam::dist
