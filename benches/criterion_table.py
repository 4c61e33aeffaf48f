#!/usr/bin/env python3
"""Prints the `diff` criterion results as a table: records/s (1 record per
iteration) and µs per record, from <target>/criterion/{diff_entry,redact_entry,entry_item}/*/new/estimates.json
(the redacted cases prefixed `redacted:`; deflating the entry JSON into the
stored body: rows named `body …`).
Usage: criterion_table.py TARGET_DIR"""
import json
import os
import sys

rows = []
for group, prefix in (("diff_entry", ""), ("redact_entry", "redacted:"), ("entry_item", "body ")):
    root = os.path.join(sys.argv[1], "criterion", group)
    for dirpath, _, files in os.walk(root):
        if not (dirpath.endswith(os.sep + "new") and "estimates.json" in files):
            continue
        with open(os.path.join(dirpath, "benchmark.json")) as f:
            bench = json.load(f)
        with open(os.path.join(dirpath, "estimates.json")) as f:
            est = json.load(f)
        ns = est["mean"]["point_estimate"]
        lo = est["mean"]["confidence_interval"]["lower_bound"]
        hi = est["mean"]["confidence_interval"]["upper_bound"]
        rows.append((prefix + (bench.get("value_str") or bench["full_id"]), ns, lo, hi))
order = {"flat": 0, "nested": 1, "1kb": 0, "10kb": 1, "350kb": 2, "1_changed": 0, "10_changed": 1, "all_changed": 2}
prefixes = ("redacted:", "body ")
def bare(part):
    for p in prefixes:
        part = part.removeprefix(p)
    return part
rows.sort(key=lambda r: [next((i + 1 for i, p in enumerate(prefixes) if r[0].startswith(p)), 0)] + [order.get(bare(p), 9) for p in r[0].split("/")])
print(f"{'case (shape/size/changed)':<34} {'records/s':>12} {'us/record':>11} {'95% CI (us)':>18}")
for name, ns, lo, hi in rows:
    print(f"{name:<34} {1e9 / ns:>12,.0f} {ns / 1e3:>11.2f} {lo / 1e3:>8.2f}-{hi / 1e3:<9.2f}")
