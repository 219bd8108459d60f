"""Benchmark read-out for the detection issue: transfer, per seed and round, and blindness to global quality.

Reads finished (or running) ``detector train`` run directories, one per seed, and prints (and writes
``--out``, markdown) for every seed and every round: synth validation AUC, the validation-reals
global-quality check the loop recorded, the cross-generator AUC overall and per generator, and
whether the stop condition holds. The condition is ``--condition``, else the one each run was
started with (its round 1): a run continued with ``--resume --augment-until "auc>1"`` to reach a
fixed budget is still read as the documented command, which ends on the first round meeting it
(else on its last round). Then, for the round given by ``--fixed-round`` (a fixed budget, whatever
the stop condition said) and for the round the documented command ends on, it scores the
*evaluation set's reals* as they are and globally blurred / sharpened / down-up-sampled /
JPEG-compressed (``detector.quality``; a read-out, nothing is chosen on it). Last, the one-feature
baseline: the share of high-frequency spectral energy of the face, no training; its sign is fixed
on the first run's synth validation split, never on the evaluation set. With ``--heldout DIR`` (a
set we may train on, e.g. a withheld recipe family) every round's checkpoint is also scored on DIR,
and the rank correlation (Spearman) with the evaluation AUC over all checkpoints is printed for each
candidate selection criterion (synth validation AUC, held-out AUC, minus the validation-reals
quality check's largest deviation).

    .venv/bin/python benchmarks/bench_transfer.py --runs bench-out/s0 bench-out/s1 bench-out/s2 \\
        --eval ../shared/data/eval/xgen-webmorph --out bench-out/transfer.md --threads 2
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from detector.checkpoint import load_checkpoint
from detector.condition import condition_holds, parse_condition
from detector.data import FaceDataset, read_dataset, read_datasets, read_image, split_by_identities
from detector.loop import _fmt, read_metrics
from detector.metrics import compute_metrics
from detector.quality import QUALITY_OPS, paired_auc, quality_check
from detector.train import evaluate


def high_frequency_share(img: np.ndarray, radius: float = 0.25) -> float:
    """Share of the grey image's spectral energy (DC removed) above ``radius`` x Nyquist."""
    g = img.astype(np.float32).mean(axis=2)
    f = np.abs(np.fft.fftshift(np.fft.fft2(g - g.mean()))) ** 2
    h, w = g.shape
    yy, xx = np.mgrid[:h, :w]
    r = np.hypot((yy - h // 2) / (h / 2), (xx - w // 2) / (w / 2))
    return float(f[r > radius].sum() / max(f.sum(), 1e-12))


def _feature(samples, op=None) -> np.ndarray:
    out = np.full(len(samples), np.nan)
    for k, s in enumerate(samples):
        img = read_image(s.path)
        if img is not None:
            out[k] = high_frequency_share(op(img) if op else img)
    return out


def documented_end(rounds: list[dict], condition: str | None = None) -> tuple[dict, list[bool]]:
    """The round a run's documented command ends on, and per round whether the condition holds.

    ``rounds``: the run's ``metrics.jsonl`` records in order. ``condition``: the stop condition
    (``detector.condition`` syntax); None: the one recorded with round 1, i.e. the one the run was
    started with (a resume may have replaced it). The end is the first round meeting it, else the last.
    """
    cond = parse_condition(condition if condition is not None else rounds[0]["condition"])
    met = [condition_holds(cond, r["eval"]) for r in rounds]
    return rounds[met.index(True) if True in met else -1], met


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", nargs="+", required=True, help="run directories (one per seed)")
    ap.add_argument("--eval", required=True, help="evaluation set (read out only)")
    ap.add_argument("--fixed-round", type=int, default=3)
    ap.add_argument("--condition", help="stop condition the runs are read with (default: each run's round-1 "
                                        "condition, the one it was started with)")
    ap.add_argument("--out", help="write the markdown here")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--heldout", help="a set we may train on, scored with every round's checkpoint (never the eval set)")
    args = ap.parse_args(argv)
    if args.condition is not None:
        try:
            parse_condition(args.condition)
        except ValueError as err:
            ap.error(f"--condition: {err}")
    try:
        runs = {Path(run): read_metrics(run) for run in args.runs}
    except ValueError as err:
        ap.error(f"--runs: {err}")
    torch.set_num_threads(args.threads)
    eval_samples = read_dataset(args.eval)
    gens = sorted({s.meta.get("generator") for s in eval_samples if s.label == 1})
    lines = ["| run | round | val AUC | val-reals quality AUC (blur/sharpen/downup/jpeg50) | eval AUC | "
             + " | ".join(f"{g} AUC" for g in gens) + " | condition | wall s |",
             "|---|---:|---:|---|---:|" + "---:|" * len(gens) + "---|---:|"]
    finals, criteria = [], []
    heldout = FaceDataset(read_dataset(args.heldout), "full", full_size=256) if args.heldout else None
    if heldout is not None:
        lines[0] = lines[0].replace(" | condition |", " | held-out AUC | condition |")
        lines[1] += "---:|"
    for run, rounds in runs.items():
        end, met = documented_end(rounds, args.condition) if rounds else (None, [])
        for r, r_met in zip(rounds, met):
            q = r.get("val_quality") or {}
            qa = "/".join(_fmt(q.get("auc", {}).get(o)) for o in QUALITY_OPS) if q else "-"
            per = r["eval"].get("per_generator") or {}
            held = ""
            crit = {"eval": r["eval"].get("auc"), "synth validation AUC": r["val"].get("auc"),
                    "minus quality max dev": -q["max_dev"] if q else None}
            if heldout is not None:
                model, _ = load_checkpoint(Path(r["checkpoint"]), map_location="cpu")
                heldout.mean, heldout.std = (np.asarray(model.input_norm[k], np.float32).reshape(3, 1, 1)
                                             for k in ("mean", "std"))
                crit["held-out AUC"] = evaluate(model, heldout, 16, 0, "cpu", False, "heldout")[0]["auc"]
                held = f" | {_fmt(crit['held-out AUC'])}"
            criteria.append(crit)
            lines.append(f"| {run.name} | {r['round']} | {_fmt(r['val'].get('auc'))} | {qa} | "
                         f"{_fmt(r['eval'].get('auc'))} | " + " | ".join(_fmt(per.get(g, {}).get('auc')) for g in gens)
                         + f"{held} | {'met' if r_met else 'not met'} | {r['wall_s']:.0f} |")
        if rounds:
            picks = {"end": end}
            fixed = [r for r in rounds if r["round"] == args.fixed_round]
            if fixed:
                picks[f"round {args.fixed_round}"] = fixed[0]
            finals.append((run, picks))
    out = ["## Every seed, every round", "", *lines, ""]
    if len(criteria) >= 3:
        out += ["## Does a criterion we may select on track transfer? (Spearman with eval AUC, all checkpoints)", ""]
        for name in [k for k in criteria[0] if k != "eval"]:
            pts = [(c[name], c["eval"]) for c in criteria if c.get(name) is not None and c.get("eval") is not None]
            rho = spearmanr(*zip(*pts))[0] if len(pts) >= 3 else float("nan")
            out.append(f"- {name}: rho {_fmt(rho)} over {len(pts)} checkpoints")
        out.append("")
    out += ["## Evaluation-set reals, globally processed (AUC processed vs as is; 0.5 = blind)", "",
            "| run | checkpoint | round | eval AUC | " + " | ".join(QUALITY_OPS) + " | max dev |",
            "|---|---|---:|---:|" + "---:|" * len(QUALITY_OPS) + "---:|"]
    for run, picks in finals:
        for name, r in picks.items():
            model, _ = load_checkpoint(Path(r["checkpoint"]), map_location="cpu")
            q = quality_check(model, eval_samples, full_size=256)
            out.append(f"| {run.name} | {name} | {r['round']} | {_fmt(r['eval'].get('auc'))} | "
                       + " | ".join(_fmt(q["auc"][o]) for o in QUALITY_OPS) + f" | {_fmt(q['max_dev'])} |")
            print(out[-1], flush=True)
    if not args.no_baseline and finals:
        run = finals[0][0]
        state = json.loads((run / "state.json").read_text())
        pool = read_datasets(state["config"]["data_dirs"])
        _, val, _ = split_by_identities(pool, set(state["val_identities"]))
        fv = _feature(val)
        yv = np.array([s.label for s in val])
        ok = np.isfinite(fv)
        sign = 1.0 if compute_metrics(yv[ok], fv[ok])["auc"] >= 0.5 else -1.0  # fixed on synth validation only
        fe = sign * _feature(eval_samples)
        ye = np.array([s.label for s in eval_samples])
        ge = [s.meta.get("generator") for s in eval_samples]
        ok_e = np.isfinite(fe)
        m = compute_metrics(ye[ok_e], fe[ok_e], generators=[g for g, k in zip(ge, ok_e) if k])
        reals = [s for s in eval_samples if s.label == 0]
        base = sign * _feature(reals)
        qa = {o: paired_auc(base, sign * _feature(reals, QUALITY_OPS[o])) for o in QUALITY_OPS}
        out += ["", "## One-feature baseline: share of high-frequency energy (sign fixed on synth validation)", "",
                f"sign {sign:+.0f}; synth validation AUC {_fmt(compute_metrics(yv[ok], sign * fv[ok])['auc'])}; "
                f"eval AUC {_fmt(m['auc'])}; " + ", ".join(f"{g} {_fmt(v['auc'])}" for g, v in m['per_generator'].items())
                + "; eval reals processed vs as is: " + ", ".join(f"{o} {_fmt(v)}" for o, v in qa.items())]
    text = "\n".join(out) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
