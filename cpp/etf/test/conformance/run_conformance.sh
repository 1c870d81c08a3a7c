#!/usr/bin/env bash
# The ETF conformance test against the installed Erlang/OTP, as ctest runs it:
#   1. erlc compiles etf_conformance.erl into the work directory;
#   2. Erlang (node conf_gen) generates the terms and writes OTP's encodings of them;
#   3. the C++ driver checks direction (a), our re-encoding is byte-identical, and writes
#      our encodings (conformance_test.cpp for the ETF codec; cpp/conv/test runs the same
#      flow with a driver that goes through OCaml values);
#   4. Erlang (node conf_check) checks direction (b), binary_to_term(ours) =:= original.
# Exits non-zero on any mismatch, after printing the first ones of each direction.
#
# usage: run_conformance.sh DRIVER WORK_DIR ERL ERLC EPMD
# environment: CAMLBEAM_CONF_SEED (default below), CAMLBEAM_CONF_COUNT (random terms,
# default 100000) to reproduce or widen a run.
set -euo pipefail

if [[ $# -ne 5 ]]; then
  echo "usage: $0 DRIVER WORK_DIR ERL ERLC EPMD" >&2
  exit 2
fi
driver=$1 work=$2 erl=$3 erlc=$4 epmd=$5
source_dir=$(cd "$(dirname "$0")" && pwd)

readonly default_seed=20250611
readonly default_count=100000
readonly cookie=camlbeam_conformance
# Each step normally takes seconds; these only bound a hang. The Erlang side also halts
# itself after 120 s (etf_conformance.erl), and timeout kills what ignores SIGTERM.
readonly step_timeout=150

seed=${CAMLBEAM_CONF_SEED:-$default_seed}
count=${CAMLBEAM_CONF_COUNT:-$default_count}
for value in "$seed" "$count"; do
  if ! [[ $value =~ ^[0-9]+$ ]]; then
    echo "conformance: CAMLBEAM_CONF_SEED and CAMLBEAM_CONF_COUNT must be non-negative integers" >&2
    exit 2
  fi
done

ebin=$work/ebin
input=$work/erlang_encodings.bin
output=$work/our_encodings.bin
rm -rf "$work"
mkdir -p "$ebin"

# Distribution on loopback only: epmd and the nodes' listen sockets.
export ERL_EPMD_ADDRESS=127.0.0.1
export ERL_CRASH_DUMP=$work/erl_crash.dump
export ERL_CRASH_DUMP_SECONDS=10

echo "conformance: seed $seed, $count random terms" \
     "(reproduce with CAMLBEAM_CONF_SEED=$seed CAMLBEAM_CONF_COUNT=$count)"

"$erlc" -Werror -o "$ebin" "$source_dir/etf_conformance.erl"

# -sname needs epmd. A second daemon exits quietly when one is already running.
"$epmd" -daemon -address 127.0.0.1
for _ in $(seq 50); do
  "$epmd" -names >/dev/null 2>&1 && break
  sleep 0.1
done
if ! "$epmd" -names >/dev/null 2>&1; then
  echo "conformance: FAILED: epmd does not answer on 127.0.0.1" >&2
  exit 1
fi

# The node names carry this script's pid: two runs at once (two drivers, two build trees)
# must not both claim one name from epmd.
run_erl() {
  local node=${1}_$$
  shift
  timeout --kill-after=10 "$step_timeout" "$erl" -sname "$node" -setcookie "$cookie" \
    -noshell -noinput -kernel inet_dist_use_interface '{127,0,0,1}' \
    -pa "$ebin" -run etf_conformance "$@"
}

step_start=$SECONDS
report_time() {
  echo "conformance: $1 took $((SECONDS - step_start)) s"
  step_start=$SECONDS
}

status=0
run_erl conf_gen generate "$input" "$seed" "$count" || status=$?
report_time "generation"
if [[ $status -ne 0 ]]; then
  echo "conformance: FAILED: the Erlang generator exited with status $status" >&2
  exit 1
fi

cpp_status=0
CAMLBEAM_CONF_INPUT=$input CAMLBEAM_CONF_OUTPUT=$output \
  timeout --kill-after=10 "$step_timeout" "$driver" || cpp_status=$?
report_time "the C++ checks (a)"
if [[ ! -s $output ]]; then
  echo "conformance: FAILED: the C++ driver exited with status $cpp_status and wrote no encodings" >&2
  exit 1
fi

# Direction (b) runs even when (a) failed: together they tell a wrong byte from a wrong term.
check_status=0
run_erl conf_check check "$input" "$output" || check_status=$?
report_time "the Erlang checks (b)"

if [[ $cpp_status -ne 0 || $check_status -ne 0 ]]; then
  echo "conformance: FAILED (C++ driver status $cpp_status, Erlang checker status $check_status);" \
       "the encodings are kept in $work" >&2
  exit 1
fi
rm -f "$input" "$output"  # a few hundred MB, only worth keeping for a failure
echo "conformance: PASSED"
