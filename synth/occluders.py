"""Synthetic occluders: hands, bars, textures and patches drawn over a face (for benchmarks
of the occlusion estimators, see ``benchmarks/bench_occlusion.py``, and as augmentation).

:func:`sample_occluder` draws a plain JSON-able parameter dict; :func:`render_occluder` draws
it deterministically and returns the occluded image and the exact occluder alpha (uint8):
pixels outside the mask are untouched, ``out = (image * (255 - a) + layer * a) / 255`` inside.
Kinds (``OCCLUDERS``):

- ``hand``: palm ellipse plus finger capsules (and maybe a thumb), skin-toned (or glove)
  colour with a shading gradient and low-frequency mottling;
- ``bar``: a rounded bar (microphone, pen, glasses arm) of random colour, thickness, angle,
  with cylindrical shading;
- ``texture``: an ellipse or random convex polygon filled with coloured noise or stripes;
- ``patch``: an ellipse or polygon filled with pixels of a donor image (``donors`` list).
"""
from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

from ._checks import check_image, check_rng
from .face import check_landmarks, face_size
from .mask import convex_hull

__all__ = ["OCCLUDERS", "DEFAULT_KINDS", "sample_occluder", "render_occluder"]


def _lab_to_rgb(lab) -> list[int]:
    px = np.array([[[lab[0] * 255 / 100, lab[1] + 128, lab[2] + 128]]], np.float32)
    px = np.clip(np.rint(px), 0, 255).astype(np.uint8)
    return [int(v) for v in cv2.cvtColor(px, cv2.COLOR_LAB2RGB)[0, 0]]


def _skin_or_random_color(rng, p_skin: float) -> list[int]:
    if rng.random() < p_skin:
        return _lab_to_rgb([rng.uniform(30, 85), rng.uniform(6, 24), rng.uniform(8, 32)])
    return [int(v) for v in rng.integers(0, 256, 3)]


def _anchor(rng, lm) -> np.ndarray:
    """A random point on the face: a random landmark of the face interior."""
    return lm[int(rng.integers(0, len(lm)))].astype(np.float64)


def _round(v, nd=2):
    return [round(float(x), nd) for x in np.ravel(v)]


def _sample_hand(rng, lm, size, n_donors):
    c = _anchor(rng, lm)
    centre = lm.mean(0)
    # the hand comes from outside: fingers point roughly towards the face centre
    ang = rng.uniform(0, 2 * np.pi)
    palm_c = c + np.array([np.cos(ang), np.sin(ang)]) * rng.uniform(0.15, 0.45) * size
    to_face = np.arctan2(*(centre - palm_c)[::-1]) + rng.uniform(-0.8, 0.8)
    ax, ay = rng.uniform(0.16, 0.26) * size, rng.uniform(0.2, 0.32) * size
    palm = [*palm_c, ax, ay, np.degrees(to_face)]
    fingers = []
    radius = rng.uniform(0.035, 0.055) * size
    spread = rng.uniform(0.12, 0.3)
    for k in range(4):
        a = to_face + (k - 1.5) * spread
        base = palm_c + np.array([np.cos(a), np.sin(a)]) * ay * 0.75
        length = rng.uniform(0.22, 0.4) * size * (0.85 if k in (0, 3) else 1.0)
        tip = base + np.array([np.cos(a), np.sin(a)]) * length
        fingers.append(_round([*base, *tip, radius]))
    if rng.random() < 0.6:
        a = to_face + rng.choice([-1, 1]) * rng.uniform(1.0, 1.5)
        base = palm_c + np.array([np.cos(a), np.sin(a)]) * ax * 0.6
        tip = base + np.array([np.cos(a), np.sin(a)]) * rng.uniform(0.18, 0.28) * size
        fingers.append(_round([*base, *tip, radius * 1.15]))
    return {"palm": _round(palm), "fingers": fingers, "color": _skin_or_random_color(rng, 0.8),
            "shade": round(float(rng.uniform(0.1, 0.45)), 3), "shade_angle": round(float(rng.uniform(0, 360)), 2),
            "mottle": round(float(rng.uniform(2, 10)), 2)}


def _sample_bar(rng, lm, size, n_donors):
    c = _anchor(rng, lm)
    ang = rng.uniform(0, np.pi)
    half = rng.uniform(0.3, 0.75) * size
    d = np.array([np.cos(ang), np.sin(ang)]) * half
    return {"p0": _round(c - d), "p1": _round(c + d), "thickness": round(float(rng.uniform(0.04, 0.2) * size), 2),
            "color": _skin_or_random_color(rng, 0.1), "shade": round(float(rng.uniform(0.1, 0.5)), 3),
            "mottle": round(float(rng.uniform(0, 6)), 2)}


