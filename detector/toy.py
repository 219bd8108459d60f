"""Tiny synthetic datasets for smoke tests, benchmarks and demos (no face, no mediapipe):
:func:`write_toy_synth_dir` (a ``synth generate`` output) and :func:`write_toy_eval_dir` (a
``manifest.csv`` evaluation set)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np


def write_toy_synth_dir(out: str | Path, n: int = 16, size: int = 64, seed: int = 0, swap_fraction: float = 0.3,
                        n_identities: int | None = None, start: int = 0) -> Path:
    """Write a tiny dataset in the ``synth generate`` output format (for smoke tests and demos).

    Reals are smooth random textures with fine grain; each fake replaces a square (its mask) with a
    brighter, blurred copy, so the forgery is visible both in brightness and in missing
    high-frequency energy. Plans carry the contract's choice fields (pairing, region, blend, ...),
    so choice keys and reweighting work on it. Sample indices are ``start .. start + n - 1``.
    """
    out = Path(out)
    rng = np.random.default_rng(seed)
    n_identities = n_identities or max(2, n)
    lines = []
    for i in range(start, start + n):
        r = np.random.default_rng([seed, i])
        target = int(r.integers(n_identities))
        swap = r.random() < swap_fraction
        source = int((target + 1 + r.integers(n_identities - 1)) % n_identities) if swap else target
        base = cv2.GaussianBlur(r.normal(128, 60, (size, size, 3)).astype(np.float32), (0, 0), size / 10)
        real = np.clip(base + r.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        s = int(r.integers(size // 4, size // 2))
        y0, x0 = r.integers(0, size - s, size=2)
        mask = np.zeros((size, size), np.uint8)
        mask[y0:y0 + s, x0:x0 + s] = 255
        blend = str(r.choice(["alpha", "poisson"]))
        region = str(r.choice(["full", "inner"]))
        forged = np.clip(cv2.GaussianBlur(real, (0, 0), 1.5).astype(np.float32) + 40, 0, 255).astype(np.uint8)
        fake = np.where(mask[..., None] > 0, forged, real)
        shard, ident = f"{i // 10000:03d}", f"{i:06d}"
        rel = {k: f"{k}/{shard}/{ident}.png" for k in ("real", "fake", "mask")}
        for k, arr in (("real", real), ("fake", fake), ("mask", mask)):
            (out / rel[k]).parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(out / rel[k]), arr[..., ::-1] if arr.ndim == 3 else arr)
        plan = {"index": i, "seed": int(rng.integers(2 ** 31)), "recipe": "toy", "pairing": "swap" if swap else "self",
                "target": f"id{target:03d}.png", "source": f"id{source:03d}.png", "size": size,
                "source_degrade": [], "color": None, "mask": {"region": region, "params": {}, "occlusion": "none"},
                "blend": {"op": blend, "params": {}}, "post": []}
        lines.append({"i": i, "id": ident, "label": 1, **rel, "target_id": plan["target"], "source_id": plan["source"],
                      "status": "ok", "plan": plan})
    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return out


def write_toy_eval_dir(out: str | Path, n: int = 12, size: int = 64, seed: int = 99,
                       generators: tuple[str, str] = ("sbi", "dfl_swap")) -> Path:
    """A toy evaluation set in the ``manifest.csv`` format (path,label,mask,generator,identity):
    the reals and fakes of :func:`write_toy_synth_dir`, fakes alternating between two generators."""
    d = write_toy_synth_dir(out, n=n, size=size, seed=seed, n_identities=n)
    rows = [json.loads(line) for line in (d / "manifest.jsonl").read_text().splitlines()]
    (d / "manifest.jsonl").unlink()
    with (d / "manifest.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "mask", "generator", "identity"])
        for k, r in enumerate(rows):
            w.writerow([r["real"], 0, "", "real", r["target_id"]])
            w.writerow([r["fake"], 1, r["mask"], generators[0] if k % 2 else generators[1], r["target_id"]])
    return d
