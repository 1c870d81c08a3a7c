#include <camlbeam/dist/cookie.hpp>
#include <camlbeam/dist/error.hpp>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>

namespace camlbeam::dist {

namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

std::string checked(std::string cookie, const std::string& where) {
  const auto first = std::find_if_not(cookie.begin(), cookie.end(), is_space);
  const auto last = std::find_if_not(cookie.rbegin(), cookie.rend(), is_space).base();
  cookie = first < last ? std::string(first, last) : std::string();
  if (cookie.empty()) throw DistError(Errc::bad_cookie_file, where + ": empty");
  if (cookie.size() > max_cookie) throw DistError(Errc::bad_cookie_file, where + ": longer than an atom");
  return cookie;
}

}  // namespace

std::string read_cookie_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    if (errno == ENOENT) throw DistError(Errc::no_cookie, path + " does not exist");
    throw DistError(Errc::bad_cookie_file, path + ": " + std::strerror(errno));
  }
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw DistError(Errc::bad_cookie_file, path + ": " + std::strerror(errno));
  if (!S_ISREG(st.st_mode)) throw DistError(Errc::bad_cookie_file, path + ": not a regular file");
  // As OTP: a cookie others can read is no secret.
  if ((st.st_mode & 077) != 0) throw DistError(Errc::bad_cookie_file, path + " must be accessible by its owner only");
  std::string text(max_cookie + 64, '\0');
  std::size_t got = 0;
  while (got < text.size()) {
    const ssize_t n = ::read(fd, text.data() + got, text.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw DistError(Errc::bad_cookie_file, path + ": " + std::strerror(errno));
    if (n == 0) break;
    got += static_cast<std::size_t>(n);
  }
  if (got == text.size()) throw DistError(Errc::bad_cookie_file, path + ": longer than an atom");
  text.resize(got);
  return checked(std::move(text), path);
}

std::string find_cookie(std::optional<std::string_view> given) {
  if (given) return checked(std::string(*given), "the given cookie");
  if (const char* env = std::getenv(std::string(cookie_environment_variable).c_str())) {
    return checked(env, std::string(cookie_environment_variable));
  }
  const char* home = std::getenv("HOME");
  if (home == nullptr || *home == '\0') throw DistError(Errc::no_cookie, "no cookie given, and HOME is not set");
  return read_cookie_file(std::string(home) + "/.erlang.cookie");
}

}  // namespace camlbeam::dist
