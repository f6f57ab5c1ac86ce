"""Read the harness results of scripts/bench-compare.sh and write the table
into docs/benchmarks.md (between the bench-compare markers) and the overload
curve as an SVG. Standard library only."""
import glob
import json
import os
import sys

out, cap_pct, knee, md_path, svg_path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]


def results(name):
    """Every result.json of one harness output folder, in run order."""
    files = sorted(glob.glob(os.path.join(out, name, "*", "result.json")))
    return [json.load(open(f)) for f in files]


def judged(name):
    return [json.load(open(f)) for f in sorted(glob.glob(os.path.join(out, name, "*", "judged.json")))]


lines = []
cpu = {k: results(f"cpu-{k}") for k in ("wisp", "kamailio")}
if cpu["wisp"] and cpu["kamailio"]:
    lines += ["| 1,000 cps, 3 runs × 15,000 calls | wisp | Kamailio |", "| --- | --- | --- |"]
    w = [r["cpu"]["sut"] for r in cpu["wisp"]]
    k = [r["cpu"]["sut"] for r in cpu["kamailio"]]
    per_call = lambda pcts, rate=1000: " / ".join(f"{p * 10000 / rate:.0f}" for p in pcts)
    lines.append(f"| CPU, % of one core | {' / '.join(map(str, w))} | {' / '.join(map(str, k))} |")
    lines.append(f"| CPU per call, µs | {per_call(w)} | {per_call(k)} |")
    fails = lambda rs: sum(r["failed"] for r in rs)
    lines.append(f"| failed calls | {fails(cpu['wisp'])} | {fails(cpu['kamailio'])} |")
    ratio = (sum(w) / len(w)) / (sum(k) / len(k))
    lines += [f"| wisp / Kamailio CPU per call | {ratio:.2f} | |", ""]

ramp = {}
for k in ("wisp", "kamailio"):
    steps = [r for r in results(f"ramp-{k}") if r.get("target_cps")]
    passing = [j for j in judged(f"ramp-{k}") if j.get("pass")]
    ramp[k] = (steps, max((j.get("target_cps", 0) for j in passing), default=None))
if ramp["wisp"][0]:
    lines += ["| uncapped ramp step | wisp: ok / failed, CPU % | Kamailio: ok / failed, CPU % |", "| --- | --- | --- |"]
    by_rate = {}
    for k in ("wisp", "kamailio"):
        for r in ramp[k][0]:
            by_rate.setdefault(int(r["target_cps"]), {})[k] = r
    for rate in sorted(by_rate):
        cell = lambda r: f"{r['successful']} / {r['failed']}, {r['cpu']['sut']}" if r else "—"
        lines.append(f"| {rate} | {cell(by_rate[rate].get('wisp'))} | {cell(by_rate[rate].get('kamailio'))} |")
    lines += ["", f"Highest passing step: wisp {ramp['wisp'][1]}, Kamailio {ramp['kamailio'][1]} cps.", ""]

split = []
for f in sorted(glob.glob(os.path.join(out, "split-wisp-*.times")), key=lambda f: int(f.split("-")[-1].split(".")[0])):
    rate = int(f.split("-")[-1].split(".")[0])
    rs = results(f"split-wisp-{rate}")
    text = open(f).read().split()
    if not rs or len(text) < 2:
        continue
    secs = lambda t: float(t[: t.index("m")]) * 60 + float(t[t.index("m") + 1: -1])
    user, system = secs(text[0]), secs(text[1])
    calls = rs[0]["successful"]
    split.append(f"| {rate} | {calls} | {user * 1e6 / calls:.0f} | {system * 1e6 / calls:.0f} | {(user + system) * 1e6 / calls:.0f} |")
if split:
    lines += ["| wisp at (cps) | calls | user µs per call | kernel µs per call | total |", "| --- | --- | --- | --- | --- |"] + split
    lines += ["", "(whole process lifetime: start-up and keepalives included)", ""]

curve = {}
for k in ("wisp", "kamailio"):
    for d in glob.glob(os.path.join(out, f"capped-{k}-*")):
        if not os.path.isdir(d):
            continue
        rs = results(os.path.basename(d))
        if rs:
            r = rs[0]
            curve.setdefault(k, []).append((int(r["target_cps"]), r))
