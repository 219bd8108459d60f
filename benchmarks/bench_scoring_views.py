"""A `detector train` run's round detectors scored under several test-time views: mirror and input scales.

The loop's fused detector scores each face and its mirror image at the training side and averages the fused logits.
This benchmark asks whether more views help: each face is also scored downscaled (``--scales``, factors of the side,
bilinear with antialiasing, as training's multi-scale batches are made), and views are averaged in the ways listed
below. Every member's logit is computed once per (face, mirror, scale) and cached (``--cache``), so the variants cost
nothing more; the scale and weights of the fusion are the round's, as stored in its checkpoint.

Sets, as the loop scores a round: the run's synth validation split, its global-quality check (the first
``quality_reals`` validation reals as they are and under each global operation of :mod:`detector.quality`), the run's
evaluation set (read out, per generator), and any ``--extra NAME=DIR`` sets (e.g. a held-out recipe).

Variants (``fused`` = the round's weighted mean of z-scored member logits):

- ``base``: scale 1, mean of the two mirror views: the round as the loop scored it (checked against its record);
- ``scales:A,B,..``: mean over mirror views and the listed scales of the fused logit;
- ``cnn-scales:A,B,..``: the CNN's logit averaged over the listed scales (and mirror views), the statistics model's at
  scale 1, then fused.

    python benchmarks/bench_scoring_views.py RUN --round 1 --round 3 --scales 1 0.75 0.5 \\
        --extra ev-head=DIR --cache RUN-views

Prints a markdown table per round, one row per variant. Writes only into ``--cache``.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from bench_criteria import ThenMirror  # this folder is on sys.path when run as a script
from bench_loop_members import check_round, load_run
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from detector.checkpoint import load_checkpoint
from detector.data import FaceDataset, collate, size_grouped_batches
from detector.fit_statistics import fused_logits
from detector.models.registry import logits_of
from detector.quality import QUALITY_OPS, paired_auc
from detector.readers import read_dataset, read_datasets, split_by_identities
from detector.train import channels_last, sample_metrics


@torch.no_grad()
def view_logits(members: Sequence[torch.nn.Module], samples: Sequence, norm: dict, side: int | None,
                scales: Sequence[float], op: Callable | None = None, batch_size: int = 16,
                progress: bool = False) -> np.ndarray:
    """Members' logits, float64 (N, 2 mirror views, len(scales), len(members)); NaN for unreadable images.

    Each image is read (resized to ``side``, then ``op`` applied, as the loop's quality check does), mirrored for
    view 1, and each view downscaled by every factor of ``scales`` before the members score it."""
    out = np.full((len(samples), 2, len(scales), len(members)), np.nan)
    for v in range(2):
        ds = FaceDataset(list(samples), mode="full", norm=norm, full_size=side,
                         global_op=ThenMirror(op) if v else op)
        sizes = ds.native_sizes()
        loader = DataLoader(ds, batch_sampler=size_grouped_batches(sizes, batch_size), collate_fn=collate)
        for batch in tqdm(loader, disable=not progress, leave=False):
            if "image" not in batch:
                continue
            x = batch["image"]
            idx = batch["index"].numpy()
            for j, s in enumerate(scales):
                h, w = x.shape[-2:]
                xs = x if s == 1 else F.interpolate(x, size=(round(h * s), round(w * s)), mode="bilinear",
                                                    antialias=True, align_corners=False)
                xs = channels_last(xs)
                for k, m in enumerate(members):
                    out[idx, v, j, k] = logits_of(m, xs).float().double().numpy()
    return out


def variant_scales(variant: str, scales: Sequence[float]) -> tuple[str, list[int]]:
    """``(kind, indices into scales)`` of a variant name; an unknown kind or a scale not scored -> ValueError."""
    kind, _, arg = variant.partition(":")
    if kind == "base" and not arg:
        return kind, [list(scales).index(1.0)]
    if kind not in ("scales", "cnn-scales") or not arg:
        raise ValueError(f"variant {variant!r}: expected base, scales:A,B or cnn-scales:A,B")
    try:
        return kind, [list(scales).index(float(a)) for a in arg.split(",")]
    except ValueError:
        raise ValueError(f"variant {variant!r}: its scales must be among --scales {list(scales)}") from None


def variant_logits(fusion, views: np.ndarray, scales: Sequence[float], variant: str) -> np.ndarray:
    """One score per face (N,) from cached ``views`` (N, 2, S, M) under ``variant`` (see the module docstring)."""
    kind, chosen = variant_scales(variant, scales)
    if kind == "cnn-scales":
        member = views[:, :, list(scales).index(1.0)].copy()  # (N, 2, M)
        member[..., 0] = views[:, :, chosen, 0].mean(2)
        return fused_logits(fusion, member).mean(1)
    return fused_logits(fusion, views[:, :, chosen]).mean((1, 2))


def _auc(samples, logits) -> dict:
    m = sample_metrics(samples, 1.0 / (1.0 + np.exp(-logits)))
    per = m.get("per_generator") or {}
    return {"auc": m.get("auc"), **({g: v.get("auc") for g, v in sorted(per.items())} if len(per) > 1 else {})}


def score_round(run: Path, rnd: int, scales: Sequence[float], extra: dict[str, str], cache: Path | None,
                progress: bool = False) -> tuple[object, dict, dict, dict]:
    """The round's fusion, its views per set ``{name: (samples, views)}``, ``{op: views}`` of the quality check's
    reals (``"as is"`` included) and the round's record."""
    cfg, state = load_run(run)
    if not cfg.statistics_n:
        raise ValueError(f"{run}: a run without a statistics model has no fusion to score")
    fusion, _ = load_checkpoint(run / f"round-{rnd:02d}" / "checkpoint.pt")
    fusion.eval()
    side = None if cfg.mode == "patch" else cfg.size
    pool = state["rounds"][rnd - 1]["pool"]
    _, val, _ = split_by_identities(read_datasets(pool), set(state["val_identities"]))
    sets = {"val": val, "eval": read_dataset(cfg.eval_dir), **{k: read_dataset(v) for k, v in extra.items()}}
    reals = [s for s in val if s.label == 0][:cfg.quality_reals]
    jobs = [(name, samples, None) for name, samples in sets.items()] + \
        [(f"quality-{op}", reals, QUALITY_OPS[op]) for op in QUALITY_OPS]
    views = {}
    for name, samples, op in jobs:
        path = cache / f"round-{rnd:02d}-{name}.npy" if cache else None
        if path is not None and path.is_file():
            views[name] = np.load(path)
        else:
            views[name] = view_logits(list(fusion.members), samples, fusion.input_norm, side, scales, op,
                                      progress=progress)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                np.save(path, views[name])
    return fusion, {k: (v, views[k]) for k, v in sets.items()}, {
        "as is": views["val"][[i for i, s in enumerate(val) if s.label == 0][:cfg.quality_reals]],
        **{op: views[f"quality-{op}"] for op in QUALITY_OPS}}, state["rounds"][rnd - 1]


def variant_row(fusion, sets: dict, quality: dict, scales, variant: str) -> dict:
    row = {}
    for name, (samples, views) in sets.items():
        for k, v in _auc(samples, variant_logits(fusion, views, scales, variant)).items():
            row[name if k == "auc" else f"{name}-{k}"] = v
    base = variant_logits(fusion, quality["as is"], scales, variant)
    devs = []
    for op in QUALITY_OPS:
        after = variant_logits(fusion, quality[op], scales, variant)
        ok = np.isfinite(base) & np.isfinite(after)
        row[f"q-{op}"] = paired_auc(base[ok], after[ok])
        devs.append(abs(row[f"q-{op}"] - 0.5))
    row["max_dev"] = max(devs)
    return row


def _f(x) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="a `detector train --out` folder (with a statistics model)")
    ap.add_argument("--round", type=int, action="append", required=True, help="a round to score (repeat for more)")
    ap.add_argument("--scales", type=float, nargs="+", default=[1.0, 0.75, 0.5],
                    help="factors of the side each view is scored at; must include 1 (default 1 0.75 0.5)")
    ap.add_argument("--variants", nargs="+", default=["base", "scales:1,0.75", "scales:1,0.75,0.5", "cnn-scales:1,0.75"])
    ap.add_argument("--extra", action="append", default=[], help="NAME=DIR: one more labelled set to score")
    ap.add_argument("--cache", help="folder for the members' cached logits (reused when present)")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    ap.add_argument("--progress", action="store_true")
    args = ap.parse_args(argv)
    if 1.0 not in args.scales or not all(0 < s <= 1 for s in args.scales):
        ap.error(f"--scales {args.scales}: expected factors in (0, 1] including 1")
    extra = {}
    for e in args.extra:
        name, sep, path = e.partition("=")
        if not sep or not name or name in ("val", "eval"):
            ap.error(f"--extra {e!r}: expected NAME=DIR with a name other than val or eval")
        extra[name] = path
    if args.threads:
        torch.set_num_threads(args.threads)
    run = Path(args.run)
    try:  # every round and variant checked before any scoring: a bad one must not cost the others' minutes
        _, state = load_run(run)
        for rnd in args.round:
            check_round(state, rnd, run)
        for v in args.variants:
            variant_scales(v, args.scales)
    except ValueError as e:
        ap.error(str(e))
    for rnd in args.round:
        fusion, sets, quality, record = score_round(run, rnd, args.scales, extra,
                                                    Path(args.cache) if args.cache else None, args.progress)
        rows = {v: variant_row(fusion, sets, quality, args.scales, v) for v in args.variants}
        cols = list(next(iter(rows.values())))
        print(f"\n{run} round {rnd} (recorded: fused val {_f((record.get('val_fused') or {}).get('auc'))}, "
              f"max dev {_f((record.get('val_quality') or {}).get('max_dev'))}, eval {_f(record['eval'].get('auc'))})\n")
        print("| variant | " + " | ".join(cols) + " |")
        print("|---|" + "---:|" * len(cols))
        for v, row in rows.items():
            print(f"| {v} | " + " | ".join(_f(row[c]) for c in cols) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
