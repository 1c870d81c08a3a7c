// Where a node's cookie comes from: given (the command line), else the environment
// variable CAMLBEAM_COOKIE, else $HOME/.erlang.cookie read as OTP reads it (a regular
// file accessible by its owner only; surrounding whitespace dropped). Unlike OTP, a
// missing file is an error (no_cookie), never a cookie made up and written.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace camlbeam::dist {

inline constexpr std::string_view cookie_environment_variable = "CAMLBEAM_COOKIE";
// An atom's bytes at most: the cookie is an atom to OTP.
inline constexpr std::size_t max_cookie = 255 * 4;

// The cookie in `path`. bad_cookie_file (with the reason), no_cookie if it does not exist.
std::string read_cookie_file(const std::string& path);
// given, else the environment, else $HOME/.erlang.cookie.
std::string find_cookie(std::optional<std::string_view> given = std::nullopt);

}  // namespace camlbeam::dist
