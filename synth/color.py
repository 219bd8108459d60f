"""Colour transfer from a reference (the target face) to an image (the source face).

Every method has the signature ``fn(image, reference, mask=None, ref_mask=None, **params)``:
``image`` and ``reference`` are uint8 HxWx3 RGB (their sizes may differ: only the
reference's statistics are used); the result is uint8 with ``image``'s shape.
Statistics of ``image`` come from the pixels where ``mask`` > 0.5 and those of
``reference`` from ``ref_mask`` > 0.5 (whole images when ``None``); the fitted
mapping is applied to the whole image, since the caller blends only the mask region.
Masks are HxW uint8 (0..255), bool or float in [0, 1]; an empty mask is a ``ValueError``.

Methods (``METHODS`` / ``transfer``):

- ``linear``: per-channel mean and standard deviation in RGB.
- ``reinhard``: mean and standard deviation per channel in CIE L*a*b* (Reinhard et al.
  2001), computed on float [0, 1] RGB for precision.
- ``idt``: iterative distribution transfer (Pitie et al. 2005): random 3-D rotations and
  1-D quantile matching of the projections.  Random: it takes ``rng`` (a
  ``np.random.Generator``) like the noise ops, so ``Op.random`` is true and the pipeline
  records the seed; the same seed gives the same output.
- ``histogram``: per-channel histogram matching, identical to
  ``skimage.exposure.match_histograms(image, reference, channel_axis=-1)`` when no mask is given.
"""
from __future__ import annotations

import cv2
import numpy as np

from ._checks import check_image, check_rng, mask_to_float, round_uint8
from ._rowsort import sort_rows
from .params import Op, Param

__all__ = ["linear_transfer", "reinhard_transfer", "idt_transfer", "histogram_transfer",
           "transfer", "METHODS", "OPS"]

# below this standard deviation a channel is treated as flat: shift it, do not rescale
_FLAT_STD = 1e-6


def _stats_mask(mask, shape, name: str) -> np.ndarray | None:
    """uint8 0/1 mask of the pixels used for statistics (``mask`` > 0.5), or None."""
    if mask is None:
        return None
    if isinstance(mask, np.ndarray) and mask.dtype == np.uint8 and mask.shape == tuple(shape):
        selected = mask > 127  # = mask / 255 > 0.5, without the float copy
    else:
        selected = mask_to_float(mask, shape, name) > 0.5
    if not selected.any():
        raise ValueError(f"{name}: empty mask (no pixel above 0.5), cannot compute colour statistics")
    return selected.view(np.uint8)


def _check_inputs(image, reference, mask, ref_mask):
    check_image(image)
    check_image(reference, "reference")
    m = _stats_mask(mask, image.shape[:2], "mask")
    if ref_mask is mask and reference.shape[:2] == image.shape[:2]:
        return m, m  # the generator passes the target's face region for both
    return m, _stats_mask(ref_mask, reference.shape[:2], "ref_mask")


