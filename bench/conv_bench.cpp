// conv_bench: the round trip ETF bytes → value → ETF bytes, three ways, on the payloads
// etf_bench.escript writes (the same bytes etf_bench reads).
//
//   ours_ocaml  conv::etf_to_ocaml (an Erl.Term.t on the OCaml heap), conv::ocaml_to_etf
//   ours_term   etf::decode_term (our C++ tree), etf::encode_into
//   libei_tree  ei_decode_* into a plain C tree (ei_tree.hpp), ei_x_encode_* from it
//
// Each is timed as a whole ("roundtrip/...") and in halves ("decode/...": bytes → value,
// the value then dropped; "encode/...": a value decoded beforehand → bytes).
//
//   conv_bench --payloads=DIR [Google Benchmark flags]   time everything
//   conv_bench --payloads=DIR --check                    verify, print one line per payload
//   conv_bench --payloads=DIR --loop=NAME:N              run one benchmark's operation N
//                                                        times, untimed, for profilers:
//     callgrind --toggle-collect='*conv_bench_loop*', or perf stat -e cycles:u minus N=0
//
// The OCaml runtime is started once, here, with the Erl library linked in (map_of_array).
// The OCaml values of an iteration are garbage at its end; the GC runs as it would in a
// worker (nothing is forced, nothing compacted by hand), so its cost is in the timings, and
// each OCaml benchmark reports the collections and words it caused per iteration. Each
// OCaml iteration starts with the runtime's poll (host_poll), as a worker's does.
//
// --check runs the very functions that are timed and fails unless, for every payload, both
// of ours give back exactly the input bytes (which are term_to_binary's), and libei, after
// consuming the whole input, gives back exactly term_to_binary(T, [{minor_version, 2}])
// (it writes every atom as SMALL_ATOM_UTF8_EXT), or, where it writes integers of 28 to 32
// bits as SMALL_BIG_EXT, bytes that decode to an equal term.
#include "ei_buffer.hpp"
#include "ei_tree.hpp"
#include "payloads.hpp"

#include <camlbeam/conv/conv.hpp>
#include <camlbeam/etf/decoder.hpp>
#include <camlbeam/etf/encoder.hpp>
#include <camlbeam/etf/term.hpp>
#include <camlbeam/etf/term_builder.hpp>
#include <camlbeam/host/host.hpp>

#include <caml/callback.h>
#include <caml/mlvalues.h>
#include <caml/signals.h>
#include <caml/version.h>

#include <benchmark/benchmark.h>
#include <ei.h>

#include <algorithm>
#include <deque>
#include <filesystem>
#include <functional>
#include <iostream>
#include <map>
#include <new>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

// The runtime's Gc.quick_stat primitive (allocates one small record; never called inside a
// timed loop).
extern "C" value caml_gc_quick_stat(value unit);
// Gc.full_major: --check moves values with it; benchmarks start from a collected heap.
extern "C" value caml_gc_full_major(value unit);

namespace {

namespace etf = camlbeam::etf;
using camlbeam::bench::ei_span;
using camlbeam::bench::EiBuffer;
namespace conv = camlbeam::conv;
using camlbeam::bench::EiNode;
using camlbeam::bench::EiTreeScratch;
using camlbeam::bench::read_payload;
using Bytes = std::vector<std::uint8_t>;
using ByteSpan = std::span<const std::uint8_t>;


// ---- The measured operations. Benchmarks and --check share them. ----
// Output buffers are reused and cleared each time, as in etf_bench: the allocator of the
// output is not what is measured. Everything the value itself needs is.

// Bytes → Erl.Term.t. The result's Root keeps the value alive; dropping it makes the value
// garbage.
conv::DecodeToOcaml decode_ocaml(ByteSpan bytes) { return conv::etf_to_ocaml(bytes); }

void encode_ocaml(value term, etf::ByteBuffer& out) {
  out.clear();
  conv::ocaml_to_etf(term, out);
}

// As a worker answers a request: the value goes from the decoder to its reader with no
// OCaml allocation in between, so it needs no Root (cpp/host's Host::run).
bool roundtrip_ocaml(ByteSpan bytes, etf::ByteBuffer& out) {
  const conv::UnrootedDecode d = conv::etf_to_ocaml_unrooted(bytes);
  if (d.error) return false;
  encode_ocaml(d.term, out);
  return true;
}

void encode_term(const etf::Term& term, etf::ByteBuffer& out) {
  out.clear();
  etf::encode_into(term, out);
}

void roundtrip_term(ByteSpan bytes, etf::ByteBuffer& out) { encode_term(etf::decode_term(bytes), out); }



// A tree and the stacks that build, write and free it.
struct EiTree {
  EiNode root;
  EiTreeScratch scratch;
  EiTree() = default;
  EiTree(const EiTree&) = delete;
  EiTree& operator=(const EiTree&) = delete;
  ~EiTree() { camlbeam::bench::ei_tree_free(root, scratch); }

