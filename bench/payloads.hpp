// The benchmark payloads as native C++ data, the starting point of the encode benchmarks.
//
// Each payload is a small struct holding its data the way a C++ program would (a vector
// of doubles, a byte buffer, plain fields) and an emit() that writes it through any sink
// with the Visitor-style calls: etf::Writer for our codec, EiSink for libei. Writing the
// walk once keeps the two encoders doing exactly the same work.
//
// The same terms are built in Erlang by etf_bench.escript (payloads/0), whose
// term_to_binary output is the input of every decode benchmark. The two descriptions must
// agree: `etf_bench --check` fails unless etf::Writer reproduces the escript's bytes.
// Each name here is the file stem the escript writes; `all_payloads` fixes the table order.
#pragma once

#include <camlbeam/etf/map_order.hpp>
#include <camlbeam/etf/term.hpp>

#include <benchmark/benchmark.h>

#include <array>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

namespace camlbeam::bench {

// Recorded in every report, so that numbers say what built them.
#if defined(__clang__)
inline constexpr const char* compiler = "clang " __clang_version__;
#elif defined(__GNUC__)
inline constexpr const char* compiler = "gcc " __VERSION__;
#else
inline constexpr const char* compiler = "unknown";
#endif

// Google Benchmark's set-up shared by the benchmark binaries: consumes its flags from args
// and records how the numbers were built in every report. False on an unknown flag.
inline bool start_google_benchmark(std::vector<char*>& args) {
  int count = static_cast<int>(args.size());
  benchmark::Initialize(&count, args.data());
  if (benchmark::ReportUnrecognizedArguments(count, args.data())) return false;
  benchmark::AddCustomContext("compiler", compiler);
  benchmark::AddCustomContext("build_type", CAMLBEAM_BENCH_BUILD_TYPE);
  benchmark::AddCustomContext("cxx_flags", CAMLBEAM_BENCH_CXX_FLAGS);
  benchmark::AddCustomContext("libei", CAMLBEAM_BENCH_LIBEI);
  return true;
}

// `Int42` is the smallest complete term: it measures per-call overhead, nothing else.
struct Int42 {
  std::string_view name = "int42";
  template <class Sink>
  void emit(Sink& s) const {
    s.integer(42);
  }
};

// [I / 7 || I <- lists:seq(1, N)]: both sides divide correctly rounded, so the bits agree.
struct FloatList {
  std::string_view name;
  std::vector<double> values;

  FloatList(std::string_view n, int count) : name(n) {
    for (int i = 1; i <= count; ++i) values.push_back(static_cast<double>(i) / 7.0);
  }
  template <class Sink>
  void emit(Sink& s) const {
    s.begin_list(static_cast<std::uint32_t>(values.size()));
    for (double v : values) s.float64(v);
    s.nil();
    s.end_list();
  }
};

// pattern(N) in the escript: byte I is (I * 31 + 7) band 255.
struct Blob {
  std::string_view name;
  std::vector<std::uint8_t> bytes;

  Blob(std::string_view n, std::size_t size) : name(n), bytes(size) {
    for (std::size_t i = 0; i < size; ++i) bytes[i] = static_cast<std::uint8_t>(i * 31 + 7);
  }
  template <class Sink>
  void emit(Sink& s) const {
    s.binary(bytes);
  }
};

// {ok, 42, 3.14, <<"abc">>, [1,2,3], atom, #{a => 1}}: one of each common kind. [1,2,3]
// is a byte list, which term_to_binary (and so both encoders here) writes as STRING_EXT.
struct Mixed {
  std::string_view name = "mixed_tuple";
  std::string_view status = "ok";
  std::int64_t count = 42;
  double ratio = 3.14;
  std::array<std::uint8_t, 3> blob{'a', 'b', 'c'};
  std::array<std::uint8_t, 3> small{1, 2, 3};
  std::string_view kind = "atom";
  std::string_view key = "a";
  std::int64_t value = 1;

  template <class Sink>
  void emit(Sink& s) const {
    s.begin_tuple(7);
    s.atom(status);
    s.integer(count);
    s.float64(ratio);
    s.binary(blob);
    s.string(small);
    s.atom(kind);
    s.begin_map(1);
    s.atom(key);
    s.integer(value);
    s.end_map();
    s.end_tuple();
  }
};

// mixed_int(I) in the escript: a quarter each of SMALL_INTEGER, negative INTEGER, large
// positive INTEGER and 7-byte SMALL_BIG (alternating sign), so no integer path dominates.
struct IntList {
  std::string_view name;
  std::vector<std::int64_t> values;

