// etf_bench: our ETF codec against libei on the payloads etf_bench.escript writes.
//
//   etf_bench --payloads=DIR [Google Benchmark flags]   time everything (run.sh passes
//                                                       repetitions and JSON output)
//   etf_bench --payloads=DIR --check                    verify, print one digest per payload
//
// --check runs the very functions the benchmarks time and fails unless our streaming
// decoder, our Term decoder and libei agree on every payload's digest, etf::Writer and
// etf::encode reproduce term_to_binary's bytes exactly, and libei's encoding decodes to the
// same values. run.sh then compares the digests with the ones Erlang computes.
#include "digest.hpp"
#include "ei_buffer.hpp"
#include "ei_baseline.hpp"
#include "payloads.hpp"

#include <camlbeam/etf/decoder.hpp>
#include <camlbeam/etf/encoder.hpp>
#include <camlbeam/etf/term.hpp>
#include <camlbeam/etf/term_builder.hpp>

#include <benchmark/benchmark.h>
#include <ei.h>

#include <algorithm>
#include <deque>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <new>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

namespace {

namespace etf = camlbeam::etf;
using camlbeam::bench::ei_span;
using camlbeam::bench::EiBuffer;
using camlbeam::bench::Digest;
using camlbeam::bench::DigestVisitor;
using camlbeam::bench::EiScratch;
using camlbeam::bench::EiSink;
using camlbeam::bench::read_payload;
using Bytes = std::vector<std::uint8_t>;
using ByteSpan = std::span<const std::uint8_t>;


// ---- The measured operations. Benchmarks and --check share them. ----

// Each decoder folds into a visitor the caller owns. (Returning the digest by value made
// every decode end with wide loads of fields the visitor had just written narrowly: a
// store-forwarding stall of several ns that both decoders paid, half of a small decode.)
bool decode_ours(ByteSpan bytes, DigestVisitor& v) { return static_cast<bool>(etf::decode(bytes, v)); }

std::optional<Digest> decode_ours(ByteSpan bytes) {
  DigestVisitor v;
  if (!decode_ours(bytes, v)) return std::nullopt;
  return v.digest();
}

etf::Term decode_tree(ByteSpan bytes) { return etf::decode_term(bytes); }

bool decode_libei(ByteSpan bytes, DigestVisitor& v, EiScratch& scratch, int* end = nullptr) {
  return camlbeam::bench::ei_decode_visit(reinterpret_cast<const char*>(bytes.data()), v, scratch, end);
}

std::optional<Digest> decode_libei(ByteSpan bytes, EiScratch& scratch, int* end = nullptr) {
  DigestVisitor v;
  if (!decode_libei(bytes, v, scratch, end)) return std::nullopt;
  return v.digest();
}

// The output buffers are reused, as a long-lived sender would: the benchmarks measure
// encoding, not the allocator.
template <class Payload>
void encode_writer(const Payload& payload, etf::ByteBuffer& out) {
  out.clear();
  etf::Writer writer(out);
  writer.version();
  payload.emit(writer);
}

void encode_tree(const etf::Term& term, etf::ByteBuffer& out) {
  out.clear();
  etf::encode_into(term, out);
}

template <class Payload>
bool encode_libei(const Payload& payload, ei_x_buff& x) {
  x.index = 0;
  if (ei_x_encode_version(&x) < 0) return false;
  EiSink sink(x);
  payload.emit(sink);
  return sink.ok();
}



// ---- Inputs ----

// What each payload's benchmarks read: the escript's bytes and the Term they decode to.
struct Input {
  Bytes bytes;
  etf::Term tree;
};

// ---- --check ----

// Returns the number of disagreements found for one payload, after printing its digest.
template <class Payload>
int check_payload(const Payload& payload, const std::filesystem::path& dir) {
  int failures = 0;
  auto fail = [&](const std::string& what) {
    std::cerr << "etf_bench --check: " << payload.name << ": " << what << "\n";
    ++failures;
  };
  const Bytes bytes = read_payload(dir, payload.name);

  const auto ours = decode_ours(bytes);
  if (!ours) {
    fail("our decoder rejects the payload");
    return failures;
  }
  DigestVisitor from_tree;
  etf::walk(decode_tree(bytes), from_tree);
  EiScratch scratch;
  int ei_end = 0;
  const auto ei = decode_libei(bytes, scratch, &ei_end);
  if (from_tree.digest() != *ours) fail("Term decode digest " + from_tree.digest().line() + " != " + ours->line());
  if (!ei) fail("libei rejects the payload");
  else if (*ei != *ours) fail("libei digest " + ei->line() + " != ours " + ours->line());
  else if (static_cast<std::size_t>(ei_end) != bytes.size()) fail("libei stopped at byte " + std::to_string(ei_end));

  etf::ByteBuffer out;
  encode_writer(payload, out);
  if (!std::ranges::equal(out.span(), bytes)) fail("etf::Writer output differs from term_to_binary's");
  encode_tree(decode_tree(bytes), out);
  if (!std::ranges::equal(out.span(), bytes)) fail("etf::encode output differs from term_to_binary's");
  EiBuffer x;
  if (!encode_libei(payload, x.x)) fail("ei_x_encode_* failed");
  else if (decode_ours(ei_span(x.x)) != ours) fail("libei's encoding decodes to other values");

  std::cout << payload.name << ' ' << ours->line() << '\n';
  return failures;
}

// ---- Benchmarks ----

template <class Payload>
void register_payload(const Payload& payload, const Input& in) {
  const std::string name(payload.name);
  const ByteSpan bytes = in.bytes;
  auto add = [&](const std::string& op, auto body) {
    benchmark::RegisterBenchmark((op + "/" + name).c_str(), body)->Unit(benchmark::kNanosecond)->UseRealTime();
  };
  // UseRealTime: Erlang's side is timed by the wall clock too.
  add("decode/ours_visitor", [bytes](benchmark::State& state) {
    DigestVisitor v;
    for (auto _ : state) {
      v = DigestVisitor{};
      benchmark::DoNotOptimize(decode_ours(bytes, v));
      benchmark::DoNotOptimize(v);
    }
  });
  add("decode/ours_term", [bytes](benchmark::State& state) {
    for (auto _ : state) benchmark::DoNotOptimize(decode_tree(bytes));
  });
  add("decode/libei", [bytes](benchmark::State& state) {
    EiScratch scratch;
    DigestVisitor v;
    for (auto _ : state) {
      v = DigestVisitor{};
      benchmark::DoNotOptimize(decode_libei(bytes, v, scratch));
      benchmark::DoNotOptimize(v);
    }
  });
  add("encode/ours_writer", [&payload](benchmark::State& state) {
    etf::ByteBuffer out;
    for (auto _ : state) {
      encode_writer(payload, out);
      benchmark::DoNotOptimize(out.data());
      benchmark::ClobberMemory();
    }
  });
  add("encode/ours_term", [&tree = in.tree](benchmark::State& state) {
    etf::ByteBuffer out;
    for (auto _ : state) {
      encode_tree(tree, out);
      benchmark::DoNotOptimize(out.data());
      benchmark::ClobberMemory();
    }
  });
  add("encode/libei", [&payload](benchmark::State& state) {
    EiBuffer x;
    for (auto _ : state) {
      if (!encode_libei(payload, x.x)) state.SkipWithError("ei_x_encode_* failed");
      benchmark::DoNotOptimize(x.x.buff);
      benchmark::ClobberMemory();
    }
  });
}

}  // namespace

