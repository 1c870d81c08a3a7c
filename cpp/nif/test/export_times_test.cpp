// ExportTimes without a VM: which exports run on the scheduler that calls them.
#include "export_times.hpp"

#include <gtest/gtest.h>

#include <chrono>

namespace camlbeam::nif {
namespace {

using namespace std::chrono_literals;

// Atoms are opaque words to ExportTimes: any distinct values name distinct exports.
const ExportKey echo{1, 2};
const ExportKey busy{1, 3};
const ExportKey unqualified_echo{0, 2};

void run_short(ExportTimes& times, const ExportKey& key, std::uint32_t runs) {
  for (std::uint32_t run = 0; run < runs; ++run) times.ran(key, 10us);
}

TEST(ExportTimes, MeasuredShortAfterEnoughShortRuns) {
  ExportTimes times;
  EXPECT_FALSE(times.is_short(echo));
  run_short(times, echo, ExportTimes::runs_to_trust - 1);
  EXPECT_FALSE(times.is_short(echo));
  times.ran(echo, 10us);
  EXPECT_TRUE(times.is_short(echo));
  // One long run on the OCaml thread: counted again from nothing.
  times.ran(echo, 200us);
  EXPECT_FALSE(times.is_short(echo));
}

TEST(ExportTimes, DeclaredShortFromTheFirstCall) {
  ExportTimes times;
  times.declare_short({echo, unqualified_echo});
  EXPECT_TRUE(times.is_short(echo));
  EXPECT_TRUE(times.is_short(unqualified_echo));
  EXPECT_TRUE(times.is_declared(echo));
  EXPECT_FALSE(times.is_short(busy));
  EXPECT_FALSE(times.is_declared(busy));
}

TEST(ExportTimes, ALoadThatNoLongerDeclaresItTakesItBack) {
  ExportTimes times;
  times.declare_short({echo});
  times.declare_short({busy});
  EXPECT_FALSE(times.is_short(echo));
  EXPECT_TRUE(times.is_short(busy));
}

TEST(ExportTimes, ADeclaredOverrunDemotesAndIsLoggedOnce) {
  ExportTimes times;
  times.declare_short({busy});
  EXPECT_EQ(ExportTimes::Overrun::none, times.ran_on_scheduler(busy, 900us));
  EXPECT_TRUE(times.is_short(busy));
  EXPECT_EQ(ExportTimes::Overrun::first, times.ran_on_scheduler(busy, 2ms));
  EXPECT_FALSE(times.is_short(busy));
  // Back once it has run short again on the OCaml thread: for a declared export, under
  // declared_short_run (it never promised short_run).
  run_short(times, busy, ExportTimes::runs_to_trust - 1);
  times.ran(busy, 300us);
  EXPECT_TRUE(times.is_short(busy));
  EXPECT_EQ(ExportTimes::Overrun::again, times.ran_on_scheduler(busy, 2ms));
  EXPECT_FALSE(times.is_short(busy));
}

TEST(ExportTimes, MeasuredOverrunsAreLoggedOnceAndEndInDistrust) {
  ExportTimes times;
  for (std::uint32_t overrun = 0; overrun < ExportTimes::overruns_to_distrust; ++overrun) {
    run_short(times, echo, ExportTimes::runs_to_trust);
    ASSERT_TRUE(times.is_short(echo));
    EXPECT_EQ(overrun == 0 ? ExportTimes::Overrun::first : ExportTimes::Overrun::again,
              times.ran_on_scheduler(echo, 5ms));
  }
  run_short(times, echo, ExportTimes::runs_to_trust);
  EXPECT_FALSE(times.is_short(echo));
  // Distrusted, not for ever: after runs_to_forgive short runs in a row it is trusted again.
  run_short(times, echo, ExportTimes::runs_to_forgive - ExportTimes::runs_to_trust - 1);
  EXPECT_FALSE(times.is_short(echo));
  times.ran(echo, 10us);
  EXPECT_TRUE(times.is_short(echo));
  // A second distrust asks twice as many, and a long run starts the count again.
  for (std::uint32_t overrun = 0; overrun < ExportTimes::overruns_to_distrust; ++overrun) {
    run_short(times, echo, ExportTimes::runs_to_trust);
    EXPECT_EQ(ExportTimes::Overrun::again, times.ran_on_scheduler(echo, 5ms));
  }
  run_short(times, echo, ExportTimes::runs_to_forgive);
  times.ran(echo, 200us);
  run_short(times, echo, 2 * ExportTimes::runs_to_forgive - 1);
  EXPECT_FALSE(times.is_short(echo));
  times.ran(echo, 10us);
  EXPECT_TRUE(times.is_short(echo));
}

TEST(ExportTimes, ADistrustedExportMayStillRunOnADirtyScheduler) {
  ExportTimes times;
  for (std::uint32_t overrun = 0; overrun < ExportTimes::overruns_to_distrust; ++overrun) {
    run_short(times, busy, ExportTimes::runs_to_trust);
    times.ran_on_scheduler(busy, 5ms);
  }
  for (std::uint32_t run = 0; run < ExportTimes::runs_to_trust; ++run) times.ran(busy, 2ms);
  EXPECT_FALSE(times.is_short(busy));
  EXPECT_TRUE(times.is_normal(busy));  // its runs are under normal_run: not the scheduler's business
}

TEST(ExportTimes, NormalAfterEnoughRunsUnderTheNormalRun) {
  ExportTimes times;
  for (std::uint32_t run = 0; run < ExportTimes::runs_to_trust; ++run) times.ran(busy, 2ms);
  EXPECT_TRUE(times.is_normal(busy));
  EXPECT_FALSE(times.is_short(busy));
  // One run past it (a call cancelled at its deadline, say): back to the OCaml thread.
  times.ran(busy, 20ms);
  EXPECT_FALSE(times.is_normal(busy));
  for (std::uint32_t run = 0; run < ExportTimes::runs_to_trust; ++run) times.ran(busy, 2ms);
  EXPECT_TRUE(times.is_normal(busy));
  times.never_short(busy);
  EXPECT_FALSE(times.is_normal(busy));
}

TEST(ExportTimes, CallingErlangIsNeverShortEvenDeclared) {
  ExportTimes times;
  times.declare_short({echo});
  times.never_short(echo);
  EXPECT_FALSE(times.is_short(echo));
  times.declare_short({echo});
  EXPECT_FALSE(times.is_short(echo));
}

}  // namespace
}  // namespace camlbeam::nif