  IntList(std::string_view n, std::int64_t count) : name(n) {
    for (std::int64_t i = 0; i < count; ++i) {
      switch (i % 4) {
        case 0: values.push_back(i % 256); break;
        case 1: values.push_back(-(i * 37)); break;
        case 2: values.push_back(i * 20000); break;
        default: values.push_back(i * 1000003 * 1000003 * ((i / 4) % 2 == 0 ? 1 : -1)); break;
      }
    }
  }
  template <class Sink>
  void emit(Sink& s) const {
    s.begin_list(static_cast<std::uint32_t>(values.size()));
    for (std::int64_t v : values) s.integer(v);
    s.nil();
    s.end_list();
  }
};

// nest(N, deep): {{{...{deep}...}}}, N one-element tuples. Defeats any recursive codec.
struct Deep {
  std::string_view name;
  std::uint32_t depth;
  std::string_view leaf = "deep";

  template <class Sink>
  void emit(Sink& s) const {
    for (std::uint32_t i = 0; i < depth; ++i) s.begin_tuple(1);
    s.atom(leaf);
    for (std::uint32_t i = 0; i < depth; ++i) s.end_tuple();
  }
};

// keyed_map(N) in the escript: for I in 0..N-1, key I => I for even I and
// integer_to_binary(I) => I for odd I. A map of more than 32 keys, which term_to_binary
// writes in the order of its HAMT: the constructor computes that order once (as a C++
// program that keeps such a map to send would), so emit() only writes. The ETF -> value ->
// ETF rows, which have no such order at hand, compute it on every encode.
struct KeyedMap {
  std::string_view name;
  std::vector<std::int64_t> numbers;                   // each entry's value, in wire order
  std::vector<std::vector<std::uint8_t>> binary_keys;  // its key if a binary; empty: the number

  KeyedMap(std::string_view n, std::int64_t count) : name(n) {
    std::vector<std::pair<etf::Term, etf::Term>> entries;
    for (std::int64_t i = 0; i < count; ++i) {
      entries.emplace_back(i % 2 == 0 ? etf::Term::integer(i) : etf::Term::binary(std::to_string(i)),
                           etf::Term::integer(i));
    }
    const etf::Term map = etf::Term::map(std::move(entries));
    const std::vector<etf::Term>& flat = map.get_if<etf::Map>()->flat;
    for (std::uint32_t entry : etf::hashmap_encoding_order(flat)) {
      const std::int64_t i = *flat[2 * std::size_t{entry} + 1].as_int64();
      numbers.push_back(i);
      const std::string text = i % 2 == 0 ? std::string() : std::to_string(i);
      binary_keys.emplace_back(text.begin(), text.end());
    }
  }
  template <class Sink>
  void emit(Sink& s) const {
    s.begin_map(static_cast<std::uint32_t>(numbers.size()));
    for (std::size_t k = 0; k < numbers.size(); ++k) {
      if (binary_keys[k].empty()) s.integer(numbers[k]);
      else s.binary(binary_keys[k]);
      s.integer(numbers[k]);
    }
    s.end_map();
  }
};

// The table, in report order. A tuple rather than a vector of a common base, so that each
// encode benchmark calls its payload's emit() directly, without a virtual call per run.
inline auto all_payloads() {
  return std::make_tuple(Int42{}, FloatList{"floats_100", 100}, Blob{"binary_1k", 1024}, Mixed{},
                         Blob{"binary_1m", std::size_t{1} << 20}, IntList{"ints_100k", 100'000},
                         Deep{"deep_10k", 10'000}, KeyedMap{"map_1k", 1000}, KeyedMap{"map_100k", 100'000});
}

// The bytes etf_bench.escript wrote for a payload (DIR/NAME.etf, version byte included):
// the input of every decode and round-trip benchmark.
inline std::vector<std::uint8_t> read_payload(const std::filesystem::path& dir, std::string_view name) {
  const auto path = dir / (std::string(name) + ".etf");
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw std::runtime_error("cannot read " + path.string() + " (run bench/run.sh, which writes it)");
  std::vector<std::uint8_t> bytes(static_cast<std::size_t>(in.tellg()));
  in.seekg(0);
  if (!in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(bytes.size())))
    throw std::runtime_error("cannot read " + path.string());
  return bytes;
}

}  // namespace camlbeam::bench
