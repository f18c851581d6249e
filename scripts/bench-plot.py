#!/usr/bin/env python3
"""Summary table and SVG plots of a scripts/bench run. Standard library only.

  python3 scripts/bench-plot.py --summary DIR [--rates "R..."] [--latency-who "wal poll dbz_stock dbz_tuned"]
                                                  # Markdown tables on stdout, DIR/results.json
  python3 scripts/bench-plot.py DIR OUTDIR [LABEL]  # OUTDIR/{drain,latency,latency-cdf}.svg (those
                                                  # DIR has the data for)

DIR is .services/bench/<id>/ as written by scripts/bench.
"""
import glob
import json
import os
import re
import statistics
import sys


def load(d, prefix):
    """The runs DIR/PREFIX_<run>.json, by run (PREFIX exactly: dbz does not match dbz_stock_1)."""
    runs = []
    pat = re.compile(re.escape(prefix) + r"_(\d+)\.json$")
    for p in glob.glob(os.path.join(d, prefix + "_*.json")):
        m = pat.fullmatch(os.path.basename(p))
        if not m:
            continue
        with open(p) as f:
            r = json.load(f)
        r["run"] = int(m.group(1))
        runs.append(r)
    return sorted(runs, key=lambda r: r["run"])


def med(runs, key):
    vals = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def fmt(v, d=0):
    if v is None:
        return "-"
    return f"{v:,.{d}f}"


# P1 contenders of the PostgreSQL round: (name, file prefix[, older prefix])
P1 = [("ours wal", "ours_wal"), ("ours message", "ours_message"), ("ours poll", "ours_poll"),
      ("Debezium stock", "dbz_stock", "dbz"), ("Debezium tuned", "dbz_tuned"),
      ("L: wal-read (one replication connection, no Kafka)", "walread"),
      ("L(a): pg_recvlogical", "recv"), ("L: bare producer (no database)", "prod")]
# P2 contenders: (who as scripts/bench names it, label)
P2 = [("wal", "ours, `wal`"), ("poll", "ours, `poll`"), ("dbz_stock", "Debezium, stock"),
      ("dbz_tuned", "Debezium, tuned (poll.interval.ms=10, linger.ms=1)"),
      ("wal_read", "floor: a bare slot reader stamps each row (no relay, no Kafka)"),
      ("kafka_direct", "floor: the writers send to Kafka after commit, linger.ms 0 (no log, no relay)")]


def p1_table(d, contenders, res):
    print(f"\n## P1 backlog drain (run {os.path.basename(os.path.normpath(d))})\n")
    print("Events/s from the process launch (L: from connecting / from the first send) until all N "
          "are acknowledged in Kafka (wal-read: read and confirmed); the 1-minute load average at each "
          "measurement's start in parentheses.")
    settings = os.path.join(d, "settings.json")
    if os.path.exists(settings):
        with open(settings) as f:
            res["settings"] = json.load(f)
        print(f"Every PostgreSQL client connected with sslmode={res['settings']['pg_sslmode']} (--pg-sslmode).")
    print()
    print("| contender | runs (events/s; load) | median events/s | median drain-only events/s | peak RSS MB (median) | CPU s / M events (median) | walsender CPU s / M rows (median) |")
    print("|---|---|---|---|---|---|---|")
    for name, runs in contenders.items():
        if not runs:
            continue
        rs = "; ".join(f"{r['evps']:,.0f} ({r.get('load', 0):.1f})" for r in runs)
        res["p1"][name] = {
            "runs": [{k: v for k, v in r.items() if k != "samples"} for r in runs],
            "evps": med(runs, "evps"), "evps_drain": med(runs, "evps_drain"),
            "rss_mb": med(runs, "rss_mb"), "cpu_s_per_m": med(runs, "cpu_s_per_m"),
            "walsender_cpu_s_per_m": med(runs, "walsender_cpu_s_per_m"),
        }
        m = res["p1"][name]
        print(f"| {name} | {rs} | {fmt(m['evps'])} | {fmt(m['evps_drain'])} | {fmt(m['rss_mb'], 1)} | "
              f"{fmt(m['cpu_s_per_m'], 1)} | {fmt(m['walsender_cpu_s_per_m'], 1)} |")


