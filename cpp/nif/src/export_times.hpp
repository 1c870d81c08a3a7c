// Which exports are short enough to run on the scheduler that calls them (Service::run_here,
// README.md "Short calls run where they are made"). Apart from the service so that it can be
// tested without a VM: it only compares the atoms that name an export. Not thread-safe: the
// service reads and writes it under its own lock, in the critical sections a call takes
// anyway (a lock of its own was two more per short call).
#pragma once

#include <erl_nif.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <unordered_map>
#include <utility>
#include <vector>

namespace camlbeam::nif {

// An export as a call names it: Function alone ({0, Function}) or {Module, Function}, both
// atoms (immediate terms, the same in every environment).
using ExportKey = std::pair<ERL_NIF_TERM, ERL_NIF_TERM>;

// Atoms are the same terms in every environment, for the VM's life: a key hashes as its
// two words.
struct ExportKeyHash {
  std::size_t operator()(const ExportKey& key) const noexcept {
    return std::hash<ERL_NIF_TERM>()(key.first) * 31 + std::hash<ERL_NIF_TERM>()(key.second);
  }
};

// Those the plugin declared short (Erl.export ~short:true), from their first call, and those
// whose last `runs_to_trust` runs each took less than `short_run`, from the request's
// arguments to its answer. A run on a scheduler over `scheduler_budget` sends the export's
// calls back to the OCaml thread until it has run short that many times again (wall-clock
// time: the OS may have taken the thread away, or a major GC slice fallen into the call;
// for a declared export, a run under `declared_short_run` counts as short: it was never
// promised to be under `short_run`). After `overruns_to_distrust` of them it is distrusted:
// it runs on a scheduler again only once it has run short `runs_to_forgive` times in a row,
// twice as many at each later distrust (an export whose runs changed, a warm-up that was
// slow, is not shut out for the life of the VM; one that keeps overrunning is, nearly).
// Once it calls Erlang (Erl.call_erlang waits for a process), it never runs on a scheduler
// again.
//
// Normal exports (OCaml 5): those whose last `runs_to_trust` runs each took less than
// `normal_run`, wherever they ran; their calls run on a dirty CPU scheduler (Service::
// run_here, dirty) when they are not short. A run over `normal_run` sends them back to the
// OCaml thread until they have run under it that many times again; calling Erlang, for good.
class ExportTimes {
 public:
  static constexpr std::uint32_t runs_to_trust = 8;
  static constexpr std::chrono::microseconds short_run{50};
  static constexpr std::chrono::microseconds declared_short_run{500};
  static constexpr std::chrono::microseconds scheduler_budget{1000};
  static constexpr std::chrono::milliseconds normal_run{10};
  static constexpr std::uint32_t overruns_to_distrust = 8;
  static constexpr std::uint32_t runs_to_forgive = 1024;  // after the first distrust
  static constexpr std::uint32_t most_distrusts_doubled = 12;  // 4 Mi runs at most
  // Exports followed at most: names beyond are never short.
  static constexpr std::size_t max_exports = 4096;

  // What a run on a scheduler was: within the budget, or the export's first overrun (to
  // log), or a later one (logged already: once per export).
  enum class Overrun : std::uint8_t { none, first, again };

  bool is_short(const ExportKey& key);
  bool is_normal(const ExportKey& key);
  // Whether the plugin declared it short (for the log).
  bool is_declared(const ExportKey& key);
  // A run on the OCaml thread, or on a dirty scheduler.
  void ran(const ExportKey& key, std::chrono::nanoseconds took);
  // A run on a scheduler: past the budget, the export's calls go to the OCaml thread again.
  Overrun ran_on_scheduler(const ExportKey& key, std::chrono::nanoseconds took);
  void never_short(const ExportKey& key);
  // The exports declared short now, all of them (after a load: a new version of a module
  // may no longer declare what the old one did). What an export has shown, it keeps.
  void declare_short(const std::vector<ExportKey>& keys);

 private:
  struct Times {
    std::uint32_t short_runs = 0;  // in a row
    std::uint32_t normal_runs = 0; // in a row
    std::uint32_t overruns = 0;    // on a scheduler, since it was last trusted
    std::uint32_t distrusts = 0;   // times it was distrusted
    std::uint32_t forgiving = 0;   // short runs in a row while distrusted
    bool distrusted = false;
    bool never = false;            // it calls Erlang
    bool declared = false;         // Erl.export ~short:true
    bool demoted = false;          // declared, and overran on a scheduler since
    bool logged = false;           // an overrun of it was logged
  };
  // The export's entry, made if there is room (max_exports).
  Times* followed(const ExportKey& key);

  std::unordered_map<ExportKey, Times, ExportKeyHash> times_;
};

}  // namespace camlbeam::nif
