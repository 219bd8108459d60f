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
    """Mean absolute difference between ``fake`` and ``real`` over the mostly-source pixels.

    Parameters
    ----------
    real, fake : numpy.ndarray, uint8 (H, W, 3), RGB
        The pair as written (after the post-process).  Same shape; not validated here
        (OpenCV raises ``cv2.error`` on a mismatch).
    mask : numpy.ndarray, uint8 (H, W)
        Blend weight 0..255 (255 = source); the pixels where ``mask >= 128`` are compared.
        Only uint8 is accepted: a float mask in [0, 1] would select no pixel and call every
        fake invisible.

    Returns
    -------
    difference : float
        ``mean(abs(fake - real))`` over the selected pixels and the 3 channels, in 0..255
        units (float64 mean); 0.0 if no pixel is selected.

    Raises
    ------
    ValueError
        ``mask`` is not a uint8 array of the images' height and width.
    """
    if not isinstance(mask, np.ndarray) or mask.dtype != np.uint8 or mask.shape != real.shape[:2]:
        raise ValueError(f"mask: expected uint8 (H, W) = {real.shape[:2]}, got "
                         f"{getattr(mask, 'dtype', type(mask).__name__)} {getattr(mask, 'shape', '')}")
    inside = cv2.compare(mask, 127, cv2.CMP_GT)  # 255 where mask >= 128
    n = cv2.countNonZero(inside)
    if n == 0:
        return 0.0
    # integer sums, exact in float64: the same value as numpy's mean over the selected pixels,
    # without gathering them (the rule compares it with a threshold, so it must not move)
    diff = cv2.absdiff(real, fake)
    total = sum(cv2.sumElems(cv2.bitwise_and(diff, diff, mask=inside))[:3])
    return total / (3 * n)


def plan_and_render(recipe: Recipe, pool, faces: FaceCache, i: int, global_seed: int, size: int = 256,
                    weights: Mapping[str, float] | None = None,
                    target_key: str | None = None) -> tuple[dict[str, Any], np.ndarray, np.ndarray, np.ndarray]:
    """Plan and render one sample, redrawing the plan while the fake is not visible.

    Parameters
    ----------
    recipe : synth.recipe.Recipe
        The loaded recipe.  ``recipe.spec["min_visible"]`` (0..255 units, default 0 = rule
        off) and ``recipe.spec["max_attempts"]`` (default 8, only used when
        ``min_visible`` > 0) define the rule (see the module docstring).
    pool : synth.pool.FacePool or synth.index.Index
        Faces to draw targets and swap partners from (as :func:`synth.recipe.sample_plan`).
    faces : synth.render.FaceCache
        Crop cache the plans are rendered from.
    i : int
        Sample index.
    global_seed : int
        Global seed; with ``recipe`` and ``pool`` it fixes every plan.
    size : int, optional
        Output side in pixels.  Default 256.
    weights : mapping of str to float, optional
        Choice-key multipliers (:func:`synth.recipe.choice_keys`), passed to
        :func:`synth.recipe.sample_plan`.  Default None.
    target_key : str, optional
        Key of the target face in ``pool`` (library use); default None draws it from the
        pool.

    Returns
    -------
    plan : dict
        The JSON-able plan of the attempt that was returned (``plan["attempt"]`` = its
        number, 0 first).
    real : numpy.ndarray, uint8 (size, size, 3), RGB
    fake : numpy.ndarray, uint8 (size, size, 3), RGB
    mask : numpy.ndarray, uint8 (size, size)
        Blend weight 0..255, 255 = source (see :func:`synth.render.render`).

    Raises
    ------
    InvisibleFake
        ``min_visible`` > 0 and none of the ``max_attempts`` attempts reached
        ``visible_difference >= min_visible``; a :class:`~synth.render.DegenerateSample`
        (hence a ``ValueError``) carrying the last attempt's plan as ``exc.plan``.
    Exception
        Any error of rendering an attempt propagates at once (no redraw), with that
        attempt's plan set as ``exc.plan`` unless it already has one; errors of
        :func:`synth.recipe.sample_plan` propagate without a plan.
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
