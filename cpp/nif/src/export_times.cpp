#include "export_times.hpp"

#include <algorithm>

namespace camlbeam::nif {

bool ExportTimes::is_short(const ExportKey& key) {
  const auto found = times_.find(key);
  if (found == times_.end() || found->second.never || found->second.distrusted) return false;
  return found->second.short_runs >= runs_to_trust || (found->second.declared && !found->second.demoted);
}

bool ExportTimes::is_normal(const ExportKey& key) {
  const auto found = times_.find(key);
  return found != times_.end() && !found->second.never && found->second.normal_runs >= runs_to_trust;
}

bool ExportTimes::is_declared(const ExportKey& key) {
  const auto found = times_.find(key);
  return found != times_.end() && found->second.declared;
}

ExportTimes::Times* ExportTimes::followed(const ExportKey& key) {
  const auto found = times_.find(key);
  if (found != times_.end()) return &found->second;
  if (times_.size() >= max_exports) return nullptr;
  return &times_.emplace(key, Times{}).first->second;
}

void ExportTimes::ran(const ExportKey& key, std::chrono::nanoseconds took) {
  Times* times = followed(key);
  if (times == nullptr || times->never) return;
  const std::chrono::nanoseconds limit = times->declared ? declared_short_run : short_run;
  times->short_runs = took < limit ? std::min(times->short_runs + 1, runs_to_trust) : 0;
  times->normal_runs = took < normal_run ? std::min(times->normal_runs + 1, runs_to_trust) : 0;
  if (times->distrusted) {
    times->forgiving = took < limit ? times->forgiving + 1 : 0;
    const std::uint32_t doubled = std::min(times->distrusts - 1, most_distrusts_doubled);
    if (times->forgiving >= runs_to_forgive << doubled) {
      times->distrusted = false;
      times->overruns = 0;
      times->forgiving = 0;
    }
  }
  // Trusted again by its runs: a later overrun is judged as any other's.
  if (times->short_runs >= runs_to_trust) times->demoted = false;
}

ExportTimes::Overrun ExportTimes::ran_on_scheduler(const ExportKey& key, std::chrono::nanoseconds took) {
  if (took <= scheduler_budget) return Overrun::none;
  const auto found = times_.find(key);
  if (found == times_.end()) return Overrun::again;  // not followed: it could not have run here
  Times& times = found->second;
  times.short_runs = 0;
  times.demoted = times.declared;
  if (++times.overruns >= overruns_to_distrust && !times.distrusted) {
    times.distrusted = true;
    ++times.distrusts;
    times.forgiving = 0;
  }
  return std::exchange(times.logged, true) ? Overrun::again : Overrun::first;
}

void ExportTimes::never_short(const ExportKey& key) {
  if (Times* times = followed(key)) times->never = true;
}

void ExportTimes::declare_short(const std::vector<ExportKey>& keys) {
  for (auto& entry : times_) entry.second.declared = false;
  for (const ExportKey& key : keys)
    if (Times* times = followed(key)) times->declared = true;
}

}  // namespace camlbeam::nif
