"""Prometheus histogram helpers shared by report.py and filter_tail.sh."""
import re


def buckets(txt, name="portcullis_overhead_seconds"):
    """Cumulative bucket counts by upper bound (summed over label sets) from a /metrics scrape."""
    out = {}
    for line in (txt or "").splitlines():
        m = re.match(name + r'_bucket\{(?:[^}]*,)?le="([^"]+)"\}\s+([\d.e+]+)', line)
        if m:
            le = float("inf") if m.group(1) == "+Inf" else float(m.group(1))
            out[le] = out.get(le, 0) + float(m.group(2))
    return out


def quantile(before, after, q):
    """Prometheus-style histogram_quantile over the delta of two scrapes. Returns
    (interpolated seconds, bucket upper bound seconds, count)."""
    les = sorted(after)
    cum = [after[le] - before.get(le, 0) for le in les]
    total = cum[-1] if cum else 0
    if total <= 0:
        return None, None, 0
    rank = q * total
    prev_le, prev_c = 0.0, 0.0
    for le, c in zip(les, cum):
        if c >= rank:
            if le == float("inf"):
                return prev_le, le, total
            frac = (rank - prev_c) / (c - prev_c) if c > prev_c else 1.0
            return prev_le + (le - prev_le) * frac, le, total
        prev_le, prev_c = le, c
    return None, None, total
