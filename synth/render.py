"""Render a plan into (real, fake, mask).  Pure apart from a per-process face cache.

The per-source work (decode, crop around the landmarks, occlusion estimate, face-region
mask for colour statistics) is done once per face and cached; per sample only the ops
recorded in the plan run.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from synth import mask as masklib
from synth import writer
from synth.face import affine_transform, crop_face, similarity_transform, warp_image
from synth.occlusion import get_estimator
from synth.ops import apply_step, get_op
from synth.pool import FacePool, as_pool


class DegenerateSample(ValueError):
    """The plan produced no usable fake (e.g. the occlusion covered the whole mask)."""


@dataclass(frozen=True)
class Face:
    """A face crop: uint8 SxSx3 RGB, landmarks float32 (468, 2) in crop pixels, and the
    face-oval mask (uint8 SxS) used for colour statistics."""

    crop: np.ndarray
    landmarks: np.ndarray
    region: np.ndarray


class FaceCache:
    """Crops (and occlusion maps) of pool faces, computed once per process, LRU-bounded.

    With a ``store`` (:class:`synth.facestore.FaceStore`) a miss reads the face from it, or
    computes it and puts it there, so the processes of one run derive each face once.
    """

    def __init__(self, pool, max_items: int = 2048, store=None):
        self.pool: FacePool = as_pool(pool)
        self.max_items = max_items
        self.store = store
        self._faces: OrderedDict = OrderedDict()
        self._occ: OrderedDict = OrderedDict()
        self._estimators: dict = {}

    def _remember(self, cache: OrderedDict, key, value):
        cache[key] = value
        if len(cache) > self.max_items:
            cache.popitem(last=False)
        return value

    def face(self, key: str, size: int, crop_scale: float) -> Face:
        ck = (key, size, crop_scale)
        if ck in self._faces:
            self._faces.move_to_end(ck)
            return self._faces[ck]
        n = self.pool.index_of(key)
        stored = self.store.load_face(n, size, crop_scale) if self.store is not None else None
        if stored is not None:
            crop, lm, region = stored
        else:
            crop, lm, _ = crop_face(self.pool.loader(key), self.pool.landmarks[n], scale=crop_scale, size=size)
            region = masklib.polygon_mask((size, size), masklib.REGIONS["full"](lm))
            lm = lm.astype(np.float32)
            if self.store is not None:
                self.store.save_face(n, size, crop_scale, crop, lm, region)
        return self._remember(self._faces, ck, Face(crop, lm, region))

    def occlusion(self, key: str, size: int, crop_scale: float, estimator: str) -> np.ndarray:
        ck = (key, size, crop_scale, estimator)
        if ck in self._occ:
            self._occ.move_to_end(ck)
            return self._occ[ck]
        n = self.pool.index_of(key)
        occ = self.store.load_occlusion(n, size, crop_scale, estimator) if self.store is not None else None
        if occ is None:
            face = self.face(key, size, crop_scale)
            if estimator not in self._estimators:
                self._estimators[estimator] = get_estimator(estimator)
            occ = self._estimators[estimator](face.crop, face.landmarks)
            if self.store is not None:
                self.store.save_occlusion(n, size, crop_scale, estimator, occ)
        return self._remember(self._occ, ck, occ)

    def crop_png(self, key: str, size: int, crop_scale: float) -> bytes:
        """PNG bytes of the untouched crop as the writer codes a real
        (:func:`synth.writer.encode_image`; the real of a sample when :func:`real_is_crop`):
        encoded once per run with a store, else on every call."""
        n = self.pool.index_of(key)
        data = self.store.load_png(n, size, crop_scale) if self.store is not None else None
        if data is None:
            data = writer.encode_image("real", self.face(key, size, crop_scale).crop)
            if self.store is not None:
                self.store.save_png(n, size, crop_scale, data)
        return data


_WARPS = {"similarity": similarity_transform, "affine": affine_transform}

#: Top-level plan fields render reads, and their types (``target_degrade`` may be absent: older plans).
_PLAN_FIELDS = {"size": int, "crop_scale": (int, float), "pairing": str, "target": str, "source": str,
                "perturb": list, "source_degrade": list, "mask": dict, "blend": dict, "post": list}
_MASK_FIELDS = {"region": str, "params": dict, "occlusion": str}


def _type_names(types) -> str:
    return " or ".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))


def _check_step(step: Any, where: str) -> None:
    """A recorded op step: ``{"op": known name, "params": {its parameters}, "seed": int if random}``."""
    if not isinstance(step, Mapping) or not isinstance(step.get("op"), str):
        raise ValueError(f"{where}: expected a step {{'op': name, 'params': {{...}}}}, got {str(step)[:60]}")
    try:
        op = get_op(step["op"])
    except ValueError:
        raise ValueError(f"{where}: unknown op {step['op'][:40]!r}") from None
    params = step.get("params", {})
    if not isinstance(params, Mapping) or any(k not in op.params for k in params):
        raise ValueError(f"{where}: 'params' must map parameters of {op.name!r} ({', '.join(op.params)}) to values, "
                         f"got {str(params)[:80]}")
    seed = step.get("seed")
    if op.random and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(f"{where}: op {op.name!r} is random and needs an integer 'seed', got {str(seed)[:40]}")


def check_plan(plan: Any) -> None:
    """Raise ``ValueError`` naming the sample and the key when ``plan`` is not a plan :func:`render`
    can read (a missing key, a wrong type, an unknown pairing, warp or op): plans read back from a
    manifest are data."""
    if not isinstance(plan, Mapping):
        raise ValueError(f"plan: expected a mapping, got {type(plan).__name__}")
    where = f"plan of sample {str(plan.get('index'))[:20]}"
    for key, types in _PLAN_FIELDS.items():
        if key not in plan:
            raise ValueError(f"{where}: missing key {key!r}")
        if isinstance(plan[key], bool) or not isinstance(plan[key], types):
            raise ValueError(f"{where}: {key!r} must be {_type_names(types)}, got {type(plan[key]).__name__}")
    if plan["pairing"] not in ("self", "swap"):
        raise ValueError(f"{where}: 'pairing' must be 'self' or 'swap', got {plan['pairing'][:40]!r}")
    if plan["pairing"] == "swap" and plan.get("warp") not in _WARPS:
        raise ValueError(f"{where}: 'warp' must be one of {', '.join(_WARPS)} for a swap, got {str(plan.get('warp'))[:40]!r}")
    for key, types in _MASK_FIELDS.items():
        if not isinstance(plan["mask"].get(key), types):
            raise ValueError(f"{where}: 'mask.{key}' must be {_type_names(types)}, got {str(plan['mask'].get(key))[:40]}")
    steps = [(k, s) for k in ("perturb", "source_degrade", "post") for s in plan[k]]
    target_degrade = plan.get("target_degrade", [])
    if not isinstance(target_degrade, list):
        raise ValueError(f"{where}: 'target_degrade' must be a list, got {type(target_degrade).__name__}")
    steps += [("target_degrade", s) for s in target_degrade]
    for k, step in steps:
        _check_step(step, f"{where}: {k!r}")
    _check_step(plan["blend"], f"{where}: 'blend'")
    if plan.get("color") is not None:
        _check_step(plan["color"], f"{where}: 'color'")


def real_is_crop(plan: Mapping[str, Any]) -> bool:
    """Whether :func:`render` returns the target crop itself as the real: the plan has no
    ``target_degrade`` and no post-process steps (then the real's PNG is the face's
    :meth:`FaceCache.crop_png`)."""
    return not plan["post"] and not plan.get("target_degrade")


def render(plan: Mapping[str, Any], faces: FaceCache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render ``plan`` -> (real uint8 SxSx3, fake uint8 SxSx3, mask uint8 SxS in 0..255).

    real is the target crop after the plan's ``target_degrade`` steps (none in plans without
    that key) and the post-process; fake is the source (warped onto the target for swaps,
    perturbed, degraded, colour-matched to the clean target) blended through the mask into
    that same degraded target, then post-processed identically; mask is the blend weight
    (255 = source). So a fake differs from its own real only where the mask is non-zero: a
    degraded background is a property of the photo, seen under both labels, not a label cue.
    A malformed plan raises ``ValueError`` naming the sample and the key (:func:`check_plan`).
    """
    check_plan(plan)
    size, scale = int(plan["size"]), float(plan["crop_scale"])
    target = faces.face(plan["target"], size, scale)
    if plan["pairing"] == "swap":
        src_face = faces.face(plan["source"], size, scale)
        matrix = _WARPS[plan["warp"]](src_face.landmarks, target.landmarks)
        source = warp_image(src_face.crop, matrix, (size, size))
    else:
        source = target.crop
    for step in plan["perturb"]:
        source = apply_step(step, source)
    for step in plan["source_degrade"]:
        source = apply_step(step, source)
    color = plan.get("color")
    if color:
        region = target.region if color.get("masked") else None
        source = apply_step(color, source, target.crop, mask=region, ref_mask=region)
    m = plan["mask"]
    mask = masklib.build_mask((size, size), target.landmarks, m["region"], m["params"])
    if m["occlusion"] != "none":
        occ = faces.occlusion(plan["target"], size, scale, m["occlusion"])
        mask = masklib.subtract_occlusion(mask, occ)
    if int(mask.max(initial=0)) < 128:
        raise DegenerateSample(f"sample {plan.get('index')}: mask is empty after "
                               f"{'occlusion subtraction' if m['occlusion'] != 'none' else 'deformation'}")
    real = target.crop
    for step in plan.get("target_degrade", []):
        real = apply_step(step, real)
    fake = apply_step(plan["blend"], source, real, mask)
    for step in plan["post"]:
        real = apply_step(step, real)
        fake = apply_step(step, fake)
    return real, fake, mask
