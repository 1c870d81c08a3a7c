// Test support: waiting for an Endpoint's events with a bound.
#pragma once

#include <camlbeam/dist/endpoint.hpp>

#include <chrono>
#include <optional>
#include <vector>

namespace camlbeam::dist::test_support {

// The next event of `kind` within `within`; the others met on the way go to `skipped`.
inline std::optional<EndpointEvent> next_event(Endpoint& ep, EndpointEvent::Kind kind, std::chrono::milliseconds within,
                                               std::vector<EndpointEvent>& skipped) {
  const auto deadline = Clock::now() + within;
  while (Clock::now() < deadline) {
    auto e = ep.wait_event(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()));
    if (!e) break;
    if (e->kind == kind) return e;
    skipped.push_back(std::move(*e));
  }
  return std::nullopt;
}

}  // namespace camlbeam::dist::test_support
