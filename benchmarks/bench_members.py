"""CNNs that differ only in how they were trained: each alone, and groups of them as the mean of their logits.

Scores ``bench_learning.py`` runs trained on one pool with one ``--seed`` (so they share the identity split; they
may differ in ``--init-seed``, ``--steps`` or any other option) on the sets ``bench_learning.py`` itself reads: the
pool's validation split, a held-out set we may use (``--heldout``) and the global-quality check on the same 256
validation reals (processed vs as is, ``detector.quality``); and, read out only, an evaluation set (``--eval``:
AUC and per generator). A group's score is the mean of its runs' raw logits, one view, as ``detector train
--cnn-members`` combines its CNNs. Each run's logits are cached in ``--cache`` (one ``.npz`` per run and set of inputs), so
groups cost nothing once their runs are scored. Prints one markdown row per run and per group.

    OMP_NUM_THREADS=1 python benchmarks/bench_members.py --data POOL --seed S --heldout EV_HEAD \\
        --eval ../shared/data/eval/xgen-webmorph --cache CACHE --runs RUN_A RUN_B RUN_C --group RUN_A,RUN_B
"""
from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from bench_learning import quality_reals, split  # this folder is on sys.path when run as a script

from detector.checkpoint import load_checkpoint
from detector.data import FaceDataset, read_dataset
from detector.fit_statistics import to_logits
from detector.quality import QUALITY_OPS, paired_auc
from detector.train import sample_metrics, score_dataset


def bench_sets(pool: Sequence, seed: int, heldout: Sequence | None, eval_set: Sequence | None) -> dict:
    """The sets a run is scored on, drawn as ``bench_learning.py --seed seed`` draws them: ``val`` (its identity
    split), ``quality`` (the reals of its global-quality check), ``heldout`` and ``eval`` where given."""
    _, val = split(pool, seed)
    sets = {"val": val, "quality": quality_reals(val, seed)}
    sets.update({k: list(v) for k, v in (("heldout", heldout), ("eval", eval_set)) if v is not None})
    return sets


def run_logits(ckpt: Path, sets: Mapping[str, Sequence], size: int) -> dict[str, np.ndarray]:
    """Raw logits (float64; NaN for unreadable images) of the checkpoint on every set; the quality set as is
    (``quality_base``) and under each global op (``quality_<op>``)."""
    model, _ = load_checkpoint(ckpt)
    model.eval()
    out = {}

    def logit(samples, op=None):
        ds = FaceDataset(samples, "full", norm=model.input_norm, full_size=size, global_op=op)
        return to_logits(score_dataset(model, ds)[0])

    with torch.no_grad():
        for name, samples in sets.items():
            if name != "quality":
                out[name] = logit(samples)
        out["quality_base"] = logit(sets["quality"])
        for op, fn in QUALITY_OPS.items():
            out[f"quality_{op}"] = logit(sets["quality"], fn)
    return out


def group_metrics(members: Sequence[Mapping[str, np.ndarray]], sets: Mapping[str, Sequence]) -> dict:
    """Metrics of the mean of ``members``' logits (one member: that run alone).

    Returns ``val`` / ``heldout`` / ``eval`` AUCs (those in ``sets``), ``eval_<generator>`` AUCs (each generator's
    fakes against all reals), ``quality`` (op -> AUC of processed vs as-is reals) and ``max_dev`` (its largest
    distance from 0.5).
    """
    mean = {k: np.mean([m[k] for m in members], axis=0) for k in members[0]}
    res = {}
    for name in ("val", "heldout", "eval"):
        if name not in sets:
            continue
        m = sample_metrics(sets[name], 1.0 / (1.0 + np.exp(-mean[name])))
        res[name] = m["auc"]
        if name == "eval":
            res.update({f"eval_{g}": v["auc"] for g, v in sorted(m.get("per_generator", {}).items())})
    base = mean["quality_base"]
    res["quality"] = {}
    for op in QUALITY_OPS:
        after = mean[f"quality_{op}"]
        ok = np.isfinite(base) & np.isfinite(after)
        res["quality"][op] = paired_auc(base[ok], after[ok])
    res["max_dev"] = max(abs(v - 0.5) for v in res["quality"].values())
    return res


