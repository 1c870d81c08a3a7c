#include <camlbeam/dist/framing.hpp>

#include <gtest/gtest.h>

#include <vector>

using namespace camlbeam::dist;
using Bytes = std::vector<std::uint8_t>;
using Kind = FrameReader::Event::Kind;

TEST(Framing, FramesAndTicksInAnySplit) {
  const Bytes body{'p', 131, 106};
  Bytes stream = tick_frame();
  const Bytes f = frame(body);
  stream.insert(stream.end(), f.begin(), f.end());
  const Bytes t = tick_frame();
  stream.insert(stream.end(), t.begin(), t.end());
  for (std::size_t chunk = 1; chunk <= stream.size(); ++chunk) {
    FrameReader reader;
    std::vector<Kind> kinds;
    std::vector<Bytes> bodies;
    for (std::size_t i = 0; i < stream.size(); i += chunk) {
      reader.feed(std::span(stream).subspan(i, std::min(chunk, stream.size() - i)));
      for (auto e = reader.next(); e.kind != Kind::need_more; e = reader.next()) {
        ASSERT_NE(e.kind, Kind::error);
        kinds.push_back(e.kind);
        if (e.kind == Kind::data) bodies.emplace_back(e.body.begin(), e.body.end());
      }
    }
    EXPECT_EQ(kinds, (std::vector<Kind>{Kind::tick, Kind::data, Kind::tick})) << chunk;
    ASSERT_EQ(bodies.size(), 1u);
    EXPECT_EQ(bodies[0], body);
    EXPECT_EQ(reader.buffered(), 0u);
  }
}

TEST(Framing, OversizedLengthIsAStickyError) {
  FrameReader reader(1024);
  reader.feed(Bytes{0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3});
  auto e = reader.next();
  ASSERT_EQ(e.kind, Kind::error);
  EXPECT_EQ(e.error.code, Errc::frame_too_long);
  reader.feed(tick_frame());
  EXPECT_EQ(reader.next().kind, Kind::error);
  EXPECT_EQ(reader.buffered(), 0u);
}

TEST(Framing, PartialFrameWaits) {
  FrameReader reader;
  reader.feed(Bytes{0, 0, 0, 5, 'a', 'b'});
  EXPECT_EQ(reader.next().kind, Kind::need_more);
  reader.feed(Bytes{'c', 'd', 'e'});
  const auto e = reader.next();
  ASSERT_EQ(e.kind, Kind::data);
  EXPECT_EQ(Bytes(e.body.begin(), e.body.end()), (Bytes{'a', 'b', 'c', 'd', 'e'}));
}