  bool decode(ByteSpan bytes, int* end = nullptr) {
    camlbeam::bench::ei_tree_free(root, scratch);
    return camlbeam::bench::ei_tree_decode(reinterpret_cast<const char*>(bytes.data()), root, scratch, end);
  }
  void clear() { camlbeam::bench::ei_tree_free(root, scratch); }
};

bool encode_libei(const EiNode& root, EiTreeScratch& scratch, ei_x_buff& x) {
  x.index = 0;
  return ei_x_encode_version(&x) == 0 && camlbeam::bench::ei_tree_encode(x, root, scratch);
}

// The tree is built and freed inside the call, as decode_term's is.
bool roundtrip_libei(ByteSpan bytes, EiTree& tree, ei_x_buff& x) {
  const bool ok = tree.decode(bytes) && encode_libei(tree.root, tree.scratch, x);
  tree.clear();
  return ok;
}

// ---- The OCaml GC, as Gc.quick_stat sees it ----

struct GcStat {
  double minor_words = 0, major_words = 0;
  double minor_collections = 0, major_collections = 0, compactions = 0;
  double heap_words = 0, top_heap_words = 0;

  static GcStat now() {
    const value s = caml_gc_quick_stat(Val_unit);  // Gc.stat; the floats are boxed
    GcStat g;
    g.minor_words = Double_val(Field(s, 0));
    g.major_words = Double_val(Field(s, 2));
    g.minor_collections = static_cast<double>(Long_val(Field(s, 3)));
    g.major_collections = static_cast<double>(Long_val(Field(s, 4)));
    g.heap_words = static_cast<double>(Long_val(Field(s, 5)));
    g.compactions = static_cast<double>(Long_val(Field(s, 13)));
    g.top_heap_words = static_cast<double>(Long_val(Field(s, 14)));
    return g;
  }
};

// Per-iteration GC counters of one OCaml benchmark run.
class GcCounters {
 public:
  GcCounters() : before_(GcStat::now()) {}
  void report(benchmark::State& state) const {
    const GcStat after = GcStat::now();
    const auto per_op = benchmark::Counter::kAvgIterations;
    state.counters["minor_gcs"] = benchmark::Counter(after.minor_collections - before_.minor_collections, per_op);
    state.counters["major_gcs"] = benchmark::Counter(after.major_collections - before_.major_collections, per_op);
    state.counters["minor_words"] = benchmark::Counter(after.minor_words - before_.minor_words, per_op);
    state.counters["major_words"] = benchmark::Counter(after.major_words - before_.major_words, per_op);
    state.counters["compactions"] = benchmark::Counter(after.compactions - before_.compactions, per_op);
    state.counters["heap_words"] = after.heap_words;
  }

