"""Recipe weights for regeneration, from the validation fakes the detector misses.

With ``miss_k`` the share of validation fakes carrying plan choice key k that score below the
decision threshold (the validation EER threshold) and ``mean_miss`` the share over all validation
fakes, ``w_k = clip((miss_k + eps) / (mean_miss + eps), lo, hi)``; keys seen on fewer than
``min_count`` validation fakes keep weight 1. ``synth generate --weights`` then draws the keys'
choices that much more (or less) often.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

__all__ = ["miss_rate_weights"]


def miss_rate_weights(keys: Sequence[Sequence[str]], scores: Sequence[float], threshold: float, eps: float = 0.05,
                      clip: tuple[float, float] = (0.5, 3.0), min_count: int = 5) -> dict:
    """Recipe weights from the miss rates of validation fakes per plan choice key.

    ``keys[j]``: choice keys of fake j; ``scores[j]``: its fake score (NaN = unscored, ignored);
    a fake is missed when ``score < threshold``. Returns a JSON-able record: ``weights``
    (key -> multiplier for ``synth.generate``), per-key ``n``/``missed``/``miss``/``weight``,
    ``overall_miss``, the formula and its constants.
    """
    lo, hi = clip
    rec = {"formula": "w_k = clip((miss_k + eps) / (mean_miss + eps), lo, hi); n_k < min_count -> 1",
           "eps": eps, "clip": [lo, hi], "min_count": min_count, "threshold": float(threshold),
           "n_fakes": 0, "overall_miss": math.nan, "keys": {}, "weights": {}}
    s = np.asarray(scores, dtype=np.float64)
    ok = np.isfinite(s)
    if not math.isfinite(threshold) or not ok.any():
        rec["note"] = "no usable validation threshold or scores: weights left at 1"
        return rec
    missed = s < threshold
    mean_miss = float(missed[ok].mean())
    rec.update(n_fakes=int(ok.sum()), overall_miss=mean_miss)
    per: dict[str, list[int]] = {}
    for j in np.flatnonzero(ok):
        for k in dict.fromkeys(keys[j]):
            per.setdefault(k, []).append(int(missed[j]))
    for k in sorted(per):
        n, m = len(per[k]), sum(per[k])
        miss = m / n
        w = float(np.clip((miss + eps) / (mean_miss + eps), lo, hi)) if n >= min_count else 1.0
        rec["keys"][k] = {"n": n, "missed": m, "miss": miss, "weight": w}
        rec["weights"][k] = w
    return rec
