// Framing over real pipes: batches, frames split across reads, limits, a writer that
// puts frames before an open one.
#include "frame_io.hpp"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <array>
#include <chrono>
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

// Whole frames not handed out yet when the pipe closes are no broken frame: end of file,
// and they can still be had; a part of one after them is a protocol error.
TEST(FrameReader, APipeClosedAfterWholeFramesIsTheEndOfInput) {
  Pipe pipe;
  std::vector<std::uint8_t> batch = framed("one");
  const auto two = framed("two");
  batch.insert(batch.end(), two.begin(), two.end());
  pipe.write(batch);
  pipe.close_write();
  FrameReader reader(pipe.fds[0], 1 << 20);
  ASSERT_EQ(reader.fill(), FrameReader::Fill::data);
  ASSERT_EQ(text(*reader.next()), "one");
  EXPECT_EQ(reader.fill(FrameReader::Wait::none), FrameReader::Fill::end_of_file);
  ASSERT_EQ(text(*reader.next()), "two");
  EXPECT_FALSE(reader.next());

  Pipe broken;
  batch.push_back(0);  // the first byte of a third header
  broken.write(batch);
  broken.close_write();
  FrameReader cut(broken.fds[0], 1 << 20);
  ASSERT_EQ(cut.fill(), FrameReader::Fill::data);
  EXPECT_THROW(cut.fill(), ProtocolError);
}

