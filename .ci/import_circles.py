#!/usr/bin/env python3
"""Run: python3 .ci/import_circles.py src [MODULE...]. Module-level import graph of the daemon's src/ (top-level modules), from every `crate::X`
path in code (use lines and inline paths; comments and string-free doc lines skipped).
Prints the strongly connected components with more than one module (import circles), and
the edges among the modules named on the command line."""
import os, re, sys
from collections import defaultdict
root = sys.argv[1] if len(sys.argv) > 1 else "src"
focus = set(sys.argv[2:])
edges = defaultdict(set)
why = defaultdict(list)
for dp, _, fs in os.walk(root):
    if os.path.relpath(dp, root).split(os.sep)[0] == "bin":
        continue
    for f in fs:
        if not f.endswith(".rs"):
            continue
        p = os.path.join(dp, f)
        rel = os.path.relpath(p, root)
        top = rel.split(os.sep)[0]
        if top.endswith(".rs"):
            top = top[:-3]
        if top in ("lib", "main"):
            continue
        for n, line in enumerate(open(p, encoding="utf-8"), 1):
            code = line.split("//")[0]
            for m in re.finditer(r"\bcrate::(\w+)", code):
                dst = m.group(1)
                if dst != top:
                    edges[top].add(dst)
                    why[(top, dst)].append(f"{rel}:{n}")
            # `use crate::{a, b::c}` groups
            g = re.search(r"\bcrate::\{([^}]*)", code)
            if g:
                for part in g.group(1).split(","):
                    dst = part.strip().split("::")[0]
                    if dst and dst != top and re.match(r"^\w+$", dst):
                        edges[top].add(dst)
                        why[(top, dst)].append(f"{rel}:{n}")
# Tarjan
idx, low, st, on, out, c = {}, {}, [], set(), [], [0]
nodes = set(edges) | {d for s in edges.values() for d in s}
sys.setrecursionlimit(10000)
def sc(v):
    idx[v] = low[v] = c[0]; c[0] += 1; st.append(v); on.add(v)
    for w in edges.get(v, ()):
        if w not in idx:
            sc(w); low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], idx[w])
    if low[v] == idx[v]:
        comp = []
        while True:
            w = st.pop(); on.discard(w); comp.append(w)
            if w == v: break
        out.append(comp)
for v in sorted(nodes):
    if v not in idx: sc(v)
circles = [sorted(x) for x in out if len(x) > 1]
print("import circles (SCCs of more than one top-level module):", len(circles))
for x in circles:
    print("  ", " <-> ".join(x))
    for a in x:
        for b in sorted(edges[a] & set(x)):
            print(f"      {a} -> {b}: {', '.join(why[(a,b)][:3])}")
if focus:
    print("edges from", ", ".join(sorted(focus)) + ":")
    for a in sorted(focus):
        print(f"  {a} -> {', '.join(sorted(edges.get(a, ())))}")
    bad = [(a, "server") for a in focus if "server" in edges.get(a, ()) and a != "server"]
    print("modules among those that import server:", bad or "none")
    sys.exit(1 if bad or any(set(x) & focus for x in circles) else 0)
