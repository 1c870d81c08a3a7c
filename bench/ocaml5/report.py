#!/usr/bin/env python3
"""bench/ocaml5/compare.sh's tables: OCaml 5.3 against 4.13, per row, from the raw results
of ROUNDS alternated rounds in DIR (rt-{old,new}-I.txt: port_bench reports; conv-{old,new}-
I.json: conv_bench's Google Benchmark JSON). Every ratio is 5.3 / 4.13 (above 1: 5.3 slower),
the median over the rounds of each round's own ratio (the two builds of a round ran next
to each other, so under about the same load).

    report.py DIR ROUNDS
"""
import json
import statistics
import sys


def round_trips(path):
    """{(payload, callers, worker): (p50 us, wCPU/call us or None)}"""
    rows = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 7 and parts[1].isdigit():
                try:
                    p50 = float(parts[3])
                except ValueError:
                    continue
                cpu = None if parts[6] == "-" else float(parts[6])
                rows[(parts[0], int(parts[1]), parts[2])] = (p50, cpu)
    return rows


def conv(path):
    """{benchmark: (median cpu ns, minor_gcs per op, major_gcs per op, minor_words per op)}"""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    out = {}
    for b in data["benchmarks"]:
        if b.get("aggregate_name") == "median":
            out[b["run_name"].removesuffix("/real_time")] = (b["cpu_time"], b.get("minor_gcs"), b.get("major_gcs"), b.get("minor_words"))
    return out


def ratio(olds, news):
    rs = [n / o for o, n in zip(olds, news) if o and n is not None]
    return statistics.median(rs) if rs else float("nan")


def main():
    d, rounds = sys.argv[1], int(sys.argv[2])
    rng = range(1, rounds + 1)
    rt = {w: [round_trips(f"{d}/rt-{w}-{i}.txt") for i in rng] for w in ("old", "new")}
    print(f"\n== Port round trips (port_bench round_trips, 5 inner rounds of 300 ms a cell), "
          f"p50 us, median of {rounds} rounds ==")
    print(f"{'payload':<12} {'callers':>7} {'worker':<15} {'4.13':>9} {'5.3':>9} {'5.3/4.13':>9}"
          f" {'wCPU 4.13':>10} {'wCPU 5.3':>9} {'wCPU ratio':>10}")
    keys = [k for k in rt["old"][0] if k[2] in ("camlbeam", "camlbeam_s=4M", "c_port")]
    for k in keys:
        o = [r[k] for r in rt["old"] if k in r]
        n = [r[k] for r in rt["new"] if k in r]
        po, pn = [x[0] for x in o], [x[0] for x in n]
        co, cn = [x[1] for x in o], [x[1] for x in n]
        print(f"{k[0]:<12} {k[1]:>7} {k[2]:<15} {statistics.median(po):9.1f} {statistics.median(pn):9.1f}"
              f" {ratio(po, pn):9.2f} {statistics.median(co):10.2f} {statistics.median(cn):9.2f}"
              f" {ratio(co, cn):10.2f}")
    print("(c_port runs no OCaml: its ratio is the noise between the two builds' cells. wCPU: the worker"
          " process's CPU time per call, us, from /proc/<pid>/schedstat.)")

    cv = {w: [conv(f"{d}/conv-{w}-{i}.json") for i in rng] for w in ("old", "new")}
    print(f"\n== conv_bench --as-worker (median CPU ns of 3 repetitions a round), median of {rounds} rounds ==")
    print(f"{'benchmark':<34} {'4.13':>10} {'5.3':>10} {'5.3/4.13':>9} {'minor GCs/op 4.13':>18} {'5.3':>9}")
    names = sorted(cv["old"][0], key=lambda n: (n.split("/")[1], n.split("/")[2], n.split("/")[0]))
    for name in names:
        o = [r[name][0] for r in cv["old"] if name in r]
        n = [r[name][0] for r in cv["new"] if name in r]
        go = [r[name][1] for r in cv["old"] if name in r and r[name][1] is not None]
        gn = [r[name][1] for r in cv["new"] if name in r and r[name][1] is not None]
        gcs = (f"{statistics.median(go):18.4f} {statistics.median(gn):9.4f}" if go and gn else f"{'-':>18} {'-':>9}")
        print(f"{name:<34} {statistics.median(o):10.1f} {statistics.median(n):10.1f} {ratio(o, n):9.2f} {gcs}")
    print("(roundtrip/libei_tree runs no OCaml: its ratio is the noise between the two binaries.)")


if __name__ == "__main__":
    main()
