#!/usr/bin/env python3
"""Prints the ETF benchmark tables from one run (bench/run.sh calls it).

Inputs: Google Benchmark's JSON (etf_bench, and conv_bench for the round trip), the
escript's "erlang decode|encode NAME NS" lines and the payload directory (for sizes). One
table per direction, then the round trip and its halves; every ns/op is a median over
repetitions. Ratios are other/ours, so > 1 means ours is faster.

A ratio short of its target by less than the run's own noise (the coefficients of
variation of the two medians' repetitions, added) is a TIE, not a MISS: the run cannot tell
the two apart (a 1 MB memcpy against a 1 MB memcpy). Ties are counted apart. Erlang's rows
have no repetition spread (the escript reports medians only), so they are never ties.

Targets, each checked on the row where the comparison is like for like. Issue 2's:
  decode, streaming visitor   >= 1.5x libei (both read values into locals)
                              >= 1.0x binary_to_term
  encode, Writer and Term     >= 1.0x libei; term_to_binary for reference
one of our own, stricter than issue 2 (counted apart):
  decode, Term tree           >= 1.0x binary_to_term (both build a tree); libei for reference
and issue 3's:
  round trip, Erl.Term.t      >= 1.0x libei into a C tree and back, under the GC policy a
                              worker runs with (--conv-worker-gbench); the same under OCaml's
                              default GC is shown for reference, as are etf::Term and the
                              two halves
"""

import argparse
import json
import os
import platform
import sys

# (direction, our variant's benchmark id, label, {baseline: minimum ratio baseline/ours},
#  whether the target is issue 2's or our own)
ROWS = [
    ("decode", "ours_visitor", "visitor", {"libei": 1.5, "erlang": 1.0}, "issue"),
    ("decode", "ours_term", "Term", {"erlang": 1.0}, "own"),
    ("encode", "ours_writer", "Writer", {"libei": 1.0}, "issue"),
    ("encode", "ours_term", "Term", {"libei": 1.0}, "issue"),
]
DIRECTION_TITLES = {
    "decode": "DECODE  (ours: etf::decode into a visitor / etf::decode_term;"
              " libei: ei_get_type + ei_decode_*; erlang: binary_to_term/1)",
    "encode": "ENCODE  (ours: etf::Writer from native data / etf::encode_into(Term);"
              " libei: ei_x_encode_*; erlang: term_to_binary/1)",
}


ROUNDTRIP_TITLE = ("ROUND TRIP  ETF bytes -> value -> ETF bytes.  ours OCaml: conv::etf_to_ocaml +"
                   " conv::ocaml_to_etf (Erl.Term.t on the OCaml heap, GC cost included);\n"
                   "            ours Term: etf::decode_term + etf::encode_into;"
                   " libei tree: ei_decode_* into a C tree + ei_x_encode_* (tree freed each time)")
HALVES_TITLE = ("ROUND TRIP, THE HALVES  (reference, no targets)  decode: bytes -> value, value dropped;"
                " encode: a value decoded beforehand -> bytes")
ROUNDTRIP_IMPLS = ("ours_ocaml", "ours_term", "libei_tree")
GC_COUNTERS = ("minor_words", "minor_gcs", "major_gcs", "compactions")
GC_HEADERS = ["OCaml minor words/op", "minor GCs/op", "major GCs/op", "compactions/op"]


def gc_cells(counters):
    return [fmt_count(counters.get(c)) for c in GC_COUNTERS]


