"""PNG plots for training runs (matplotlib, Agg backend: no display needed).

* :func:`plot_roc`: ROC curves (overall and per generator) with their AUCs; :func:`roc_curves`
  gives its input for scored samples.
* :func:`plot_losses`: per-step training loss (and its parts) with per-epoch validation AUC.
* :func:`plot_rounds`: evaluation AUC per round of the augment-until loop.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from detector.metrics import binary_metrics, roc  # noqa: E402


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_roc(curves: Mapping[str, tuple[Sequence[int], Sequence[float]]], path: str | Path, title: str = "ROC") -> Path:
    """One ROC curve per entry ``name -> (labels, scores)``; one-class entries are listed, not drawn."""
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="0.7", lw=1, ls="--")
    for name, (labels, scores) in curves.items():
        m = binary_metrics(labels, scores)
        if "warning" in m:
            ax.plot([], [], label=f"{name}: one class only")
            continue
        fpr, tpr, _ = roc(labels, scores)
        ax.plot(fpr, tpr, lw=1.5, label=f"{name}: AUC {m['auc']:.3f}, EER {m['eer']:.3f}")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.01), title=title)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def roc_curves(samples: Sequence, scores, generators: Iterable[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """:func:`plot_roc` input for scored samples (:class:`detector.data.Sample`, ``scores`` aligned,
    NaN = unscored and left out): ``"all"``, then for each name of ``generators`` that generator's
    fakes against all reals (as ``per_generator`` in :func:`detector.metrics.compute_metrics`)."""
    scores = np.asarray(scores)
    ok = np.isfinite(scores)
    labels = np.array([s.label for s in samples])
    gens = np.array([s.meta.get("generator", "") for s in samples])
    curves = {"all": (labels[ok], scores[ok])}
    for g in generators:
        sel = ok & ((labels == 0) | (gens == g))
        curves[g] = (labels[sel], scores[sel])
    return curves


def _read_log(log: str | Path | Sequence[Mapping]) -> list[Mapping]:
    if isinstance(log, (str, Path)):
        p = Path(log)
        return [json.loads(line) for line in p.read_text().splitlines() if line.strip()] if p.is_file() else []
    return list(log)


def plot_losses(log: str | Path | Sequence[Mapping], path: str | Path, title: str = "training") -> Path:
    """Training loss per step (total and parts) and validation AUC per epoch from a ``train_log.jsonl``."""
    recs = _read_log(log)
    steps = [r for r in recs if r.get("kind") == "step"]
    epochs = [r for r in recs if r.get("kind") == "epoch"]
    fig, ax = plt.subplots(figsize=(7, 4))
    if steps:
        x = np.array([r["step"] for r in steps])
        for key, style in (("loss", "-"), ("cls", ":"), ("mask", ":"), ("sim", ":")):
            y = np.array([r.get(key, math.nan) for r in steps], dtype=float)
            if np.isfinite(y).any() and (key == "loss" or np.nanmax(np.abs(y)) > 0):
                ax.plot(x, y, style, lw=1, label=key)
        ax.set_yscale("log" if np.nanmin([r["loss"] for r in steps]) > 0 else "linear")
    ax.set(xlabel="step", ylabel="loss", title=title)
    if epochs:
        ax2 = ax.twinx()
        last_step = {}
        for r in steps:
            last_step[r["epoch"]] = r["step"]
        ex = [last_step.get(r["epoch"], i + 1) for i, r in enumerate(epochs)]
        ax2.plot(ex, [r.get("val_auc", math.nan) if r.get("val_auc") is not None else math.nan for r in epochs],
                 "o-", color="C3", label="val AUC")
        ax2.set(ylabel="validation AUC", ylim=(0.0, 1.02))
        ax2.legend(loc="upper right", fontsize=8)
    if steps:
        ax.legend(loc="upper left", fontsize=8)
    return _save(fig, path)


def plot_rounds(rounds: Sequence[Mapping], path: str | Path, title: str = "augment-until rounds") -> Path:
    """Evaluation AUC (overall, per generator) and validation AUC per loop round."""
    fig, ax = plt.subplots(figsize=(6, 4))
    x = [r["round"] for r in rounds]
    ax.plot(x, [r["eval"].get("auc", math.nan) for r in rounds], "o-", lw=2, label="eval (all)")
    gens = sorted({g for r in rounds for g in (r["eval"].get("per_generator") or {})})
    for g in gens:
        ax.plot(x, [(r["eval"].get("per_generator") or {}).get(g, {}).get("auc", math.nan) for r in rounds],
                "o--", lw=1, label=f"eval {g}")
    ax.plot(x, [r["val"].get("auc", math.nan) for r in rounds], "s:", color="0.4", label="val (synth)")
    ax.set(xlabel="round", ylabel="AUC", ylim=(0.0, 1.02), title=title)
    ax.set_xticks(x)
    ax.legend(fontsize=8)
    return _save(fig, path)
