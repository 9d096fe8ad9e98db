# Prints the A/B table (README.md) from the CSV ab-vs-3bfa28a.sh writes.
# Usage: python3 table.py OUT.csv
import csv, json, sys, statistics
rows = []
for line in open(sys.argv[1]).read().splitlines()[1:]:
    parts = line.split(',', 7)
    rows.append(dict(zip(['engine','build','clients','size','rate','dur','round','json'], parts)))
cells = {}
for r in rows:
    j = json.loads(r['json'].strip("'"))
    key = (r['engine'], int(r['clients']), int(r['size']), r['rate'])
    cells.setdefault(key, {'old': [], 'new': []})[r['build']].append(j)
print("| engine | cell | old (3bfa28a) delivered/s | new delivered/s | new/old per round | median ratio | old / new loss |")
print("|---|---|---:|---:|---:|---:|---:|")
for (e, c, s, rate), d in cells.items():
    o = [x['delivered_per_s'] for x in d['old']]; n = [x['delivered_per_s'] for x in d['new']]
    ratios = [b / a for a, b in zip(o, n)]
    name = f"{c} x {s} B " + ("saturation" if rate == 'max' else f"fixed 10 x {rate}/s")
    f = lambda v: " / ".join(f"{x/1e6:.2f}M" for x in v)
    lo = "+".join(str(x['loss']) for x in d['old']); ln = "+".join(str(x['loss']) for x in d['new'])
    print(f"| {e} | {name} | {f(o)} | {f(n)} | {' / '.join(f'{r:.2f}' for r in ratios)} | {statistics.median(ratios):.2f} | {lo} / {ln} |")
    if rate != 'max':
        po = [x['latency_us']['p99']/1000 for x in d['old']]; pn = [x['latency_us']['p99']/1000 for x in d['new']]
        print(f"<!-- p99 ms {e}: old {po} new {pn} -->")
