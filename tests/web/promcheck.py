#!/usr/bin/env python3
"""A strict check of the Prometheus text exposition format 0.0.4, written from the format's description
(https://prometheus.io/docs/instrumenting/exposition_formats/), independently of flowrun's writer.

  promcheck.py FILE [--prefix flowrun_] [SERIES ...]

Exits 1 naming the line of the first problem; otherwise prints, for each SERIES given
('name' or 'name{label="value"}'), its value or 'absent', one per line.

Checked: HELP/TYPE syntax and escapes, at most one HELP and one TYPE per family and before its samples,
every sample of a family that has a TYPE, families contiguous, metric and label names, label value
escapes (only \\\\, \\" and \\n), no duplicate label names or series, values that parse as floats, counters
named *_total and never negative, histograms: *_bucket with le, bounds increasing, cumulative counts not
decreasing, a +Inf bucket equal to *_count, a *_sum; no label named le outside buckets."""
import math
import re
import sys

NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*$")
TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}


class Bad(Exception):
    pass


def parse_value(s, where):
    if s in ("NaN", "+Inf", "-Inf", "Inf"):
        return float(s.replace("Inf", "inf").replace("NaN", "nan"))
    if not re.fullmatch(r"[-+]?(\d+\.?\d*([eE][-+]?\d+)?|\.\d+([eE][-+]?\d+)?)", s):
        raise Bad(f"{where}: value '{s}' is not a float")
    return float(s)


def unescape_help(s, where):
    out, i = [], 0
    while i < len(s):
        c = s[i]
        if c == "\\":
            if i + 1 >= len(s) or s[i + 1] not in "\\n":
                raise Bad(f"{where}: HELP escape must be \\\\ or \\n")
            out.append("\\" if s[i + 1] == "\\" else "\n")
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def parse_labels(s, i, where):
    """s[i] == '{'; returns (dict, index after '}')."""
    labels = {}
    i += 1
    while True:
        if i < len(s) and s[i] == "}":
            return labels, i + 1
        m = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*").match(s, i)
        if not m:
            raise Bad(f"{where}: bad label name at column {i + 1}")
        name = m.group(0)
        i = m.end()
        if s[i : i + 2] != '="':
            raise Bad(f"{where}: expected =\" after label {name}")
        i += 2
        val = []
        while True:
            if i >= len(s):
                raise Bad(f"{where}: unterminated label value")
            c = s[i]
            if c == "\\":
                if i + 1 >= len(s) or s[i + 1] not in '\\"n':
                    raise Bad(f"{where}: label value escape must be \\\\, \\\" or \\n")
                val.append({"\\": "\\", '"': '"', "n": "\n"}[s[i + 1]])
                i += 2
            elif c == '"':
                i += 1
                break
            elif c == "\n":
                raise Bad(f"{where}: raw newline in a label value")
            else:
                val.append(c)
                i += 1
        if name in labels:
            raise Bad(f"{where}: label {name} twice")
        if name.startswith("__"):
            raise Bad(f"{where}: label {name}: names starting with __ are reserved")
        labels[name] = "".join(val)
        if i < len(s) and s[i] == ",":
            i += 1
        elif i < len(s) and s[i] == "}":
            continue
        else:
            raise Bad(f"{where}: expected , or }} after a label")


def family_of(name, types):
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and types.get(name[: -len(suffix)]) in ("histogram", "summary"):
            return name[: -len(suffix)]
    return name