def _sample_shape(rng, lm, size):
    c = _anchor(rng, lm)
    if rng.random() < 0.5:
        return {"ellipse": _round([*c, rng.uniform(0.1, 0.3) * size, rng.uniform(0.1, 0.3) * size,
                                   rng.uniform(0, 180)])}
    k = int(rng.integers(5, 10))
    pts = c + rng.normal(0, 1, (k, 2)) * rng.uniform(0.1, 0.22) * size
    return {"polygon": [_round(p) for p in convex_hull(pts)]}


def _sample_texture(rng, lm, size, n_donors):
    p = _sample_shape(rng, lm, size)
    p.update(pattern=str(rng.choice(["noise", "stripes"])),
             colors=[_skin_or_random_color(rng, 0.1), _skin_or_random_color(rng, 0.1)],
             period=round(float(rng.uniform(0.03, 0.15) * size), 2), angle=round(float(rng.uniform(0, 180)), 2))
    return p


def _sample_patch(rng, lm, size, n_donors):
    p = _sample_shape(rng, lm, size)
    p.update(donor=int(rng.integers(0, n_donors)), offset=_round(rng.uniform(-0.5, 0.5, 2) * size),
             donor_scale=round(float(rng.uniform(0.7, 1.4)), 3))
    return p


def _shape_alpha(hw, p) -> np.ndarray:
    a = np.zeros(hw, np.uint8)
    if "ellipse" in p:
        cx, cy, ax, ay, ang = p["ellipse"]
        cv2.ellipse(a, ((cx, cy), (2 * ax, 2 * ay), ang), 255, -1, cv2.LINE_AA)
    else:
        pts = np.rint(np.array(p["polygon"], np.float64) * 16).astype(np.int32)
        cv2.fillPoly(a, [pts], 255, cv2.LINE_AA, shift=4)
    return a


def _gradient(hw, angle_deg: float) -> np.ndarray:
    """float32 HxW ramp in [-1, 1] along ``angle_deg``."""
    h, w = hw
    t = np.radians(angle_deg)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    g = xx * np.cos(t) + yy * np.sin(t)
    g -= g.min()
    return g / max(float(g.max()), 1e-6) * 2 - 1


def _smooth_noise(hw, seed: int, scale: float) -> np.ndarray:
    """float32 HxW low-frequency noise, unit-ish amplitude, correlation length ~``scale`` px."""
    h, w = hw
    s = max(2.0, scale)
    gh, gw = max(2, int(np.ceil(h / s)) + 1), max(2, int(np.ceil(w / s)) + 1)
    g = np.random.default_rng(seed).standard_normal((gh, gw)).astype(np.float32)
    return cv2.resize(g, (w, h), interpolation=cv2.INTER_CUBIC)


def _render_hand(image, p, seed, donors):
    hw = image.shape[:2]
    a = np.zeros(hw, np.uint8)
    cx, cy, ax, ay, ang = p["palm"]
    cv2.ellipse(a, ((cx, cy), (2 * ax, 2 * ay), ang + 90), 255, -1, cv2.LINE_AA)
    for x0, y0, x1, y1, r in p["fingers"]:
        cv2.line(a, (int(round(x0 * 16)), int(round(y0 * 16))), (int(round(x1 * 16)), int(round(y1 * 16))),
                 255, max(1, int(round(2 * r))), cv2.LINE_AA, shift=4)
    shade = 1.0 + p["shade"] * _gradient(hw, p["shade_angle"])
    layer = np.array(p["color"], np.float32) * shade[..., None]
    layer += _smooth_noise(hw, seed, 0.05 * max(hw))[..., None] * p["mottle"]
    # finger separations: slightly darker outlines of each finger
    sep = np.zeros(hw, np.uint8)
    for x0, y0, x1, y1, r in p["fingers"]:
        cv2.line(sep, (int(round(x0)), int(round(y0))), (int(round(x1)), int(round(y1))), 255,
                 max(1, int(round(2 * r))), cv2.LINE_AA)
    edges = cv2.morphologyEx(sep, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)).astype(np.float32) / 255
    layer *= (1 - 0.25 * edges)[..., None]
    return layer, a


def _render_bar(image, p, seed, donors):
    hw = image.shape[:2]
    a = np.zeros(hw, np.uint8)
    (x0, y0), (x1, y1) = p["p0"], p["p1"]
    cv2.line(a, (int(round(x0 * 16)), int(round(y0 * 16))), (int(round(x1 * 16)), int(round(y1 * 16))), 255,
             max(1, int(round(p["thickness"]))), cv2.LINE_AA, shift=4)
    # cylindrical shading across the bar: brightest on its axis
    d = np.array([x1 - x0, y1 - y0], np.float32)
    n = np.array([-d[1], d[0]]) / max(float(np.linalg.norm(d)), 1e-6)
    yy, xx = np.mgrid[0:hw[0], 0:hw[1]].astype(np.float32)
    t = np.clip(((xx - x0) * n[0] + (yy - y0) * n[1]) / max(p["thickness"] / 2, 0.5), -1, 1)
    shade = 1.0 + p["shade"] * (np.sqrt(1 - t ** 2) - 0.5)
    layer = np.array(p["color"], np.float32) * shade[..., None]
    layer += _smooth_noise(hw, seed, 0.05 * max(hw))[..., None] * p["mottle"]
    return layer, a


