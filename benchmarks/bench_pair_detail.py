"""Does forging change a face's fine detail? The pair-level detail cue of a ``synth generate`` run.

For every (real, own fake) pair of a run -- same target, crop, post-processing and encoding, so
the forgery is their only difference -- compares the fine-detail energy ``mean((x - G x)^2)``
(``x`` the grey image, ``G`` a Gaussian of sigma 1) of the fake with its real's, inside the mask
(> 0.5) and over the whole image. If fakes are richer (or poorer) in fine detail more often than
not, "more detail" is a label in the data even though every augmentation treats a pair alike,
and a detector may learn that a sharpened photo is fake (issue #15, item 2: measure the cue).

Printed and written (``--out``, markdown) per subset of the plans: all pairs, by pairing, blend,
colour transfer, perturb op, source and target degradation op: the number of pairs, the share
whose fake has more detail than its real, and the median log ratio (fake / real), inside the
mask and over the whole image. Manifest lines that are not JSON, pairs whose files are unreadable
and pairs whose mask has fewer than ``--min-pixels`` pixels are skipped and counted.

    .venv/bin/python benchmarks/bench_pair_detail.py --run POOL [--limit 4000] [--out pair-detail.md]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

DETAIL_SIGMA = 1.0
_EPS = 1e-3  # energy floor (grey levels^2): flat regions give a ratio near 1, not 0/0


def detail_energy(gray: np.ndarray) -> np.ndarray:
    """Per-pixel fine-detail energy ``(x - G x)^2`` of a float32 (H, W) grey image (Gaussian
    sigma :data:`DETAIL_SIGMA`, reflect-101 border); float32 (H, W)."""
    band = gray - cv2.GaussianBlur(gray, (0, 0), DETAIL_SIGMA)
    return band * band


def pair_log_ratios(real: np.ndarray, fake: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """``log(E_fake / E_real)`` inside ``mask`` and over the whole image, E the mean
    :func:`detail_energy`. ``real``, ``fake``: uint8 (H, W) grey; ``mask``: bool (H, W), not empty."""
    er, ef = detail_energy(real.astype(np.float32)), detail_energy(fake.astype(np.float32))
    inside = float(np.log(ef[mask].mean() + _EPS) - np.log(er[mask].mean() + _EPS))
    whole = float(np.log(ef.mean() + _EPS) - np.log(er.mean() + _EPS))
    return inside, whole


def plan_groups(plan: dict) -> list[str]:
    """The subsets a sample's plan belongs to (besides "all")."""
    groups = [f"pairing {plan.get('pairing')}", f"blend {(plan.get('blend') or {}).get('op')}",
              f"colour {(plan.get('color') or {}).get('op', 'none')}"]
    groups += sorted({f"perturb {op['op']}" for op in plan.get("perturb") or []})
    for side in ("source_degrade", "target_degrade"):
        ops = plan.get(side) or []
        groups += sorted({f"{side} {op['op']}" for op in ops}) or [f"{side} none"]
    return groups


def measure(run: Path, limit: int | None, min_pixels: int) -> tuple[dict[str, list[tuple[float, float]]], int, int]:
    """Log ratios per subset, the number of pairs measured and the number skipped."""
    groups: dict[str, list[tuple[float, float]]] = {}
    measured = skipped = 0
    with open(run / "manifest.jsonl", encoding="utf-8") as f:
        for line in f:
            if limit is not None and measured + skipped >= limit:
                break
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                skipped += 1
                continue
            if rec.get("status") != "ok" or not all(rec.get(k) for k in ("real", "fake", "mask")):
                continue
            real = cv2.imread(str(run / rec["real"]), cv2.IMREAD_GRAYSCALE)
            fake = cv2.imread(str(run / rec["fake"]), cv2.IMREAD_GRAYSCALE)
            mask = cv2.imread(str(run / rec["mask"]), cv2.IMREAD_GRAYSCALE)
            if real is None or fake is None or mask is None or not real.shape == fake.shape == mask.shape:
                skipped += 1
                continue
            inside = mask > 127
            if inside.sum() < min_pixels:
                skipped += 1
                continue
            ratios = pair_log_ratios(real, fake, inside)
            for g in ["all"] + plan_groups(rec.get("plan") or {}):
                groups.setdefault(g, []).append(ratios)
            measured += 1
    return groups, measured, skipped


def table(groups: dict[str, list[tuple[float, float]]]) -> list[str]:
    lines = ["| subset | pairs | inside the mask: fake > real | median log ratio | whole image: fake > real | median log ratio |",
             "|---|---:|---:|---:|---:|---:|"]
    for g in ["all"] + sorted(k for k in groups if k != "all"):
        r = np.asarray(groups[g])
        lines.append(f"| {g} | {len(r)} | {np.mean(r[:, 0] > 0):.3f} | {np.median(r[:, 0]):+.3f} | "
                     f"{np.mean(r[:, 1] > 0):.3f} | {np.median(r[:, 1]):+.3f} |")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", required=True, help="a `synth generate` output folder (manifest.jsonl, real/, fake/, mask/)")
    p.add_argument("--limit", type=int, default=None, help="read at most this many pairs (default: all)")
    p.add_argument("--min-pixels", type=int, default=100, help="skip pairs whose mask has fewer pixels (default 100)")
    p.add_argument("--out", help="also write the table here (markdown)")
    a = p.parse_args(argv)
    run = Path(a.run)
    if not (run / "manifest.jsonl").is_file():
        p.error(f"--run: {run / 'manifest.jsonl'} not found (expected a `synth generate` output folder)")
    if a.out and not Path(a.out).parent.is_dir():
        p.error(f"--out: folder {Path(a.out).parent} does not exist")
    cv2.setNumThreads(1)
    groups, measured, skipped = measure(run, a.limit, a.min_pixels)
    if not measured:
        p.error(f"--run: {run}: no readable (real, fake, mask) pair to measure ({skipped} skipped)")
    lines = [f"{run}: {measured} pairs measured, {skipped} skipped", "", *table(groups)]
    print("\n".join(lines))
    if a.out:
        Path(a.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
