#!/usr/bin/env bash
# Fuzz smoke test: builds the libFuzzer targets with clang into build-fuzz and runs each
# for a short, fixed time on a scratch copy of its seed corpus (the committed corpus is
# never written to). Exits non-zero if a target crashes, leaks, times out or runs out of
# memory, printing where the reproducer was saved. Prints one summary line.
#
#   scripts/fuzz-smoke.sh              # 45 s per target, targets in parallel
#   FUZZ_SECONDS=600 scripts/fuzz-smoke.sh
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
build="$root/build-fuzz"
seconds="${FUZZ_SECONDS:-45}"
findings="$root/fuzz/findings"  # crash-*/leak-*/timeout-*/oom-* land here (git-ignored)
targets=(etf_decode_fuzzer etf_text_fuzzer etf_dist_header_fuzzer conv_roundtrip_fuzzer dist_handshake_fuzzer
         dist_frame_fuzzer)
declare -A corpus=([etf_decode_fuzzer]=etf_decode [etf_text_fuzzer]=etf_text [etf_dist_header_fuzzer]=etf_dist_header
               [conv_roundtrip_fuzzer]=etf_decode [dist_handshake_fuzzer]=dist_handshake
               [dist_frame_fuzzer]=dist_frame)
declare -A dict=([etf_decode_fuzzer]=etf.dict [etf_text_fuzzer]=text.dict [etf_dist_header_fuzzer]=etf.dict
             [conv_roundtrip_fuzzer]=etf.dict [dist_handshake_fuzzer]=dist_handshake.dict
             [dist_frame_fuzzer]=etf.dict)

for tool in clang clang++ cmake; do
  command -v "$tool" >/dev/null || { echo "fuzz-smoke: FAIL: $tool not found (scripts/setup.sh)"; exit 1; }
done
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)

started=$SECONDS
build_log="$build/fuzz-smoke-build.log"
mkdir -p "$build"
if ! { cmake -S "$root" -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCAMLBEAM_FUZZ=ON \
         -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DCAMLBEAM_BENCH=OFF -DCAMLBEAM_TESTS=OFF &&
       cmake --build "$build" --target "${targets[@]}"; } >"$build_log" 2>&1; then
  tail -n 30 "$build_log"
  echo "fuzz-smoke: FAIL: build failed (log: $build_log)"
  exit 1
fi

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$findings"

# Runs one target in the background; its log goes to $scratch/<target>.log.
run_target() {
  local target=$1 work="$scratch/$1-corpus"
  mkdir -p "$work"
  cp "$root/fuzz/corpus/${corpus[$target]}"/* "$work"/
  # The outer timeout is a backstop for a hung target: libFuzzer's own -max_total_time
  # ends a healthy run, and -timeout flags a single slow input as a finding.
  # The OCaml runtime's heap is never freed; one block of its start-up is reported as a leak.
  LSAN_OPTIONS="suppressions=$root/scripts/lsan.supp" \
  timeout --kill-after=10 $((seconds + 60)) "$build/fuzz/$target" "$work" \
    -dict="$root/fuzz/${dict[$target]}" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 \
    -max_len=65536 -print_final_stats=1 -artifact_prefix="$findings/$target-" \
    >"$scratch/$target.log" 2>&1
}

declare -A pid
for target in "${targets[@]}"; do
  run_target "$target" &
  pid[$target]=$!
done

summary=() failed=0
for target in "${targets[@]}"; do
  status=0
  wait "${pid[$target]}" || status=$?
  log="$scratch/$target.log"
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
  if [[ $status -eq 0 ]]; then
    summary+=("$target ${runs:-?} runs (${speed:-?}/s)")
  else
    failed=1
    artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
    echo "---- $target (exit $status) ----"
    grep -E -A 30 '^(==[0-9]+==ERROR|property violated|SUMMARY|.*deadly signal|.*-timeout|.*out-of-memory)' "$log" |
      head -n 60 || tail -n 40 "$log"
    summary+=("$target FAILED (exit $status${artifact:+, reproducer $artifact})")
  fi
done

line=$(IFS=';'; echo "${summary[*]}")
if [[ $failed -ne 0 ]]; then
  echo "fuzz-smoke: FAIL: ${line//;/; } in $((SECONDS - started)) s"
  exit 1
fi
echo "fuzz-smoke: OK: ${line//;/; } in $((SECONDS - started)) s"
