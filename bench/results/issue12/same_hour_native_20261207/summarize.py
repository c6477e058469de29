import os, re, glob, statistics, sys
# The pass outputs: the directory given, else the one holding this script (its own run).
# Prints per benchmark: prefill 512 and 2048 tok/s, decode median step and mean tok/s, and for
# ours the fractions of the same process's limits (prefill 512 and 2048 of the GEMM limit of the
# weights' dtype, decode of the memcpy limit); median (min-max) [per pass].
out = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
def cells(line): return [c.strip() for c in line.strip().strip('|').split('|')]
res = {}
for f in sorted(glob.glob(out + "/*_pass*.md")):
    name, p = re.match(r".*/(.*)_pass(\d)\.md", f).groups()
    lines = [l for l in open(f) if l.startswith('|')]
    r = {}
    try:
        if name.startswith('ours'):
            pre = [cells(l) for l in lines if re.match(r"\| (512|2048) \| 2048 \|", l)]
            r['p512'] = float(pre[1][3]); r['p2048'] = float(pre[3][3])
            dec = [cells(l) for l in lines if re.match(r"\| 2048 \| 16 \|", l)]
            r['dmean'] = float(dec[0][3]); r['dmed'] = None
            # Fractions of the same process's limits: the GEMM limit of the weights' dtype
            # (sgemm for fp32, bf16 GEMM for bf16) and the memcpy limit.
            lim = -1 if name.endswith('bf16') else 7
            r['f512'] = float(pre[1][lim]); r['f2048'] = float(pre[3][lim])
            r['fdec'] = float(dec[0][6])
        else:
            off = 1 if name.startswith('torch') else 0
            pre = {cells(l)[0]: cells(l) for l in lines if l.startswith('| prefill')}
            r['p512'] = float(pre['prefill 2'][4 + off - 1 + (0 if off==0 else 0)]) if False else float(pre['prefill 2'][-1])
            r['p2048'] = float(pre['prefill 4'][-1])
            decs = [cells(l) for l in lines if l.startswith('| batch 1')]
            best = max(decs, key=lambda c: float(c[4]))
            r['dmean'] = float(best[4]); r['dmed'] = float(best[7]); r['mode'] = best[0]
    except (IndexError, KeyError):
        continue
    res.setdefault(name, {})[int(p)] = r
for name, passes in res.items():
    row = [name]
    for k in ['p512', 'p2048', 'dmed', 'dmean', 'f512', 'f2048', 'fdec']:
        vals = [passes[p].get(k) for p in sorted(passes) if passes[p].get(k) is not None]
        if not vals: row.append('–'); continue
        row.append(f"{statistics.median(vals):.2f} ({min(vals):.2f}-{max(vals):.2f}) [{' / '.join(f'{v:.2f}' if k[0] == 'f' else f'{v:.1f}' for v in vals)}]")
    print(' | '.join(row))
