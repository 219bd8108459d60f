"""Occlusion estimation (what covers the face?) and synthetic occluders.

Estimators follow :class:`OcclusionEstimator`: ``est(image, landmarks) -> float32 HxW in
[0, 1]`` (1 = occluded), registered by name in ``ESTIMATORS``; :func:`get_estimator` builds
one. Swap masks are made occlusion-aware with ``synth.mask.subtract_occlusion``.

``"skin"`` (default, no weights): a colour model of the person's own visible skin.
Pixels are sampled around 29 landmarks on the cheeks, nose bridge, forehead and chin; only
sites whose colour agrees with the consensus site (the colour shared by the most face areas)
are used, and a robust Gaussian in CIE Lab (minimum-covariance-determinant style trimming)
is fitted to them, so that an occluder or hair covering some sites does not become "skin".
Every pixel inside the face oval is scored by Mahalanobis distance (lightness gets a large
variance floor: shading changes lightness far more than chroma). Pixels far from the skin
model are occluded, except in the eye, brow, mouth and nostril zones (not skin, yet not
occlusions) where a pixel only counts when it belongs to an occluded component that extends
well outside the zones. Morphological
opening/closing and removal of small components clean the result; output is binary (0/1).
Faces larger than ``work_size`` (128 px) are analysed downscaled. Limits: an occluder of the
person's own skin colour (their hand) is invisible to a colour model; see
``benchmarks/bench_occlusion.py`` for measured IoU per occluder kind.

Synthetic occluders (for benchmarks and as augmentation): :func:`sample_occluder` draws a
plain JSON-able parameter dict; :func:`render_occluder` draws it deterministically and
returns the occluded image and the exact occluder alpha (uint8): pixels outside the mask are
untouched, ``out = (image * (255 - a) + layer * a) / 255`` inside. Kinds (``OCCLUDERS``):

- ``hand``: palm ellipse plus finger capsules (and maybe a thumb), skin-toned (or glove)
  colour with a shading gradient and low-frequency mottling;
- ``bar``: a rounded bar (microphone, pen, glasses arm) of random colour, thickness, angle,
  with cylindrical shading;
- ``texture``: an ellipse or random convex polygon filled with coloured noise or stripes;
- ``patch``: an ellipse or polygon filled with pixels of a donor image (``donors`` list).
"""
from __future__ import annotations

from typing import Callable, Protocol

import cv2
import numpy as np

from ._checks import check_image, check_rng
from .face import FACE_OVAL, LEFT_BROW, LEFT_EYE, LIPS, RIGHT_BROW, RIGHT_EYE, check_landmarks, face_size
from .mask import polygon_mask

__all__ = ["OcclusionEstimator", "ESTIMATORS", "get_estimator", "NoOcclusion", "SkinOcclusionEstimator",
           "OCCLUDERS", "sample_occluder", "render_occluder", "face_oval_mask"]


