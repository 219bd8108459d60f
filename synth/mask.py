"""Face region masks from landmarks, their random deformation, and occlusion subtraction.

Regions (``REGIONS``: name -> function(landmarks (468, 2)) -> list of (K, 2) float32 polygons):

- ``full``: convex hull of the face oval (forehead to chin).
- ``inner``: convex hull of brows, eyes, nose and lips (the classic "inner face" swap).
- ``lower``: the face-oval hull below the line through the lowest eye landmark, parallel
  to the inter-ocular axis (cheeks, nose tip, mouth, jaw, chin).
- ``eyes``: two polygons, each eye contour hull enlarged x1.5 about its centre (lids).
- ``nose``: hull of the nose landmarks (bridge between the eyes to the nostrils).
- ``mouth``: hull of the outer lip contour enlarged x1.2 about its centre.

Deformation (the SBI / "seed mask" idea of never reusing the exact landmark hull):
:func:`sample_mask_params` draws a plain JSON-able dict; :func:`build_mask` applies it
deterministically (same landmarks, region and params -> byte-identical mask), in this order:

1. ``jitter_px``/``jitter_seed``: every hull vertex moves by a uniform offset in
   [-jitter_px, jitter_px]^2 (offsets drawn from ``default_rng(jitter_seed)``);
2. ``scale``: the polygon is scaled about its centroid, then re-hulled (convex);
3. ``warp_px``/``warp_grid``/``warp_seed``: the outline, resampled to 96 points, is
   displaced by a smooth random field (bilinear interpolation of a (grid+1)^2 lattice of
   uniform [-warp_px, warp_px]^2 displacements spanning the polygon box) -> wavy edges;
4. fill (binary 0/255); ``morph_px``: dilate (> 0) or erode (< 0) by a disc of that radius;
5. ``feather``: Gaussian blur with that sigma (px); 0 keeps the mask binary.

Jitter, warp and morph ranges are given as fractions of the face size (longer side of the
landmark box) and resolved to pixels when sampling, so the recorded params are in pixels.
"""
from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

from ._checks import check_rng, mask_to_float
from .face import (
    CONTOURS,
    FACE_OVAL,
    LEFT_BROW,
    LEFT_EYE,
    LIPS,
    NOSE,
    RIGHT_BROW,
    RIGHT_EYE,
    check_landmarks,
    face_size,
)

__all__ = ["REGIONS", "DEFAULT_RANGES", "IDENTITY_PARAMS", "region_polygons", "polygon_mask",
           "sample_mask_params", "build_mask", "subtract_occlusion", "feather_mask", "region_size", "convex_hull",
           "enlarge_polygon"]

_SHIFT = 4  # fillPoly sub-pixel bits: vertices are rounded to 1/16 px
_OUTLINE_POINTS = 96


def convex_hull(pts: np.ndarray) -> np.ndarray:
    """Convex hull of a set of points.

    Parameters
    ----------
    pts : array_like, (N, 2)
        (x, y) points, N >= 1; converted to float32.

    Returns
    -------
    hull : numpy.ndarray, float32 (K, 2)
        The hull's vertices, in ``cv2.convexHull``'s order; a new array.
    """
    return cv2.convexHull(np.ascontiguousarray(pts, dtype=np.float32)).reshape(-1, 2)


def enlarge_polygon(poly: np.ndarray, factor: float) -> np.ndarray:
    """Scale a polygon about the mean of its vertices.

    Parameters
    ----------
    poly : numpy.ndarray, (K, 2)
        (x, y) vertices, any real dtype.  Not modified.
    factor : float
        Linear scale factor: 1 keeps the polygon, > 1 enlarges, < 1 shrinks.  Not validated.

    Returns
    -------
    out : numpy.ndarray, float32 (K, 2)
        ``c + (poly - c) * factor``, ``c`` the mean of the vertices; a new array.
    """
    c = poly.mean(axis=0)
    return (c + (poly - c) * factor).astype(np.float32)


def _clip_half_plane(poly: np.ndarray, normal: np.ndarray, t: float) -> np.ndarray:
    """Part of a convex polygon where ``p . normal >= t`` (Sutherland-Hodgman, one plane)."""
    out = []
    d = poly @ normal - t
    n = len(poly)
    for i in range(n):
        j = (i + 1) % n
        if d[i] >= 0:
            out.append(poly[i])
        if (d[i] >= 0) != (d[j] >= 0):
            a = d[i] / (d[i] - d[j])
            out.append(poly[i] + a * (poly[j] - poly[i]))
    return np.array(out, dtype=np.float32).reshape(-1, 2)