def load_gbench(path, counters=()):
    """{(direction, impl, payload): ns} from medians, or from single runs (smoke mode).

    With counters, also {(direction, impl, payload): {counter: value}}, the same way."""
    with open(path) as f:
        data = json.load(f)
    medians, singles = {}, {}
    counter_medians, counter_singles = {}, {}
    for b in data["benchmarks"]:
        if b.get("error_occurred"):
            sys.exit(f"report: {b['name']} failed: {b.get('error_message')}")
        # run_name is direction/impl/payload, then "/real_time" (UseRealTime).
        direction, impl, payload = b["run_name"].split("/")[:3]
        scale = {"ns": 1, "us": 1e3, "ms": 1e6, "s": 1e9}[b["time_unit"]]
        key = (direction, impl, payload)
        found = {c: b[c] for c in counters if c in b}
        if b.get("run_type") == "aggregate":
            if b.get("aggregate_name") == "median":
                medians[key] = b["real_time"] * scale
                if found:
                    counter_medians[key] = found
        else:
            singles.setdefault(key, []).append(b["real_time"] * scale)
            if found:
                counter_singles.setdefault(key, []).append(found)
    times = {k: sorted(v)[len(v) // 2] for k, v in singles.items()}
    times.update(medians)
    gc = {k: {c: sorted(r[c] for r in v)[len(v) // 2] for c in v[0]} for k, v in counter_singles.items()}
    gc.update(counter_medians)
    context = data.get("context", {})
    order = context.get("payloads", "").split(",")
    if counters:
        return context, times, order, gc
    return context, times, order


def load_cv(path):
    """{(direction, impl, payload): coefficient of variation of the repetitions}."""
    with open(path) as f:
        data = json.load(f)
    return {tuple(b["run_name"].split("/")[:3]): b["real_time"]
            for b in data["benchmarks"]
            if b.get("run_type") == "aggregate" and b.get("aggregate_name") == "cv"}


def judge(ratio, need, cvs, ours_key, base_key):
    """PASS, TIE (short by less than the two rows' coefficients of variation, added) or MISS."""
    if ratio is not None and ratio >= need:
        return "PASS"
    cv_ours, cv_base = cvs.get(ours_key), cvs.get(base_key)
    if ratio is not None and cv_ours is not None and cv_base is not None and ratio >= need * (1 - cv_ours - cv_base):
        return "TIE"
    return "MISS"


def load_erlang(path):
    version, times = "", {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if parts[:2] == ["erlang", "otp"]:
                version = " ".join(parts[1:])
            elif len(parts) == 4 and parts[0] == "erlang":
                times[(parts[1], "erlang", parts[2])] = float(parts[3])
    return version, times


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def fmt_ns(ns):
    if ns is None:
        return "-"
    return f"{ns:,.0f}" if ns >= 100 else f"{ns:.1f}"


def fmt_ratio(r):
    return "-" if r is None else f"{r:.2f}x"


def fmt_count(x):
    if x is None:
        return "-"
    if x == 0:
        return "0"
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def render(headers, rows, align=None):
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    # Text left, numbers right.
    align = align or ["<", "<"] + [">"] * (len(headers) - 3) + ["<"]
    line = lambda cells: "  ".join(f"{c:{a}{w}}" for c, a, w in zip(cells, align, widths)).rstrip()
    out = [line(headers), line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gbench", required=True)
    ap.add_argument("--erlang", required=True)
    ap.add_argument("--conv-gbench", help="conv_bench's JSON: adds the round-trip tables")
    ap.add_argument("--conv-worker-gbench",
                    help="conv_bench --as-worker's JSON: the round trip the target is judged on")
    ap.add_argument("--payloads", required=True)
    ap.add_argument("--smoke", action="store_true", help="few iterations: print, enforce nothing")
    args = ap.parse_args()

    context, times, order = load_gbench(args.gbench)
    cvs = load_cv(args.gbench)
    erlang_version, erlang_times = load_erlang(args.erlang)
    times.update(erlang_times)
    sizes = {p: os.path.getsize(os.path.join(args.payloads, p + ".etf")) for p in order}

    print("ETF codec benchmark" + ("  [SMOKE: a few iterations, numbers meaningless, targets not checked]"
                                   if args.smoke else ""))
    print(f"machine : {cpu_model()}, {context.get('num_cpus', os.cpu_count())} CPUs"
          f" @ {context.get('mhz_per_cpu', '?')} MHz, {platform.system()} {platform.release()},"
          f" load avg {', '.join(f'{x:.2f}' for x in context.get('load_avg', []))}")
    print(f"compiler: {context.get('compiler', '?')}, {context.get('build_type', '?')}"
          f" ({context.get('cxx_flags', '').strip()}); libbenchmark says it was built as"
          f" {context.get('library_build_type', '?')} (Debian's package always says debug; its"
          " timing loop is inlined into etf_bench)")
    print(f"baseline: libei {context.get('libei', '?')}; Erlang/OTP {erlang_version or '?'}")
    load, cpus = (context.get("load_avg") or [0.0])[0], context.get("num_cpus") or os.cpu_count() or 1
    if load > cpus / 2:
        print(f"WARNING : load average {load:.1f} on {cpus} CPUs: other work shares the cores, wall-clock"
              " numbers may be off by 2x; rerun on a quiet machine before trusting a verdict")
    print("ns/op are medians of repetitions (wall clock); ratios are baseline/ours, > 1 = ours faster;"
          " MB/s counts ETF bytes (1 MB = 10^6 B)")

    checked = {"issue": 0, "own": 0}
    misses = {"issue": 0, "own": 0}
    ties = {"issue": 0, "own": 0}
    for direction in ("decode", "encode"):
        rows = []
        for payload in order:
            for row_direction, impl, label, targets, whose in ROWS:
                if row_direction != direction:
                    continue
                ours = times.get((direction, impl, payload))
                base = {b: times.get((direction, b, payload)) for b in ("libei", "erlang")}
                ratio = {b: (t / ours if t and ours else None) for b, t in base.items()}
                if args.smoke:
                    verdict = "-"
                else:
                    verdicts = {b: judge(ratio[b], need, cvs, (direction, impl, payload), (direction, b, payload))
                                for b, need in targets.items()}
                    failed = [b for b, v in verdicts.items() if v == "MISS"]
                    tied = [b for b, v in verdicts.items() if v == "TIE"]
                    checked[whose] += len(targets)
                    misses[whose] += len(failed)
                    ties[whose] += len(tied)
                    verdict = " ".join(["MISS " + ",".join(failed)] * bool(failed) +
                                       ["TIE " + ",".join(tied)] * bool(tied)) or "PASS"
                    if whose == "own":
                        verdict += " (ours)"
                mbps = sizes[payload] / ours * 1e3 if ours else None
                rows.append([payload, label, fmt_ns(ours), fmt_ns(base["libei"]), fmt_ns(base["erlang"]),
                             "-" if mbps is None else f"{mbps:,.0f}", fmt_ratio(ratio["libei"]),
                             fmt_ratio(ratio["erlang"]), verdict])
        print()
        print(DIRECTION_TITLES[direction])
        print(render(["payload", "ours", "ours ns/op", "libei ns/op", "erlang ns/op", "ours MB/s",
                      "libei/ours", "erlang/ours", "target"], rows))
    rt_checked = rt_misses = rt_ties = 0
    if args.conv_gbench:
        print_roundtrip(args.conv_gbench, order, args.smoke, judged=False, halves=not args.conv_worker_gbench,
                        policy="OCaml's default GC (reference)")
    if args.conv_worker_gbench:
        rt_checked, rt_misses, rt_ties = print_roundtrip(args.conv_worker_gbench, order, args.smoke,
                                                         judged=True, halves=True,
                                                         policy="the worker GC policy (the target)")
    print()
    print("payload sizes (bytes): " + ", ".join(f"{p} {sizes[p]:,}" for p in order))
    if args.smoke:
        print("targets: not checked in smoke mode")
    else:
        def tally(n, missed, tied):
            return f"{n - missed - tied} of {n} met, {tied} tied within the run's noise, {missed} missed"
        print(f"issue 2 targets: {tally(checked['issue'], misses['issue'], ties['issue'])}"
              " (visitor decode >= 1.5x libei and >= binary_to_term; encode >= libei)")
        print(f"our own target: {tally(checked['own'], misses['own'], ties['own'])}"
              " (Term decode >= binary_to_term, stricter than issue 2)")
        if args.conv_worker_gbench:
            print(f"issue 3 targets: {tally(rt_checked, rt_misses, rt_ties)}"
                  " (ETF -> Erl.Term.t -> ETF >= libei into a C tree and back, worker GC policy)")


def print_roundtrip(path, order, smoke, judged, halves, policy):
    """A round-trip table, with its target when judged, and the halves (reference) when asked.
    Returns (checked, missed, tied)."""
    context, times, conv_order, gc = load_gbench(path, GC_COUNTERS)
    cvs = load_cv(path)
    order = [p for p in order if p in conv_order] + [p for p in conv_order if p not in order]
    checked = misses = ties = 0
    rows = []
    for payload in order:
        t = {impl: times.get(("roundtrip", impl, payload)) for impl in ROUNDTRIP_IMPLS}
        ours, term, ei = t["ours_ocaml"], t["ours_term"], t["libei_tree"]
        ratio = ei / ours if ei and ours else None
        if smoke or not judged:
            verdict = "-"
        else:
            checked += 1
            verdict = judge(ratio, 1.0, cvs, ("roundtrip", "ours_ocaml", payload), ("roundtrip", "libei_tree", payload))
            misses += verdict == "MISS"
            ties += verdict == "TIE"
            if verdict != "PASS":
                verdict += " libei"
        g = gc.get(("roundtrip", "ours_ocaml", payload), {})
        rows.append([payload, fmt_ns(ours), fmt_ns(term), fmt_ns(ei), fmt_ratio(ratio), verdict,
                     fmt_ratio(ei / term if ei and term else None)] + gc_cells(g))
    print()
    print(ROUNDTRIP_TITLE.replace("ETF bytes -> value -> ETF bytes.", f"ETF bytes -> value -> ETF bytes, under {policy}."))
    print(render(["payload", "ours OCaml ns/op", "ours Term ns/op", "libei tree ns/op", "libei/ours",
                  "target", "libei/Term"] + GC_HEADERS, rows, ["<", ">", ">", ">", ">", "<", ">"] + [">"] * 4))

    if not halves:
        return checked, misses, ties
    rows = []
    for payload in order:
        for half in ("decode", "encode"):
            t = {impl: times.get((half, impl, payload)) for impl in ROUNDTRIP_IMPLS}
            ours, term, ei = t["ours_ocaml"], t["ours_term"], t["libei_tree"]
            g = gc.get((half, "ours_ocaml", payload), {})
            rows.append([payload, half, fmt_ns(ours), fmt_ns(term), fmt_ns(ei),
                         fmt_ratio(ei / ours if ei and ours else None),
                         fmt_ratio(ei / term if ei and term else None)] + gc_cells(g))
    print()
    print(HALVES_TITLE)
    print(render(["payload", "half", "ours OCaml ns/op", "ours Term ns/op", "libei tree ns/op", "libei/ours",
                  "libei/Term"] + GC_HEADERS, rows, ["<", "<"] + [">"] * 9))
    heap = context.get("ocaml_minor_heap_words", "?")
    policy_text = ("the worker GC policy (what a camlbeam worker runs unless OCAMLRUNPARAM is set:"
                   " Erl_host.apply_worker_gc_defaults, a 1M-word minor heap, max_overhead 5000 and"
                   " custom_minor_max_size 1 GB, and host::collect_between_requests emptying the minor"
                   " heap between requests when it is over 1/32 full or young blocks hold as much off"
                   " the heap)"
                   if context.get("gc_policy") == "worker" else "the runtime's default GC")
    print(f"OCaml {context.get('ocaml_version', '?')}, {policy_text}: minor heap {heap} words;"
          " the runtime is started once; each iteration's values are garbage when it ends and the GC runs"
          " as it chooses (never forced, no Gc.compact; each benchmark starts after a full major GC, and"
          " each OCaml iteration starts with the poll a worker's OCaml code makes between requests)."
          " GC columns: ours OCaml, per iteration, medians; compactions are the runtime's own (max_overhead).")
    print("libei writes atoms as SMALL_ATOM_UTF8_EXT and integers of 28..32 bits as SMALL_BIG_EXT, so its"
          " bytes are term_to_binary(T, [{minor_version, 2}]) or, for ints_100k, an equal term 8% longer;"
          " ours give back the input bytes exactly (conv_bench --check).")
    return checked, misses, ties


if __name__ == "__main__":
    main()
