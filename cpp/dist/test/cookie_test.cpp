#include <camlbeam/dist/cookie.hpp>
#include <camlbeam/dist/error.hpp>

#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

using namespace camlbeam::dist;
namespace fs = std::filesystem;

namespace {

class Cookie : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("camlbeam_cookie_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string write(const std::string& name, const std::string& text, fs::perms perms) {
    const fs::path p = dir_ / name;
    std::ofstream(p) << text;
    fs::permissions(p, perms);
    return p.string();
  }

  template <class F>
  static Errc thrown(F&& f) {
    try {
      f();
    } catch (const DistError& e) {
      return e.code();
    }
    return Errc::bad_state;
  }

  fs::path dir_;
};

constexpr auto owner_rw = fs::perms::owner_read | fs::perms::owner_write;

}  // namespace

TEST_F(Cookie, FileReadAsOtpDoes) {
  EXPECT_EQ(read_cookie_file(write("a", "  SECRETCOOKIE\n", owner_rw)), "SECRETCOOKIE");
  EXPECT_EQ(read_cookie_file(write("b", "abc", fs::perms::owner_read)), "abc");
}

TEST_F(Cookie, UnusableFilesRefused) {
  EXPECT_EQ(thrown([&] { read_cookie_file(write("c", "abc", owner_rw | fs::perms::group_read)); }),
            Errc::bad_cookie_file);
  EXPECT_EQ(thrown([&] { read_cookie_file(write("d", " \n", owner_rw)); }), Errc::bad_cookie_file);
  EXPECT_EQ(thrown([&] { read_cookie_file(write("e", std::string(5000, 'x'), owner_rw)); }), Errc::bad_cookie_file);
  EXPECT_EQ(thrown([&] { read_cookie_file((dir_ / "missing").string()); }), Errc::no_cookie);
  EXPECT_EQ(thrown([&] { read_cookie_file(dir_.string()); }), Errc::bad_cookie_file);
}

TEST_F(Cookie, GivenThenEnvironmentThenHome) {
  const char* old_home = std::getenv("HOME");
  const std::string saved_home = old_home ? old_home : "";
  ::unsetenv("CAMLBEAM_COOKIE");
  ::setenv("HOME", dir_.c_str(), 1);
  EXPECT_EQ(thrown([] { find_cookie(); }), Errc::no_cookie);
  write(".erlang.cookie", "fromfile\n", owner_rw);
  EXPECT_EQ(find_cookie(), "fromfile");
  ::setenv("CAMLBEAM_COOKIE", "fromenv", 1);
  EXPECT_EQ(find_cookie(), "fromenv");
  EXPECT_EQ(find_cookie("given"), "given");
  EXPECT_EQ(thrown([] { find_cookie(""); }), Errc::bad_cookie_file);
  ::unsetenv("CAMLBEAM_COOKIE");
  if (old_home) ::setenv("HOME", saved_home.c_str(), 1);
}
