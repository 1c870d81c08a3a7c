#!/usr/bin/env bash
# Installs every Debian package camlbeam builds, tests, benchmarks or demonstrates with.
# Idempotent and silent when everything is already there; safe to run before each build.
set -euo pipefail

packages=(
  # C++ core
  g++ cmake ninja-build pkg-config zlib1g-dev libssl-dev libasio-dev libcli11-dev libfmt-dev
  # the certificates of the TLS distribution tests (openssl req, x509)
  openssl
  # tests, sanitizers, fuzzing, benchmarks
  libgtest-dev libgmock-dev libbenchmark-dev clang libclang-rt-14-dev valgrind
  # bench/report.py, which turns the benchmark runs into the report with its verdicts
  python3
  # Erlang/OTP 25: runtime, erl_interface (libei baseline), test and analysis tools
  erlang-nox erlang-dev erlang-eunit erlang-common-test erlang-dialyzer erlang-proper-dev rebar3
  # Elixir 1.14: docs/elixir.md is tested for real (scripts/test-elixir.sh)
  elixir
  # OCaml 4.13 and the libraries the Erl library uses
  ocaml-nox ocaml-dune ocaml-findlib libalcotest-ocaml-dev libzarith-ocaml-dev
  # OCaml 5.3, which scripts/setup-ocaml5.sh builds (its sources come through npm, which
  # the machine's Node.js brings, and apt-get source): tarballs, GMP for zarith, make
  bzip2 xz-utils libgmp-dev make
  # network namespaces for multi-host tests, process tools used by the test scripts
  iproute2 procps
)

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

echo "setup: installing ${missing[*]}"
SUDO=""
[[ $(id -u) -eq 0 ]] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "setup: done"
