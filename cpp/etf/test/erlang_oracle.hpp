// Asking a live OTP node: the tests that check the codec against Erlang write an escript
// that reads one question per line and prints one answer per line.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace camlbeam::etf::test {

inline std::string to_hex(std::span<const std::uint8_t> bytes, std::size_t max_bytes = SIZE_MAX) {
  static constexpr char kDigits[] = "0123456789ABCDEF";
  const std::size_t n = std::min(bytes.size(), max_bytes);
  std::string out;
  out.reserve(2 * n + 3);
  for (std::size_t i = 0; i < n; ++i) {
    out += kDigits[bytes[i] >> 4];
    out += kDigits[bytes[i] & 15];
  }
  if (n < bytes.size()) out += "...";
  return out;
}

inline bool on_path(const char* program) {
  return std::system((std::string("command -v ") + program + " >/dev/null 2>&1").c_str()) == 0;
}

// Runs `escript_text` with a file of the lines as its argument; one answer per output line.
inline std::vector<std::string> ask_erlang(const char* escript_text, const std::vector<std::string>& lines) {
  char dir_template[] = "/tmp/camlbeam-etf-oracle-XXXXXX";
  const char* dir = mkdtemp(dir_template);
  if (dir == nullptr) throw std::runtime_error("mkdtemp failed");
  const std::string script = std::string(dir) + "/check.escript", input = std::string(dir) + "/inputs.txt";
  std::ofstream(script) << escript_text;
  {
    std::ofstream out(input);
    for (const auto& line : lines) out << line << '\n';
  }
  std::vector<std::string> answers;
  if (FILE* pipe = popen(("escript " + script + " " + input + " 2>&1").c_str(), "r")) {
    std::string current;
    for (int c; (c = std::fgetc(pipe)) != EOF;) {
      if (c == '\n') answers.push_back(std::exchange(current, {}));
      else current += static_cast<char>(c);
    }
    pclose(pipe);
  }
  std::remove(script.c_str());
  std::remove(input.c_str());
  rmdir(dir);
  return answers;
}

}  // namespace camlbeam::etf::test