if curve:
    lines += [
        f"| offered cps (capped at {cap_pct} % of one core) | wisp: ok / failed, goodput, setup p99 | Kamailio: ok / failed, goodput |",
        "| --- | --- | --- |",
    ]
    rates = sorted({rate for k in curve for rate, _ in curve[k]})
    get = lambda k, rate: next((r for x, r in curve.get(k, []) if x == rate), None)
    for rate in rates:
        w, kk = get("wisp", rate), get("kamailio", rate)
        wc = f"{w['successful']} / {w['failed']}, {w['achieved_cps']} ({100 * w['achieved_cps'] / knee:.0f} % of the knee), {w['setup_ms']['p99']} ms" if w else "—"
        kc = f"{kk['successful']} / {kk['failed']}, {kk['achieved_cps']}" if kk else "—"
        lines.append(f"| {rate} ({rate / knee:.1f}×) | {wc} | {kc} |")
    lines += ["", "![goodput against offered load](bench-overload.svg)", ""]

    # The plot: goodput (completed calls/s) against offered cps.
    W, H, P = 640, 400, 60
    top = max(rates) * 1.05
    best = max([r["achieved_cps"] for k in curve for _, r in curve[k]] + [knee]) * 1.15
    x = lambda v: P + (W - 2 * P) * v / top
    y = lambda v: H - P - (H - 2 * P) * v / best
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<line x1="{P}" y1="{H - P}" x2="{W - P}" y2="{H - P}" stroke="black"/>',
           f'<line x1="{P}" y1="{P}" x2="{P}" y2="{H - P}" stroke="black"/>',
           f'<line x1="{x(0)}" y1="{y(0)}" x2="{x(best)}" y2="{y(best)}" stroke="#bbb" stroke-dasharray="4"/>',
           f'<text x="{W - P}" y="{P - 10}" text-anchor="end" fill="#888">dashed: completed = offered</text>',
           f'<text x="{W / 2}" y="{H - 20}" text-anchor="middle">offered calls/s (CPU capped at {cap_pct} % of one core)</text>',
           f'<text x="15" y="{H / 2}" transform="rotate(-90 15 {H / 2})" text-anchor="middle">completed calls/s</text>']
    for rate in rates:
        svg.append(f'<text x="{x(rate)}" y="{H - P + 15}" text-anchor="middle">{rate}</text>')
    for tick in range(0, int(best) + 1, 500):
        svg.append(f'<text x="{P - 5}" y="{y(tick) + 4:.1f}" text-anchor="end">{tick}</text>')
    for k, colour in (("wisp", "#1f77b4"), ("kamailio", "#d62728")):
        pts = sorted((rate, r["achieved_cps"]) for rate, r in curve.get(k, []))
        if pts:
            svg.append('<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>' % (colour, " ".join(f"{x(a):.1f},{y(b):.1f}" for a, b in pts)))
            for a, b in pts:
                svg.append(f'<circle cx="{x(a):.1f}" cy="{y(b):.1f}" r="3" fill="{colour}"/>')
            svg.append(f'<text x="{x(pts[-1][0]) - 5:.1f}" y="{y(pts[-1][1]) - 8:.1f}" text-anchor="end" fill="{colour}">{k}</text>')
    svg.append("</svg>")
    open(svg_path, "w").write("\n".join(svg) + "\n")

md = open(md_path).read()
start, end = "<!-- bench-compare -->", "<!-- /bench-compare -->"


def chunks(text):
    """The block's sections (cpu, ramp, capped), by the first words of their header row."""
    keys = {"| 1,000 cps": "cpu", "| uncapped ramp": "ramp", "| wisp at (cps)": "split", "| offered cps": "capped"}
    out, current = {}, None
    for line in text.splitlines():
        key = next((k for p, k in keys.items() if line.startswith(p)), None)
        if key:
            current = key
            out[current] = []
        if current:
            out[current].append(line)
    return out


# A run of some sections keeps the others' tables from the last run.
old = chunks(md[md.index(start) + len(start): md.index(end)]) if start in md else {}
new = chunks("\n".join(lines))
merged = []
for key in ("cpu", "ramp", "split", "capped"):
    part = list(new.get(key) or old.get(key) or [])
    while part and not part[-1].strip():
        part.pop()
    if part:
        merged += part + [""]
block = start + "\n" + "\n".join(merged).rstrip() + "\n" + end
if start in md:
    md = md[: md.index(start)] + block + md[md.index(end) + len(end):]
else:
    md += "\n## wisp and Kamailio side by side (`scripts/bench-compare.sh`)\n\n" + block + "\n"
open(md_path, "w").write(md)
print("\n".join(lines))
