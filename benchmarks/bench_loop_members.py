"""A round of a `detector train` run rebuilt from some of its CNN members, scored as the loop scores a round.

With ``--cnn-members K`` every round trains K CNNs and ends on the mean of their logits, fused with the statistics
model. Member 1 is, bit for bit, the CNN a one-CNN run of the same settings trains in round 1, so the round rebuilt
from member 1 alone is the one-CNN default's round-1 detector, without training it again: a paired comparison of K
CNNs against one on one machine. (From round 2 on the pool holds fakes regenerated from the K-member round's misses,
so later rounds are not paired.) Each group of members is fused and scaled on the run's validation split exactly as
the loop does it, then scored on validation, the global-quality check (the run's validation reals, as the loop) and
the run's evaluation set, per generator (read out).

    python benchmarks/bench_loop_members.py RUN --round 1 --members 1 --members 2 --members 1,2

Prints a markdown table: the round as the loop recorded it, then one row per group. Nothing is written.
"""
from __future__ import annotations

import argparse
import json
import math
from dataclasses import fields, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from detector.checkpoint import load_checkpoint
from detector.data import FaceDataset
from detector.fit_statistics import to_logits
from detector.loop import _fuse_round, rebased_state
from detector.models.fusion import fusion_of
from detector.quality import quality_check
from detector.readers import read_dataset, read_datasets, split_by_identities
from detector.settings import LoopConfig
from detector.train import evaluate, sample_metrics


def load_run(run: str | Path) -> tuple[LoopConfig, dict]:
    """The settings and state of a `detector train` run folder. A folder without ``state.json`` -> ValueError."""
    path = Path(run) / "state.json"
    if not path.is_file():
        raise ValueError(f"{run}: not a `detector train` run (no state.json)")
    state = rebased_state(json.loads(path.read_text()), run)  # its paths as seen from here
    names = {f.name for f in fields(LoopConfig)}
    return LoopConfig(**{k: v for k, v in state["config"].items() if k in names}), state


def check_round(state: dict, rnd: int, run) -> None:
    """A 1-based round number of a run's state; one the run does not hold -> ValueError naming the run."""
    if not 1 <= rnd <= len(state["rounds"]):
        raise ValueError(f"round {rnd}: {run} holds rounds 1..{len(state['rounds'])}")


def round_cnns(run: str | Path, rnd: int) -> tuple[list, LoopConfig, dict]:
    """The CNN members of round ``rnd`` (1-based) in order, with the run's settings and state."""
    run = Path(run)
    cfg, state = load_run(run)
    check_round(state, rnd, run)
    detector, _ = load_checkpoint(run / f"round-{rnd:02d}" / "checkpoint.pt")
    cnn = detector.members[0] if cfg.statistics_n else detector  # with a statistics model: fusion(CNN part, stats)
    return (list(cnn.members) if cfg.cnn_members > 1 else [cnn]), cfg, state


def check_members(members: Sequence[int], n: int, rnd: int, run) -> None:
    """A group of 1-based member numbers of a round with ``n`` CNNs; an empty group or one outside -> ValueError."""
    if not members or not all(1 <= m <= n for m in members):
        raise ValueError(f"members {list(members)}: round {rnd} of {run} has CNN members 1..{n}")


