#!/usr/bin/env python3
"""Turns the raw data collected by bench/run.sh into the markdown report.

Usage: report.py DATA_DIR

DATA_DIR layout (all written by run.sh):
  meta.json                      machine, pinning, mode, versions, target list
  tput/<target>.<round>.txt      wrk output of one throughput round
  lat/<target>.json              oha JSON of the latency run at 50% of <target>'s peak
  lat/direct@<target>.json       oha JSON of the direct upstream at that same rate
  metrics/<target>.before|after  Portcullis /metrics scraped around the latency run
  rss/<target>.hwm               VmHWM (kB) after the load runs
  rss/<target>.idle              "<VmRSS kB> <connections held> <failed>" with idle conns
  rss/<target>.base              VmRSS (kB) right before the idle-connection test
  skip/<target>                  reason the target was skipped
"""
import json
import os
import re
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from histogram import buckets, quantile  # noqa: E402

D = sys.argv[1]


def rd(*p):
    try:
        with open(os.path.join(D, *p)) as f:
            return f.read()
    except OSError:
        return None


meta = json.loads(rd("meta.json"))
TARGETS = meta["targets"]
LABEL = {
    "direct": "direct → upstream",
    "nginx": "nginx (1 worker, upstream keepalive)",
    "haproxy": "HAProxy (nbthread 1, http-reuse always)",
    "hyper-floor": "hyper floor (bare hyper 1 proxy, reference)",
    "portcullis": "Portcullis (1 worker thread)",
    "portcullis-filter1": "Portcullis + 1 filter",
    "portcullis-filters": "Portcullis + 3 filters",
    "portcullis-pass3": "Portcullis + 3 pass-through filters",
    "portcullis-js-filter": "Portcullis + 1 trivial JavaScript filter (componentize-js)",
    "portcullis-py-filter": "Portcullis + 1 trivial Python filter (componentize-py)",
    "portcullis-routes": f"Portcullis, {meta.get('routes_n', '?')} prefix routes (request matches the last)",
    "portcullis-unmatched": f"Portcullis + {meta.get('unmatched_n', '?')} filters that do not match",
    "portcullis-fanout": "Portcullis endpoint fan-out ×3",
    "portcullis-accesslog": "Portcullis + access log (every request, to a file)",
    "portcullis-trace1pct": "Portcullis + OTLP traces, sample_ratio 0.01",
    "portcullis-trace100": "Portcullis + OTLP traces, sample_ratio 1.0",
    "portcullis-rl-local": "Portcullis + a local rate limit (client IP, never reached)",
    "portcullis-rl-global": "Portcullis + a global rate limit in Redis (checks batched, ≤ 1 round trip per request)",
}


def skip_reason(t):
    r = rd("skip", t)
    return r.strip() if r else None


# ---------- throughput ----------
def wrk_parse(txt):
    m = re.search(r"Requests/sec:\s+([\d.]+)", txt or "")
    rps = float(m.group(1)) if m else None
    errs = 0
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", txt or "")
    if m:
        errs += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", txt or "")
    if m:
        errs += sum(int(x) for x in m.groups())
    m = re.search(r"(\d+) requests in", txt or "")
    total = int(m.group(1)) if m else 0
    return rps, errs, total


tput = {}
for t in TARGETS:
    rounds = []
    errs = 0
    total = 0
    cpu = []
    for r in range(1, meta["rounds"] + 1):
        rps, e, n = wrk_parse(rd("tput", f"{t}.{r}.txt"))
        if rps is not None:
            rounds.append(rps)
        errs += e
        total += n
        ns = (rd("cpu", f"{t}.{r}.txt") or "").strip()
        if ns.isdigit() and n > 0 and int(ns) > 0:
            cpu.append(int(ns) / 1000 / n)
    if rounds:
        tput[t] = {"median": statistics.median(rounds), "rounds": rounds, "errors": errs, "total": total,
                   "cpu_us": statistics.median(cpu) if cpu else None}


