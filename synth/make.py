"""Library entry points: one fake from arrays (:func:`make_fake`) and an online dataset
(:class:`OnlineFakes`) that renders fresh fakes on demand for training, without touching disk.
Both take the same path as ``synth generate``: plan -> render."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from synth.pool import FacePool, as_pool
from synth.recipe import Recipe, load_recipe
from synth.render import DegenerateSample, FaceCache
from synth.visibility import plan_and_render


def _recipe(recipe: str | Recipe) -> Recipe:
    return recipe if isinstance(recipe, Recipe) else load_recipe(recipe)


def make_fake(target: np.ndarray, source: np.ndarray | None = None, recipe: str | Recipe = "mixed",
              seed: int = 0, size: int = 256, target_landmarks: np.ndarray | None = None,
              source_landmarks: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Make one fake of ``target`` (uint8 HxWx3 RGB face photo).

    With ``source`` (another face, uint8 RGB) swap recipes paste it onto the target; without
    it every sample is a self-blend.  Landmarks are detected with mediapipe unless given
    ((468, 2) float pixel coordinates).  Returns ``(real, fake, mask, plan)``: real and fake
    uint8 size x size x 3, mask uint8 size x size (255 = pasted), plan the replayable dict.
    Raises ``ValueError`` if no face is found in an image, and
    :class:`synth.visibility.InvisibleFake` (a ``ValueError``) if the recipe's ``min_visible``
    rule rejected every attempt.
    """
    from synth.face import get_detector

    images = {"target": target} if source is None else {"target": target, "source": source}
    given = {"target": target_landmarks, "source": source_landmarks}
    landmarks = {}
    for key, image in images.items():
        if given[key] is not None:
            landmarks[key] = np.asarray(given[key], np.float32)
            continue
        found = get_detector().detect(image)
        if found is None:
            raise ValueError(f"{key}: no face found in the image")
        landmarks[key] = found.landmarks
    pool = FacePool.from_arrays(images, landmarks)
    plan, real, fake, mask = plan_and_render(_recipe(recipe), pool, FaceCache(pool), 0, seed, size,
                                             target_key="target")
    return real, fake, mask, plan


class OnlineFakes:
    """Map-style dataset of fresh fakes: item ``i`` is the plan ``i`` of ``(recipe, seed)``,
    rendered on the fly; usable with ``torch.utils.data.DataLoader`` (workers build their own
    face cache lazily).  Items are dicts ``{"real", "fake", "mask", "plan"}`` (uint8 arrays).

    Each item follows the recipe's ``min_visible`` rule (:func:`synth.visibility.plan_and_render`).
    A sample that renders no usable fake (:class:`DegenerateSample`, including an invisible
    one) is replaced by sample ``i + k * length`` for the smallest such k (deterministic, at
    most ``retries`` tries).
    """

    def __init__(self, pool, recipe: str | Recipe = "mixed", size: int = 256, seed: int = 0,
                 length: int = 10_000, weights: Mapping[str, float] | None = None, retries: int = 8):
        self.pool = as_pool(pool)
        self.recipe = _recipe(recipe)
        self.size, self.seed, self.length, self.retries = size, seed, length, retries
        self.weights = dict(weights) if weights else None
        self._cache: FaceCache | None = None

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not 0 <= i < self.length:
            raise IndexError(i)
        if self._cache is None:
            self._cache = FaceCache(self.pool)
        for k in range(self.retries):
            try:
                plan, real, fake, mask = plan_and_render(self.recipe, self.pool, self._cache, i + k * self.length,
                                                         self.seed, self.size, self.weights)
            except DegenerateSample:
                continue
            return {"real": real, "fake": fake, "mask": mask, "plan": plan}
        raise DegenerateSample(f"item {i}: {self.retries} plans in a row rendered no usable fake")
