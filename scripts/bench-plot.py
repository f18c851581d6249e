#!/usr/bin/env python3
"""Summary table and SVG plots of a scripts/bench run. Standard library only.

  python3 scripts/bench-plot.py --summary DIR     # Markdown tables on stdout, DIR/results.json
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
    runs = []
    for p in sorted(glob.glob(os.path.join(d, prefix + "_*.json")),
                    key=lambda p: int(re.findall(r"_(\d+)\.json$", p)[0]) if re.findall(r"_(\d+)\.json$", p) else 0):
        if not re.search(r"_\d+\.json$", p):
            continue
        with open(p) as f:
            r = json.load(f)
        r["run"] = int(re.findall(r"_(\d+)\.json$", p)[0])
        runs.append(r)
    return runs


def med(runs, key):
    vals = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def fmt(v, d=0):
    if v is None:
        return "-"
    return f"{v:,.{d}f}"


def dbz_latency(d):
    """p50/p95/p99/max, RSS and CPU from scripts/bench-debezium --latency's output."""
    p = os.path.join(d, "lat_dbz.out")
    if not os.path.exists(p):
        return None
    text = open(p).read()
    out = {}
    for key in ("p50", "p95", "p99", "max"):
        m = re.search(key + r"[^0-9\-]*(-?[0-9.]+)", text)
        out[key + "_ms"] = float(m.group(1)) if m else None
    m = re.search(r"peak[_ ]rss[^0-9]*([0-9.]+)", text, re.I)
    out["rss_mb"] = float(m.group(1)) if m else None
    m = re.search(r"\(([0-9.]+) s per million events\)", text)
    out["cpu_s_per_m"] = float(m.group(1)) if m else None
    m = re.search(r"after the warm-up \(([0-9,]+) events\)", text)
    out["measured"] = m.group(1) if m else "?"
    out["raw"] = text.strip()
    return out


def summary(d):
    contenders = {
        "ours wal": load(d, "ours_wal"),
        "ours message": load(d, "ours_message"),
        "ours poll": load(d, "ours_poll"),
        "Debezium": load(d, "dbz"),
        "pg_recvlogical": load(d, "recv"),
        "bare producer": load(d, "prod"),
    }
    res = {"dir": d, "p1": {}, "p2": {}}
    print("\n## P1 backlog drain (events/s from process launch until all N acknowledged in Kafka)\n")
    print("| contender | runs (events/s; load) | median events/s | median drain-only events/s | peak RSS MB (median) | CPU s / M events (median) |")
    print("|---|---|---|---|---|---|")
    for name, runs in contenders.items():
        if not runs:
            continue
        rs = "; ".join(f"{r['evps']:,.0f} ({r.get('load', 0):.1f})" for r in runs)
        res["p1"][name] = {
            "runs": [{k: v for k, v in r.items() if k != "samples"} for r in runs],
            "evps": med(runs, "evps"), "evps_drain": med(runs, "evps_drain"),
            "rss_mb": med(runs, "rss_mb"), "cpu_s_per_m": med(runs, "cpu_s_per_m"),
        }
        m = res["p1"][name]
        print(f"| {name} | {rs} | {fmt(m['evps'])} | {fmt(m['evps_drain'])} | {fmt(m['rss_mb'], 1)} | {fmt(m['cpu_s_per_m'], 1)} |")
    p1 = res["p1"]
    # ratios per round (same run), then their median
    print("\n## Ratios (per round, then the median)\n")
    rounds = {}
    for name, runs in contenders.items():
        for r in runs:
            rounds.setdefault(r["run"], {})[name] = r
    ratio_rows = []
    for k in sorted(rounds):
        rr = rounds[k]
        ours = rr.get("ours wal", {}).get("evps")
        dbz = rr.get("Debezium", {}).get("evps")
        dbz_d = rr.get("Debezium", {}).get("evps_drain")
        recv = rr.get("pg_recvlogical", {}).get("evps")
        prod = rr.get("bare producer", {}).get("evps")
        lim = min(v for v in (recv, prod) if v) if (recv or prod) else None
        ratio_rows.append({
            "round": k, "L": lim,
            "wal_over_dbz": ours / dbz if ours and dbz else None,
            "wal_over_dbz_drain": ours / dbz_d if ours and dbz_d else None,
            "wal_over_L": ours / lim if ours and lim else None,
            "message_over_L": rr.get("ours message", {}).get("evps") / lim
            if rr.get("ours message", {}).get("evps") and lim else None,
            "rss_dbz_over_wal": rr["Debezium"]["rss_mb"] / rr["ours wal"]["rss_mb"]
            if "Debezium" in rr and "ours wal" in rr and rr["ours wal"].get("rss_mb") else None,
            "cpu_dbz_over_wal": rr["Debezium"]["cpu_s_per_m"] / rr["ours wal"]["cpu_s_per_m"]
            if "Debezium" in rr and "ours wal" in rr and rr["ours wal"].get("cpu_s_per_m") else None,
        })
    print("| round | L = min(pg_recvlogical, producer) ev/s | wal / Debezium (launch) | wal / Debezium (drain-only) | wal / L | message / L | Debezium RSS / ours | Debezium CPU / ours |")
    print("|---|---|---|---|---|---|---|---|")
    for x in ratio_rows:
        print(f"| {x['round']} | {fmt(x['L'])} | {fmt(x['wal_over_dbz'], 2)} | {fmt(x['wal_over_dbz_drain'], 2)} | "
              f"{fmt(x['wal_over_L'], 2)} | {fmt(x['message_over_L'], 2)} | {fmt(x['rss_dbz_over_wal'], 0)} | {fmt(x['cpu_dbz_over_wal'], 1)} |")
    mr = {k: med(ratio_rows, k) for k in ("L", "wal_over_dbz", "wal_over_dbz_drain", "wal_over_L",
                                          "message_over_L", "rss_dbz_over_wal", "cpu_dbz_over_wal")}
    print(f"| **median** | {fmt(mr['L'])} | **{fmt(mr['wal_over_dbz'], 2)}** | {fmt(mr['wal_over_dbz_drain'], 2)} | "
          f"**{fmt(mr['wal_over_L'], 2)}** | {fmt(mr['message_over_L'], 2)} | {fmt(mr['rss_dbz_over_wal'], 0)} | {fmt(mr['cpu_dbz_over_wal'], 1)} |")
    res["ratios"] = {"rounds": ratio_rows, "median": mr}

    lat = os.path.join(d, "lat_ours.json")
    dl = dbz_latency(d)
    if os.path.exists(lat) or dl:
        print("\n## P2 steady-state latency (commit returned -> consumer received, one clock)\n")
        print("| relay | load | events measured | p50 ms | p95 ms | p99 ms | max ms | peak RSS MB | CPU s / M events |")
        print("|---|---|---|---|---|---|---|---|---|")
    if os.path.exists(lat):
        r = json.load(open(lat))
        res["p2"]["ours"] = {k: v for k, v in r.items() if k != "hist"}
        print(f"| ours (wal) | {r['load']:.1f} | {r['measured']:,} (missing {r['missing']}) | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | "
              f"{r['p99_ms']:.2f} | {r['max_ms']:.2f} | {r['rss_mb']:.1f} | {r['cpu_s_per_m']:.1f} |")
    if dl:
        res["p2"]["debezium"] = dl
        dload = "-"
        lf = os.path.join(d, "lat_dbz.load")
        if os.path.exists(lf):
            dload = f"{json.load(open(lf))['load']:.1f}"
        print(f"| Debezium | {dload} | {dl['measured']} | {fmt(dl['p50_ms'], 1)} | {fmt(dl['p95_ms'], 1)} | "
              f"{fmt(dl['p99_ms'], 1)} | {fmt(dl['max_ms'], 1)} | {fmt(dl['rss_mb'], 0)} | {fmt(dl['cpu_s_per_m'], 0)} |")
        print("\nDebezium's own report (scripts/bench-debezium --latency):\n```\n" + dl["raw"][-1500:] + "\n```")
    cmp = os.path.join(d, "compare.json")
    if os.path.exists(cmp) and os.path.getsize(cmp):
        c = json.load(open(cmp))
        res["compare"] = c
        print("\n## Equal messages (our relay vs Debezium, same rows, same topic)\n")
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
          "Debezium": "#1f77b4", "bare producer": "#2ca02c"}


