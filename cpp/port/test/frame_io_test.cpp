// Framing over real pipes: batches, frames split across reads, limits, a writer that
// puts frames before an open one.
#include "frame_io.hpp"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

namespace {

using camlbeam::port::FrameReader;
using camlbeam::port::FrameWriter;
using camlbeam::port::ProtocolError;

struct Pipe {
  Pipe() { EXPECT_EQ(::pipe2(fds.data(), O_CLOEXEC), 0); }
  ~Pipe() {
    for (int fd : fds)
      if (fd >= 0) ::close(fd);
  }
  void close_write() {
    ::close(fds[1]);
    fds[1] = -1;
  }
  void write(const std::vector<std::uint8_t>& bytes) const {
    ASSERT_EQ(::write(fds[1], bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  }
  std::array<int, 2> fds{-1, -1};
};

std::vector<std::uint8_t> framed(const std::string& body) {
  return camlbeam::port::framed({reinterpret_cast<const std::uint8_t*>(body.data()), body.size()});
}

std::string text(std::span<const std::uint8_t> bytes) { return {bytes.begin(), bytes.end()}; }

TEST(FrameReader, HandsOutEveryFrameOfOneReadThenWaits) {
  Pipe pipe;
  std::vector<std::uint8_t> batch;
  for (const char* body : {"one", "two", "", "three"}) {
    const auto f = framed(body);
    batch.insert(batch.end(), f.begin(), f.end());
  }
  pipe.write(batch);
  FrameReader reader(pipe.fds[0], 1 << 20);
  EXPECT_FALSE(reader.next());
  ASSERT_EQ(reader.fill(), FrameReader::Fill::data);
  std::vector<std::string> got;
  while (auto frame = reader.next()) got.push_back(text(*frame));
  EXPECT_EQ(got, (std::vector<std::string>{"one", "two", "", "three"}));
  pipe.close_write();
  EXPECT_EQ(reader.fill(), FrameReader::Fill::end_of_file);
}

TEST(FrameReader, AssemblesAFrameLargerThanThePipeFromManyReads) {
  Pipe pipe;
  const std::string body(3 << 20, 'x');  // far more than a pipe holds at once
  std::thread writer([&] {
    pipe.write(framed(body));
    pipe.close_write();
  });
  FrameReader reader(pipe.fds[0], 8 << 20);
  std::optional<std::span<const std::uint8_t>> frame;
  int reads = 0;
  while (!(frame = reader.next())) {
    ASSERT_EQ(reader.fill(), FrameReader::Fill::data);
    ASSERT_LT(++reads, 100000);
  }
  writer.join();
  EXPECT_EQ(frame->size(), body.size());
  EXPECT_EQ(text(*frame), body);
  EXPECT_GT(reads, 1);
}

TEST(FrameReader, RefusesAnOversizedLengthBeforeReadingTheBody) {
  Pipe pipe;
  pipe.write({0x7f, 0xff, 0xff, 0xff, 1, 2, 3});
  FrameReader reader(pipe.fds[0], 1 << 20);
  ASSERT_EQ(reader.fill(), FrameReader::Fill::data);
  EXPECT_THROW(reader.next(), ProtocolError);
}

TEST(FrameReader, APipeClosedInsideAFrameIsAProtocolError) {
  Pipe pipe;
  pipe.write({0, 0, 0, 10, 'a', 'b'});
  pipe.close_write();
  FrameReader reader(pipe.fds[0], 1 << 20);
  ASSERT_EQ(reader.fill(), FrameReader::Fill::data);
  EXPECT_FALSE(reader.next());
  EXPECT_THROW(reader.fill(), ProtocolError);
}

std::vector<std::string> read_all_frames(int fd) {
  FrameReader reader(fd, 1 << 20);
  std::vector<std::string> frames;
  for (int i = 0; i < 1000; ++i) {
    while (auto frame = reader.next()) frames.push_back(text(*frame));
    if (reader.fill() == FrameReader::Fill::end_of_file) break;
  }
  return frames;
}

void append_text(FrameWriter& writer, const std::string& body) {
  EXPECT_TRUE(writer.append([&](camlbeam::etf::ByteBuffer& out) {
    out.append({reinterpret_cast<const std::uint8_t*>(body.data()), body.size()});
  }));
}

TEST(FrameWriter, FramesAppendedWhileOneIsOpenGoBeforeIt) {
  Pipe pipe;
  FrameWriter writer(pipe.fds[1], 1 << 20);
  append_text(writer, "first");
  writer.open();
  append_text(writer, "sent while the reply was being made");
  EXPECT_TRUE(writer.flush());  // writes the complete frames, keeps the open one
  append_text(writer, "and another");
  const std::string reply = "the reply";
  writer.buffer().append({reinterpret_cast<const std::uint8_t*>(reply.data()), reply.size()});
  EXPECT_TRUE(writer.close());
  writer.open();
  writer.abandon();  // a cast: no reply
  EXPECT_TRUE(writer.flush());
  ::close(pipe.fds[1]);
  pipe.fds[1] = -1;
  EXPECT_EQ(read_all_frames(pipe.fds[0]),
            (std::vector<std::string>{"first", "sent while the reply was being made", "and another", "the reply"}));
}

TEST(FrameWriter, DropsFramesOverTheLimitAndKeepsGoing) {
  Pipe pipe;
  FrameWriter writer(pipe.fds[1], 8);
  EXPECT_FALSE(writer.append([](camlbeam::etf::ByteBuffer& out) { out.append(std::vector<std::uint8_t>(9, 1)); }));
  writer.open();
  writer.buffer().append(std::vector<std::uint8_t>(9, 1));
  EXPECT_FALSE(writer.close());
  append_text(writer, "12345678");
  EXPECT_TRUE(writer.flush());
  ::close(pipe.fds[1]);
  pipe.fds[1] = -1;
  EXPECT_EQ(read_all_frames(pipe.fds[0]), (std::vector<std::string>{"12345678"}));
}

TEST(FrameWriter, AClosedReaderIsReportedNotASignal) {
  Pipe pipe;
  ::signal(SIGPIPE, SIG_IGN);
  ::close(pipe.fds[0]);
  pipe.fds[0] = -1;
  FrameWriter writer(pipe.fds[1], 1 << 20);
  append_text(writer, "nobody reads this");
  EXPECT_FALSE(writer.flush());
  EXPECT_TRUE(writer.closed());
}

}  // namespace