# ---------- latency ----------
def oha(name):
    txt = rd("lat", name + ".json")
    if not txt:
        return None
    try:
        j = json.loads(txt)
    except json.JSONDecodeError:
        return None
    lp = j.get("latencyPercentiles") or {}
    s = j.get("summary") or {}
    codes = j.get("statusCodeDistribution") or {}
    errs = j.get("errorDistribution") or {}
    ok = sum(v for k, v in codes.items() if str(k).startswith("2"))
    bad = sum(v for k, v in codes.items() if not str(k).startswith("2")) + sum(errs.values())
    def us(k):
        v = lp.get(k)
        return None if v is None else v * 1e6
    return {
        "p50": us("p50"), "p99": us("p99"), "p999": us("p99.9"),
        "rps": s.get("requestsPerSec"), "ok": ok, "bad": bad,
    }


lat = {t: oha(t) for t in TARGETS}
lat_direct = {t: oha("direct@" + t) for t in TARGETS if t != "direct"}


# ---------- overhead histogram ----------
overhead = {}
for t in TARGETS:
    b, a = rd("metrics", t + ".before"), rd("metrics", t + ".after")
    if a:
        ba, aa = buckets(b), buckets(a)
        res = {}
        for q, k in ((0.5, "p50"), (0.99, "p99"), (0.999, "p999")):
            v, le, n = quantile(ba, aa, q)
            res[k] = v
            res[k + "_le"] = le
            res["n"] = n
        overhead[t] = res


# ---------- rss ----------
def rss(t):
    h = rd("rss", t + ".hwm")
    i = rd("rss", t + ".idle")
    b = rd("rss", t + ".base")
    out = {}
    if h and h.strip():
        out["hwm"] = int(h.split()[0])
    if b and b.strip():
        out["base"] = int(b.split()[0])
    if i and i.strip():
        p = i.split()
        out["idle"] = int(p[0])
        out["held"] = int(p[1]) if len(p) > 1 else None
        out["failed"] = int(p[2]) if len(p) > 2 else None
    return out


rsss = {t: rss(t) for t in TARGETS if t != "direct"}


# ---------- formatting ----------
def f_us(v):
    return "–" if v is None else (f"{v:,.0f} µs" if abs(v) >= 100 else f"{v:.1f} µs")


def f_rps(v):
    return "–" if v is None else f"{v:,.0f}"


def f_mb(kb):
    return "–" if kb is None else f"{kb / 1024:.1f} MiB"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def verdict(ok):
    return "–" if ok is None else ("**PASS**" if ok else "**FAIL**")


def tp(t):
    return tput.get(t, {}).get("median")


def cpu(t):
    """Median CPU µs per request of the target's serving process (None when not measured)."""
    return tput.get(t, {}).get("cpu_us")


def cpu_added(t, base="portcullis"):
    a, b = cpu(t), cpu(base)
    return None if a is None or b is None else a - b


def added(t, k):
    l, d = lat.get(t), lat_direct.get(t)
    if not l or not d or l.get(k) is None or d.get(k) is None:
        return None
    return l[k] - d[k]


lines = []
P = lines.append
P(f"# Portcullis benchmark — {meta['date']} — {meta['host']}")
P("")
P(f"Mode: **{meta['mode']}** ({meta['rounds']} throughput rounds of {meta['tput_secs']} s per target, "
  f"interleaved; latency runs of {meta['lat_secs']} s; {meta['idle_n']} idle connections). "
  f"Generated by `bash bench/run.sh{' --quick' if meta['mode'] == 'quick' else ''}`.")
P("")
P("## Machine")
P("")
P(f"- CPU: {meta['cpu_model']} — {meta['cores']} cores online")
P(f"- Kernel: {meta['kernel']}")
P(f"- Memory: {meta['mem']}")
P(f"- Date: {meta['date']}")
P(f"- Git: `{meta['git']}` (branch `{meta['branch']}`)")
P(f"- Tools: {meta['versions']}")
P(f"- Load average at start: {meta['loadavg']}")
P("")
P("## Pinning")
P("")
P(f"- Load generators (wrk, oha, idle_conns.py): `taskset -c {meta['cpu_loadgen']}`")
P(f"- Proxy under test **and** upstream share: `taskset -c {meta['cpu_server']}`")
P("- Same layout for every peer. Every proxy runs one worker (nginx `worker_processes 1`, "
  "HAProxy `nbthread 1`, Portcullis `--workers 1`); the upstream is one single-threaded process.")
P(f"- {meta['pin_note']}")
P("")
P("Upstream: " + meta["upstream_desc"])
P("")