def summary(d, rates, lat_who):
    contenders = {}
    for c in P1:
        runs = load(d, c[1])
        if not runs and len(c) > 2:
            runs = load(d, c[2])
        contenders[c[0]] = runs
    res = {"dir": d, "p1": {}, "p2": {}}
    if any(contenders.values()):
        p1_table(d, contenders, res)
    rounds = {}
    for name, runs in contenders.items():
        for r in runs:
            rounds.setdefault(r["run"], {})[name] = r

    def ratio(a, b, f="evps"):
        return a[f] / b[f] if a and b and a.get(f) and b.get(f) else None

    heads = [("wal_over_dbz_stock", "wal / Debezium stock"), ("wal_over_dbz_tuned", "**wal / Debezium tuned**"),
             ("wal_over_dbz_tuned_drain", "wal / Debezium tuned (drain-only)"),
             ("message_over_wal", "message / wal"), ("poll_over_wal", "poll / wal"),
             ("wal_over_walread", "**wal / wal-read**"), ("wal_over_recv", "wal / pg_recvlogical"),
             ("wal_over_prod", "wal / bare producer"), ("wal_over_L", "wal / L"),
             ("rss_dbz_tuned_over_wal", "Debezium tuned RSS / wal"),
             ("cpu_dbz_tuned_over_wal", "Debezium tuned CPU / wal"),
             ("walsender_wal_over_walread", "walsender CPU/M: wal / wal-read")]
    ratio_rows = []
    for k in sorted(rounds):
        g = rounds[k].get
        lim = [x for x in (g("L: wal-read (one replication connection, no Kafka)"),
                           g("L: bare producer (no database)")) if x]
        L = min(lim, key=lambda x: x["evps"]) if lim else None
        wal, wr = g("ours wal"), g("L: wal-read (one replication connection, no Kafka)")
        ratio_rows.append({
            "round": k, "L": L["evps"] if L else None,
            "wal_over_dbz_stock": ratio(wal, g("Debezium stock")),
            "wal_over_dbz_tuned": ratio(wal, g("Debezium tuned")),
            "wal_over_dbz_tuned_drain": ratio(wal, g("Debezium tuned"), "evps_drain"),
            "message_over_wal": ratio(g("ours message"), wal), "poll_over_wal": ratio(g("ours poll"), wal),
            "wal_over_walread": ratio(wal, wr), "wal_over_recv": ratio(wal, g("L(a): pg_recvlogical")),
            "wal_over_prod": ratio(wal, g("L: bare producer (no database)")), "wal_over_L": ratio(wal, L),
            "rss_dbz_tuned_over_wal": ratio(g("Debezium tuned"), wal, "rss_mb"),
            "cpu_dbz_tuned_over_wal": ratio(g("Debezium tuned"), wal, "cpu_s_per_m"),
            "walsender_wal_over_walread": ratio(wal, wr, "walsender_cpu_s_per_m"),
        })
    if ratio_rows:
        print("\n## Ratios (per round, then the median; events/s from launch unless noted; "
              "L = min(wal-read, bare producer) of the round)\n")
        print("| round | L events/s | " + " | ".join(h for _, h in heads) + " |")
        print("|---|---|" + "---|" * len(heads))
        for x in ratio_rows:
            print(f"| {x['round']} | {fmt(x['L'])} | " + " | ".join(fmt(x[k], 2) for k, _ in heads) + " |")
        mr = {k: med(ratio_rows, k) for k in ["L"] + [k for k, _ in heads]}
        print(f"| **median** | {fmt(mr['L'])} | " + " | ".join(f"**{fmt(mr[k], 2)}**" for k, _ in heads) + " |")
        res["ratios"] = {"rounds": ratio_rows, "median": mr}

    for rate in rates:
        rows = []
        for who, label in P2:
            if who not in lat_who:
                continue
            f = os.path.join(d, f"lat_{who}_{rate}.json")
            r = json.load(open(f)) if os.path.exists(f) else None
            rows.append((who, label, r))
            if r is not None:
                res["p2"].setdefault(str(rate), {})[who] = {k: v for k, v in r.items() if k != "hist"}
        if not rows:
            continue
        per_txn = sorted({r.get("events_per_txn", 1) for _, _, r in rows if r is not None}) or [1]
        shape = ", ".join(f"{k} event{'s' if k > 1 else ''}" for k in per_txn) + " per transaction"
        print(f"\n## P2 latency commit returned -> consumer received, {rate:,} events/s, {shape} (one clock, the same writers)\n")
        print("| contender | load | events measured (missing) | achieved rate /s | p50 ms | p95 ms | p99 ms | max ms | RSS MB | CPU s / M events |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for who, label, r in rows:
            if r is None:
                print(f"| {label} | - | FAILED (no figure) | | | | | | | |")
                continue
            flag = " **FAILED**" if r.get("failed") else ""
            if r.get("under_offered"):
                flag += f" **UNDER-OFFERED** ({fmt(r.get('achieved_rate'))}/s of {rate:,}/s)"
            # a failed contender's percentiles are withheld (no samples, or some missing), and an
            # under-offered one's: they are the latency of another rate (its JSON keeps them)
            withheld = r.get("failed") or r.get("under_offered")
            ms = (lambda k: "-") if withheld else (lambda k: fmt(r.get(k), 2))
            print(f"| {label} | {r['load']:.1f} | {r['measured']:,} ({r['missing']:,}){flag} | {fmt(r.get('achieved_rate'))} | "
                  f"{ms('p50_ms')} | {ms('p95_ms')} | {ms('p99_ms')} | {ms('max_ms')} | {fmt(r.get('rss_mb'), 1)} | {fmt(r.get('cpu_s_per_m'), 1)} |")
    cmp = os.path.join(d, "compare.json")
    if os.path.exists(cmp) and os.path.getsize(cmp):
        try:
            c = json.load(open(cmp))
        except ValueError:
            c = None
        if c:
            res["compare"] = c
            print("\n## Equal messages (our relay vs Debezium stock, same rows, same topic)\n")
            print(f"pairs {c['pairs']}/{c['rows']}: key equal {c['key_equal']}, "
                  f"partition equal {c['partition_equal']}, value byte-equal {c['value_bytes_equal']}, "
                  f"headers equal {c['headers_equal']} -> {'EQUAL' if c.get('equal') else 'DIFFERENT'}"
                  + (f"; first difference: {c['first_difference']}" if c.get("first_difference") else ""))
    with open(os.path.join(d, "results.json"), "w") as f:
        json.dump(res, f, indent=1)


# ------------------------------------------------------------------ SVG
def svg_header(w, h):
    return [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
            'font-family="sans-serif" font-size="12">', f'<rect width="{w}" height="{h}" fill="white"/>']


def axes(out, x0, y0, w, h, xmax, ymax, xlabel, ylabel, xticks, yticks, xfmt=str, yfmt=str):
    out.append(f'<line x1="{x0}" y1="{y0}" x2="{x0 + w}" y2="{y0}" stroke="black"/>')
    out.append(f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y0 - h}" stroke="black"/>')
    for t in xticks:
        x = x0 + w * t / xmax
        out.append(f'<line x1="{x:.1f}" y1="{y0}" x2="{x:.1f}" y2="{y0 + 4}" stroke="black"/>')
        out.append(f'<text x="{x:.1f}" y="{y0 + 16}" text-anchor="middle">{xfmt(t)}</text>')
    for t in yticks:
        y = y0 - h * t / ymax
        out.append(f'<line x1="{x0 - 4}" y1="{y:.1f}" x2="{x0 + w}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end">{yfmt(t)}</text>')
    out.append(f'<text x="{x0 + w / 2}" y="{y0 + 34}" text-anchor="middle">{xlabel}</text>')
    out.append(f'<text x="{x0 - 58}" y="{y0 - h / 2}" text-anchor="middle" '
               f'transform="rotate(-90 {x0 - 58} {y0 - h / 2})">{ylabel}</text>')


def nice_ticks(vmax, n=5):
    import math
    if vmax <= 0:
        return [0]
    raw = vmax / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((s * mag for s in (1, 2, 2.5, 5, 10) if s * mag >= raw), default=mag * 10)
    return [i * step for i in range(int(vmax / step) + 1)]


COLORS = {"ours wal": "#d62728", "ours message": "#ff7f0e", "ours poll": "#9467bd",
          "Debezium stock": "#1f77b4", "Debezium tuned": "#17becf", "wal-read": "#8c564b",
          "bare producer": "#2ca02c"}


def plot_drain(d, path, label=""):
    series = {}
    for name, prefix in (("ours wal", "ours_wal"), ("ours message", "ours_message"), ("ours poll", "ours_poll"),
                         ("Debezium stock", "dbz_stock"), ("Debezium tuned", "dbz_tuned"), ("wal-read", "walread"),
                         ("bare producer", "prod")):
        runs = [r for r in load(d, prefix) if r.get("samples")]
        if not runs and prefix == "dbz_stock":
            runs = [r for r in load(d, "dbz") if r.get("samples")]
        if not runs:
            continue
        # the median run by events/s
        runs.sort(key=lambda r: r["evps"])
        series[name] = runs[len(runs) // 2]
    if not series:
        return
    W, H, x0, y0, pw, ph = 760, 420, 90, 360, 520, 320
    tmax = max(s["samples"][-1][0] for s in series.values())
    nmax = max(s["samples"][-1][1] for s in series.values())
    out = svg_header(W, H)
    out.append(f'<text x="{x0 + pw / 2}" y="20" text-anchor="middle" font-size="14">'
               f'P1 backlog drain of {nmax:,} events: acknowledged in Kafka over time (median run of each)</text>')
    if label:
        out.append(f'<text x="{x0 + pw / 2}" y="38" text-anchor="middle" fill="#555">{label}</text>')
    axes(out, x0, y0, pw, ph, tmax, nmax, "seconds since the relay process was launched", "events in Kafka",
         nice_ticks(tmax), nice_ticks(nmax), lambda t: f"{t:g}", lambda v: f"{v / 1000:,.0f}k")
    ly = 50
    for name, s in series.items():
        pts = " ".join(f"{x0 + pw * t / tmax:.1f},{y0 - ph * n / nmax:.1f}" for t, n in s["samples"])
        c = COLORS.get(name, "black")
        out.append(f'<polyline fill="none" stroke="{c}" stroke-width="2" points="{pts}"/>')
        out.append(f'<line x1="{x0 + pw + 15}" y1="{ly}" x2="{x0 + pw + 35}" y2="{ly}" stroke="{c}" stroke-width="3"/>')
        out.append(f'<text x="{x0 + pw + 40}" y="{ly + 4}">{name}</text>')
        out.append(f'<text x="{x0 + pw + 40}" y="{ly + 18}" fill="#555">{s["evps"]:,.0f} ev/s</text>')
        ly += 40
    out.append("</svg>")
    open(path, "w").write("\n".join(out))


def first_rate(d, who):
    """The lowest P2 rate with a lat_WHO_RATE.json in DIR, or None."""
    rates = [int(m.group(1)) for m in (re.fullmatch(re.escape(who) + r"_(\d+)\.json", os.path.basename(p))
                                       for p in glob.glob(os.path.join(d, who + "_*.json"))) if m]
    return min(rates) if rates else None


def plot_latency(d, path):
    rate = first_rate(d, "lat_wal")
    # the PostgreSQL round's layout (lat_wal_RATE.json), or the older lat_ours.json
    p = os.path.join(d, f"lat_wal_{rate}.json" if rate else "lat_ours.json")
    if not os.path.exists(p):
        return
    r = json.load(open(p))
    hist, b = r["hist"], r["hist_bucket_ms"]
    total = sum(hist)
    # CDF over the buckets (the last bucket is the overflow)
    W, H, x0, y0, pw, ph = 760, 420, 90, 360, 560, 300
    last = max(i for i, c in enumerate(hist) if c) if total else 0
    # up to twice the p99 (at least 20 ms); what lies beyond is counted in the caption
    xmax = min(max(20.0, 2 * r["p99_ms"]), (last + 1) * b, (len(hist) - 1) * b)
    beyond = sum(c for i, c in enumerate(hist) if i * b >= xmax)
    out = svg_header(W, H)
    out.append(f'<text x="{x0 + pw / 2}" y="20" text-anchor="middle" font-size="14">'
               f'P2 latency, our relay (wal): {r["rate"]} events/s, {r.get("events_per_txn", 1)} event/txn, {r["seconds"]} s, '
               f'{r["measured"]:,} events</text>')
    out.append(f'<text x="{x0 + pw / 2}" y="38" text-anchor="middle" fill="#555">'
               f'commit returned -> consumer received (one clock). p50 {r["p50_ms"]:.2f}, p95 {r["p95_ms"]:.2f}, '
               f'p99 {r["p99_ms"]:.2f}, max {r["max_ms"]:.1f} ms; {beyond} events beyond the axis</text>')
    hmax = max(hist) if total else 1
    axes(out, x0, y0, pw, ph, xmax, hmax, "latency, ms (0.5 ms buckets)",
         "events per bucket", nice_ticks(xmax), nice_ticks(hmax), lambda t: f"{t:g}", lambda v: f"{v:,.0f}")
    bw = pw * b / xmax
    for i, c in enumerate(hist):
        if not c or i * b >= xmax:
            continue
        x = x0 + pw * i * b / xmax
        h = ph * c / hmax
        out.append(f'<rect x="{x:.1f}" y="{y0 - h:.1f}" width="{max(bw - 0.5, 0.5):.1f}" height="{h:.1f}" fill="#d62728" opacity="0.7"/>')
    # CDF line on a 0-100 % right axis
    acc, pts = 0, []
    for i, c in enumerate(hist):
        acc += c
        if (i + 1) * b > xmax:
            break
        pts.append(f"{x0 + pw * (i + 1) * b / xmax:.1f},{y0 - ph * acc / total:.1f}")
    out.append(f'<polyline fill="none" stroke="black" stroke-width="1.5" points="{" ".join(pts)}"/>')
    for q in (0, 25, 50, 75, 100):
        y = y0 - ph * q / 100
        out.append(f'<text x="{x0 + pw + 6}" y="{y + 4:.1f}">{q}%</text>')
    out.append(f'<text x="{x0 + pw + 40}" y="{y0 - ph / 2}" text-anchor="middle" '
               f'transform="rotate(90 {x0 + pw + 40} {y0 - ph / 2})">cumulative (black line)</text>')
    for name, v in (("p50", r["p50_ms"]), ("p99", r["p99_ms"])):
        if v < xmax:
            x = x0 + pw * v / xmax
            out.append(f'<line x1="{x:.1f}" y1="{y0}" x2="{x:.1f}" y2="{y0 - ph}" stroke="#555" stroke-dasharray="4 3"/>')
            out.append(f'<text x="{x + 3:.1f}" y="{y0 - ph + 12}" fill="#555">{name}</text>')
    out.append("</svg>")
    open(path, "w").write("\n".join(out))


def plot_latency_cdf(d, path):
    """Every P2 contender's latency CDF on a log axis, at the lowest rate, from the raw samples
    `bench latency` wrote (lat_WHO_RATE_raw.txt: the measured window, after the warm-up)."""
    import math
    rate = first_rate(d, "lat_wal")
    if rate is None:
        return
    m = json.load(open(os.path.join(d, f"lat_wal_{rate}.json")))
    skip = m["rate"] * m["warmup"]
    curves = []
    for who, name, c in (("wal", "our relay (wal)", "#d62728"), ("poll", "our relay (poll)", "#9467bd"),
                         ("dbz_stock", "Debezium (stock)", "#1f77b4"), ("dbz_tuned", "Debezium (tuned)", "#17becf"),
                         ("wal_read", "floor (slot reader)", "#7f7f7f"),
                         ("kafka_direct", "floor (direct to Kafka)", "#bcbd22")):
        raw = os.path.join(d, f"lat_{who}_{rate}_raw.txt")
        if not os.path.exists(raw):
            continue
        v = sorted(float(l.split()[3]) for l in open(raw).read().splitlines()[1:]
                   if l and int(l.split()[0]) > skip)
        if v:
            curves.append((name, v, c))
    if not curves:
        return
    W, H, x0, y0, pw, ph = 760, 420, 90, 360, 560, 300
    lo, hi = 1.0, 10000.0
    X = lambda v: x0 + pw * (math.log10(min(max(v, lo), hi)) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
    out = svg_header(W, H)
    out.append(f'<text x="{x0 + pw / 2}" y="20" text-anchor="middle" font-size="14">'
               f'P2 latency CDF, {m["rate"]} events/s, {m.get("events_per_txn", 1)} event(s) per transaction, {m["seconds"]} s measured</text>')
    out.append(f'<text x="{x0 + pw / 2}" y="38" text-anchor="middle" fill="#555">commit returned -> consumer '
               f'received, one clock; log scale (values below 1 ms drawn at 1 ms)</text>')
    out.append(f'<line x1="{x0}" y1="{y0}" x2="{x0 + pw}" y2="{y0}" stroke="black"/>')
    out.append(f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y0 - ph}" stroke="black"/>')
    for t in (1, 3, 10, 30, 100, 300, 1000, 3000, 10000):
        x = X(t)
        out.append(f'<line x1="{x:.1f}" y1="{y0}" x2="{x:.1f}" y2="{y0 - ph}" stroke="#eee"/>')
        out.append(f'<text x="{x:.1f}" y="{y0 + 16}" text-anchor="middle">{t:g}</text>')
    for q in (0, 25, 50, 75, 95, 99, 100):
        y = y0 - ph * q / 100
        out.append(f'<line x1="{x0 - 4}" y1="{y:.1f}" x2="{x0 + pw}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end">{q}%</text>')
    out.append(f'<text x="{x0 + pw / 2}" y="{y0 + 34}" text-anchor="middle">latency, ms</text>')
    ly = 60
    for name, v, c in curves:
        n = len(v)
        step = max(1, n // 1500)
        pts = [f"{X(v[i]):.1f},{y0 - ph * (i + 1) / n:.1f}" for i in range(0, n, step)]
        pts.append(f"{X(v[-1]):.1f},{y0 - ph:.1f}")
        out.append(f'<polyline fill="none" stroke="{c}" stroke-width="2" points="{" ".join(pts)}"/>')
        p50, p99 = v[int(0.5 * n) - 1], v[max(0, math.ceil(0.99 * n) - 1)]
        out.append(f'<line x1="{x0 + pw + 10}" y1="{ly}" x2="{x0 + pw + 30}" y2="{ly}" stroke="{c}" stroke-width="3"/>')
        out.append(f'<text x="{x0 + pw + 34}" y="{ly + 4}">{name}</text>')
        out.append(f'<text x="{x0 + pw + 34}" y="{ly + 18}" fill="#555">p50 {p50:.1f}, p99 {p99:.1f} ms</text>')
        ly += 44
    out.append("</svg>")
    open(path, "w").write("\n".join(out))


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "--summary":
        # --rates "R1 R2" --latency-who "wal poll dbz_stock dbz_tuned": P2 as run (scripts/bench
        # passes both; without them, whatever lat_WHO_RATE.json files DIR holds)
        opts = dict(zip(sys.argv[3::2], sys.argv[4::2]))
        d = sys.argv[2]
        found = [re.fullmatch(r"lat_([a-z_]+)_(\d+)\.json", os.path.basename(p)) for p in glob.glob(os.path.join(d, "lat_*.json"))]
        found = [m for m in found if m]
        rates = [int(x) for x in opts["--rates"].split()] if "--rates" in opts else sorted({int(m.group(2)) for m in found})
        who = opts["--latency-who"].split() if "--latency-who" in opts else sorted({m.group(1) for m in found})
        summary(d, rates, who)
    elif len(sys.argv) in (3, 4):
        os.makedirs(sys.argv[2], exist_ok=True)
        plot_drain(sys.argv[1], os.path.join(sys.argv[2], "drain.svg"), sys.argv[3] if len(sys.argv) == 4 else "")
        plot_latency(sys.argv[1], os.path.join(sys.argv[2], "latency.svg"))
        plot_latency_cdf(sys.argv[1], os.path.join(sys.argv[2], "latency-cdf.svg"))
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
