"""Benchmark for the detection issue: the statistics models fitted as ``detector train`` fits them.

Fits one statistics model (``--model patch_stats`` or ``stats_conv``) with
:func:`detector.fit_statistics.fit_statistics_online` on ``--n`` (real, fake) pairs rendered in
memory from ``--index`` (``--twins``: share of pairs also fitted under a global operation), then
scores it on sets we may use: each ``--sets NAME=DIR`` (AUC; e.g. a withheld recipe, our fakes on
studio faces) and the global-quality check on the first ``--quality-reals`` reals of each
``--quality NAME=DIR`` (AUC of each global operation vs as is, 0.5 = blind; ``detector.quality``).
With ``--eval DIR`` the model is read out there (overall and per generator); nothing is chosen on it.
Writes ``OUT/<model>.pt`` (loadable with ``detector eval --ckpt``) and appends one JSON line to
``OUT/results.jsonl``.

    .venv/bin/python benchmarks/bench_statistics_models.py --index bench-out/utk.index --model stats_conv \\
        --n 10000 --steps 3000 --twins 0.5 --seed 0 --out bench-out/sm/conv-t-s0 \\
        --sets heldout=bench-out/ev-head studio=bench-out/studio-mixed \\
        --quality studio=bench-out/studio-mixed utk=bench-out/pool-s1
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from detector.checkpoint import save_checkpoint
from detector.data import FaceDataset
from detector.fit_statistics import STATISTICS_FITS, fit_statistics_online
from detector.quality import quality_check
from detector.readers import read_dataset
from detector.train import evaluate


def _named_dir(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=DIR, got {text!r}")
    if not Path(path).is_dir():
        raise argparse.ArgumentTypeError(f"{path}: not a directory")
    return name, Path(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--index", required=True, help="synth index (or face pool) to render the pairs from")
    ap.add_argument("--model", choices=sorted(STATISTICS_FITS), default="stats_conv")
    ap.add_argument("--n", type=int, default=10000, help="items rendered (pairs, before twins)")
    ap.add_argument("--steps", type=int, default=None, help="optimiser steps (default: the model's)")
    ap.add_argument("--twins", type=float, default=0.0, help="probability of a globally processed twin pair")
    ap.add_argument("--recipe", default="mixed")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sets", nargs="*", type=_named_dir, default=[], metavar="NAME=DIR")
    ap.add_argument("--quality", nargs="*", type=_named_dir, default=[], metavar="NAME=DIR")
    ap.add_argument("--quality-reals", type=int, default=256)
    ap.add_argument("--eval", type=Path, default=None, help="read out only (never chosen on)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args()
    if args.n < 1 or not 0.0 <= args.twins <= 1.0 or (args.steps is not None and args.steps < 1):
        ap.error(f"--n, --twins, --steps: expected >= 1, in [0, 1], >= 1; got {args.n}, {args.twins}, {args.steps}")
    if not Path(args.index).is_dir():
        ap.error(f"--index {args.index}: not a directory")
    torch.set_num_threads(args.threads)
    from synth.index import load_index

    t0 = time.time()
    model, report = fit_statistics_online(load_index(args.index), args.n, model=args.model, recipe=args.recipe,
                                          size=args.size, seed=args.seed, steps=args.steps, twins=args.twins,
                                          workers=args.workers, progress=not args.no_progress)
    args.out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(args.out / f"{args.model}.pt", model, extra={"statistics": report})
    kw = {"batch_size": 64, "workers": args.workers, "progress": not args.no_progress}
    res = {"model": args.model, "seed": args.seed, "n": args.n, "twins": args.twins, "fit": report}
    for name, d in args.sets:
        res[name] = evaluate(model, FaceDataset(read_dataset(d), mode="full", norm=model.input_norm, full_size=args.size),
                             **kw)[0]["auc"]
    for name, d in args.quality:
        reals = [s for s in read_dataset(d) if s.label == 0][: args.quality_reals]
        q = quality_check(model, reals, full_size=args.size, **kw)
        res[f"quality:{name}"], res[f"quality_max_dev:{name}"] = q["auc"], q["max_dev"]
    if args.eval:
        m = evaluate(model, FaceDataset(read_dataset(args.eval), mode="full", norm=model.input_norm,
                                        full_size=args.size), **kw)[0]
        res["eval"] = m["auc"]
        res["eval_per_generator"] = {g: v["auc"] for g, v in m.get("per_generator", {}).items()}
    res["wall_s"] = round(time.time() - t0, 1)
    with open(args.out / "results.jsonl", "a") as f:
        f.write(json.dumps(res) + "\n")
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
