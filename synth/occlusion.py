"""Occlusion estimation: what covers the face?

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
``benchmarks/bench_occlusion.py`` for measured IoU per occluder kind (synthetic occluders
of :mod:`synth.occluders` on real faces).
"""
from __future__ import annotations

from typing import Callable, Protocol

import cv2
import numpy as np

from ._checks import check_image
from .face import FACE_OVAL, LEFT_BROW, LEFT_EYE, LIPS, RIGHT_BROW, RIGHT_EYE, check_landmarks, face_size
from .mask import convex_hull, enlarge_polygon, polygon_mask

__all__ = ["OcclusionEstimator", "ESTIMATORS", "get_estimator", "NoOcclusion", "SkinOcclusionEstimator",
           "face_oval_mask"]


class OcclusionEstimator(Protocol):
    def __call__(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """float32 HxW in [0, 1], 1 where the face is occluded."""


def face_oval_mask(shape, landmarks) -> np.ndarray:
    """Mask of the pixels inside the convex hull of the face oval.

    Parameters
    ----------
    shape : sequence of int
        (H, W) of the output; only the first two entries are read (``image.shape`` works),
        each converted with ``int`` and >= 1.
    landmarks : array_like, (468, 2)
        Face-mesh landmarks, (x, y) pixel coordinates; any integer or floating dtype, all
        finite.

    Returns
    -------
    mask : numpy.ndarray, bool (H, W)
        True inside the hull (filled by :func:`synth.mask.polygon_mask`).

    Raises
    ------
    ValueError
        ``landmarks`` is not of shape (468, 2), not numeric or not finite; ``shape`` does not
        give two integers >= 1.
    """
    lm = check_landmarks(landmarks)
    return polygon_mask(shape, [convex_hull(lm[FACE_OVAL])]) > 0


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
        oval_poly = convex_hull(lm[FACE_OVAL])
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
        oval_poly = convex_hull(lm[FACE_OVAL])
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
        zones = polygon_mask(ov.shape, [enlarge_polygon(convex_hull(lmc[idx]), f) for idx, f in
                                        ((LEFT_EYE, 1.6), (RIGHT_EYE, 1.6), (LEFT_BROW, 1.3), (RIGHT_BROW, 1.3),
                                         (LIPS, 1.15), (_NOSTRILS, 1.1))])
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
    """Build the occlusion estimator registered as ``name``.

    Parameters
    ----------
    name : {"skin", "none"}, optional
        A key of :data:`ESTIMATORS`.  Default ``"skin"``: :class:`SkinOcclusionEstimator`;
        ``"none"``: :class:`NoOcclusion`.
    **options
        Keyword arguments of the estimator's constructor.  ``"skin"``: ``threshold`` (> 0,
        default 16.0), ``keep`` ([0.2, 1], default 0.8), ``site_tol`` (>= 0, default 10.0),
        ``lum_floor`` (>= 0, default 400.0), ``chroma_floor`` (>= 0, default 4.0),
        ``min_area`` (>= 0, default 0.01), ``zone_margin`` (>= 0, default 0.03),
        ``work_size`` (int >= 32, default 128); see :class:`SkinOcclusionEstimator`.
        ``"none"`` takes none.

    Returns
    -------
    estimator : OcclusionEstimator
        A callable ``estimator(image, landmarks)``: ``image`` uint8 (H, W, 3) RGB,
        ``landmarks`` (468, 2) -> float32 (H, W) in [0, 1], 1 = occluded (both built-in
        estimators return exactly 0 or 1).

    Raises
    ------
    ValueError
        ``name`` is not a key of :data:`ESTIMATORS`, or an option is outside the range above.
    TypeError
        An option the estimator does not take.
    """
    if name not in ESTIMATORS:
        raise ValueError(f"occlusion estimator: expected one of {sorted(ESTIMATORS)}, got {name!r}")
    return ESTIMATORS[name](**options)
