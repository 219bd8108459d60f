"""Per-op latency at 256x256 (median of repeats), baseline cv2.GaussianBlur 5x5 in the same run.

Run: .venv/bin/python benchmarks/bench_ops.py
"""
import timeit

import cv2
import numpy as np
from skimage import data

from synth import color as C
from synth import degrade as D

cv2.setNumThreads(1)
img = cv2.resize(data.astronaut(), (256, 256), interpolation=cv2.INTER_AREA)
ref = cv2.resize(data.coffee()[:, 100:500], (256, 256), interpolation=cv2.INTER_AREA)
def med(fn, number=20, repeat=15):
    return float(np.median(timeit.repeat(fn, number=number, repeat=repeat))) / number * 1e3
base = med(lambda: cv2.GaussianBlur(img, (5, 5), 0), number=200)
rows = []
for op in D.OPS + C.OPS:
    kw = {k: p.default for k, p in op.params.items()}
    args = (img,) if op.stage != "color" else (img, ref)
    if op.random:
        f = lambda op=op, kw=kw, args=args: op.fn(*args, rng=np.random.default_rng(0), **kw)  # noqa: E731
    else:
        f = lambda op=op, kw=kw, args=args: op.fn(*args, **kw)  # noqa: E731
    rows.append((op.stage, op.name, ", ".join(f"{k}={v}" for k, v in kw.items()), med(f, number=5 if op.name=="idt" else 20)))
print(f"baseline cv2.GaussianBlur(5x5) uint8 256x256: {base:.3f} ms\n")
print("| stage | op | default params | ms (median) | x baseline |\n|---|---|---|---:|---:|")
for s, n, p, ms in rows:
    print(f"| {s} | {n} | {p} | {ms:.2f} | {ms/base:.1f} |")