 private:
  GcStat before_;
};

// ---- --check ----

std::string first_difference(ByteSpan got, ByteSpan want) {
  const auto [g, w] = std::ranges::mismatch(got, want);
  return "at byte " + std::to_string(g - got.begin()) + " of " + std::to_string(got.size()) + " (expected " +
         std::to_string(want.size()) + ")";
}

int check_payload(std::string_view name, const std::filesystem::path& dir) {
  int failures = 0;
  auto fail = [&](const std::string& what) {
    std::cerr << "conv_bench --check: " << name << ": " << what << "\n";
    ++failures;
  };
  const Bytes bytes = read_payload(dir, name);
  etf::ByteBuffer out;

  if (!roundtrip_ocaml(bytes, out)) fail("conv::etf_to_ocaml rejects the payload");
  else if (!std::ranges::equal(out.span(), bytes))
    fail("ETF -> Erl.Term.t -> ETF differs " + first_difference(out.span(), bytes));
  // The halves as they are timed: encode from a value decoded earlier, after a full major
  // GC has moved it (the Root must follow).
  if (const conv::DecodeToOcaml d = decode_ocaml(bytes); !d.error) {
    caml_gc_full_major(Val_unit);
    encode_ocaml(d.value.get(), out);
    if (!std::ranges::equal(out.span(), bytes)) fail("encode half differs " + first_difference(out.span(), bytes));
  } else {
    fail("the decode half rejects the payload");
  }

  roundtrip_term(bytes, out);
  if (!std::ranges::equal(out.span(), bytes))
    fail("ETF -> etf::Term -> ETF differs " + first_difference(out.span(), bytes));

  // libei writes every atom as SMALL_ATOM_UTF8_EXT and integers beyond 28 bits as
  // SMALL_BIG_EXT (term_to_binary uses INTEGER_EXT up to 32 bits): its bytes differ from
  // the input, so they must decode to an equal term, and equal term_to_binary(T,
  // [{minor_version, 2}]) exactly when there is no such integer.
  const etf::Term want = etf::decode_term(bytes);
  const Bytes want_ei = etf::encode(want, {.minor_version = 2});
  EiTree tree;
  EiBuffer x;
  int end = 0;
  bool ei_identical = false;
  if (!tree.decode(bytes, &end)) fail("libei tree decode rejects the payload");
  else if (static_cast<std::size_t>(end) != bytes.size()) fail("libei stopped at byte " + std::to_string(end));
  if (!roundtrip_libei(bytes, tree, x.x)) fail("libei tree round trip failed");
  else if (std::ranges::equal(ei_span(x.x), want_ei)) ei_identical = true;
  else if (etf::decode_term(ei_span(x.x)) != want) fail("libei tree round trip gives another term");

  if (failures == 0)
    std::cout << name << " bytes=" << bytes.size() << " ours_ocaml=identical ours_term=identical libei_tree="
              << (ei_identical ? "identical(minor_version 2)" : "equal_term(" + std::to_string(x.x.index) + " bytes)")
              << "\n";
  return failures;
}

// ---- Benchmarks ----

// What each payload's benchmarks read: the bytes, and the C++ values decoded from them
// once, for the encode halves. The OCaml one is decoded by its benchmark (Work::ocaml), so
// that no payload's value stays live on the OCaml heap while the others are timed: the
// major GC's work grows with what is live, and a worker's heap between requests holds its
// own data, not our inputs.
struct Input {
  Bytes bytes;
  etf::Term tree;
  EiTree ei;
};

// State one benchmark keeps between iterations: reused output buffers and libei stacks,
// and the value the OCaml encode half writes.
struct Work {
  etf::ByteBuffer out;
  EiTree tree;
  EiBuffer x;
  conv::Root ocaml;
};

// Every benchmark as NAME -> N iterations, for --loop (profilers: callgrind, perf stat).
std::map<std::string, std::function<void(long)>>& loops() {
  static std::map<std::string, std::function<void(long)>> all;
  return all;
}

// The untimed loop of --loop: profilers look for this frame (callgrind
// --toggle-collect='*conv_bench_loop*'), which holds the iterations and nothing of the setup.
[[gnu::noinline]] void conv_bench_loop(const std::function<bool()>& iteration, long n) {
  for (long i = 0; i < n; ++i)
    if (!iteration()) throw std::runtime_error("the operation failed (conv_bench --check says why)");
}

// What the OCaml code of a worker does between two requests, timed with each OCaml
// iteration: the runtime runs its pending actions (requested GC slices, signal handlers,
// finalisers). In a worker the export's OCaml code does it at its first allocation. Without
// it nothing here ever would: once the GC has run, caml_something_to_do stays set and
// every allocation from C takes the runtime's slow path (caml_alloc_small_dispatch +
// caml_check_urgent_gc), which no worker sees at the start of a request. It runs GC work,
// it does not skip any.
bool as_worker = false;  // set by apply_worker_gc_policy
bool host_poll() {
  if (as_worker) camlbeam::host::collect_between_requests();
  return !Is_exception_result(caml_process_pending_actions_exn());
}

// --as-worker: the GC policy of a camlbeam worker (Erl_host.apply_worker_gc_defaults, and
// collect_between_requests in every poll), instead of the runtime's defaults.
void apply_worker_gc_policy() {
  const value* defaults = caml_named_value("camlbeam.host.worker_gc_defaults");
  if (defaults == nullptr) throw std::runtime_error("camlbeam.host is not linked in");
  if (Is_exception_result(caml_callback_exn(*defaults, Val_unit)))
    throw std::runtime_error("camlbeam.host.worker_gc_defaults raised");
  as_worker = true;
}

// Starts every OCaml benchmark from the same heap, whatever ran before it (the order is
// random): the garbage of earlier benchmarks is collected, and the major GC has no debt of
// theirs to pay inside this one's timed loop. The loop itself never forces a collection.
void settle_ocaml_heap() { caml_gc_full_major(Val_unit); }

// One benchmark: `setup(work)` runs untimed, then `iteration(work)` is the timed operation
// (false on failure). OCaml benchmarks also report what the GC did per iteration.
template <class Setup, class F>
void add(const std::string& name, bool ocaml, Setup setup, F iteration) {
  benchmark::RegisterBenchmark(name.c_str(), [ocaml, setup, iteration](benchmark::State& state) {
    Work work;
    setup(work);
    std::optional<GcCounters> gc;
    if (ocaml) {
      settle_ocaml_heap();
      gc.emplace();
    }
    for (auto _ : state) {
      if (ocaml && !host_poll()) state.SkipWithError("an OCaml pending action raised");
      if (!iteration(work)) state.SkipWithError("the operation failed (conv_bench --check says why)");
      benchmark::ClobberMemory();
    }
    if (gc) gc->report(state);
  })->Unit(benchmark::kNanosecond)->UseRealTime();  // UseRealTime: as etf_bench, wall clock
  loops()[name] = [ocaml, setup, iteration](long n) {
    Work work;
    setup(work);
    if (ocaml) settle_ocaml_heap();
    if (ocaml) conv_bench_loop([&] { return host_poll() && iteration(work); }, n);
    else conv_bench_loop([&] { return iteration(work); }, n);
  };
}

template <class F>
void add(const std::string& name, bool ocaml, F iteration) {
  add(name, ocaml, [](Work&) {}, iteration);
}

void register_payload(std::string_view payload, Input& in) {
  const std::string p(payload);
  const ByteSpan bytes = in.bytes;

  add("roundtrip/ours_ocaml/" + p, true, [bytes](Work& w) {
    const bool ok = roundtrip_ocaml(bytes, w.out);
    benchmark::DoNotOptimize(w.out.data());
    return ok;
  });
  add("decode/ours_ocaml/" + p, true, [bytes](Work&) {
    const conv::UnrootedDecode d = conv::etf_to_ocaml_unrooted(bytes);
    benchmark::DoNotOptimize(d.term);
    return !d.error;
  });
  add(
      "encode/ours_ocaml/" + p, true,
      [bytes](Work& w) {
        conv::DecodeToOcaml d = decode_ocaml(bytes);
        if (d.error) throw std::runtime_error("conv::etf_to_ocaml failed (conv_bench --check says why)");
        w.ocaml = std::move(d.value);
      },
      [](Work& w) {
        encode_ocaml(w.ocaml.get(), w.out);
    benchmark::DoNotOptimize(w.out.data());
    return true;
  });

  add("roundtrip/ours_term/" + p, false, [bytes](Work& w) {
    roundtrip_term(bytes, w.out);
    benchmark::DoNotOptimize(w.out.data());
    return true;
  });
  add("decode/ours_term/" + p, false, [bytes](Work&) {
    benchmark::DoNotOptimize(etf::decode_term(bytes));
    return true;
  });
  add("encode/ours_term/" + p, false, [&tree = in.tree](Work& w) {
    encode_term(tree, w.out);
    benchmark::DoNotOptimize(w.out.data());
    return true;
  });

  add("roundtrip/libei_tree/" + p, false, [bytes](Work& w) {
    const bool ok = roundtrip_libei(bytes, w.tree, w.x.x);
    benchmark::DoNotOptimize(w.x.x.buff);
    return ok;
  });
  add("decode/libei_tree/" + p, false, [bytes](Work& w) {
    const bool ok = w.tree.decode(bytes);
    benchmark::DoNotOptimize(w.tree.root);
    w.tree.clear();
    return ok;
  });
  add("encode/libei_tree/" + p, false, [&tree = in.ei](Work& w) {
    const bool ok = encode_libei(tree.root, tree.scratch, w.x.x);
    benchmark::DoNotOptimize(w.x.x.buff);
    return ok;
  });
}

// Starts OCaml once for the whole process, on this (the benchmark) thread. Sys.argv is just
// the program name: the benchmark flags are none of OCaml's business.
void start_ocaml(char* program) {
  static char* argv[] = {program, nullptr};
  const value result = caml_startup_exn(argv);
  if (Is_exception_result(result)) throw std::runtime_error("an OCaml initialiser raised at start-up");
  if (caml_named_value("camlbeam.map_of_array") == nullptr)
    throw std::runtime_error("the Erl library is not linked in (camlbeam.map_of_array is not registered)");
}

}  // namespace

