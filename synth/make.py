"""Library entry points: one fake from arrays (:func:`make_fake`) and an online dataset
(:class:`OnlineFakes`) that renders fresh fakes on demand for training, without touching disk.
Both take the same path as ``synth generate``: plan -> render."""
from __future__ import annotations

import json
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
    """Make one fake of a target face photo.

    Parameters
    ----------
    target : numpy.ndarray, uint8 (H, W, 3), RGB
        The face photo to fake.  Not modified.
    source : numpy.ndarray, uint8 (H2, W2, 3), RGB, optional
        Another face.  With it a plan whose pairing is ``"swap"`` pastes it onto the target
        (a ``"self"`` plan still self-blends the target); without it (default None) every
        sample is a self-blend.
    recipe : str, pathlib.Path or synth.recipe.Recipe, optional
        Shipped recipe name, path to a YAML file, or a loaded recipe.  Default ``"mixed"``.
    seed : int, optional
        Global seed: with the recipe and the inputs it fixes the result (the fake is sample
        0 of ``(recipe, seed)``).  Default 0.
    size : int, optional
        Side in pixels of the output crops (8..8192, checked by
        :func:`synth.face.crop_face`).  Default 256.
    target_landmarks, source_landmarks : array_like (468, 2), optional
        Face-mesh landmarks of ``target`` / ``source``, (x, y) float pixel coordinates.
        Default None: detected with MediaPipe (:func:`synth.face.get_detector`).
        ``source_landmarks`` is ignored without ``source``.

    Returns
    -------
    real : numpy.ndarray, uint8 (size, size, 3), RGB
        The target's face crop after the recipe's target degradations and post-process.
    fake : numpy.ndarray, uint8 (size, size, 3), RGB
        The fake, post-processed like ``real``.
    mask : numpy.ndarray, uint8 (size, size)
        Blend weight 0..255, 255 = pasted.
    plan : dict
        The JSON-able plan; :func:`synth.render.render` replays it.

    Raises
    ------
    ValueError
        No face found in ``target`` or ``source``; invalid images or landmarks; an unknown
        or invalid recipe (:class:`synth.recipe.RecipeError`); a plan that renders no usable
        fake (:class:`synth.render.DegenerateSample`, e.g. a mask emptied by the occlusion),
        including :class:`synth.visibility.InvisibleFake` when the recipe's ``min_visible``
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
    """Map-style dataset of fresh fakes for training, rendered on the fly, nothing on disk.

    Item ``i`` is plan ``i`` of ``(recipe, seed)``: the same pixels whichever process renders
    it, so a ``torch.utils.data.DataLoader`` yields the same batches with 0, 1 or N workers.
    The dataset pickles (the pool holds no lambdas; the per-process face cache is not sent),
    so workers started by fork, spawn or forkserver work, and every item is plain arrays, an
    int and a string, so the default collate batches it::

        loader = DataLoader(OnlineFakes(load_index("faces.index"), size=256), batch_size=16, num_workers=2)
        batch = next(iter(loader))  # batch["fake"]: uint8 tensor (16, 256, 256, 3)

    Parameters
    ----------
    pool : FacePool or synth.index.Index
        Faces to draw targets and swap partners from.
    recipe : str, Path or Recipe
        Shipped recipe name, path to a YAML file, or a loaded recipe.
    size : int
        Output side in pixels.
    seed : int
        Global seed; with ``recipe`` and the pool it fixes every item.
    length : int
        Number of items.
    weights : mapping of str to float, optional
        Choice-key multipliers (:func:`synth.recipe.choice_keys`), as ``synth generate --weights``.
    retries : int
        A sample that renders no usable fake (:class:`DegenerateSample`, including one that
        the recipe's ``min_visible`` rule rejected, :func:`synth.visibility.plan_and_render`)
        is replaced by sample ``i + k * length`` for the smallest such k, at most ``retries`` tries.

    Notes
    -----
    Items are dicts: ``"real"``, ``"fake"`` (uint8 size x size x 3 RGB), ``"mask"`` (uint8
    size x size, 255 = pasted), ``"index"`` (``i``) and ``"plan"``: the replayable plan as
    compact JSON text (a dict holds ``None`` and ragged lists, which the default collate
    refuses); ``json.loads(item["plan"])`` gives the dict :func:`synth.render.render` replays.
    """

    def __init__(self, pool, recipe: str | Recipe = "mixed", size: int = 256, seed: int = 0,
                 length: int = 10_000, weights: Mapping[str, float] | None = None, retries: int = 8):
        self.pool = as_pool(pool)
        self.recipe = _recipe(recipe)
        self.size, self.seed, self.length, self.retries = size, seed, length, retries
        self.weights = dict(weights) if weights else None
        self._cache: FaceCache | None = None

    def __getstate__(self) -> dict[str, Any]:
        """State sent to DataLoader workers: everything but the per-process face cache."""
        return {**self.__dict__, "_cache": None}

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
            return {"index": int(i), "real": real, "fake": fake, "mask": mask,
                    "plan": json.dumps(plan, separators=(",", ":"), allow_nan=False)}
        raise DegenerateSample(f"item {i}: {self.retries} plans in a row rendered no usable fake")
