"""Plan and render one sample under the recipe's visibility rule (label hygiene).

A fake labelled fake should differ visibly from its own real.  The recipe keys

- ``min_visible`` (float, 0..255 units, default 0 = off): the least acceptable
  :func:`visible_difference` of a sample, and
- ``max_attempts`` (int >= 1, default 8): how many plans sample ``i`` may try

define the rule: plan attempt 0 of sample ``i`` is rendered; while its difference is below
``min_visible`` the next attempt's plan is drawn (``sample_plan(..., attempt=k)``: same
target, every other choice redrawn from ``derive_seed(global_seed, i, k)``, recorded as
``plan["attempt"] = k``).  If no attempt passes, :class:`InvisibleFake` is raised and the
sample is skipped like any other :class:`~synth.render.DegenerateSample`.  Only
invisibility triggers a redraw; any other error of an attempt propagates at once.

:func:`plan_and_render` is the one place the rule runs (``synth generate``,
:func:`synth.make_fake` and :class:`synth.OnlineFakes` all call it).  Replaying a recorded
plan is plain :func:`synth.render.render`: the plan already is the attempt that passed.
"""
from __future__ import annotations

from typing import Any, Mapping

import cv2
import numpy as np

from synth.recipe import Recipe, sample_plan
from synth.render import DegenerateSample, FaceCache, render

__all__ = ["InvisibleFake", "visible_difference", "plan_and_render"]


class InvisibleFake(DegenerateSample):
    """No attempt of a sample gave a fake visibly different from its real (``min_visible``)."""


def visible_difference(real: np.ndarray, fake: np.ndarray, mask: np.ndarray) -> float:
    """Mean absolute difference between ``fake`` and ``real`` (uint8 HxWx3, after the
    post-process, i.e. as written) over the pixels where ``mask >= 128`` (the pixels that
    are mostly source) and the 3 channels, in 0..255 units.  0.0 if no pixel qualifies."""
    inside = mask >= 128
    if not inside.any():
        return 0.0
    return float(cv2.absdiff(real, fake)[inside].mean(dtype=np.float64))


def plan_and_render(recipe: Recipe, pool, faces: FaceCache, i: int, global_seed: int, size: int = 256,
                    weights: Mapping[str, float] | None = None,
                    target_key: str | None = None) -> tuple[dict[str, Any], np.ndarray, np.ndarray, np.ndarray]:
    """Plan and render sample ``i`` of ``(recipe, global_seed)`` -> ``(plan, real, fake, mask)``,
    redrawing the plan while the fake is not visible (see the module docstring).

    An exception raised while rendering an attempt carries that attempt's plan as
    ``exc.plan`` (for skip records); errors of planning itself carry none.
    """
    threshold = float(recipe.spec.get("min_visible", 0.0))
    attempts = int(recipe.spec.get("max_attempts", 8)) if threshold > 0 else 1
    best = None
    for attempt in range(attempts):
        plan = sample_plan(recipe, pool, i, global_seed, size, weights, target_key, attempt=attempt)
        try:
            real, fake, mask = render(plan, faces)
        except Exception as exc:
            if getattr(exc, "plan", None) is None:
                exc.plan = plan
            raise
        if threshold <= 0:
            return plan, real, fake, mask
        diff = visible_difference(real, fake, mask)
        if diff >= threshold:
            return plan, real, fake, mask
        best = diff if best is None else max(best, diff)
    exc = InvisibleFake(f"sample {i}: no fake visibly different from its real in {attempts} plan(s): "
                        f"mean |fake - real| over mask >= 128 at most {best:.3f} < min_visible {threshold:g}")
    exc.plan = plan
    raise exc
