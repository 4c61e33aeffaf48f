"""Parses a /metrics scrape (stdin) with Prometheus' own Python client and
prints it as JSON: {"samples": [{"name", "labels", "value"}], "types": {family: type}}.

The daemon serves the OpenMetrics text format; this uses the client's
OpenMetrics parser, which also rejects anything malformed (a missing # EOF,
a bad sample line), so the Rust test does not trust its own reading.
"""
import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families


def main() -> None:
    text = sys.stdin.read()
    samples = []
    types = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for s in family.samples:
            samples.append({"name": s.name, "labels": dict(s.labels), "value": s.value})
    json.dump({"samples": samples, "types": types}, sys.stdout)


if __name__ == "__main__":
    main()