// While a Pin lives, a frame handed out keeps its bytes however much more is read: the
// reader neither reads over it (it would start over at the front of its buffer) nor moves
// it (to make room for a large frame); afterwards it reuses its memory as before.
TEST(FrameReader, APinnedFrameKeepsItsBytesWhileMoreIsRead) {
  Pipe pipe;
  const std::string first(60'000, 'a');  // what the pipe holds at once
  pipe.write(framed(first));
  FrameReader reader(pipe.fds[0], 8 << 20);
  std::optional<std::span<const std::uint8_t>> frame;
  while (!(frame = reader.next())) ASSERT_EQ(reader.fill(), FrameReader::Fill::data);
  {
    const FrameReader::Pin pin(reader);
    const std::string second(10'000, 'b');
    pipe.write(framed(second));
    ASSERT_EQ(reader.fill(), FrameReader::Fill::data);
    EXPECT_EQ(text(*reader.next()), second);
    const std::string third(3 << 20, 'c');  // more than any buffer so far
    std::thread writer([&] { pipe.write(framed(third)); });
    std::optional<std::span<const std::uint8_t>> large;
    while (!(large = reader.next())) ASSERT_EQ(reader.fill(), FrameReader::Fill::data);
    writer.join();
    EXPECT_EQ(text(*large), third);
    EXPECT_EQ(text(*frame), first);
  }
  pipe.write(framed("after"));
  ASSERT_EQ(reader.fill(), FrameReader::Fill::data);
  EXPECT_EQ(text(*reader.next()), "after");
  EXPECT_EQ(reader.handed_out(), 4u);
}

// Only the buffer that holds a pinned frame is kept: what is read after the reader moved
// to a fresh one is handled as usual, so that a long request that reads a lot (one
// Erl.call_erlang after another) does not pile up buffers.
TEST(FrameReader, OnlyTheBufferOfAPinnedFrameIsKept) {
  Pipe pipe;
  pipe.write(framed("pinned"));
  FrameReader reader(pipe.fds[0], 8 << 20);
  ASSERT_EQ(reader.fill(), FrameReader::Fill::data);
  const std::optional<std::span<const std::uint8_t>> pinned = reader.next();
  ASSERT_TRUE(pinned);
  const FrameReader::Pin pin(reader);
  for (int i = 0; i < 20; ++i) {
    const std::string large(200'000 + i, static_cast<char>('a' + i));
    std::thread writer([&] { pipe.write(framed(large)); });
    std::optional<std::span<const std::uint8_t>> frame;
    while (!(frame = reader.next())) ASSERT_EQ(reader.fill(), FrameReader::Fill::data);
    writer.join();
    ASSERT_EQ(text(*frame), large);
    EXPECT_LE(reader.buffers_kept(), 1u) << i;
  }
  EXPECT_EQ(text(*pinned), "pinned");
}

TEST(FrameReader, ReadsWhatThePipeHoldsWithoutWaiting) {
  Pipe pipe;
  FrameReader reader(pipe.fds[0], 1 << 20);
  EXPECT_EQ(reader.fill(FrameReader::Wait::none), FrameReader::Fill::nothing);
  pipe.write(framed("here"));
  EXPECT_EQ(reader.fill(FrameReader::Wait::none), FrameReader::Fill::data);
  EXPECT_EQ(text(*reader.next()), "here");
  pipe.close_write();
  EXPECT_EQ(reader.fill(FrameReader::Wait::none), FrameReader::Fill::end_of_file);
}

// A signal handler that runs while the reader waits ends an interruptible wait; a
// blocking one goes on waiting.
TEST(FrameReader, AnInterruptibleWaitEndsWhenASignalHandlerRuns) {
  struct sigaction handler {};
  handler.sa_handler = [](int) {};
  struct sigaction before {};
  ASSERT_EQ(::sigaction(SIGUSR1, &handler, &before), 0);  // no SA_RESTART
  Pipe pipe;
  FrameReader reader(pipe.fds[0], 1 << 20);
  const pthread_t reading = ::pthread_self();
  std::thread signaller([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    ::pthread_kill(reading, SIGUSR1);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    ::pthread_kill(reading, SIGUSR1);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    pipe.write(framed("data"));
  });
  EXPECT_EQ(reader.fill(FrameReader::Wait::interruptible), FrameReader::Fill::interrupted);
  EXPECT_EQ(reader.fill(FrameReader::Wait::blocking), FrameReader::Fill::data);
  signaller.join();
  EXPECT_EQ(text(*reader.next()), "data");
  ::sigaction(SIGUSR1, &before, nullptr);
}

TEST(FrameReader, ShrinksABufferThatGrewForALargeFrameOnlyWhenAskedAndIdle) {
  Pipe pipe;
  FrameReader reader(pipe.fds[0], 8 << 20);
  EXPECT_FALSE(reader.shrink(1 << 20));
  const std::string large(2 << 20, 'x');
  std::thread writer([&] { pipe.write(framed(large)); });
  std::optional<std::span<const std::uint8_t>> frame;
  while (!(frame = reader.next())) ASSERT_EQ(reader.fill(), FrameReader::Fill::data);
  writer.join();
  {
    const FrameReader::Pin pin(reader);
    EXPECT_FALSE(reader.shrink(1 << 20));  // the frame is in use
  }
  EXPECT_TRUE(reader.empty());
  EXPECT_TRUE(reader.shrink(1 << 20));
  EXPECT_FALSE(reader.shrink(1 << 20));
  pipe.write(framed("small"));
  ASSERT_EQ(reader.fill(), FrameReader::Fill::data);
  EXPECT_EQ(text(*reader.next()), "small");
}

// Lengths that a 4-byte header cannot hold are refused, never truncated.
TEST(Framing, LimitsPastWhatAFourByteLengthHoldsAreRefused) {
  static const std::uint8_t byte = 0;
  // Never read: the size is refused first.
  const std::span<const std::uint8_t> four_gib(&byte, std::size_t{1} << 32);
  EXPECT_THROW(camlbeam::port::framed(four_gib), std::length_error);
  EXPECT_THROW(FrameReader(0, camlbeam::port::max_frame_limit + 1), std::invalid_argument);
  EXPECT_THROW(FrameWriter(1, camlbeam::port::max_frame_limit + 1), std::invalid_argument);
  EXPECT_NO_THROW(FrameWriter(1, camlbeam::port::max_frame_limit));
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

// Another thread writes its frames between whole frames: first the ones handed over, then
// its own; never while the pipe is full (it would block) and never in the middle of one.
TEST(FrameWriter, FramesWrittenAsideGoBetweenWholeFrames) {
  Pipe pipe;
  FrameWriter writer(pipe.fds[1], 1 << 20);
  const std::vector<std::uint8_t> aside = framed("aside");
  EXPECT_TRUE(writer.write_aside(aside));  // nothing handed over yet: only its own frame
  append_text(writer, "handed over");
  writer.hand_over();
  append_text(writer, "kept");
  EXPECT_TRUE(writer.write_aside(aside));
  EXPECT_TRUE(writer.flush());
  // A pipe too full for a whole frame: nothing is written aside.
  ::fcntl(pipe.fds[1], F_SETFL, O_NONBLOCK);
  const std::vector<std::uint8_t> empty_frames(4096, 0);  // 1024 frames of length 0
  std::size_t filled = 0;
  while (::write(pipe.fds[1], empty_frames.data(), empty_frames.size()) > 0) filled += empty_frames.size();
  ::fcntl(pipe.fds[1], F_SETFL, 0);
  EXPECT_GT(filled, 0u);
  EXPECT_FALSE(writer.write_aside(aside));
  EXPECT_FALSE(writer.write_aside(std::vector<std::uint8_t>(PIPE_BUF + 1, 0)));  // could not be written whole
  ::close(pipe.fds[1]);
  pipe.fds[1] = -1;
  std::vector<std::string> written;
  for (const std::string& f : read_all_frames(pipe.fds[0]))
    if (!f.empty()) written.push_back(f);
  EXPECT_EQ(written, (std::vector<std::string>{"aside", "handed over", "aside", "kept"}));
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