int main(int argc, char** argv) {
  // Our flags come out first: Google Benchmark rejects the ones it does not know.
  std::filesystem::path dir;
  bool check = false;
  std::vector<char*> rest{argv[0]};
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg.starts_with("--payloads=")) dir = arg.substr(11);
    else if (arg == "--check") check = true;
    else rest.push_back(argv[i]);
  }
  if (dir.empty()) {
    std::cerr << "usage: etf_bench --payloads=DIR [--check | benchmark flags]\n";
    return 2;
  }
  try {
    const auto payloads = camlbeam::bench::all_payloads();
    if (check) {
      int failures = 0;
      std::apply([&](const auto&... p) { ((failures += check_payload(p, dir)), ...); }, payloads);
      return failures == 0 ? 0 : 1;
    }

    if (!camlbeam::bench::start_google_benchmark(rest)) return 2;
    // The table order for report.py: random interleaving shuffles the JSON.
    std::string names;
    std::apply([&](const auto&... p) { ((names += (names.empty() ? "" : ",") + std::string(p.name)), ...); },
               payloads);
    benchmark::AddCustomContext("payloads", names);

    std::deque<Input> inputs;  // stable addresses: the benchmarks keep references
    auto load = [&](const auto& payload) {
      Input& in = inputs.emplace_back();
      in.bytes = read_payload(dir, payload.name);
      in.tree = decode_tree(in.bytes);
      register_payload(payload, in);
    };
    std::apply([&](const auto&... p) { (load(p), ...); }, payloads);
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
  } catch (const std::exception& e) {
    std::cerr << "etf_bench: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