_INNER = np.concatenate([LEFT_BROW, RIGHT_BROW, LEFT_EYE, RIGHT_EYE, NOSE, LIPS])


def _outer_lips(lm: np.ndarray) -> np.ndarray:
    # The outer lip contour is the lips loop with the larger hull.
    loops = [lm[c] for c in CONTOURS["lips"]]
    return max(loops, key=lambda p: cv2.contourArea(convex_hull(p)))


def _lower(lm: np.ndarray) -> list[np.ndarray]:
    le, re = lm[LEFT_EYE].mean(0), lm[RIGHT_EYE].mean(0)
    axis = le - re
    axis = axis / max(float(np.linalg.norm(axis)), 1e-6)
    down = np.array([-axis[1], axis[0]], np.float32)
    if float((lm[LIPS].mean(0) - (le + re) / 2) @ down) < 0:
        down = -down
    t = float(np.max(lm[np.concatenate([LEFT_EYE, RIGHT_EYE])] @ down))
    return [_clip_half_plane(convex_hull(lm[FACE_OVAL]), down, t)]


#: region name -> function(landmarks float32 (468, 2)) -> list of float32 (K, 2) polygons.
REGIONS: dict[str, Callable[[np.ndarray], list[np.ndarray]]] = {
    "full": lambda lm: [convex_hull(lm[FACE_OVAL])],
    "inner": lambda lm: [convex_hull(lm[_INNER])],
    "lower": _lower,
    "eyes": lambda lm: [enlarge_polygon(convex_hull(lm[eye]), 1.5) for eye in (LEFT_EYE, RIGHT_EYE)],
    "nose": lambda lm: [convex_hull(lm[NOSE])],
    "mouth": lambda lm: [enlarge_polygon(convex_hull(_outer_lips(lm)), 1.2)],
}


def region_polygons(landmarks, region: str) -> list[np.ndarray]:
    """Polygons of a face region.

    Parameters
    ----------
    landmarks : array_like, (468, 2)
        Face-mesh landmarks, (x, y) pixel coordinates; any integer or floating dtype, all
        finite (converted to float32).
    region : {"full", "inner", "lower", "eyes", "nose", "mouth"}
        A key of :data:`REGIONS` (see the module docstring).

    Returns
    -------
    polygons : list of numpy.ndarray, float32 (K, 2)
        (x, y) vertices.  One polygon per region, two for ``"eyes"`` (the subject's left
        eye, then the right eye).

    Raises
    ------
    ValueError
        ``landmarks`` is not of shape (468, 2), not numeric or not finite; ``region``
        is not a key of :data:`REGIONS`.
    """
    if region not in REGIONS:
        raise ValueError(f"region: expected one of {sorted(REGIONS)}, got {region!r}")
    return REGIONS[region](check_landmarks(landmarks))