def score_members(run: str | Path, rnd: int, members: Sequence[int], *, eval_dir: str | None = None,
                  workers: int = 0) -> dict:
    """Round ``rnd`` of ``run`` rebuilt from its CNN ``members`` (1-based) and scored as the loop scores a round.

    Returns ``cnn_val`` (validation AUC of the members' mean logit, one view, as the loop's CNN validation),
    ``member_val`` (each member's), ``fused_val`` and ``statistics_val`` (None without a statistics model),
    ``quality`` (op -> AUC of processed vs as-is validation reals) and ``max_dev``, ``eval`` and ``eval_<generator>``.
    A member outside the round's -> ValueError.
    """
    run = Path(run)
    cnns, cfg, state = round_cnns(run, rnd)
    check_members(members, len(cnns), rnd, run)
    cfg = replace(cfg, workers=workers)
    pool = state["rounds"][rnd - 1]["pool"]
    _, val, _ = split_by_identities(read_datasets(pool), set(state["val_identities"]))
    side = None if cfg.mode == "patch" else cfg.size
    chosen = [cnns[m - 1].eval() for m in members]
    val_ds = FaceDataset(val, "full", norm=chosen[0].input_norm, full_size=side)
    logits = [to_logits(evaluate(c, val_ds, 16, workers, cfg.device)[1].astype(np.float64)) for c in chosen]
    cnn = chosen[0] if len(chosen) == 1 else fusion_of(chosen)
    scores = 1.0 / (1.0 + np.exp(-np.mean(logits, 0)))
    out = {"members": list(members), "cnn_val": sample_metrics(val, scores)["auc"],
           "member_val": [sample_metrics(val, 1.0 / (1.0 + np.exp(-x)))["auc"] for x in logits],
           "fused_val": None, "statistics_val": None}
    detector = cnn
    if cfg.statistics_n:
        stats, _ = load_checkpoint(run / "statistics" / f"{cfg.statistics_model}.pt")
        detector, fused = _fuse_round(cnn, stats.eval(), val, scores, cfg, side)
        out.update(fused_val=fused["auc"], statistics_val=fused["statistics_auc"])
    reals = [s for s in val if s.label == 0][:cfg.quality_reals]
    out.update(quality={}, max_dev=None)
    if reals:  # as the loop: no check without validation reals
        quality = quality_check(detector, reals, full_size=side, workers=workers, device=cfg.device)
        out.update(quality=quality["auc"], max_dev=quality["max_dev"])
    eval_samples = read_dataset(eval_dir or cfg.eval_dir)
    ev, _ = evaluate(detector, FaceDataset(eval_samples, "full", norm=chosen[0].input_norm, full_size=side), 16,
                     workers, cfg.device)
    out["eval"] = ev.get("auc")
    out.update({f"eval_{g}": m.get("auc") for g, m in sorted((ev.get("per_generator") or {}).items())})
    return out


def _f(x) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def _row(name: str, m: dict, generators: Sequence[str]) -> str:
    q = m.get("quality") or {}
    return (f"| {name} | {_f(m.get('cnn_val'))} | {_f(m.get('fused_val'))} | {' / '.join(_f(v) for v in q.values())} | "
            f"{_f(m.get('max_dev'))} | {_f(m.get('eval'))} | " + " | ".join(_f(m.get(f'eval_{g}')) for g in generators) + " |")


def _recorded(state: dict, rnd: int) -> dict:
    r = state["rounds"][rnd - 1]
    q = r.get("val_quality") or {}
    return {"cnn_val": r["val"].get("auc"), "fused_val": (r.get("val_fused") or {}).get("auc"),
            "quality": q.get("auc") or {}, "max_dev": q.get("max_dev"), "eval": r["eval"].get("auc"),
            **{f"eval_{g}": m.get("auc") for g, m in (r["eval"].get("per_generator") or {}).items()}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="a `detector train --out` folder")
    ap.add_argument("--round", type=int, default=1, help="which round (default 1, the one that pairs exactly)")
    ap.add_argument("--members", action="append", required=True,
                    help="a group of CNN members, 1-based, comma-separated (e.g. 1 or 1,2); repeat for more rows")
    ap.add_argument("--eval", help="score this evaluation set instead of the run's")
    ap.add_argument("--workers", type=int, default=0, help="loader workers (default 0)")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    args = ap.parse_args(argv)
    try:
        groups = [[int(x) for x in g.split(",")] for g in args.members]
    except ValueError:
        ap.error(f"--members {args.members}: expected comma-separated member numbers, e.g. 1,2")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        _, state = load_run(args.run)
        cnns, _, _ = round_cnns(args.run, args.round)
        for g in groups:  # every group before any scoring: a bad last group must not cost the first ones' minutes
            check_members(g, len(cnns), args.round, args.run)
    except ValueError as e:
        ap.error(str(e))
    rows = {"as recorded": _recorded(state, args.round)}
    for g in groups:
        rows[" + ".join(map(str, g))] = score_members(args.run, args.round, g, eval_dir=args.eval, workers=args.workers)
    generators = sorted({k[5:] for m in rows.values() for k in m if k.startswith("eval_")})
    ops = " / ".join(next((m["quality"] for m in rows.values() if m.get("quality")), {}))
    print(f"{args.run}, round {args.round}\n")
    print(f"| members | CNN val | fused val | val reals: {ops} | max dev | eval | " + " | ".join(generators) + " |")
    print("|---|" + "---:|" * (5 + len(generators)))
    for name, m in rows.items():
        print(_row(name, m, generators))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