def plot_drain(d, path, label=""):
    series = {}
    for name, prefix in (("ours wal", "ours_wal"), ("ours message", "ours_message"), ("ours poll", "ours_poll"),
                         ("Debezium", "dbz"), ("bare producer", "prod")):
        runs = [r for r in load(d, prefix) if r.get("samples")]
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


def plot_latency(d, path):
    p = os.path.join(d, "lat_ours.json")
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
               f'P2 latency, our relay (wal): {r["rate"]} events/s, 1 event/txn, {r["seconds"]} s, '
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
    """Both relays' latency CDFs on a log axis: ours from lat_ours_raw.txt (the measured window),
    Debezium from the sorted samples file that scripts/bench-debezium --latency names."""
    import math
    raw = os.path.join(d, "lat_ours_raw.txt")
    meta = os.path.join(d, "lat_ours.json")
    dout = os.path.join(d, "lat_dbz.out")
    if not (os.path.exists(raw) and os.path.exists(meta) and os.path.exists(dout)):
        return
    m = json.load(open(meta))
    skip = m["rate"] * m["warmup"]
    ours = sorted(float(l.split()[3]) for l in open(raw).read().splitlines()[1:]
                  if l and int(l.split()[0]) > skip)
    f = re.search(r"samples: (\S+latency_ms\.txt)", open(dout).read())
    if not f or not os.path.exists(f.group(1)):
        return
    dbz = sorted(float(x) for x in open(f.group(1)).read().split())
    W, H, x0, y0, pw, ph = 760, 420, 90, 360, 560, 300
    lo, hi = 1.0, 10000.0
    X = lambda v: x0 + pw * (math.log10(min(max(v, lo), hi)) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
    out = svg_header(W, H)
    out.append(f'<text x="{x0 + pw / 2}" y="20" text-anchor="middle" font-size="14">'
               f'P2 latency CDF, {m["rate"]} events/s, one event per transaction, {m["seconds"]} s measured</text>')
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
    for name, v, c in (("our relay (wal)", ours, "#d62728"), ("Debezium 3.6.1 (stock)", dbz, "#1f77b4")):
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
    if len(sys.argv) == 3 and sys.argv[1] == "--summary":
        summary(sys.argv[2])
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
