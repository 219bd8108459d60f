"""Occlusion estimator vs. synthetic occluders with exact masks.

For ``--n`` face images under ``--data`` (landmarks from synth.face), every occluder kind is
drawn once per face (resampled until it covers 5-60% of the face oval), landmarks are
re-detected on the occluded image (as a real pipeline would; the clean landmarks are used
when detection fails), and the estimator's mask is compared with the true occluder mask
inside the face oval (IoU). Baselines in the same run: "all" (whole oval flagged: IoU equals
the coverage) and "none". Clean faces give the false-positive rate (fraction of the oval
flagged although nothing was added; hair, beards and glasses in the data count here).

    .venv/bin/python benchmarks/bench_occlusion.py --data ../shared/data/faces/utkface --n 300
"""
from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import cv2
import numpy as np

from synth.face import get_detector
from synth.io import IMAGE_EXTENSIONS, read_image
from synth.occluders import render_occluder, sample_occluder
from synth.occlusion import face_oval_mask, get_estimator

KINDS = ("hand", "bar", "texture", "patch")


def oracle_colour(img: np.ndarray, oval: np.ndarray, true: np.ndarray, threshold: float = 9.0) -> np.ndarray:
    """Upper-bound reference for colour-only estimators: a trimmed Gaussian (Lab) fitted on
    the pixels known to be unoccluded (uses the ground truth), thresholded per pixel."""
    lab = cv2.cvtColor(img, cv2.COLOR_RGB2LAB).astype(np.float64) * [100 / 255, 1, 1] - [0, 128, 128]
    x = lab[oval & ~true]
    mu, cov = np.median(x, 0), np.cov(x, rowvar=False) + np.eye(3) * 0.5
    for _ in range(2):
        dx = x - mu
        d = ((dx @ np.linalg.inv(cov)) * dx).sum(1)
        sel = x[d <= np.quantile(d, 0.9)]
        mu, cov = sel.mean(0), np.cov(sel, rowvar=False) / 0.7 + np.eye(3) * 0.5
    cov = cov + np.diag([100.0, 4.0, 4.0])
    dd = lab - mu
    return (((dd @ np.linalg.inv(cov)) * dd).sum(-1) > threshold) & oval


def iou(a: np.ndarray, b: np.ndarray) -> float:
    u = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / u) if u else 1.0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="directory of face images")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--estimator", default="skin")
    ap.add_argument("--dump", default=None, help="write a few visual examples to this directory")
    args = ap.parse_args(argv)
    cv2.setNumThreads(1)

    files = sorted(p for p in Path(args.data).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    rng = np.random.default_rng(args.seed)
    files = [files[i] for i in rng.permutation(len(files))]
    det = get_detector()
    est = get_estimator(args.estimator)
    faces = []
    for f in files:
        if len(faces) >= args.n:
            break
        img = read_image(f)
        r = det.detect(img)
        if r is not None:
            faces.append((img, r.landmarks))
    donors = [img for img, _ in faces]

    res = {k: {"est": [], "all": [], "cov": [], "oracle": []} for k in KINDS}
    fp, lat, redetect_fail = [], [], 0
    dumped = 0
    for i, (img, lm) in enumerate(faces):
        oval = face_oval_mask(img.shape[:2], lm)
        t0 = time.perf_counter()
        e = est(img, lm)
        lat.append(time.perf_counter() - t0)
        fp.append(float((e[oval] >= 0.5).mean()))
        for kind in KINDS:
            for _ in range(20):
                p = sample_occluder(rng, img.shape[:2], lm, kinds=(kind,), n_donors=len(donors))
                if kind == "patch" and p["donor"] == i:
                    continue
                occ, alpha = render_occluder(img, p, donors)
                true = (alpha >= 128) & oval
                cov = true.sum() / oval.sum()
                if 0.05 <= cov <= 0.6:
                    break
            r = det.detect(occ)
            lm2 = r.landmarks if r is not None else lm
            redetect_fail += r is None
            t0 = time.perf_counter()
            e = est(occ, lm2)
            lat.append(time.perf_counter() - t0)
            pred = (e >= 0.5) & oval
            res[kind]["est"].append(iou(pred, true))
            res[kind]["all"].append(iou(oval, true))
            res[kind]["oracle"].append(iou(oracle_colour(occ, oval, true), true))
            res[kind]["cov"].append(cov)
            if args.dump and dumped < 24:
                out = Path(args.dump)
                out.mkdir(parents=True, exist_ok=True)
                vis = np.hstack([occ, np.repeat((true * 255).astype(np.uint8)[..., None], 3, 2),
                                 np.repeat((pred * 255).astype(np.uint8)[..., None], 3, 2)])
                cv2.imwrite(str(out / f"{dumped:02d}_{kind}.png"), vis[..., ::-1])
                dumped += 1

    # latency at 256x256
    img, lm = faces[0]
    big = cv2.resize(img, (256, 256), interpolation=cv2.INTER_LINEAR)
    lm_big = (lm + 0.5) * (256 / np.array(img.shape[1::-1], np.float32)) - 0.5
    t256 = []
    for _ in range(100):
        t0 = time.perf_counter()
        est(big, lm_big)
        t256.append(time.perf_counter() - t0)

    print(f"command: python benchmarks/bench_occlusion.py --data {args.data} --n {args.n} --seed {args.seed}")
    print(f"machine: {platform.machine()} 2-core CPU (shared), faces used: {len(faces)}, "
          f"re-detection failures on occluded images: {redetect_fail}\n")
    print(f"| occluder | n | coverage of oval | IoU {args.estimator} | baseline 'all' | baseline 'none' | ratio vs 'all' "
          "| oracle colour model (uses truth; colour-only ceiling) |")
    print("|---|---|---|---|---|---|---|---|")
    tot = {"est": [], "all": [], "oracle": []}
    for k in KINDS:
        v, b, o = (np.array(res[k][c]) for c in ("est", "all", "oracle"))
        for c, arr in zip(("est", "all", "oracle"), (v, b, o)):
            tot[c] += list(arr)
        print(f"| {k} | {len(v)} | {np.mean(res[k]['cov']):.2f} | {v.mean():.3f} | {b.mean():.3f} | 0.000 "
              f"| {v.mean() / b.mean():.2f}x | {o.mean():.3f} |")
    v, b, o = (np.mean(tot[c]) for c in ("est", "all", "oracle"))
    print(f"| **all** | {len(tot['est'])} | | **{v:.3f}** | {b:.3f} | 0.000 | {v / b:.2f}x | {o:.3f} |")
    print(f"\nclean faces: mean fraction of the oval flagged (false positives) = {np.mean(fp):.3f}, "
          f"median {np.median(fp):.3f}")
    print(f"latency per call: median {np.median(lat) * 1e3:.2f} ms (min {np.min(lat) * 1e3:.2f}) at "
          f"{faces[0][0].shape[1]}x{faces[0][0].shape[0]}; median {np.median(t256) * 1e3:.2f} ms "
          f"(min {np.min(t256) * 1e3:.2f}) at 256x256")


if __name__ == "__main__":
    main()
