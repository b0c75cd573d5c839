#!/usr/bin/env python3
"""Per-kernel summary of an Nsight Compute CSV (tests/gpu/run_gpu_checks.sh's ncu step).

    python3 tests/gpu/ncu_summary.py NCU.csv [TOP]

NCU.csv: what `ncu --csv --print-units base --metrics gpu__time_duration.sum --log-file NCU.csv ...` wrote
(one row per profiled kernel launch and metric; ncu's own "==PROF==" / "==WARNING==" lines are skipped).
Groups gpu__time_duration.sum by kernel name (the demangled name without its parameter list, so template
instances stay apart) and prints the TOP (default 20) groups by total time: total ms, share of all
profiled kernel time, launches, mean us. Exit status 0 when at least one kernel was read, 1 otherwise.
"""
import csv
import sys

UNIT_NS = {"nsecond": 1.0, "ns": 1.0, "usecond": 1e3, "us": 1e3, "msecond": 1e6, "ms": 1e6,
           "second": 1e9, "s": 1e9}


def base_name(name):
    """'void k<64, __half>(const float *, int)' -> 'k<64, __half>'; cuBLASLt/CUTLASS names unchanged."""
    name = name.replace("(anonymous namespace)", "{anonymous}")
    depth = 0
    for i, ch in enumerate(name):
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif ch == "(" and depth == 0:
            name = name[:i]
            break
    name = name.strip()
    if name.startswith("void "):
        name = name[5:]
    return name


def main():
    if len(sys.argv) < 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    with open(sys.argv[1], newline="", errors="replace") as f:
        lines = [ln for ln in f if ln.startswith('"')]
    rows = list(csv.reader(lines))
    if not rows:
        print("ncu summary: no CSV rows in %s" % sys.argv[1])
        return 1
    head = rows[0]
    try:
        c_id, c_name = head.index("ID"), head.index("Kernel Name")
        c_metric, c_unit, c_value = head.index("Metric Name"), head.index("Metric Unit"), head.index("Metric Value")
    except ValueError as e:
        print("ncu summary: unexpected CSV header (%s): %s" % (e, head))
        return 1
    groups = {}
    seen = set()
    unknown_units = set()
    for r in rows[1:]:
        if len(r) != len(head) or r == head or r[c_metric] != "gpu__time_duration.sum":
            continue
        if r[c_id] in seen:  # one row per launch and metric: a repeated ID would be a second metric row
            continue
        seen.add(r[c_id])
        try:
            v = float(r[c_value].replace(",", ""))
        except ValueError:
            continue
        unit = r[c_unit].strip()
        if unit not in UNIT_NS:
            unknown_units.add(unit)
        v *= UNIT_NS.get(unit, 1.0)
        g = groups.setdefault(base_name(r[c_name]), [0.0, 0])
        g[0] += v
        g[1] += 1
    n = sum(g[1] for g in groups.values())
    if not n:
        print("ncu summary: no gpu__time_duration.sum rows in %s" % sys.argv[1])
        return 1
    total = sum(g[0] for g in groups.values())
    print("%d kernel launches, %d distinct kernels, %.3f ms of kernel time in all (sum of gpu__time_duration;"
          " ncu runs them one at a time, so gaps and overlap are not in it)" % (n, len(groups), total * 1e-6))
    if unknown_units:
        print("(units not recognised, taken as ns: %s)" % ", ".join(sorted(unknown_units)))
    print("%10s %6s %8s %10s  %s" % ("total ms", "share", "launches", "mean us", "kernel"))
    for name, (t, c) in sorted(groups.items(), key=lambda kv: -kv[1][0])[:top]:
        short = name if len(name) <= 110 else name[:107] + "..."
        print("%10.3f %5.1f%% %8d %10.1f  %s" % (t * 1e-6, 100.0 * t / total, c, t * 1e-3 / c, short))
    rest = sorted(groups.values(), key=lambda g: -g[0])[top:]
    if rest:
        print("%10.3f %5.1f%% %8d %10s  (the other %d kernels)" % (sum(g[0] for g in rest) * 1e-6,
              100.0 * sum(g[0] for g in rest) / total, sum(g[1] for g in rest), "", len(rest)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