def _check_shape(shape) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in tuple(shape)[:2])
    except (TypeError, ValueError):
        raise ValueError(f"shape: expected (H, W), got {shape!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"shape: expected positive (H, W), got {shape!r}")
    return h, w


def polygon_mask(shape, polygons) -> np.ndarray:
    """Binary mask of polygons: 255 inside, 0 outside.

    Parameters
    ----------
    shape : sequence of int
        (H, W) of the output; only the first two entries are read (``image.shape`` works),
        each converted with ``int`` and >= 1.
    polygons : iterable of array_like, each (K, 2)
        (x, y) vertices in pixel coordinates (pixel centres at integers), all finite.
        Polygons with fewer than 3 vertices are skipped.

    Returns
    -------
    mask : numpy.ndarray, uint8 (H, W)
        Values exactly {0, 255} (no anti-aliasing); a new array.

    Raises
    ------
    ValueError
        ``shape`` does not give two integers >= 1; a polygon is not of shape (K, 2) or
        contains NaN or inf.

    Notes
    -----
    Polygons are filled as given (region functions already return convex hulls where
    appropriate), with vertices rounded to 1/16 px and clamped to
    [-4 max(H, W), 5 max(H, W)] so the fixed-point coordinates cannot overflow.  The mask
    is the union of the polygons: each is filled by its own ``cv2.fillPoly`` call, because
    one call over several polygons uses the even-odd rule and would leave their overlap 0
    (two eye polygons overlap at large ``scale``).  Within one polygon the even-odd rule
    remains: a part of an outline that winds twice around a point (only a strong ``warp``
    can bend the convex region outlines so) is left 0.
    """
    h, w = _check_shape(shape)
    mask = np.zeros((h, w), np.uint8)
    pts = []
    for i, p in enumerate(polygons):
        p = np.asarray(p, dtype=np.float64)
        if p.ndim != 2 or p.shape[1] != 2:
            raise ValueError(f"polygons[{i}]: expected shape (K, 2), got {p.shape}")
        if not np.isfinite(p).all():
            raise ValueError(f"polygons[{i}]: contains NaN or inf")
        if len(p) >= 3:
            # clamp far-away vertices so the fixed-point coordinates cannot overflow
            p = np.clip(p, -4 * max(h, w), 5 * max(h, w))
            pts.append(np.rint(p * (1 << _SHIFT)).astype(np.int32))
    for q in pts:
        cv2.fillPoly(mask, [q], 255, lineType=cv2.LINE_8, shift=_SHIFT)
    return mask


#: Default sampling ranges of :func:`sample_mask_params`: (low, high); real values are drawn in [low, high), warp_grid in [low, high].
DEFAULT_RANGES = {
    "jitter": (0.0, 0.03),   # max vertex offset, fraction of face size
    "scale": (0.85, 1.15),   # area-ish scale about the centroid (linear factor)
    "warp": (0.0, 0.02),     # smooth boundary displacement, fraction of face size
    "warp_grid": (2, 5),     # lattice cells per side of the warp field
    "morph": (-0.02, 0.02),  # erode (<0) / dilate (>0) radius, fraction of face size
    "feather": (0.0, 8.0),   # Gaussian sigma in pixels
}
_RANGE_LIMITS = {"jitter": (0.0, 0.5), "scale": (0.1, 4.0), "warp": (0.0, 0.5), "warp_grid": (1, 32),
                 "morph": (-0.5, 0.5), "feather": (0.0, 256.0)}

#: Parameters that leave the region polygon unchanged (binary hull mask).
IDENTITY_PARAMS = {"jitter_px": 0.0, "jitter_seed": 0, "scale": 1.0, "warp_px": 0.0, "warp_grid": 1,
                   "warp_seed": 0, "morph_px": 0, "feather": 0.0}


def _resolve_ranges(ranges: dict) -> dict:
    unknown = set(ranges) - set(DEFAULT_RANGES)
    if unknown:
        raise ValueError(f"unknown mask range(s) {sorted(unknown)}; expected some of {sorted(DEFAULT_RANGES)}")
    out = {}
    for k, default in DEFAULT_RANGES.items():
        r = ranges.get(k, default)
        if isinstance(r, (int, float)) and not isinstance(r, bool):
            r = (r, r)
        try:
            lo, hi = (float(v) for v in r)
        except (TypeError, ValueError):
            raise ValueError(f"{k}: expected a number or a (low, high) pair, got {r!r}") from None
        lim_lo, lim_hi = _RANGE_LIMITS[k]
        if not (lim_lo <= lo <= hi <= lim_hi):
            raise ValueError(f"{k}: expected {lim_lo} <= low <= high <= {lim_hi}, got ({lo}, {hi})")
        out[k] = (lo, hi)
    return out


def region_size(landmarks, region: str) -> float:
    """Size of a face region in pixels.

    Parameters
    ----------
    landmarks : array_like, (468, 2)
        Face-mesh landmarks, (x, y) pixel coordinates; any integer or floating dtype, all
        finite (converted to float32).
    region : {"full", "inner", "lower", "eyes", "nose", "mouth"}
        A key of :data:`REGIONS` (see the module docstring).

    Returns
    -------
    size : float
        The largest, over the region's polygons (:func:`region_polygons`), of the longer
        side of the polygon's bounding box.

    Raises
    ------
    ValueError
        ``landmarks`` is not of shape (468, 2), not numeric or not finite; ``region``
        is not a key of :data:`REGIONS`.
    """
    return float(max(np.ptp(q, axis=0).max() for q in region_polygons(landmarks, region)))


def sample_mask_params(rng: np.random.Generator, landmarks_or_face_size, region: str | None = None,
                       **ranges) -> dict:
    """Draw random deformation parameters for :func:`build_mask`.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of the draws, one each in the order of the returned keys.
    landmarks_or_face_size : array_like (468, 2) or float
        Reference size used to turn the fractional ranges (jitter, warp, morph) into
        pixels: a 0-d value is the size itself (finite, > 0); landmarks give the face size
        (:func:`synth.face.face_size`, the longer side of the landmark box) or, when
        ``region`` is given, that region's size (:func:`region_size`), so that small regions
        (eyes, mouth) are deformed in proportion instead of being eroded away.
    region : str, optional
        A key of :data:`REGIONS`; only used with landmarks.  Default None.
    **ranges
        Overrides of :data:`DEFAULT_RANGES` entries, each a fixed number (int or float, not
        bool) or a ``(low, high)`` pair with ``limit_low <= low <= high <= limit_high``:

        - ``jitter``: max vertex offset, fraction of the size; default (0, 0.03), limits
          [0, 0.5].
        - ``scale``: linear scale factor; default (0.85, 1.15), limits [0.1, 4].
        - ``warp``: boundary displacement, fraction of the size; default (0, 0.02), limits
          [0, 0.5].
        - ``warp_grid``: lattice cells per side of the warp field; default (2, 5), limits
          [1, 32] (the bounds are truncated to integers, both inclusive).
        - ``morph``: erode (< 0) / dilate (> 0) radius, fraction of the size; default
          (-0.02, 0.02), limits [-0.5, 0.5].
        - ``feather``: Gaussian sigma in pixels; default (0, 8), limits [0, 256].

    Returns
    -------
    params : dict
        Plain JSON-able values: ``"jitter_px"`` (float px, 4 decimals), ``"jitter_seed"``
        (int in [0, 2**31 - 2]), ``"scale"`` (float, 6 decimals), ``"warp_px"`` (float px,
        4 decimals), ``"warp_grid"`` (int), ``"warp_seed"`` (int in [0, 2**31 - 2]),
        ``"morph_px"`` (int px, rounded), ``"feather"`` (float px, 4 decimals).  Real
        values are drawn with ``rng.uniform(low, high)``.

    Raises
    ------
    ValueError
        ``rng`` is not a ``numpy.random.Generator``; a 0-d size is not finite or <= 0;
        invalid landmarks or region (see :func:`region_polygons`); an unknown range key, a
        range that is neither a number nor a pair of numbers, or one outside its limits or
        with low > high.
    """
    check_rng(rng)
    if np.ndim(landmarks_or_face_size) == 0:
        size = float(landmarks_or_face_size)
        if not np.isfinite(size) or size <= 0:
            raise ValueError(f"landmarks_or_face_size: expected a positive face size, got {landmarks_or_face_size!r}")
    elif region is not None:
        size = region_size(landmarks_or_face_size, region)
    else:
        size = face_size(landmarks_or_face_size)
    r = _resolve_ranges(ranges)
    u = lambda k: float(rng.uniform(*r[k]))  # noqa: E731
    return {
        "jitter_px": round(u("jitter") * size, 4),
        "jitter_seed": int(rng.integers(0, 2**31 - 1)),
        "scale": round(u("scale"), 6),
        "warp_px": round(u("warp") * size, 4),
        "warp_grid": int(rng.integers(int(r["warp_grid"][0]), int(r["warp_grid"][1]) + 1)),
        "warp_seed": int(rng.integers(0, 2**31 - 1)),
        "morph_px": int(round(u("morph") * size)),
        "feather": round(u("feather"), 4),
    }


def _check_params(params: dict) -> dict:
    if not isinstance(params, dict):
        raise ValueError(f"params: expected a dict, got {type(params).__name__}")
    missing = set(IDENTITY_PARAMS) - set(params)
    if missing:
        raise ValueError(f"params: missing key(s) {sorted(missing)}")
    p = {k: params[k] for k in IDENTITY_PARAMS}
    for k in ("jitter_px", "warp_px", "feather"):
        if not (np.isfinite(p[k]) and p[k] >= 0):
            raise ValueError(f"params[{k!r}]: expected a number >= 0, got {p[k]!r}")
    if not (np.isfinite(p["scale"]) and p["scale"] > 0):
        raise ValueError(f"params['scale']: expected a number > 0, got {p['scale']!r}")
    if int(p["warp_grid"]) < 1:
        raise ValueError(f"params['warp_grid']: expected an integer >= 1, got {p['warp_grid']!r}")
    return p


def _resample_closed(poly: np.ndarray, n: int) -> np.ndarray:
    """n points evenly spaced by arc length along the closed polygon."""
    closed = np.vstack([poly, poly[:1]]).astype(np.float64)
    seg = np.sqrt((np.diff(closed, axis=0) ** 2).sum(1))
    s = np.concatenate([[0.0], np.cumsum(seg)])
    if s[-1] <= 0:
        return poly.astype(np.float64)
    t = np.linspace(0.0, s[-1], n, endpoint=False)
    return np.stack([np.interp(t, s, closed[:, 0]), np.interp(t, s, closed[:, 1])], axis=1)


def _warp_points(pts: np.ndarray, box, grid: int, amp: float, seed: int) -> np.ndarray:
    lattice = np.random.default_rng(seed).uniform(-1.0, 1.0, (grid + 1, grid + 1, 2)) * amp
    x0, y0, x1, y1 = box
    u = np.clip((pts[:, 0] - x0) / max(x1 - x0, 1e-6) * grid, 0, grid)
    v = np.clip((pts[:, 1] - y0) / max(y1 - y0, 1e-6) * grid, 0, grid)
    i = np.minimum(u.astype(int), grid - 1)
    j = np.minimum(v.astype(int), grid - 1)
    fu, fv = (u - i)[:, None], (v - j)[:, None]
    d = (lattice[j, i] * (1 - fu) * (1 - fv) + lattice[j, i + 1] * fu * (1 - fv)
         + lattice[j + 1, i] * (1 - fu) * fv + lattice[j + 1, i + 1] * fu * fv)
    return pts + d


def build_mask(shape, landmarks, region: str, params: dict | None = None) -> np.ndarray:
    """Deformed mask of a face region.

    Parameters
    ----------
    shape : sequence of int
        (H, W) of the image the landmarks belong to, i.e. of the output; only the first two
        entries are read (``image.shape`` works), each converted with ``int`` and >= 1.
    landmarks : array_like, (468, 2)
        Face-mesh landmarks, (x, y) pixel coordinates; any integer or floating dtype, all
        finite (converted to float32).
    region : {"full", "inner", "lower", "eyes", "nose", "mouth"}
        A key of :data:`REGIONS` (see the module docstring).
    params : dict, optional
        Deformation parameters, as returned by :func:`sample_mask_params`; it must hold every
        key of :data:`IDENTITY_PARAMS` (other keys are ignored).  ``jitter_px``, ``warp_px``
        and ``feather`` must be finite and >= 0, ``scale`` finite and > 0, and
        ``int(warp_grid)`` >= 1; the seeds and ``morph_px`` are converted with ``int``.
        Default None: :data:`IDENTITY_PARAMS` (the plain region polygons, binary).

    Returns
    -------
    mask : numpy.ndarray, uint8 (H, W)
        0..255, exactly {0, 255} when ``feather`` < 0.3.  Deterministic: the same shape,
        landmarks, region and params give a byte-identical mask.

    Raises
    ------
    ValueError
        ``shape`` does not give two integers >= 1; ``params`` is not a dict, misses a key or
        has a value outside the ranges above; invalid ``landmarks`` or ``region`` (see
        :func:`region_polygons`).

    Notes
    -----
    The steps, in order (see the module docstring):

    1. jitter (when ``jitter_px`` > 0): each vertex moves by a uniform offset in
       [-jitter_px, jitter_px]^2, drawn for all polygons in turn from one
       ``numpy.random.default_rng(jitter_seed)``;
    2. scale about the vertex mean; after jitter or scaling the polygon is re-hulled
       (convex);
    3. warp (when ``warp_px`` > 0): each outline, resampled to 96 points evenly spaced by
       arc length, is displaced by a bilinear interpolation of a (warp_grid + 1)^2 lattice
       of uniform [-warp_px, warp_px]^2 offsets (``default_rng(warp_seed)``) spanning the
       box of all polygons;
    4. fill with :func:`polygon_mask`; ``morph_px`` != 0: dilate (> 0) or erode (< 0) with
       an elliptical structuring element of side ``2 * abs(morph_px) + 1``;
    5. ``feather`` >= 0.3: :func:`feather_mask` with that sigma (below 0.3 a Gaussian kernel
       is a no-op and the mask stays binary).
    """
    h, w = _check_shape(shape)
    p = _check_params(IDENTITY_PARAMS if params is None else params)
    polys = region_polygons(landmarks, region)
    jit = np.random.default_rng(int(p["jitter_seed"]))
    shaped = []
    for poly in polys:
        poly = poly.astype(np.float64)
        if p["jitter_px"] > 0:
            poly = poly + jit.uniform(-1.0, 1.0, poly.shape) * p["jitter_px"]
        if p["scale"] != 1.0:
            c = poly.mean(axis=0)
            poly = c + (poly - c) * p["scale"]
        if p["jitter_px"] > 0 or p["scale"] != 1.0:
            poly = convex_hull(poly).astype(np.float64)
        shaped.append(poly)
    if p["warp_px"] > 0:
        allp = np.vstack(shaped)
        box = (*allp.min(0), *allp.max(0))
        shaped = [_warp_points(_resample_closed(q, _OUTLINE_POINTS), box, int(p["warp_grid"]),
                               p["warp_px"], int(p["warp_seed"])) for q in shaped]
    mask = polygon_mask((h, w), shaped)
    r = int(p["morph_px"])
    if r != 0:
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * abs(r) + 1, 2 * abs(r) + 1))
        mask = cv2.dilate(mask, k) if r > 0 else cv2.erode(mask, k)
    if p["feather"] >= 0.3:  # below that a Gaussian kernel is a no-op
        mask = feather_mask(mask, float(p["feather"]))
    return mask