# ratios
P("## Ratios and targets")
P("")
P("| ratio | value | target | verdict |")
P("|---|---|---|---|")
r = ratio(tp("portcullis"), tp("nginx"))
P(f"| Portcullis / nginx throughput | {'–' if r is None else f'{r:.2f}×'} | ≥ 1.00× | {verdict(None if r is None else r >= 1.0)} |")
r = ratio(tp("portcullis"), tp("haproxy"))
P(f"| Portcullis / HAProxy throughput | {'–' if r is None else f'{r:.2f}×'} | ≥ 1.00× | {verdict(None if r is None else r >= 1.0)} |")
if "hyper-floor" in TARGETS and not skip_reason("hyper-floor"):
    r = ratio(tp("portcullis"), tp("hyper-floor"))
    P(f"| Portcullis / hyper floor throughput (info: Portcullis' own per-request work) | {'–' if r is None else f'{r:.2f}×'} | – | – |")
    r = ratio(tp("hyper-floor"), tp("nginx"))
    P(f"| hyper floor / nginx throughput (info: the stack alone) | {'–' if r is None else f'{r:.2f}×'} | – | – |")
r = ratio(cpu("portcullis"), cpu("nginx"))
P(f"| Portcullis / nginx CPU per request | {'–' if r is None else f'{r:.2f}×'} | ≤ 1.00× | {verdict(None if r is None else r <= 1.0)} |")
r = ratio(cpu("portcullis"), cpu("hyper-floor"))
P(f"| Portcullis / hyper floor CPU per request (milestone) | {'–' if r is None else f'{r:.2f}×'} | ≤ 1.05× | {verdict(None if r is None else r <= 1.05)} |")
for t, lim, what in (("portcullis-filter1", 1.5, "1 trivial filter"),
                     ("portcullis-routes", 0.5, f"{meta.get('routes_n', '?')} routes"),
                     ("portcullis-unmatched", 0.5, f"{meta.get('unmatched_n', '?')} unmatched filters"),
                     ("portcullis-trace1pct", 1.0, "tracing at sample_ratio 0.01"),
                     ("portcullis-accesslog", 1.0, "the access log (every request)"),
                     ("portcullis-rl-local", 0.5, "a local rate limit")):
    if t in TARGETS and not skip_reason(t):
        d = cpu_added(t)
        P(f"| CPU added by {what} | {'–' if d is None else f'{d:+.1f} µs'} | ≤ {lim} µs | {verdict(None if d is None else d <= lim)} |")
if "portcullis-rl-global" in TARGETS and not skip_reason("portcullis-rl-global"):
    r = ratio(tp("portcullis-rl-global"), tp("portcullis"))
    P(f"| global rate limit / no limit throughput | {'–' if r is None else f'{r:.2f}×'} | ≥ 0.80× | {verdict(None if r is None else r >= 0.8)} |")
for t, what in (("portcullis-trace100", "tracing at sample_ratio 1.0"),):
    if t in TARGETS and not skip_reason(t):
        d, r = cpu_added(t), ratio(cpu(t), cpu("portcullis"))
        P(f"| CPU added by {what} | {'–' if d is None else f'{d:+.1f} µs'}"
          f"{'' if r is None else f' ({r:.2f}×)'} | info | – |")
a_p, a_n, a_h = added("portcullis", "p99"), added("nginx", "p99"), added("haproxy", "p99")
if a_p is not None and a_n is not None and (a_p < 0 or a_n < 0):
    v_lat = "**INCONCLUSIVE** (negative: the direct baseline's tail was worse than the proxied one, i.e. noise from other load dominates)"
else:
    v_lat = verdict(None if a_p is None or a_n is None else a_p <= a_n)
P(f"| added p99 latency: Portcullis vs nginx | {f_us(a_p)} vs {f_us(a_n)} | ≤ nginx's | {v_lat} |")
P(f"| added p99 latency: Portcullis vs HAProxy (info) | {f_us(a_p)} vs {f_us(a_h)} | – | – |")
o = overhead.get("portcullis", {}).get("p999")
ole = overhead.get("portcullis", {}).get("p999_le")
P(f"| Portcullis overhead p99.9 (own histogram, below saturation) | {f_us(None if o is None else o * 1e6)}"
  f"{'' if ole is None else f' (bucket ≤ {ole * 1e6:.0f} µs)'} | ≤ 100 µs | {verdict(None if ole is None else ole <= 100e-6)} |")
