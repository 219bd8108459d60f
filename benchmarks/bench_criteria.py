"""Which score on data we may train on tracks cross-generator transfer? (detection issue, item 5)

Scores many detectors on the evaluation set (read out only) and on sets we may train on, and prints
the rank correlation (Spearman) between each candidate criterion and the evaluation AUC over all of
them. A fused checkpoint (``score_fusion``) counts three times: each member alone and the fusion
(its members' logits z-scored and averaged, as the model does), so the CNN and the statistics model
of one run are separate points; a member shared by several checkpoints (the loop fits the statistics
model once per run) is scored and counted once. ``--cache DIR`` keeps each member's scores, so a rerun
with more checkpoints scores only the new ones.

Criteria: the AUC on each ``--sets`` directory (e.g. our generator on faces from another domain, or
a withheld recipe), minus the largest deviation from 0.5 of the global-quality check on
``--quality-reals`` (their reals scored as is against globally blurred / sharpened / down-up-sampled /
JPEG-compressed copies, ``detector.quality``), and the synth validation AUC recorded by the loop
(``--runs``: every round of each run directory; checkpoints given by ``--ckpt`` have none).

    .venv/bin/python benchmarks/bench_criteria.py --eval ../shared/data/eval/xgen-webmorph \\
        --runs run-s0 run-s1 --ckpt shipped=detector/weights/default.pt \\
        --sets studio=bench-out/studio-mixed heldout=bench-out/ev-head \\
        --quality-reals bench-out/studio-mixed --out bench-out/criteria.md
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from detector.checkpoint import load_checkpoint
from detector.data import FaceDataset, mirror_image
from detector.fit_statistics import fused_logits
from detector.loop import read_metrics
from detector.metrics import binary_metrics, compute_metrics
from detector.models.registry import logits_of
from detector.quality import QUALITY_OPS
from detector.readers import read_dataset
from detector.train import score_dataset

_SCALE = 50.0  # logits are scored divided by this, so the sigmoid never saturates and the logit comes back exactly


class _Scaled(torch.nn.Module):
    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return {"logit": logits_of(self.model, x).float() / _SCALE}


def _logits(model, samples, norm, op=None) -> np.ndarray:
    p, skipped = score_dataset(_Scaled(model), FaceDataset(samples, "full", norm=norm, full_size=256, global_op=op))
    if skipped:
        raise SystemExit(f"{skipped} unreadable images; fix the set first")
    p = np.clip(p, 1e-300, 1 - 1e-16)
    return _SCALE * np.log(p / (1 - p))


class ThenMirror:
    """A global op (or none), then the left-right mirror: a picklable ``global_op``."""

    def __init__(self, op=None):
        self.op = op

    def __call__(self, im):
        return mirror_image(im if self.op is None else self.op(im))


def _fingerprint(model: torch.nn.Module) -> str:
    h = hashlib.sha1()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _member_scores(member, norm, eval_samples, sets, reals, cache_file: Path | None, mirror: bool = False) -> dict:
    """Logits of one model on the evaluation set, every set, and the quality reals as is and processed;
    with ``mirror``, also of every image mirrored left-right (keys ``KEY:mirror``; added to a cached file
    that lacks them)."""
    sc = dict(np.load(cache_file)) if cache_file is not None and cache_file.is_file() else {}
    if sc and (not mirror or "eval:mirror" in sc):
        return sc
    for tag in ("", ":mirror") if mirror else ("",):
        if "eval" + tag in sc:
            continue
        view = ThenMirror if tag else (lambda op: op)  # noqa: E731
        sc["eval" + tag] = _logits(member, eval_samples, norm, view(None))
        sc.update({n + tag: _logits(member, s, norm, view(None)) for n, s in sets.items()})
        if reals:
            sc["q:none" + tag] = _logits(member, reals, norm, view(None))
            sc.update({"q:" + op + tag: _logits(member, reals, norm, view(fn)) for op, fn in QUALITY_OPS.items()})
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache_file, **sc)
    return sc


def _points(args) -> list[tuple[str, Path, float | None, float | None, float | None]]:
    """(name, checkpoint, synth val of member 0, of member 1, of the fusion) for every checkpoint."""
    out = []
    for run in args.runs:
        run = Path(run)
        for m in read_metrics(run):
            fused = m.get("val_fused") or {}
            out.append((f"{run.parent.name}/{run.name}/r{m['round']}", run / f"round-{m['round']:02d}" / "checkpoint.pt",
                        m["val"]["auc"], fused.get("statistics_auc"), fused.get("auc")))
    for spec in args.ckpt:
        name, _, path = spec.partition("=")
        out.append((name, Path(path), None, None, None))
    return out


def _criteria(scores: dict, sets: dict, eval_samples, quality_n: int) -> dict:
    labels = np.array([s.label for s in eval_samples])
    gens = [s.meta.get("generator", "unknown") for s in eval_samples]
    ev = compute_metrics(labels, scores["eval"], generators=gens)
    row = {"eval": ev["auc"], **{f"eval[{g}]": v["auc"] for g, v in ev["per_generator"].items() if g != "real"}}
    for name, samples in sets.items():
        row[name] = binary_metrics(np.array([s.label for s in samples]), scores[name])["auc"]
    if quality_n:
        base = scores["q:none"]
        dev = []
        for op in QUALITY_OPS:
            y = np.r_[np.zeros(len(base)), np.ones(len(base))]
            auc = binary_metrics(y, np.r_[base, scores["q:" + op]])["auc"]
            row["q:" + op] = auc
            dev.append(abs(auc - 0.5))
        row["-quality max dev"] = -max(dev)
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--eval", required=True, help="evaluation set (read out only, never chosen on)")
    ap.add_argument("--runs", nargs="*", default=[], help="detector train run directories: every round's checkpoint")
    ap.add_argument("--ckpt", nargs="*", default=[], metavar="NAME=PATH", help="more checkpoints")
    ap.add_argument("--sets", nargs="*", default=[], metavar="NAME=DIR", help="sets we may train on")
    ap.add_argument("--quality-reals", help="a set whose reals feed the global-quality check")
    ap.add_argument("--out", help="write the markdown table here")
    ap.add_argument("--cache", help="directory for each member's scores (reused by later runs)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    for spec in args.ckpt + args.sets:
        name, eq, path = spec.partition("=")
        if not (name and eq and path):
            ap.error(f"expected NAME=PATH, got {spec!r}")
        if not Path(path).exists():
            ap.error(f"{path}: not found (from {spec!r})")
    for run in args.runs:
        try:
            read_metrics(run)
        except ValueError as err:
            ap.error(f"--runs: {err}")
    if not args.runs and not args.ckpt:
        ap.error("nothing to score: give --runs or --ckpt")
    torch.set_num_threads(args.threads)

    eval_samples = read_dataset(args.eval)
    sets = {name: read_dataset(d) for name, _, d in (s.partition("=") for s in args.sets)}
    reals = [s for s in read_dataset(args.quality_reals) if s.label == 0] if args.quality_reals else []
    cache: dict[str, dict] = {}
    rows: dict[str, dict] = {}
    cache_dir = Path(args.cache) if args.cache else None
    # the scores' file name holds the inputs too, so a cache is never read for other sets
    inputs = hashlib.sha1(json.dumps([args.eval, sorted(args.sets), args.quality_reals]).encode()).hexdigest()[:10]
    for name, path, *vals in _points(args):
        model, _ = load_checkpoint(path)
        norm = model.input_norm
        members = list(model.members) if hasattr(model, "members") else [model]
        mirror = getattr(model, "mirror", False)
        member_scores = []
        for k, member in enumerate(members):
            key = _fingerprint(member)
            first = key not in cache
            # a shared member scored before for a one-view fusion gains its mirrored scores here
            if first or (mirror and "eval:mirror" not in cache[key]):
                cache[key] = _member_scores(member, norm, eval_samples, sets, reals,
                                            cache_dir and cache_dir / f"{key}-{inputs}.npz", mirror)
            member_scores.append(cache[key])
            if not first:
                continue  # a shared member (a run's statistics model) is one point, not one per round
            label = name if len(members) == 1 else f"{name}:{member.model_name}"
            rows[label] = {**_criteria(cache[key], sets, eval_samples, len(reals)),
                           "synth val": vals[k] if k < 2 else None}
            print(label, json.dumps({k2: round(v, 3) for k2, v in rows[label].items() if v is not None}), flush=True)
        if len(members) > 1:
            # as the fusion scores: with mirroring, the mean of the fused logits of both views
            keys = [k for k in member_scores[0] if not k.endswith(":mirror")]
            fused = {key: fused_logits(model, np.stack([sc[key] for sc in member_scores], 1)) for key in keys}
            if mirror:
                fused = {key: (v + fused_logits(model, np.stack([sc[key + ":mirror"] for sc in member_scores], 1))) / 2
                         for key, v in fused.items()}
            rows[name] = {**_criteria(fused, sets, eval_samples, len(reals)), "synth val": vals[2]}
            print(name, json.dumps({k2: round(v, 3) for k2, v in rows[name].items() if v is not None}), flush=True)

    cols = list(next(iter(rows.values())))
    lines = ["| detector | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for label, r in rows.items():
        lines.append(f"| {label} | " + " | ".join("-" if r[c] is None else f"{r[c]:.3f}" for c in cols) + " |")
    targets = [c for c in cols if c.startswith("eval")]
    lines += ["", f"Spearman rank correlation over {len(rows)} detectors (criterion vs evaluation AUC):", "",
              "| criterion | " + " | ".join(targets) + " | n |", "|---|" + "---:|" * (len(targets) + 1)]
    for c in cols:
        if c.startswith("eval") or c.startswith("q:"):
            continue
        have = [r for r in rows.values() if r[c] is not None]
        corr = [spearmanr([r[c] for r in have], [r[t] for r in have]).statistic for t in targets]
        lines.append(f"| {c} | " + " | ".join(f"{v:+.2f}" for v in corr) + f" | {len(have)} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
