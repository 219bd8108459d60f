"""Benchmark for the detection issue: the patch-statistics model alone and fused with a CNN checkpoint.

Fits ``patch_stats`` (:mod:`detector.statistics` features, an MLP) on the identity-disjoint training
split of ``--data`` (``synth generate`` outputs; features computed once, then ``--steps`` cheap
steps), and reports synth validation AUC (all, self-blends, swaps), the held-out set's AUC
(``--heldout``, a set we may train on) and the global-quality check on validation reals. With
``--cnn CKPT`` (e.g. a ``detector train`` round's checkpoint) it builds a ``score_fusion`` of the
CNN and the fitted model, calibrated on ``--calibration`` reals + fakes of the validation split
(never on the evaluation set), and reports the same for the CNN alone and the fusion. With
``--eval DIR`` each model is read out on DIR (overall, per generator, and its reals globally
processed); nothing is chosen on it. Writes ``OUT/patch_stats.pt``, ``OUT/fused.pt`` (with
``--cnn``; usable as ``detector eval --ckpt``) and ``OUT/report.json``.

    .venv/bin/python benchmarks/bench_patch_stats.py --data bench-out/big-s0 --out bench-out/ps-s0 --seed 0 \\
        --heldout bench-out/ev-head --cnn bench-out/run-s0/round-03/checkpoint.pt \\
        --eval ../shared/data/eval/xgen-webmorph --threads 2 --workers 2
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from detector.checkpoint import load_checkpoint, save_checkpoint
from detector.data import FaceDataset
from detector.fit_statistics import calibrate_fusion, extract_statistics, fit_patch_stats
from detector.metrics import binary_metrics
from detector.models import create_model
from detector.models.fusion import fusion_of
from detector.quality import quality_check
from detector.readers import identity_split, read_dataset, read_datasets
from detector.train import evaluate


def _subset_auc(labels, scores, keep) -> float:
    return float(binary_metrics(labels[keep], scores[keep])["auc"])


def _report(name: str, model, val, val_scores, heldout, evalset, args) -> dict:
    """Metrics of one model: validation (all / self / swap), held-out, quality on val reals, eval read-out."""
    y = np.array([s.label for s in val])
    self_blend = np.array(["pairing=self" in (s.meta.get("keys") or ()) for s in val])
    ok = np.isfinite(val_scores)
    out = {"val": _subset_auc(y, val_scores, ok),
           "val_self": _subset_auc(y, val_scores, ok & ((y == 0) | self_blend)),
           "val_swap": _subset_auc(y, val_scores, ok & ((y == 0) | ~self_blend))}
    kw = {"batch_size": 16, "workers": args.workers, "progress": not args.no_progress}
    if heldout:
        out["heldout"] = evaluate(model, FaceDataset(heldout, mode="full", norm=model.input_norm), **kw)[0]["auc"]
    q = quality_check(model, [s for s in val if s.label == 0][: args.quality_reals], **kw)
    out["quality"], out["quality_max_dev"] = q["auc"], q["max_dev"]
    if evalset:
        m = evaluate(model, FaceDataset(evalset, mode="full", norm=model.input_norm), **kw)[0]
        out["eval"] = m["auc"]
        out["eval_per_generator"] = {g: v["auc"] for g, v in m.get("per_generator", {}).items()}
        q = quality_check(model, evalset, **kw)
        out["eval_quality"], out["eval_quality_max_dev"] = q["auc"], q["max_dev"]
    line = " ".join(f"{k} {v:.3f}" for k, v in out.items() if isinstance(v, float))
    print(f"{name}: {line}", flush=True)
    for k in ("quality", "eval_per_generator", "eval_quality"):
        if k in out:
            print(f"  {k}: " + " / ".join(f"{g} {v:.3f}" for g, v in out[k].items()), flush=True)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", nargs="+", required=True, help="training data (synth generate outputs)")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--steps", type=int, default=20000)
    p.add_argument("--heldout", help="a labelled set we may train on, read out for every model")
    p.add_argument("--cnn", help="a detector checkpoint to fuse with")
    p.add_argument("--calibration", type=int, default=400,
                   help="validation reals and as many fakes for the fusion's scale; the models are compared on "
                        "twice as many others")
    p.add_argument("--eval", help="evaluation set, read out only")
    p.add_argument("--quality-reals", type=int, default=256)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train, val = identity_split(read_datasets(args.data), args.val_fraction, args.seed)
    heldout = read_dataset(args.heldout) if args.heldout else None
    evalset = read_dataset(args.eval) if args.eval else None
    report = {"args": vars(args), "n_train": len(train), "n_val": len(val)}

    t0 = time.time()
    stats = create_model("patch_stats")
    features = extract_statistics(stats, train + val, workers=args.workers, progress=not args.no_progress)
    report["features_s"] = time.time() - t0
    t0 = time.time()
    losses = fit_patch_stats(stats, features[: len(train)], np.array([s.label for s in train]), steps=args.steps,
                             seed=args.seed, progress=not args.no_progress)
    report["fit_s"], report["fit_loss_last"] = time.time() - t0, losses[-1]
    print(f"features {report['features_s']:.0f} s, fit {report['fit_s']:.0f} s, last loss {losses[-1]:.3f}", flush=True)
    save_checkpoint(out / "patch_stats.pt", stats, {"data": [str(d) for d in args.data], "seed": args.seed})
    with torch.no_grad():
        val_logits = stats.classify(torch.from_numpy(features[len(train):])).numpy()
    y = np.array([s.label for s in val])
    ok = np.isfinite(val_logits)
    report["patch_stats_val_all"] = _subset_auc(y, val_logits, ok)
    print(f"patch_stats on the whole validation split ({len(val)}): AUC {report['patch_stats_val_all']:.3f}", flush=True)
    # the models are compared on one subset of the validation split, apart from the fusion's calibration set
    rng = np.random.default_rng(args.seed)
    reals = [k for k, s in enumerate(val) if s.label == 0]
    fakes = [k for k, s in enumerate(val) if s.label == 1]
    reals, fakes = rng.permutation(reals), rng.permutation(fakes)
    n = args.calibration
    cal = [val[k] for k in np.r_[reals[:n], fakes[:n]]]
    part = np.r_[reals[n:3 * n], fakes[n:3 * n]].astype(int)
    val_part = [val[k] for k in part]
    report["n_val_part"], report["n_calibration"] = len(val_part), len(cal)
    report["patch_stats"] = _report("patch_stats", stats, val_part, val_logits[part], heldout, evalset, args)

    if args.cnn:
        cnn, meta = load_checkpoint(args.cnn)
        fused = fusion_of([cnn, stats])
        calibrate_fusion(fused, cal, workers=args.workers, progress=not args.no_progress)
        fused.eval()
        save_checkpoint(out / "fused.pt", fused, {**meta.get("extra", {}), "fused_from": str(args.cnn)})
        report["fusion_scale"] = {"mean": fused.logit_mean.tolist(), "std": fused.logit_std.tolist()}
        for name, model in (("cnn", cnn), ("fused", fused)):
            _, scores = evaluate(model, FaceDataset(val_part, mode="full", norm=model.input_norm), workers=args.workers,
                                 progress=not args.no_progress)
            report[name] = _report(name, model, val_part, scores, heldout, evalset, args)
    (out / "report.json").write_text(json.dumps(report, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