def check(text, prefix):
    if text and not text.endswith("\n"):
        raise Bad("the text must end with a newline")
    types, helps, samples = {}, {}, {}
    seen_families, current = set(), None
    for n, line in enumerate(text.split("\n")[:-1], 1):
        where = f"line {n}"
        if line.strip() == "":
            continue
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                name = parts[2]
                if not NAME.match(name):
                    raise Bad(f"{where}: metric name '{name}'")
                if name in seen_families:
                    raise Bad(f"{where}: {parts[1]} of {name} after its samples")
                if parts[1] == "HELP":
                    if name in helps:
                        raise Bad(f"{where}: second HELP for {name}")
                    helps[name] = unescape_help(parts[3] if len(parts) > 3 else "", where)
                else:
                    if name in types:
                        raise Bad(f"{where}: second TYPE for {name}")
                    if len(parts) != 4 or parts[3] not in TYPES:
                        raise Bad(f"{where}: TYPE must be one of {sorted(TYPES)}")
                    types[name] = parts[3]
            continue  # other comments
        m = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line)
        if not m:
            raise Bad(f"{where}: a sample must start with a metric name")
        name, i = m.group(0), m.end()
        labels = {}
        if i < len(line) and line[i] == "{":
            labels, i = parse_labels(line, i, where)
        rest = line[i:]
        if not rest.startswith(" "):
            raise Bad(f"{where}: expected a space before the value")
        fields = rest.strip(" ").split(" ")
        if len(fields) not in (1, 2) or "" in fields:
            raise Bad(f"{where}: expected 'value [timestamp]'")
        value = parse_value(fields[0], where)
        if len(fields) == 2 and not re.fullmatch(r"-?\d+", fields[1]):
            raise Bad(f"{where}: timestamp must be an integer")
        fam = family_of(name, types)
        if fam not in types:
            raise Bad(f"{where}: sample of {fam} without a TYPE line")
        if prefix and not fam.startswith(prefix):
            raise Bad(f"{where}: {fam} lacks the prefix {prefix}")
        if fam != current:
            if fam in seen_families:
                raise Bad(f"{where}: samples of {fam} are not together")
            seen_families.add(fam)
            current = fam
        t = types[fam]
        if "le" in labels and not (t == "histogram" and name == fam + "_bucket"):
            raise Bad(f"{where}: label le outside a histogram bucket")
        if t == "histogram" and name == fam:
            raise Bad(f"{where}: a histogram has only _bucket, _sum and _count samples")
        if t == "counter":
            if not fam.endswith("_total"):
                raise Bad(f"{where}: counter {fam} is not named *_total")
            if value < 0 or math.isnan(value):
                raise Bad(f"{where}: counter {fam} is {value}")
        key = (name, tuple(sorted(labels.items())))
        if key in samples:
            raise Bad(f"{where}: series {name}{labels} twice")
        samples[key] = (value, n)
    # histograms
    for fam, t in types.items():
        if t != "histogram":
            continue
        groups = {}
        for (name, labels), (value, n) in samples.items():
            if family_of(name, types) != fam:
                continue
            base = tuple(kv for kv in labels if kv[0] != "le")
            g = groups.setdefault(base, {"buckets": [], "sum": None, "count": None})
            if name == fam + "_bucket":
                le = dict(labels).get("le")
                if le is None:
                    raise Bad(f"line {n}: a bucket without le")
                g["buckets"].append((n, parse_value(le, f"line {n}"), value))
            elif name == fam + "_sum":
                g["sum"] = value
            elif name == fam + "_count":
                g["count"] = value
        for base, g in groups.items():
            b = sorted(g["buckets"])  # in line order
            if not b:
                raise Bad(f"{fam}{dict(base)}: no buckets")
            for (n0, le0, c0), (n1, le1, c1) in zip(b, b[1:]):
                if not le1 > le0:
                    raise Bad(f"line {n1}: bucket bounds of {fam} must increase")
                if c1 < c0:
                    raise Bad(f"line {n1}: bucket counts of {fam} must not decrease")
            if b[-1][1] != math.inf:
                raise Bad(f"{fam}{dict(base)}: the last bucket must be le=\"+Inf\"")
            if g["count"] is None or g["sum"] is None:
                raise Bad(f"{fam}{dict(base)}: _sum and _count are required")
            if g["count"] != b[-1][2]:
                raise Bad(f"{fam}{dict(base)}: _count {g['count']} != +Inf bucket {b[-1][2]}")
    return samples


def main():
    args = sys.argv[1:]
    prefix = None
    if "--prefix" in args:
        k = args.index("--prefix")
        prefix = args[k + 1]
        del args[k : k + 2]
    if not args:
        print(__doc__)
        return 2
    text = open(args[0], encoding="utf-8").read()
    try:
        samples = check(text, prefix)
    except Bad as e:
        print(f"promcheck: {args[0]}: {e}", file=sys.stderr)
        return 1
    for q in args[1:]:
        m = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?", q)
        if not m:
            print(f"promcheck: bad series '{q}'", file=sys.stderr)
            return 2
        labels = parse_labels(m.group(2), 0, q)[0] if m.group(2) else {}
        v = samples.get((m.group(1), tuple(sorted(labels.items()))))
        if v is None:
            print("absent")
        else:
            x = v[0]
            print(int(x) if x == int(x) and abs(x) < 1e15 else repr(x))
    return 0


if __name__ == "__main__":
    sys.exit(main())
