"""A ``synth generate`` run as labelled samples, and identity-disjoint splits of samples (no torch).

:func:`read_synth_dir` turns a run's ``manifest.jsonl`` into :class:`Sample` s (each ok line a real,
the target face, and its fake with pixel mask); :func:`identity_split` splits samples so that no
identity is on both sides (identities linked by a swap are grouped as the connected components of the
identity graph). ``synth export`` and the detector's readers (:mod:`detector.readers`) share them.
"""
from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from synth.recipe import choice_keys
from synth.writer import iter_manifest

__all__ = ["Sample", "read_synth_dir", "identity_split", "split_by_identities", "group_identities"]


@dataclass(frozen=True)
class Sample:
    """One image of a dataset.

    path: absolute image path. label: 0 real, 1 fake. mask_path: forged-pixel mask (fakes) or None.
    group: identities the image shows (a swap fake shows two); the split keeps each identity on one
    side. meta: ``generator`` (str), optional ``video``, and for synth fakes ``keys`` (the plan's
    choice keys, used to reweight regeneration) and ``i`` (sample index).
    """

    path: str
    label: int
    mask_path: str | None = None
    group: tuple[str, ...] = ()
    meta: Mapping = field(default_factory=dict)


# ----------------------------------------------------------------------------------------- readers

def _choice_keys(plan: Mapping | None) -> list[str]:
    """The plan's discrete choices (``synth.recipe.choice_keys``), used to aim regeneration."""
    return list(choice_keys(plan)) if plan else []


def read_synth_dir(out: str | Path) -> list[Sample]:
    """Samples of a ``synth generate`` output directory (reads ``OUT/manifest.jsonl``).

    Each ``status == "ok"`` line gives a real (``group = (target_id,)``) and a fake
    (``group = (target_id, source_id)``, ``meta["keys"] = choice_keys(plan)``). Other lines are skipped.
    """
    out = Path(out).absolute()
    manifest = out / "manifest.jsonl"
    if not manifest.is_file():
        raise ValueError(f"{out}: no manifest.jsonl (expected the output directory of `synth generate`)")
    samples: list[Sample] = []
    # complete lines only: a half-written last line of an interrupted run is not read (as synth does)
    for n, rec in iter_manifest(manifest):
        if rec.get("status") != "ok":
            continue
        missing = [k for k in ("real", "fake", "target_id") if not rec.get(k)]
        if missing:
            raise ValueError(f"{manifest}:{n}: ok line without key(s) {missing}")
        wrong = [k for k in ("real", "fake", "mask") if rec.get(k) and not isinstance(rec[k], str)]
        if wrong:
            raise ValueError(f"{manifest}:{n}: {wrong} must be paths (strings)")
        target = str(rec["target_id"])
        source = str(rec.get("source_id") or target)
        i = rec.get("i", n - 1)
        if isinstance(i, bool) or not isinstance(i, int):
            raise ValueError(f"{manifest}:{n}: 'i' must be an integer, got {str(i)[:40]!r}")
        try:
            keys = _choice_keys(rec.get("plan"))
        except (KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"{manifest}:{n}: malformed 'plan' ({type(e).__name__}: {str(e)[:80]})") from None
        samples.append(Sample(str(out / rec["real"]), 0, None, (target,),
                              {"generator": "real", "i": i, "dataset": str(out)}))
        samples.append(Sample(str(out / rec["fake"]), 1, str(out / rec["mask"]) if rec.get("mask") else None,
                              tuple(dict.fromkeys((target, source))),
                              {"generator": "synth", "i": i, "dataset": str(out), "keys": keys}))
    return samples


# ------------------------------------------------------------------------------ identity split

def _unit_hash(seed: int, key: str) -> float:
    """Stable pseudo-random number in [0, 1) for (seed, key); independent of PYTHONHASHSEED."""
    h = hashlib.blake2b(f"{seed}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") / 2.0 ** 64


def _components(samples: Sequence[Sample]) -> list[list[int]]:
    """Sample indices grouped by the connected components of the identity graph (the identities a
    sample shows are linked), components in order of their first sample, indices ascending."""
    node: dict[str, int] = {}
    rows, cols = [], []
    for s in samples:
        ids = s.group or (s.path,)
        first = node.setdefault(ids[0], len(node))
        for a in ids[1:]:
            rows.append(first)
            cols.append(node.setdefault(a, len(node)))
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(node), len(node)))
    _, component = connected_components(graph, directed=False)
    comps: dict[int, list[int]] = {}
    for k, s in enumerate(samples):
        comps.setdefault(int(component[node[(s.group or (s.path,))[0]]]), []).append(k)
    return list(comps.values())


def split_by_identities(samples: Sequence[Sample], val_identities: set[str]) -> tuple[list[Sample], list[Sample], int]:
    """Split by a fixed set of validation identities: ``(train, val, n_dropped)``.

    A sample goes to val if all its identities are in ``val_identities``, to train if none are;
    a sample showing identities from both sides (a swap across the split) is dropped and counted,
    so no face ever appears on both sides. Used by the loop to keep the split stable as the pool grows.
    """
    train, val, dropped = [], [], 0
    for s in samples:
        ids = s.group or (s.path,)
        inside = [a in val_identities for a in ids]
        if all(inside):
            val.append(s)
        elif not any(inside):
            train.append(s)
        else:
            dropped += 1
    return train, val, dropped


def identity_split(samples: Sequence[Sample], val_fraction: float = 0.1, seed: int = 0) -> tuple[list[Sample], list[Sample]]:
    """Identity-disjoint train/val split.

    Identities linked by a sample (target and source of a swap) are grouped (connected components); whole
    components are assigned to val in a seeded pseudo-random order until ``val_fraction`` of the
    samples is reached (components that would overshoot are skipped). When one giant component
    holds most samples (many swaps), identities are assigned individually instead and the swap
    samples that straddle both sides are dropped (with a warning). No identity is ever on both sides.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")
    samples = list(samples)
    if not samples:
        return [], []
    target = val_fraction * len(samples)
    comps = _components(samples)
    comps.sort(key=lambda c: min(_unit_hash(seed, a) for k in c for a in (samples[k].group or (samples[k].path,))))
    val_idx: list[int] = []
    slack = max(1.0, 0.1 * target)
    for c in comps:
        if len(val_idx) >= target:
            break
        if len(val_idx) + len(c) <= target + slack:
            val_idx.extend(c)
    if len(val_idx) >= 0.5 * target and len(val_idx) < len(samples):
        chosen = set(val_idx)
        return [s for k, s in enumerate(samples) if k not in chosen], [samples[k] for k in sorted(chosen)]
    # Giant component: per-identity assignment, dropping the straddling samples.
    ids = {a for s in samples for a in (s.group or (s.path,))}
    val_ids = {a for a in ids if _unit_hash(seed, a) < val_fraction}
    train, val, dropped = split_by_identities(samples, val_ids)
    warnings.warn(f"identity_split: identities are linked into one large component; split per identity "
                  f"and dropped {dropped} of {len(samples)} samples that straddle train and val", stacklevel=2)
    return train, val


def group_identities(samples: Iterable[Sample]) -> set[str]:
    """All identities shown by ``samples``."""
    return {a for s in samples for a in (s.group or (s.path,))}