class OcclusionEstimator(Protocol):
    def __call__(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """float32 HxW in [0, 1], 1 where the face is occluded."""


def face_oval_mask(shape, landmarks) -> np.ndarray:
    """bool HxW: inside the convex hull of the face oval."""
    lm = check_landmarks(landmarks)
    return polygon_mask(shape, [cv2.convexHull(lm[FACE_OVAL]).reshape(-1, 2)]) > 0


class NoOcclusion:
    """Estimator that reports nothing occluded (zeros)."""

    def __call__(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        check_image(image)
        check_landmarks(landmarks)
        return np.zeros(image.shape[:2], np.float32)


# Landmarks around which skin is sampled: cheeks (both), nose bridge, central forehead, chin.
_SKIN_SITES = np.array([50, 101, 118, 117, 123, 187, 205, 36, 142,
                        280, 330, 347, 346, 352, 411, 425, 266, 371,
                        6, 197, 195, 5, 151, 9, 108, 337, 199, 200, 175])
_NOSTRILS = np.array([98, 327, 2, 326, 97, 240, 460, 64, 294])


def _hull(pts):
    return cv2.convexHull(np.ascontiguousarray(pts, dtype=np.float32)).reshape(-1, 2)


def _enlarge(poly, f):
    c = poly.mean(0)
    return c + (poly - c) * f


class SkinOcclusionEstimator:
    """Occlusion = face-oval pixels unlike the person's own skin colour (see module doc).

    threshold: squared Mahalanobis distance (Lab) above which a pixel is not skin.
    keep: fraction of sampled pixels kept by the robust (trimmed) fit.
    site_tol: colour distance (Lab, lightness counted half) within which sample sites
        agree with the consensus site.
    lum_floor, chroma_floor: added to the L and a/b variances (Lab units^2): shading changes
        lightness far more than chroma, so lightness alone should rarely flag a pixel.
    min_area: components with less than this fraction of the face oval outside the
        (grown) eye/brow/mouth/nostril zones are dropped.
    zone_margin: growth of those zones (fraction of face size) for the area test.
    work_size: faces whose oval box is larger are analysed downscaled to this size (speed).
    """

    def __init__(self, threshold: float = 16.0, keep: float = 0.8, site_tol: float = 10.0,
                 lum_floor: float = 400.0, chroma_floor: float = 4.0, min_area: float = 0.01,
                 zone_margin: float = 0.03, work_size: int = 128):
        if not threshold > 0:
            raise ValueError(f"threshold: expected > 0, got {threshold}")
        if not 0.2 <= keep <= 1.0:
            raise ValueError(f"keep: expected 0.2..1, got {keep}")
        for name, v in [("site_tol", site_tol), ("lum_floor", lum_floor), ("chroma_floor", chroma_floor),
                        ("min_area", min_area), ("zone_margin", zone_margin)]:
            if not v >= 0:
                raise ValueError(f"{name}: expected >= 0, got {v}")
        self.threshold, self.keep, self.site_tol = float(threshold), float(keep), float(site_tol)
        self.lum_floor, self.chroma_floor = float(lum_floor), float(chroma_floor)
        self.min_area, self.zone_margin = float(min_area), float(zone_margin)
        self._trim = _trim_factor(self.keep)
        if int(work_size) < 32:
            raise ValueError(f"work_size: expected >= 32, got {work_size}")
        self.work_size = int(work_size)

    def _fit(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Robust mean/covariance of Lab samples x (N, 3): concentration steps on the closest
        ``keep`` fraction (minimum-covariance-determinant style)."""
        mu = np.median(x, axis=0)
        inv = np.diag(1.0 / (np.median(np.abs(x - mu), axis=0) * 1.4826 + 1.0) ** 2)
        h = max(8, int(self.keep * len(x)))
        for _ in range(3):
            dx = x - mu
            sel = x[np.argpartition(((dx @ inv) * dx).sum(1), h - 1)[:h]]
            mu = sel.mean(0)
            ds = sel - mu
            cov = ds.T @ ds / (h - 1)
            inv = _inv3(cov + np.eye(3) * 1e-3)
        # Consistency: the closest fraction `keep` of a Gaussian sample has a smaller spread.
        return mu, cov / self._trim + np.diag([self.lum_floor, self.chroma_floor, self.chroma_floor])

    def __call__(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """float32 HxW, 1.0 where occluded, 0.0 elsewhere (always 0 outside the face oval)."""
        check_image(image)
        lm = check_landmarks(landmarks)
        h, w = image.shape[:2]
        oval_poly = _hull(lm[FACE_OVAL])
        x0, y0 = np.maximum(np.floor(oval_poly.min(0)).astype(int) - 2, 0)
        x1, y1 = np.minimum(np.ceil(oval_poly.max(0)).astype(int) + 3, [w, h])
        side = max(x1 - x0, y1 - y0)
        if x1 - x0 < 4 or y1 - y0 < 4 or side <= self.work_size:
            return self._estimate(image, lm)
        # Large faces: estimate on the face region downscaled to work_size (the colour model
        # needs no more detail), then upscale the mask and cut it to the exact oval.
        s = self.work_size / side
        crop = image[y0:y1, x0:x1]
        cw, ch = max(4, round((x1 - x0) * s)), max(4, round((y1 - y0) * s))
        small = cv2.resize(crop, (cw, ch), interpolation=cv2.INTER_AREA)
        scale = np.array([cw / (x1 - x0), ch / (y1 - y0)], np.float32)
        m = self._estimate(small, (lm - [x0, y0] + 0.5) * scale - 0.5)
        out = np.zeros((h, w), np.float32)
        up = cv2.resize(m, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR) >= 0.5
        ov = polygon_mask((y1 - y0, x1 - x0), [oval_poly - [x0, y0]]) > 0
        out[y0:y1, x0:x1] = (up & ov).astype(np.float32)
        return out

    def _estimate(self, image: np.ndarray, lm: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        out = np.zeros((h, w), np.float32)
        size = face_size(lm)
        oval_poly = _hull(lm[FACE_OVAL])
        x0, y0 = np.maximum(np.floor(oval_poly.min(0)).astype(int), 0)
        x1, y1 = np.minimum(np.ceil(oval_poly.max(0)).astype(int) + 1, [w, h])
        if x1 - x0 < 4 or y1 - y0 < 4:
            return out
        shift = np.array([x0, y0], np.float32)
        ov = polygon_mask((y1 - y0, x1 - x0), [oval_poly - shift]) > 0
        # Lab in its usual units (L 0..100, a/b signed) = raw @ a.T + b
        raw = cv2.cvtColor(image[y0:y1, x0:x1], cv2.COLOR_RGB2LAB).astype(np.float32)
        a, b = np.diag(_LAB_SCALE), _LAB_OFFSET

        # Skin samples: discs around the sample sites whose colours agree with the
        # consensus site (the one whose colour is shared by the most face areas: an
        # occluder rarely covers both cheeks, the nose, the forehead and the chin at once).
        r = max(1, int(round(0.025 * size)))
        pts = np.rint(lm[_SKIN_SITES] - shift).astype(int)
        inside = (pts[:, 0] >= 0) & (pts[:, 1] >= 0) & (pts[:, 0] < ov.shape[1]) & (pts[:, 1] < ov.shape[0])
        if inside.sum() < 3:
            return out
        pts, groups = pts[inside], _SITE_GROUP[inside]
        site = cv2.blur(raw, (2 * r + 1, 2 * r + 1))[pts[:, 1], pts[:, 0]].astype(np.float64) @ a.T
        diff = (site[:, None, :] - site[None, :, :]) * _SITE_WEIGHT
        close = np.sqrt((diff ** 2).sum(-1)) <= self.site_tol  # (S, S)
        score = np.array([len(set(groups[c])) for c in close]) * 100 + close.sum(1)
        samp = np.zeros(ov.shape, np.uint8)
        for x, y in pts[close[int(np.argmax(score))]]:
            cv2.circle(samp, (int(x), int(y)), r, 1, -1)
        sy, sx = np.nonzero((samp > 0) & ov)
        if len(sy) < 16:
            return out
        step = max(1, len(sy) // 800)  # plenty of samples for 9 numbers
        mu, cov = self._fit(raw[sy[::step], sx[::step]].astype(np.float64) @ a.T + b)

        # d2 = |W (lab_units - mu)|^2 with W^T W = cov^-1, the Lab scaling folded into W;
        # cv2.transform is several times faster than numpy on HxWx3 float arrays.
        wm = np.linalg.cholesky(_inv3(cov)).T
        wa = np.hstack([wm @ a, (wm @ (b - mu))[:, None]]).astype(np.float32)
        white = cv2.transform(raw, wa)
        d2 = cv2.transform(cv2.multiply(white, white), np.ones((1, 3), np.float32))
        m = ((d2 > self.threshold) & ov).astype(np.uint8)

        k = max(1, int(round(0.012 * size)))
        disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1))
        m = cv2.morphologyEx(m, cv2.MORPH_OPEN, disc)
        m = cv2.morphologyEx(m, cv2.MORPH_CLOSE, disc)
        n, labels = cv2.connectedComponents(m, connectivity=8)
        if n <= 1:
            return out
        # Eyes, brows, mouth and nostrils are not skin, yet not occlusions: a component
        # counts only with enough area outside these zones (grown by zone_margin).
        lmc = lm - shift
        zones = polygon_mask(ov.shape, [_enlarge(_hull(lmc[LEFT_EYE]), 1.6), _enlarge(_hull(lmc[RIGHT_EYE]), 1.6),
                                        _enlarge(_hull(lmc[LEFT_BROW]), 1.3), _enlarge(_hull(lmc[RIGHT_BROW]), 1.3),
                                        _enlarge(_hull(lmc[LIPS]), 1.15), _enlarge(_hull(lmc[_NOSTRILS]), 1.1)])
        g = int(round(self.zone_margin * size))
        if g > 0:
            zones = cv2.dilate(zones, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * g + 1, 2 * g + 1)))
        outside = np.bincount(labels[zones == 0], minlength=n)
        keep = outside >= self.min_area * float(ov.sum())
        keep[0] = False
        out[y0:y1, x0:x1] = (keep[labels] & ov).astype(np.float32)
        return out


_SITE_GROUP = np.array([0] * 9 + [1] * 9 + [2] * 4 + [3] * 4 + [4] * 3)  # cheeks, nose, forehead, chin
_SITE_WEIGHT = np.array([0.5, 1.0, 1.0])  # lightness differences count half (shading)
_LAB_SCALE = np.array([100.0 / 255.0, 1.0, 1.0])  # OpenCV 8-bit Lab -> L 0..100, a/b signed
_LAB_OFFSET = np.array([0.0, -128.0, -128.0])


def _inv3(m: np.ndarray) -> np.ndarray:
    """Inverse of a 3x3 matrix by cofactors (np.linalg.inv / np.cross cost ~100x more for
    such a tiny matrix)."""
    (a, b, c), (d, e, f), (g, h, i) = m.tolist()
    co = np.array([[e * i - f * h, c * h - b * i, b * f - c * e],
                   [f * g - d * i, a * i - c * g, c * d - a * f],
                   [d * h - e * g, b * g - a * h, a * e - b * d]])
    return co / (a * co[0, 0] + b * co[1, 0] + c * co[2, 0])


def _trim_factor(keep: float) -> float:
    """E[d2 | d2 <= q_keep] / 3 for a chi-square(3) d2: the variance shrinkage of trimming."""
    if keep >= 1.0:
        return 1.0
    # chi2 cdf/ppf through the regularised incomplete gamma (scipy.stats costs seconds to import)
    from scipy.special import gammainc, gammaincinv

    q = 2.0 * gammaincinv(1.5, keep)  # chi2(3) quantile of `keep`
    return float(gammainc(2.5, q / 2.0) / keep)  # chi2(5) cdf at that quantile


#: name -> estimator factory (call with keyword options, returns an OcclusionEstimator).
ESTIMATORS: dict[str, Callable[..., OcclusionEstimator]] = {
    "none": NoOcclusion,
    "skin": SkinOcclusionEstimator,
}


def get_estimator(name: str = "skin", **options) -> OcclusionEstimator:
    """Build the estimator registered as ``name`` (see ``ESTIMATORS``)."""
    if name not in ESTIMATORS:
        raise ValueError(f"occlusion estimator: expected one of {sorted(ESTIMATORS)}, got {name!r}")
    return ESTIMATORS[name](**options)


# ---------------------------------------------------------------- synthetic occluders
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
    return {"polygon": [_round(p) for p in _hull(pts)]}


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