int main(int argc, char** argv) {
  std::filesystem::path dir;
  bool check = false;
  bool worker_policy = false;  // --as-worker
  std::string loop;  // NAME:N
  std::vector<char*> rest{argv[0]};
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg.starts_with("--payloads=")) dir = arg.substr(11);
    else if (arg == "--check") check = true;
    else if (arg.starts_with("--loop=")) loop = arg.substr(7);
    else if (arg == "--as-worker") worker_policy = true;
    else rest.push_back(argv[i]);
  }
  if (dir.empty()) {
    std::cerr << "usage: conv_bench --payloads=DIR [--as-worker] [--check | --loop=NAME:N | benchmark flags]\n";
    return 2;
  }
  try {
    start_ocaml(argv[0]);
    if (worker_policy) apply_worker_gc_policy();
    const auto payloads = camlbeam::bench::all_payloads();
    std::vector<std::string_view> names;
    std::apply([&](const auto&... p) { (names.push_back(p.name), ...); }, payloads);

    if (check) {
      int failures = 0;
      for (std::string_view name : names) failures += check_payload(name, dir);
      return failures == 0 ? 0 : 1;
    }

    if (!camlbeam::bench::start_google_benchmark(rest)) return 2;
    benchmark::AddCustomContext("ocaml_version", OCAML_VERSION_STRING);
    std::string joined;
    for (std::string_view n : names) joined += (joined.empty() ? "" : ",") + std::string(n);
    benchmark::AddCustomContext("payloads", joined);
    const GcStat start = GcStat::now();
    benchmark::AddCustomContext("ocaml_minor_heap_words", std::to_string(Caml_state->minor_heap_wsz));
    benchmark::AddCustomContext("gc_policy", worker_policy ? "worker" : "runtime default");

    std::deque<Input> inputs;  // stable addresses: the benchmarks keep references
    for (std::string_view name : names) {
      Input& in = inputs.emplace_back();
      in.bytes = read_payload(dir, name);
      in.tree = etf::decode_term(in.bytes);
      if (!in.ei.decode(in.bytes)) throw std::runtime_error(std::string(name) + ": libei tree decode failed");
      register_payload(name, in);
    }
    if (!loop.empty()) {
      const auto colon = loop.rfind(':');
      const auto it = loops().find(loop.substr(0, colon));
      if (colon == std::string::npos || it == loops().end()) {
        std::cerr << "conv_bench: --loop=NAME:N, NAME one of:";
        for (const auto& [name, _] : loops()) std::cerr << ' ' << name;
        std::cerr << "\n";
        return 2;
      }
      it->second(std::stol(loop.substr(colon + 1)));
      return 0;
    }
    benchmark::RunSpecifiedBenchmarks();
    const GcStat end = GcStat::now();
    std::cerr << "conv_bench: OCaml GC over the run: " << end.minor_collections - start.minor_collections
              << " minor collections, " << end.major_collections - start.major_collections << " major cycles, "
              << end.compactions - start.compactions << " compactions, top heap " << end.top_heap_words
              << " words\n";
    benchmark::Shutdown();
  } catch (const std::exception& e) {
    std::cerr << "conv_bench: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