def _row(name: str, m: dict, generators: Sequence[str]) -> str:
    q = " / ".join(f"{m['quality'][op]:.3f}" for op in QUALITY_OPS)
    cells = [name, f"{m['val']:.3f}", f"{m['heldout']:.3f}" if "heldout" in m else "", q, f"{m['max_dev']:.3f}"]
    if "eval" in m:
        cells += [f"{m['eval']:.3f}"] + [f"{m.get(f'eval_{g}', float('nan')):.3f}" for g in generators]
    return "| " + " | ".join(cells) + " |"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="the synth pool the runs were trained on")
    ap.add_argument("--seed", type=int, required=True, help="the runs' bench_learning --seed (picks the split)")
    ap.add_argument("--runs", nargs="+", required=True, help="bench_learning --out folders (each holds best.pt)")
    ap.add_argument("--group", action="append", default=[], metavar="RUN,RUN[,...]",
                    help="runs (as given to --runs) scored together as the mean of their logits; repeatable")
    ap.add_argument("--heldout", help="a set we may use (a synth run or eval-style set; not the evaluation set)")
    ap.add_argument("--eval", help="evaluation set, read out only (never chosen on)")
    ap.add_argument("--cache", required=True, help="folder for each run's logits (reused by later calls)")
    ap.add_argument("--size", type=int, default=256, help="side the faces are scored at (bench_learning's --size)")
    ap.add_argument("--json", help="also write every row's metrics here")
    a = ap.parse_args(argv)

    ckpts = {run: Path(run) / "best.pt" for run in a.runs}
    missing = [str(p) for p in ckpts.values() if not p.is_file()]
    if missing:
        ap.error(f"--runs: no checkpoint at {', '.join(missing)}")
    groups = [g.split(",") for g in a.group]
    for g in groups:
        unknown = [r for r in g if r not in ckpts]
        if unknown:
            ap.error(f"--group: {', '.join(unknown)} not among --runs")

    def read(path, option):
        try:
            return read_dataset(path)
        except ValueError as e:  # read_dataset names the path and what is wrong with it
            ap.error(f"{option}: {e}")

    sets = bench_sets(read(a.data, "--data"), a.seed, read(a.heldout, "--heldout") if a.heldout else None,
                      read(a.eval, "--eval") if a.eval else None)
    cache = Path(a.cache)
    cache.mkdir(parents=True, exist_ok=True)
    logits = {}
    for run, ckpt in ckpts.items():
        # keyed by the run and every input of its scores, so a cache shared by other pools, seeds or sets never mixes
        key = json.dumps([str(Path(run).resolve()), *(str(Path(x).resolve()) if x else None
                                                      for x in (a.data, a.heldout, a.eval)), a.seed, a.size])
        path = cache / f"{Path(run).resolve().name}-{hashlib.sha1(key.encode()).hexdigest()[:10]}.npz"
        if not path.is_file():
            np.savez(path, **run_logits(ckpt, sets, a.size))
        logits[run] = dict(np.load(path))

    rows = [(Path(r).name, group_metrics([logits[r]], sets)) for r in a.runs]
    rows += [("mean of " + " + ".join(Path(r).name for r in g), group_metrics([logits[r] for r in g], sets))
             for g in groups]
    generators = sorted({k[5:] for _, m in rows for k in m if k.startswith("eval_")})
    print("| run | val | held-out | quality: " + " / ".join(QUALITY_OPS) + " | max dev |"
          + (" eval | " + " | ".join(generators) + " |" if a.eval else ""))
    print("|---" * (5 + (1 + len(generators) if a.eval else 0)) + "|")
    for name, m in rows:
        print(_row(name, m, generators))
    if a.json:
        Path(a.json).write_text(json.dumps([{"run": n, **m} for n, m in rows], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