def feather_mask(mask: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of a mask, border replicated.

    Parameters
    ----------
    mask : numpy.ndarray, uint8 (H, W)
        0..255.  Not modified.
    sigma : float
        Standard deviation in pixels, finite and >= 0; the kernel has
        ``2 * ceil(3 * sigma) + 1`` taps (0: one tap, an unchanged copy).

    Returns
    -------
    out : numpy.ndarray, uint8 (H, W)
        A new array (OpenCV rounds to the nearest level).

    Raises
    ------
    ValueError
        ``sigma`` is negative, NaN or infinite.

    Notes
    -----
    A separable filter (``cv2.sepFilter2D``): ``cv2.GaussianBlur``'s bit-exact uint8 path is
    ~10x slower for large sigmas.  Only the bounding box of the nonzero pixels grown by the
    kernel radius is filtered: beyond it the result is 0 (all zeros within reach), and inside
    it the box edges are either zeros (replicated zeros) or the image edges, so the output is
    the same as filtering the whole image.  An all-zero mask returns zeros.
    """
    if not 0 <= sigma < np.inf:
        raise ValueError(f"sigma: must be a finite number >= 0, got {sigma}")
    radius = int(np.ceil(3.0 * sigma))
    k = cv2.getGaussianKernel(2 * radius + 1, sigma)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return np.zeros_like(mask)
    h, w = mask.shape[:2]
    box = np.s_[max(rows[0] - radius, 0):min(rows[-1] + radius + 1, h),
                max(cols[0] - radius, 0):min(cols[-1] + radius + 1, w)]
    out = np.zeros_like(mask)
    out[box] = cv2.sepFilter2D(np.ascontiguousarray(mask[box]), -1, k, k, borderType=cv2.BORDER_REPLICATE)
    return out


def subtract_occlusion(mask: np.ndarray, occlusion: np.ndarray) -> np.ndarray:
    """Remove occluded pixels from a mask: ``clip(mask - occlusion, 0, 1)`` in ``mask``'s dtype.

    Parameters
    ----------
    mask : numpy.ndarray, (H, W) or (H, W, 1)
        uint8 0..255, bool, or float in [0, 1].  Not modified.
    occlusion : numpy.ndarray, (H, W) or (H, W, 1)
        Same kinds (1 or 255 = occluded), same H and W as ``mask``; its dtype may differ
        from ``mask``'s.

    Returns
    -------
    out : numpy.ndarray, (H, W)
        In ``mask``'s dtype: uint8 in -> uint8 out (``round(255 * clip(m - o, 0, 1))``, half
        to even); float in -> the same float dtype (computed in float32); bool in -> bool
        (``m - o >= 0.5``).  A new array.

    Raises
    ------
    ValueError
        ``mask`` or ``occlusion`` is not a numpy array, not (H, W) or (H, W, 1), has a dtype
        other than uint8, bool or floating, or has float values outside [0, 1]; their H, W
        differ.
    """
    m = mask_to_float(mask, name="mask")
    o = mask_to_float(occlusion, m.shape, name="occlusion")
    if mask.dtype == np.uint8:  # m is a fresh float32 copy: the same arithmetic, in place
        out = np.clip(np.subtract(m, o, out=m), 0.0, 1.0, out=m)
        return np.rint(np.multiply(out, 255.0, out=out), out=out).astype(np.uint8)
    out = np.clip(m - o, 0.0, 1.0)
    if mask.dtype == np.bool_:
        return out >= 0.5
    return out.astype(mask.dtype)