def _render_texture(image, p, seed, donors):
    hw = image.shape[:2]
    c0, c1 = np.array(p["colors"], np.float32)
    if p["pattern"] == "stripes":
        g = _gradient(hw, p["angle"]) * max(hw) / max(p["period"], 1.0) * np.pi
        t = (np.sin(g) + 1) / 2
    else:
        t = np.clip(_smooth_noise(hw, seed, p["period"]) * 0.35 + 0.5, 0, 1)
        t = np.clip(t + np.random.default_rng(seed + 1).normal(0, 0.08, hw).astype(np.float32), 0, 1)
    layer = c0 * (1 - t[..., None]) + c1 * t[..., None]
    return layer, _shape_alpha(hw, p)


def _render_patch(image, p, seed, donors):
    if donors is None or not 0 <= p["donor"] < len(donors):
        raise ValueError(f"occluder 'patch' needs donors with index {p['donor']}, got "
                         f"{'none' if donors is None else len(donors)}")
    donor = check_image(donors[p["donor"]], f"donors[{p['donor']}]")
    h, w = image.shape[:2]
    s = p["donor_scale"] * max(h, w) / max(donor.shape[:2])
    dx, dy = p["offset"]
    m = np.array([[s, 0, dx], [0, s, dy]], np.float64)
    layer = cv2.warpAffine(donor, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    return layer.astype(np.float32), _shape_alpha((h, w), p)


#: kind -> (sampler(rng, landmarks, face_size, n_donors) -> params,
#:          renderer(image, params, seed, donors) -> (colour layer float32 HxWx3, alpha uint8 HxW)).
OCCLUDERS: dict[str, tuple[Callable, Callable]] = {
    "hand": (_sample_hand, _render_hand),
    "bar": (_sample_bar, _render_bar),
    "texture": (_sample_texture, _render_texture),
    "patch": (_sample_patch, _render_patch),
}
DEFAULT_KINDS = ("hand", "bar", "texture", "patch")


def sample_occluder(rng: np.random.Generator, shape, landmarks, kinds=DEFAULT_KINDS, n_donors: int = 0) -> dict:
    """Draw a synthetic occluder for an image of ``shape`` (H, W) with ``landmarks``.

    kinds: occluder kinds to choose from (uniformly); ``"patch"`` needs ``n_donors > 0`` and
    is silently left out of the default kinds when there are no donors.
    Returns a JSON-able dict with ``kind``, ``seed``, ``shape`` and the geometry/colours.
    """
    check_rng(rng)
    lm = check_landmarks(landmarks)
    kinds = tuple(kinds)
    unknown = [k for k in kinds if k not in OCCLUDERS]
    if unknown or not kinds:
        raise ValueError(f"kinds: expected some of {sorted(OCCLUDERS)}, got {list(kinds)}")
    if n_donors <= 0:
        if kinds == DEFAULT_KINDS:
            kinds = tuple(k for k in kinds if k != "patch")
        elif "patch" in kinds:
            raise ValueError("kinds: 'patch' occluders need donor images (n_donors > 0)")
    kind = str(kinds[int(rng.integers(0, len(kinds)))])
    size = face_size(lm)
    params = OCCLUDERS[kind][0](rng, lm, size, n_donors)
    h, w = (int(v) for v in tuple(shape)[:2])
    return {"kind": kind, "seed": int(rng.integers(0, 2**31 - 1)), "shape": [h, w], **params}


def render_occluder(image: np.ndarray, params: dict, donors=None) -> tuple[np.ndarray, np.ndarray]:
    """Draw the occluder ``params`` on ``image`` (uint8 HxWx3 RGB).

    Returns ``(occluded uint8 HxWx3, alpha uint8 HxW)``; pixels with alpha 0 are unchanged.
    ``donors``: list of uint8 RGB images for ``"patch"`` occluders.
    """
    check_image(image)
    if not isinstance(params, dict) or params.get("kind") not in OCCLUDERS:
        raise ValueError(f"params: expected an occluder dict with kind in {sorted(OCCLUDERS)}")
    if list(params.get("shape", [])) != list(image.shape[:2]):
        raise ValueError(f"params['shape'] {params.get('shape')} does not match image shape {list(image.shape[:2])}")
    layer, alpha = OCCLUDERS[params["kind"]][1](image, params, int(params["seed"]), donors)
    layer = np.clip(np.rint(layer), 0, 255).astype(np.uint16)
    a = alpha.astype(np.uint16)[..., None]
    out = ((image.astype(np.uint16) * (255 - a) + layer * a + 127) // 255).astype(np.uint8)
    return out, alpha