def _mean_std(x: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    mean, std = cv2.meanStdDev(x, mask=mask)
    return mean.ravel(), std.ravel()


def _gain(std_src: np.ndarray, std_ref: np.ndarray) -> np.ndarray:
    flat = std_src < _FLAT_STD
    return np.where(flat, 1.0, std_ref / np.where(flat, 1.0, std_src))


def linear_transfer(image: np.ndarray, reference: np.ndarray, mask=None, ref_mask=None) -> np.ndarray:
    """Match the per-channel RGB mean and standard deviation of ``image`` to ``reference``.

    Parameters
    ----------
    image : numpy.ndarray, uint8 (H, W, 3), RGB
        The image to recolour (the source face).  Not modified.
    reference : numpy.ndarray, uint8 (H2, W2, 3), RGB
        The image whose colours are matched (the target face); any size, only its
        statistics are used.  Not modified.
    mask : numpy.ndarray, (H, W) or (H, W, 1), optional
        Pixels of ``image`` the statistics are taken from: those where ``mask > 0.5``
        (uint8 0..255: > 127; bool; float in [0, 1]).  Default None: every pixel.  The fitted
        mapping is applied to the whole image.
    ref_mask : numpy.ndarray, (H2, W2) or (H2, W2, 1), optional
        Likewise for ``reference``.  Default None: every pixel.

    Returns
    -------
    out : numpy.ndarray, uint8 (H, W, 3), RGB
        A new array of ``image``'s shape.

    Raises
    ------
    ValueError
        ``image`` or ``reference`` is not a numpy uint8 (H, W, 3) array with H, W >= 1; a
        mask is not a numpy array, does not match its image's H, W, has a dtype other than
        uint8, bool or floating, has float values outside [0, 1], or selects no pixel (none
        above 0.5).

    Notes
    -----
    Per channel, ``out = (x - mean_img) * std_ref / std_img + mean_ref`` with the (population)
    statistics of the selected pixels; a channel of ``image`` whose standard deviation is
    below 1e-6 is only shifted.  Applied as one 256-entry lookup table per channel, rounded
    half to even (``np.rint``) and clipped to 0..255.
    """
    m, rm = _check_inputs(image, reference, mask, ref_mask)
    mean_s, std_s = _mean_std(image, m)
    mean_r, std_r = _mean_std(reference, rm)
    gain = _gain(std_s, std_r)
    # affine per channel on uint8 = one 256-entry lookup table per channel
    levels = np.arange(256, dtype=np.float64)[:, None]
    lut = np.clip(np.rint((levels - mean_s) * gain + mean_r), 0, 255).astype(np.uint8)
    return cv2.LUT(image, lut[None])


def _to_lab(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB (any HxW) -> float32 OpenCV Lab of RGB scaled to [0, 1]."""
    return cv2.cvtColor(np.multiply(rgb, np.float32(1 / 255), dtype=np.float32), cv2.COLOR_RGB2LAB)


def reinhard_transfer(image: np.ndarray, reference: np.ndarray, mask=None, ref_mask=None) -> np.ndarray:
    """Match per-channel mean and standard deviation in CIE L*a*b* (Reinhard et al. 2001).

    Parameters
    ----------
    image : numpy.ndarray, uint8 (H, W, 3), RGB
        The image to recolour (the source face).  Not modified.
    reference : numpy.ndarray, uint8 (H2, W2, 3), RGB
        The image whose colours are matched (the target face); any size, only its
        statistics are used.  Not modified.
    mask : numpy.ndarray, (H, W) or (H, W, 1), optional
        Pixels of ``image`` the statistics are taken from: those where ``mask > 0.5``
        (uint8 0..255: > 127; bool; float in [0, 1]).  Default None: every pixel.  The fitted
        mapping is applied to the whole image.
    ref_mask : numpy.ndarray, (H2, W2) or (H2, W2, 1), optional
        Likewise for ``reference``.  Default None: every pixel.

    Returns
    -------
    out : numpy.ndarray, uint8 (H, W, 3), RGB
        A new array of ``image``'s shape.

    Raises
    ------
    ValueError
        ``image`` or ``reference`` is not a numpy uint8 (H, W, 3) array with H, W >= 1; a
        mask is not a numpy array, does not match its image's H, W, has a dtype other than
        uint8, bool or floating, has float values outside [0, 1], or selects no pixel (none
        above 0.5).

    Notes
    -----
    Works in OpenCV's float Lab (L in 0..100, a/b about -128..127) of the RGB values scaled
    to [0, 1], with the formula of :func:`linear_transfer` per Lab channel (a flat channel,
    std below 1e-6, is only shifted).  Colours that leave the RGB gamut are clipped by the
    Lab -> RGB conversion; the result is scaled by 255, rounded half to even and saturated.
    """
    m, rm = _check_inputs(image, reference, mask, ref_mask)
    lab = _to_lab(image)
    mean_s, std_s = _mean_std(lab, m)
    # only the reference's statistics matter: convert the selected pixels' bounding box and
    # take a masked meanStdDev (a boolean gather costs about one whole-image conversion)
    if rm is not None:
        x, y, w, h = cv2.boundingRect(rm)
        mean_r, std_r = _mean_std(_to_lab(reference[y:y + h, x:x + w]), rm[y:y + h, x:x + w])
    else:
        mean_r, std_r = _mean_std(_to_lab(reference), None)
    gain = _gain(std_s, std_r)
    # per-channel gain and offset in one pass (numpy broadcasting over the trailing
    # channel axis is several times slower)
    affine = np.hstack([np.diag(gain), (mean_r - mean_s * gain)[:, None]]).astype(np.float32)
    rgb = cv2.cvtColor(cv2.transform(lab, affine), cv2.COLOR_LAB2RGB)
    # float Lab->RGB clips to [0, 1], so |255 x| = 255 x: one pass that scales, rounds half
    # to even and saturates (10x cheaper than multiply + convert)
    return cv2.convertScaleAbs(rgb, alpha=255.0)


def _random_rotations(rng: np.random.Generator, n: int) -> np.ndarray:
    """n Haar-distributed 3x3 orthogonal matrices (QR of Gaussian matrices, signs fixed)."""
    q, r = np.linalg.qr(rng.standard_normal((n, 3, 3)))
    signs = np.sign(np.diagonal(r, axis1=1, axis2=2))
    return (q * signs[:, None, :]).astype(np.float32)


def _sample(pixels: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
    if len(pixels) <= n:
        return pixels
    return pixels[rng.choice(len(pixels), n, replace=False)]


_IDT_BINS = 256  # piecewise-linear 1-D maps on this many bins (Pitie et al. use ~300)
_IDT_SAMPLES = 4096  # pixels per image used for the quantiles (subsampled with rng)


def idt_transfer(image: np.ndarray, reference: np.ndarray, mask=None, ref_mask=None, *,
                 rng: np.random.Generator, n_iter: int = 10) -> np.ndarray:
    """Iterative distribution transfer (Pitie, Kokaram & Dahyot 2005), RGB in 0..255 units.

    Parameters
    ----------
    image : numpy.ndarray, uint8 (H, W, 3), RGB
        The image to recolour (the source face).  Not modified.
    reference : numpy.ndarray, uint8 (H2, W2, 3), RGB
        The image whose colours are matched (the target face); any size, only its
        statistics are used.  Not modified.
    mask : numpy.ndarray, (H, W) or (H, W, 1), optional
        Pixels of ``image`` the statistics are taken from: those where ``mask > 0.5``
        (uint8 0..255: > 127; bool; float in [0, 1]).  Default None: every pixel.  The fitted
        mapping is applied to the whole image.
    ref_mask : numpy.ndarray, (H2, W2) or (H2, W2, 1), optional
        Likewise for ``reference``.  Default None: every pixel.
    rng : numpy.random.Generator
        Keyword-only, required.  Draws the rotations and the pixel subsamples: the same
        generator state gives the same output.
    n_iter : int, optional
        Number of iterations (random rotations), an integer >= 1 (Python or numpy integer;
        a bool is refused).  Default 10.

    Returns
    -------
    out : numpy.ndarray, uint8 (H, W, 3), RGB
        A new array of ``image``'s shape.

    Raises
    ------
    ValueError
        ``image`` or ``reference`` is not a numpy uint8 (H, W, 3) array with H, W >= 1; a
        mask is not a numpy array, does not match its image's H, W, has a dtype other than
        uint8, bool or floating, has float values outside [0, 1], or selects no pixel (none
        above 0.5).
        Also: ``rng`` is not a ``numpy.random.Generator``; ``n_iter`` is not an integer >= 1.

    Notes
    -----
    Each iteration draws a random (Haar-distributed) 3-D rotation from ``rng``, projects the
    colours of both images on its 3 axes and moves every image pixel along each axis so that
    the 1-D distribution of the (masked) image pixels matches the reference's.  The 1-D maps
    are quantile maps estimated from up to 4096 selected pixels of each image (subsampled
    without replacement with ``rng``) and applied as 256-bin piecewise-linear lookup tables
    over the sampled image range; projections outside that range are translated like the
    nearest end.  Float32 throughout, rounded half to even and saturated at the end.
    """
    m, rm = _check_inputs(image, reference, mask, ref_mask)
    check_rng(rng)
    if isinstance(n_iter, (bool, np.bool_)) or not isinstance(n_iter, (int, np.integer)) or n_iter < 1:
        raise ValueError(f"n_iter: expected an integer >= 1, got {n_iter!r}")
    h, w = image.shape[:2]
    x = image.astype(np.float32)  # HxWx3, updated in place
    src_all = np.flatnonzero(m) if m is not None else np.arange(h * w)
    src_idx = np.sort(_sample(src_all, rng, _IDT_SAMPLES))  # sorted: cache-friendly gathers
    ref_flat = reference.reshape(-1, 3)
    if rm is None:
        ref_px = _sample(ref_flat, rng, _IDT_SAMPLES)
    else:  # sample indices, then gather: a boolean gather of every selected pixel costs ~0.4 ms
        ref_px = ref_flat[_sample(src_all if rm is m else np.flatnonzero(rm), rng, _IDT_SAMPLES)]
    ref_px = ref_px.astype(np.float32)
    q_src = (np.arange(len(src_idx)) + 0.5) / len(src_idx)
    q_ref = (np.arange(len(ref_px)) + 0.5) / len(ref_px)
    grid = np.arange(_IDT_BINS + 1) / _IDT_BINS
    # per-axis LUTs over 256 bins spanning the sampled image projections: displacement at
    # each bin's left knot and its change across the bin (a piecewise-linear map)
    disp0 = np.empty((1, _IDT_BINS, 3), np.float32)
    ddisp = np.empty((1, _IDT_BINS, 3), np.float32)
    to_bins = np.zeros((3, 4), np.float32)  # affine map: RGB -> bin coordinate per axis
    for rot in _random_rotations(rng, int(n_iter)):
        src_proj = sort_rows((x.reshape(-1, 3)[src_idx] @ rot).T)
        ref_proj = sort_rows((ref_px @ rot).T)
        for a in range(3):
            lo = float(src_proj[a, 0])
            span = max(float(src_proj[a, -1]) - lo, 1e-3)
            knots = lo + grid * span
            # quantile map: the reference quantile function of the image CDF at each knot
            target = np.interp(np.interp(knots, src_proj[a], q_src), q_ref, ref_proj[a])
            disp = target - knots
            disp0[0, :, a] = disp[:-1]
            ddisp[0, :, a] = np.diff(disp)
            to_bins[a, :3] = rot[:, a] * (_IDT_BINS / span)
            to_bins[a, 3] = -lo * _IDT_BINS / span
        t = cv2.transform(x, to_bins)
        # projections outside the sampled range keep the end displacement (a translation)
        cv2.threshold(t, 0, 0, cv2.THRESH_TOZERO, dst=t)  # max(t, 0)
        cv2.threshold(t, _IDT_BINS - 1e-3, 0, cv2.THRESH_TRUNC, dst=t)  # min(t, 255.999)
        idx = t.astype(np.uint8)
        cv2.subtract(t, idx, dst=t, dtype=cv2.CV_32F)  # fraction inside the bin
        t *= cv2.LUT(idx, ddisp)
        t += cv2.LUT(idx, disp0)
        x += cv2.transform(t, rot)  # displacement back to RGB
    return round_uint8(x)


def _histogram(image: np.ndarray, channel: int, mask: np.ndarray | None) -> np.ndarray:
    """int64 counts of the 256 levels of one channel (masked pixels only when ``mask``)."""
    return cv2.calcHist([image], [channel], mask, [256], [0, 256]).ravel().astype(np.int64)


def _match_lut(src_counts: np.ndarray, ref_counts: np.ndarray) -> np.ndarray:
    """256-entry lookup table matching one channel's CDF to the reference's.

    Same computation as skimage's ``_match_cumulative_cdf`` for unsigned integers
    (including truncation to uint8), so the unmasked result equals ``match_histograms``.
    """
    ref_values = np.flatnonzero(ref_counts)
    src_quantiles = np.cumsum(src_counts) / src_counts.sum()
    ref_quantiles = np.cumsum(ref_counts[ref_values]) / ref_counts.sum()
    return np.interp(src_quantiles, ref_quantiles, ref_values).astype(np.uint8)


def histogram_transfer(image: np.ndarray, reference: np.ndarray, mask=None, ref_mask=None) -> np.ndarray:
    """Per-channel histogram (CDF) matching of ``image`` to ``reference``.

    Parameters
    ----------
    image : numpy.ndarray, uint8 (H, W, 3), RGB
        The image to recolour (the source face).  Not modified.
    reference : numpy.ndarray, uint8 (H2, W2, 3), RGB
        The image whose colours are matched (the target face); any size, only its
        statistics are used.  Not modified.
    mask : numpy.ndarray, (H, W) or (H, W, 1), optional
        Pixels of ``image`` the statistics are taken from: those where ``mask > 0.5``
        (uint8 0..255: > 127; bool; float in [0, 1]).  Default None: every pixel.  The fitted
        mapping is applied to the whole image.
    ref_mask : numpy.ndarray, (H2, W2) or (H2, W2, 1), optional
        Likewise for ``reference``.  Default None: every pixel.

    Returns
    -------
    out : numpy.ndarray, uint8 (H, W, 3), RGB
        A new array of ``image``'s shape.

    Raises
    ------
    ValueError
        ``image`` or ``reference`` is not a numpy uint8 (H, W, 3) array with H, W >= 1; a
        mask is not a numpy array, does not match its image's H, W, has a dtype other than
        uint8, bool or floating, has float values outside [0, 1], or selects no pixel (none
        above 0.5).

    Notes
    -----
    Without masks the result equals ``skimage.exposure.match_histograms(image, reference,
    channel_axis=-1)``, including its truncation of matched values to uint8.  With masks the
    CDFs come from the masked pixels and the resulting per-channel maps (256-entry lookup
    tables) recolour every pixel.
    """
    m, rm = _check_inputs(image, reference, mask, ref_mask)
    lut = np.stack([_match_lut(_histogram(image, c, m), _histogram(reference, c, rm))
                    for c in range(3)], axis=-1)
    return cv2.LUT(image, lut[None])


METHODS = {
    "linear": linear_transfer,
    "reinhard": reinhard_transfer,
    "idt": idt_transfer,
    "histogram": histogram_transfer,
}


def transfer(image: np.ndarray, reference: np.ndarray, method: str, mask=None, ref_mask=None,
             **options) -> np.ndarray:
    """Colour-transfer ``image`` towards ``reference`` with the method named ``method``.

    Parameters
    ----------
    image : numpy.ndarray, uint8 (H, W, 3), RGB
        The image to recolour.
    reference : numpy.ndarray, uint8 (H2, W2, 3), RGB
        The image whose colours are matched; any size.
    method : {"linear", "reinhard", "idt", "histogram"}
        A key of :data:`METHODS`: :func:`linear_transfer`, :func:`reinhard_transfer`,
        :func:`idt_transfer` or :func:`histogram_transfer`.
    mask, ref_mask : numpy.ndarray, optional
        Statistics masks of ``image`` (H, W) and ``reference`` (H2, W2): uint8 0..255, bool
        or float in [0, 1]; pixels > 0.5 are used.  Default None: every pixel.
    **options
        Keyword arguments of the method: ``"idt"`` requires ``rng`` (a
        ``numpy.random.Generator``) and takes ``n_iter``; the others take none.

    Returns
    -------
    out : numpy.ndarray, uint8 (H, W, 3), RGB
        A new array of ``image``'s shape.

    Raises
    ------
    ValueError
        ``method`` is not a string key of :data:`METHODS`, or the method rejects its
        arguments.
    TypeError
        An option the method does not take, or ``"idt"`` without ``rng``.
    """
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"method: unknown colour transfer {method!r}; known: {sorted(METHODS)}")
    return METHODS[method](image, reference, mask, ref_mask, **options)


OPS: tuple[Op, ...] = (
    Op("linear", "color", linear_transfer, {}, doc="RGB mean/std transfer"),
    Op("reinhard", "color", reinhard_transfer, {}, doc="Lab mean/std transfer (Reinhard 2001)"),
    Op("idt", "color", idt_transfer, {
        "n_iter": Param("int", 1, 30, default=10, doc="random rotations"),
    }, random=True, doc="iterative distribution transfer (Pitie 2005)"),
    Op("histogram", "color", histogram_transfer, {}, doc="per-channel histogram matching"),
)