sk1 = skip_reason("portcullis-filter1")
if not sk1:
    r1 = ratio(tp("portcullis-filter1"), tp("portcullis"))
    P(f"| 1 filter / no filters throughput | {'–' if r1 is None else f'{r1:.2f}×'} | info | – |")
sk = skip_reason("portcullis-filters")
if sk:
    P(f"| 3 filters / no filters throughput | SKIPPED ({sk}) | ≥ 0.90× | – |")
else:
    r = ratio(tp("portcullis-filters"), tp("portcullis"))
    P(f"| 3 filters / no filters throughput | {'–' if r is None else f'{r:.2f}×'} | ≥ 0.90× | {verdict(None if r is None else r >= 0.9)} |")
sk3 = skip_reason("portcullis-pass3")
if not sk3:
    r3 = ratio(tp("portcullis-pass3"), tp("portcullis"))
    P(f"| 3 pass-through filters / no filters throughput (info: Envoy's comparison case) | {'–' if r3 is None else f'{r3:.2f}×'} | info | – |")
for t, lang in (("portcullis-js-filter", "JavaScript"), ("portcullis-py-filter", "Python")):
    skj = skip_reason(t)
    if skj:
        P(f"| 1 trivial {lang} filter / no filters throughput | SKIPPED ({skj}) | info | – |")
    else:
        rj = ratio(tp(t), tp("portcullis"))
        P(f"| 1 trivial {lang} filter / no filters throughput (plugin CPU per call: see notes; goal ≤ 20 µs) | {'–' if rj is None else f'{rj:.2f}×'} | info | – |")
sk = skip_reason("portcullis-fanout")
if sk:
    P(f"| fan-out ×3 / single proxy throughput | SKIPPED ({sk}) | info | – |")
    P(f"| fan-out ×3 added p99 vs plain proxy added p99 + 100 µs | SKIPPED ({sk}) | ≤ | – |")
else:
    r = ratio(tp("portcullis-fanout"), tp("portcullis"))
    P(f"| fan-out ×3 / single proxy throughput | {'–' if r is None else f'{r:.2f}×'} | info | – |")
    a_f = added("portcullis-fanout", "p99")
    lim = None if a_p is None else a_p + 100
    P(f"| fan-out ×3 added p99 (over one direct call) vs plain added p99 + 100 µs | {f_us(a_f)} vs {f_us(lim)} | ≤ | "
      f"{verdict(None if a_f is None or lim is None else a_f <= lim)} |")
P("")

# throughput table
P("## Throughput (wrk closed loop, median of rounds)")
P("")
P(f"`wrk -t1 -c{meta['wrk_conns']} -d{meta['tput_secs']}s`, rounds interleaved across targets (A B C … A B C …).")
P("")
P("CPU per request: the serving process's CPU time (the proxy's; the upstream's for `direct`), from "
  "`/proc/<pid>/task/*/schedstat` around each round, divided by that round's requests; median of rounds. "
  "Steadier than req/s on a shared machine.")
P("")
P("| target | median req/s | vs direct | CPU µs/req | vs nginx CPU | rounds (req/s) | errors |")
P("|---|---|---|---|---|---|---|")
for t in TARGETS:
    sk = skip_reason(t)
    if sk:
        P(f"| {LABEL[t]} | SKIPPED ({sk}) | | | | | |")
        continue
    d = tput.get(t)
    if not d:
        P(f"| {LABEL[t]} | no data | | | | | |")
        continue
    vs = ratio(d["median"], tp("direct"))
    c = d.get("cpu_us")
    cn = ratio(c, cpu("nginx"))
    P(f"| {LABEL[t]} | {f_rps(d['median'])} | {'–' if vs is None else f'{vs:.2f}×'} | "
      f"{'–' if c is None else f'{c:.1f}'} | {'–' if cn is None else f'{cn:.2f}×'} | "
      f"{', '.join(f_rps(x) for x in d['rounds'])} | {d['errors']} |")
P("")

