# Sourced by the scripts that repeat port_bench's round trips (compare.sh, and
# bench/ocaml5/compare.sh): one round_trips section of a build, and a median.

# port_round_trips BUILD EBIN PAYLOADS OUT [port_bench options...]: the round_trips section
# of port_bench with BUILD's worker, C port and plugins, the application in EBIN, the
# payload files in PAYLOADS, its report into OUT (stdout discarded).
port_round_trips() {
  local build=$1 ebin=$2 payloads=$3 out=$4
  shift 4
  local here="$build/bench/port"
  erl -noshell -pa "$here/ebin" -pa "$ebin" \
    -run port_bench main -extra --only round_trips \
    --c-port "$here/c_port" --worker "$build/cpp/port/camlbeam-port" \
    --bench-plugin "$here/port_bench_exports.cmxs" --kernels-plugin "$here/kernels.cmxs" \
    --standalone "$here/kernels_standalone" --idle "$here/ocaml_idle" \
    --idle-linkall "$here/ocaml_idle_linkall" --payloads "$payloads" \
    --out "$out" "$@" >/dev/null
}

# Numbers on stdin, one a line -> their median.
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
