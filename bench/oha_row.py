"""Turns one `oha --output-format json` result into a markdown table row:
| LABEL | req/s | p50 ms | p99 ms | errors |"""
import json
import sys

d = json.load(open(sys.argv[1]))
s = d["summary"]
p = d.get("latencyPercentiles", {})
errs = sum(d.get("errorDistribution", {}).values())


def ms(x):
    return "–" if x is None else f"{x * 1000:.2f}"


print(f"| {sys.argv[2]} | {s.get('requestsPerSec', 0):.0f} | {ms(p.get('p50'))} | {ms(p.get('p99'))} | {errs} |")