# latency table
P("## Latency below saturation (oha, fixed rate = 50% of the target's own peak)")
P("")
P(f"`oha -z {meta['lat_secs']}s -q <rate> -c {meta['oha_conns']} --latency-correction --no-tui --output-format json`. "
  "\"added\" = the target's percentile minus the direct upstream's percentile measured right after at the **same rate**.")
P("")
P("| target | rate (req/s) | achieved | p50 | p99 | p99.9 | added p50 | added p99 | added p99.9 | non-2xx/errors |")
P("|---|---|---|---|---|---|---|---|---|---|")
for t in TARGETS:
    sk = skip_reason(t)
    if sk:
        P(f"| {LABEL[t]} | SKIPPED ({sk}) | | | | | | | | |")
        continue
    l = lat.get(t)
    if not l:
        P(f"| {LABEL[t]} | no data | | | | | | | | |")
        continue
    rate = meta.get("rates", {}).get(t)
    if t == "direct":
        P(f"| {LABEL[t]} | {f_rps(rate)} | {f_rps(l['rps'])} | {f_us(l['p50'])} | {f_us(l['p99'])} | {f_us(l['p999'])} | – | – | – | {l['bad']} |")
    else:
        P(f"| {LABEL[t]} | {f_rps(rate)} | {f_rps(l['rps'])} | {f_us(l['p50'])} | {f_us(l['p99'])} | {f_us(l['p999'])} | "
          f"{f_us(added(t, 'p50'))} | {f_us(added(t, 'p99'))} | {f_us(added(t, 'p999'))} | {l['bad']} |")
P("")
P("Direct upstream at each proxy's rate (the baseline for \"added\"):")
P("")
P("| at the rate of | p50 | p99 | p99.9 |")
P("|---|---|---|---|")
for t, d in lat_direct.items():
    if d:
        P(f"| {LABEL[t]} | {f_us(d['p50'])} | {f_us(d['p99'])} | {f_us(d['p999'])} |")
P("")

# overhead
P("## Portcullis' own overhead (`portcullis_overhead_seconds`, delta of /metrics around the latency run)")
P("")
P("Quantiles interpolated inside the bucket as Prometheus' `histogram_quantile` does; the bucket's upper bound in brackets.")
P("")
P("| target | requests | p50 | p99 | p99.9 |")
P("|---|---|---|---|---|")
for t, o in overhead.items():
    def c(k):
        v, le = o.get(k), o.get(k + "_le")
        if v is None:
            return "–"
        return f"{f_us(v * 1e6)} (≤ {'+Inf' if le == float('inf') else f'{le * 1e6:.0f} µs'})"
    P(f"| {LABEL[t]} | {o['n']:.0f} | {c('p50')} | {c('p99')} | {c('p999')} |")
P("")

# memory
P("## Memory")
P("")
P(f"Peak RSS = `VmHWM` after the throughput and latency runs. Idle = `VmRSS` while "
  f"`bench/idle_conns.py` holds {meta['idle_n']} keep-alive client connections (each answered one request).")
P("")
P("| proxy | peak RSS under load | RSS before idle test | RSS with idle conns | conns held / failed | per conn |")
P("|---|---|---|---|---|---|")
for t, m in rsss.items():
    sk = skip_reason(t)
    if sk:
        P(f"| {LABEL[t]} | SKIPPED ({sk}) | | | | |")
        continue
    per = None
    if m.get("idle") and m.get("base") and m.get("held"):
        per = (m["idle"] - m["base"]) * 1024 / m["held"]
    held = "–" if m.get("held") is None else f"{m['held']} / {m.get('failed')}"
    P(f"| {LABEL[t]} | {f_mb(m.get('hwm'))} | {f_mb(m.get('base'))} | {f_mb(m.get('idle'))} | {held} | "
      f"{'–' if per is None else f'{per / 1024:.1f} KiB'} |")
P("")

h2 = rd("h2.md")
if h2:
    P("## HTTP/2 (h2c prior knowledge, nice-to-have)")
    P("")
    P(h2.strip())
    P("")

tls = rd("tls.md")
if tls:
    P("## HTTP/1.1, HTTP/2 and HTTP/3 over TLS (Portcullis)")
    P("")
    P(tls.strip())
    P("")

notes = rd("notes.txt")
if notes and notes.strip():
    P("## Notes from the run")
    P("")
    for n in notes.strip().splitlines():
        P(f"- {n}")
    P("")

print("\n".join(lines))
