"""Degradations ("non-real characteristics") applied to a source face before blending.

Blur, compression, resampling and noise ops.  Every op takes and returns a uint8
HxWx3 RGB image (the output has the input's shape) and raises ``ValueError`` naming
the argument on bad input.  Noise ops draw only from an explicit
``rng: np.random.Generator``.  The ops run per sample during mass generation (typically
at 256x256), so they use OpenCV on float32/uint8 arrays and avoid Python loops over
pixels.  Border handling is OpenCV's default (reflect-101) unless stated.

``OPS`` at the bottom registers every op with the domain of each parameter.
"""
from __future__ import annotations

import functools
import math
import numbers

import cv2
import numpy as np
from scipy.special import ndtri

from ._checks import check_choice, check_image, check_rng, round_uint8, to_uint8
from .params import Op, Param

__all__ = [
    "gaussian_blur", "mean_blur", "dual_blur", "bokeh_blur", "tilt_shift_blur", "motion_blur",
    "disc_kernel", "motion_kernel",
    "jpeg", "jpeg_ratio", "jpeg_quality_for_ratio",
    "downup", "INTERPOLATIONS",
    "gaussian_noise", "poisson_noise", "salt_pepper",
    "guided_smooth",
    "OPS",
]

KSIZES = (3, 5, 7, 9, 11)

INTERPOLATIONS = {
    "nearest": cv2.INTER_NEAREST,
    "linear": cv2.INTER_LINEAR,
    "cubic": cv2.INTER_CUBIC,
    "area": cv2.INTER_AREA,
    "lanczos": cv2.INTER_LANCZOS4,
}


# --------------------------------------------------------------------------- validation

def _check_number(value, name: str, low=None, high=None, *, integer: bool = False,
                  low_open: bool = False) -> float:
    """Return ``value`` if it is a real (or integer) number inside [low, high], else raise."""
    kinds = numbers.Integral if integer else numbers.Real
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, kinds):
        raise ValueError(f"{name}: expected {'an integer' if integer else 'a number'}, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    if low is not None and (value <= low if low_open else value < low):
        raise ValueError(f"{name}: must be {'>' if low_open else '>='} {low}, got {value!r}")
    if high is not None and value > high:
        raise ValueError(f"{name}: must be <= {high}, got {value!r}")
    return value


# --------------------------------------------------------------------------- blurs

def gaussian_blur(image: np.ndarray, ksize: int = 5, sigma: float = 0.0) -> np.ndarray:
    """Gaussian blur with a ``ksize`` x ``ksize`` kernel.

    Parameters
    ----------
    image : numpy.ndarray, uint8 (H, W, 3), RGB
        Not modified.
    ksize : {3, 5, 7, 9, 11}, optional
        Kernel side in pixels.  Default 5.
    sigma : float, optional
        Standard deviation in pixels, a finite real number >= 0.  Default 0, which derives
        it from ``ksize`` as OpenCV does: ``0.3 * ((ksize - 1) * 0.5 - 1) + 0.8``.

    Returns
    -------
    out : numpy.ndarray, uint8 (H, W, 3), RGB
        A new array (OpenCV's uint8 filter, reflect-101 border).

    Raises
    ------
    ValueError
        ``image`` is not a numpy uint8 (H, W, 3) array with H, W >= 1;
        ``ksize`` is not one of 3, 5, 7, 9, 11 (a bool is refused); ``sigma`` is
        not a real number (a bool is refused), not finite, or < 0.
    """
    check_image(image)
    check_choice(ksize, "ksize", KSIZES)
    _check_number(sigma, "sigma", 0.0)
    return cv2.GaussianBlur(image, (int(ksize), int(ksize)), float(sigma))


def mean_blur(image: np.ndarray, ksize: int = 5) -> np.ndarray:
    """Box (mean) blur with a ``ksize`` x ``ksize`` kernel.

    Parameters
    ----------
    image : numpy.ndarray, uint8 (H, W, 3), RGB
        Not modified.
    ksize : {3, 5, 7, 9, 11}, optional
        Kernel side in pixels.  Default 5.

    Returns
    -------
    out : numpy.ndarray, uint8 (H, W, 3), RGB
        A new array (``cv2.blur``, reflect-101 border).

    Raises
    ------
    ValueError
        ``image`` is not a numpy uint8 (H, W, 3) array with H, W >= 1;
        ``ksize`` is not one of 3, 5, 7, 9, 11 (a bool is refused).
    """
    check_image(image)
    check_choice(ksize, "ksize", KSIZES)
    return cv2.blur(image, (int(ksize), int(ksize)))


def _taps_kernel(positions, weights) -> tuple[np.ndarray, tuple[int, int]]:
    """Kernel and anchor equal to a weighted sum of bilinear samples, for ``cv2.filter2D``.

    ``positions`` are (dy, dx) offsets in pixels relative to the output pixel; a bilinear
    sample at a fractional offset spreads its weight over the 4 nearest pixels.  The
    kernel is trimmed to its non-zero support (always including offset 0 for the anchor).
    """
    weights = np.asarray(weights, np.float64) / np.sum(weights)
    taps: dict[tuple[int, int], float] = {}
    for (dy, dx), w in zip(positions, weights):
        y0, x0 = math.floor(dy), math.floor(dx)
        fy, fx = dy - y0, dx - x0
        for yy, wy in ((y0, 1 - fy), (y0 + 1, fy)):
            for xx, wx in ((x0, 1 - fx), (x0 + 1, fx)):
                if wy * wx > 0:
                    taps[yy, xx] = taps.get((yy, xx), 0.0) + w * wy * wx
    ys = [y for y, _ in taps] + [0]
    xs = [x for _, x in taps] + [0]
    kernel = np.zeros((max(ys) - min(ys) + 1, max(xs) - min(xs) + 1), np.float32)
    for (y, x), w in taps.items():
        kernel[y - min(ys), x - min(xs)] = w
    return kernel, (-min(xs), -min(ys))


@functools.lru_cache(maxsize=32)
def _dual_kernels(offset: float) -> tuple:
    """(down kernel, anchor) and the 4 up-pass phase kernels for one ``offset`` (cached)."""
    d = 0.5 * offset  # the shader's "halfpixel * offset", in source pixels
    down = _taps_kernel([(0.5, 0.5)] + [(0.5 + sy * d, 0.5 + sx * d) for sy in (-1, 1) for sx in (-1, 1)],
                        [4, 1, 1, 1, 1])
    up = {}
    for py in (0, 1):
        for px in (0, 1):
            by, bx = -0.25 + 0.5 * py, -0.25 + 0.5 * px
            up[py, px] = _taps_kernel([(by + ty * d, bx + tx * d) for (ty, tx), _ in _UP_TAPS],
                                      [wt for _, wt in _UP_TAPS])
    for kernel, _ in (down, *up.values()):
        kernel.flags.writeable = False
    return down, up


def _dual_down(src: np.ndarray, offset: float) -> np.ndarray:
    """One Kawase dual-filter downsample pass (H, W even -> H/2, W/2).

    Output pixel (i, j) samples the source at its centre (2i + 0.5, 2j + 0.5) with weight 4
    and at the 4 diagonal points offset by +-0.5*offset source pixels with weight 1 (/8),
    as the GPU shader does with bilinear, clamp-to-edge sampling.
    """
    kernel, anchor = _dual_kernels(float(offset))[0]
    return cv2.filter2D(src, -1, kernel, anchor=anchor, borderType=cv2.BORDER_REPLICATE)[::2, ::2]


_UP_TAPS = [((0, -2), 1), ((1, -1), 2), ((2, 0), 1), ((1, 1), 2),
            ((0, 2), 1), ((-1, 1), 2), ((-2, 0), 1), ((-1, -1), 2)]


def _dual_up(src: np.ndarray, offset: float) -> np.ndarray:
    """One Kawase dual-filter upsample pass (h, w -> 2h, 2w).

    Output pixel 2k + p sits at source coordinate k - 0.25 + 0.5p; it averages 8 bilinear
    samples at +-offset source pixels along the axes (weight 1) and +-offset/2 on the
    diagonals (weight 2).  Each of the 4 output phases is one filter2D at source size.
    """
    h, w, c = src.shape
    # Interleave the 4 phases; each pixel viewed as one opaque c*4-byte record, which
    # numpy copies about twice as fast as c strided floats.
    pixel = np.dtype((np.void, c * src.itemsize))
    out = np.empty((h, 2, w, 2), pixel)
    for (py, px), (kernel, anchor) in _dual_kernels(float(offset))[1].items():
        phase = cv2.filter2D(src, -1, kernel, anchor=anchor, borderType=cv2.BORDER_REPLICATE)
        out[:, py, :, px] = phase.view(pixel)[..., 0]
    return out.view(src.dtype).reshape(2 * h, 2 * w, c)


def dual_blur(image: np.ndarray, iterations: int = 2, offset: float = 1.0) -> np.ndarray:
    """Kawase dual-filter blur (Bjorge, SIGGRAPH 2015).

    ``iterations`` downsample passes (each halves the size) followed by as many upsample
    passes back to full size.

    Parameters
    ----------
    image : numpy.ndarray, uint8 (H, W, 3), RGB
        Not modified.
    iterations : int, optional
        Number of down/up pass pairs, an integer in [1, 8] (a bool is refused).  Default 2.
        The blur radius roughly doubles with each iteration.
    offset : float, optional
        Spread of the sampling taps in half source pixels, a finite real number in (0, 8].
        Default 1.0.

    Returns
    -------
    out : numpy.ndarray, uint8 (H, W, 3), RGB
        A new array of the input's shape.

    Raises
    ------
    ValueError
        ``image`` is not a numpy uint8 (H, W, 3) array with H, W >= 1;
        ``iterations`` is not an integer in [1, 8]; ``offset`` is not a finite
        real number in (0, 8] (a bool is refused).

    Notes
    -----
    A downsample pass samples each output pixel's centre (weight 4) and the 4 diagonal
    points at +-offset/2 source pixels (weight 1 each); an upsample pass averages 8 samples
    at +-offset source pixels along the axes (weight 1) and +-offset/2 on the diagonals
    (weight 2), all bilinear with clamp-to-edge sampling, as the GPU shader does.  The image
    is edge-padded (replicated) to a multiple of ``2**iterations`` and cropped back, so any
    size works.  Float32 throughout, rounded half to even and saturated once at the end.
    """
    check_image(image)
    _check_number(iterations, "iterations", 1, 8, integer=True)
    _check_number(offset, "offset", 0.0, 8.0, low_open=True)
    h, w = image.shape[:2]
    m = 2 ** int(iterations)
    ph, pw = -h % m, -w % m
    x = image.astype(np.float32)
    if ph or pw:
        x = cv2.copyMakeBorder(x, 0, ph, 0, pw, cv2.BORDER_REPLICATE)
    for _ in range(iterations):
        x = _dual_down(x, offset)
    for _ in range(iterations):
        x = _dual_up(x, offset)
    return round_uint8(x[:h, :w])


def disc_kernel(radius: float) -> np.ndarray:
    """Anti-aliased disc ("bokeh", circular aperture) kernel.

    Parameters
    ----------
    radius : float
        Disc radius in pixels, a finite real number > 0 (a bool is refused).

    Returns
    -------
    kernel : numpy.ndarray, float32 (2 n + 1, 2 n + 1)
        ``n = max(1, floor(radius + 0.5))``.  Pixel weight ``clip(radius + 0.5 - d, 0, 1)``
        (approximate pixel coverage), ``d`` the distance to the centre, normalised to sum
        to 1.

    Raises
    ------
    ValueError
        ``radius`` is not a finite real number > 0.
    """
    _check_number(radius, "radius", 0.0, low_open=True)
    half = max(1, int(math.floor(radius + 0.5)))
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1]
    kernel = np.clip(radius + 0.5 - np.hypot(yy, xx), 0.0, 1.0).astype(np.float32)
    return kernel / kernel.sum()


def bokeh_blur(image: np.ndarray, radius: float = 3.0) -> np.ndarray:
    """Lens (defocus) blur: convolution with an anti-aliased disc of ``radius`` pixels.

    Parameters
    ----------
    image : numpy.ndarray, uint8 (H, W, 3), RGB
        Not modified.
    radius : float, optional
        Disc radius in pixels (see :func:`disc_kernel`), a finite real number in (0, 64]
        (a bool is refused).  Default 3.0.

    Returns
    -------
    out : numpy.ndarray, uint8 (H, W, 3), RGB
        A new array.  Float32 ``cv2.filter2D`` (reflect-101 border), rounded half to even
        and saturated once.

    Raises
    ------
    ValueError
        ``image`` is not a numpy uint8 (H, W, 3) array with H, W >= 1;
        ``radius`` is not a finite real number in (0, 64].
    """
    check_image(image)
    _check_number(radius, "radius", 0.0, 64.0, low_open=True)
    # float32 filter2D: faster than the uint8 path and rounds once at the end.
    return round_uint8(cv2.filter2D(image.astype(np.float32), -1, disc_kernel(radius)))


def motion_kernel(length: int, angle: float) -> np.ndarray:
    """Linear motion-blur kernel.

    A box of ``length`` pixels centred on the kernel (for even lengths the two end pixels get
    weight 1/2), rotated by ``angle`` degrees (counter-clockwise on screen, 0 = horizontal)
    with bilinear interpolation (no rotation when ``angle`` is a multiple of 180).

    Parameters
    ----------
    length : int
        Blur length in pixels, an integer >= 1 (a bool is refused).
    angle : float
        Direction in degrees, any finite real number.

    Returns
    -------
    kernel : numpy.ndarray, float32 (k, k)
        ``k`` = ``length`` rounded up to odd; normalised to sum to 1.

    Raises
    ------
    ValueError
        ``length`` is not an integer >= 1; ``angle`` is not a finite real number (a bool is
        refused).
    """
    _check_number(length, "length", 1, integer=True)
    _check_number(angle, "angle")
    k = int(length) | 1
    kernel = np.zeros((k, k), np.float32)
    row = np.ones(k, np.float32)
    if length % 2 == 0:
        row[0] = row[-1] = 0.5
    kernel[k // 2] = row
    if angle % 180:
        c = (k - 1) / 2.0
        rot = cv2.getRotationMatrix2D((c, c), float(angle), 1.0)
        kernel = cv2.warpAffine(kernel, rot, (k, k), flags=cv2.INTER_LINEAR)
    return kernel / kernel.sum()


def motion_blur(image: np.ndarray, length: int = 7, angle: float = 0.0) -> np.ndarray:
    """Linear motion blur along ``angle`` degrees over ``length`` pixels.

    Parameters
    ----------
    image : numpy.ndarray, uint8 (H, W, 3), RGB
        Not modified.
    length : int, optional
        Blur length in pixels, an integer in [1, 128] (a bool is refused).  Default 7.
    angle : float, optional
        Direction in degrees, counter-clockwise on screen, 0 = horizontal; any finite real
        number.  Default 0.0.

    Returns
    -------
    out : numpy.ndarray, uint8 (H, W, 3), RGB
        A new array: float32 ``cv2.filter2D`` with :func:`motion_kernel` (reflect-101
        border), rounded half to even and saturated once.

    Raises
    ------
    ValueError
        ``image`` is not a numpy uint8 (H, W, 3) array with H, W >= 1;
        ``length`` is not an integer in [1, 128]; ``angle`` is not a finite real
        number.
    """
    check_image(image)
    _check_number(length, "length", 1, 128, integer=True)
    _check_number(angle, "angle")
    return round_uint8(cv2.filter2D(image.astype(np.float32), -1, motion_kernel(length, angle)))


def tilt_shift_blur(image: np.ndarray, band_center: float = 0.5, band_width: float = 0.3,
                    max_sigma: float = 3.0, angle: float = 0.0) -> np.ndarray:
    """Tilt-shift (miniature) blur: a sharp band, Gaussian blur growing away from it.

    Parameters
    ----------
    image : numpy.ndarray, uint8 (H, W, 3), RGB
        Not modified.
    band_center : float, optional
        Position of the band's centre line as a fraction of the image extent along the band's
        normal, in [0, 1]: 0 = top for ``angle`` 0, left for ``angle`` 90.  Default 0.5.
    band_width : float, optional
        Width of the sharp band as a fraction of that extent, in [0, 1].  Default 0.3.
    max_sigma : float, optional
        Gaussian sigma in pixels reached at the pixel farthest from the band, in [0, 32].
        Default 3.0.
    angle : float, optional
        Rotation of the band in degrees, counter-clockwise on screen (0 = horizontal band,
        90 = vertical band); any finite real number.  Default 0.0.

    Returns
    -------
    out : numpy.ndarray, uint8 (H, W, 3), RGB
        A new array; a copy of ``image`` when ``max_sigma`` is 0 or no pixel lies outside
        the band.

    Raises
    ------
    ValueError
        ``image`` is not a numpy uint8 (H, W, 3) array with H, W >= 1;
        a parameter is not a finite real number (a bool is refused) or lies
        outside its range above.

    Notes
    -----
    Outside the band the sigma grows linearly with the distance to the band.  It is
    implemented by blending ``n = min(6, max(1, ceil(max_sigma / 1.5)))`` progressively
    blurred float32 copies (sigmas ``max_sigma * k / n``, kernel side
    ``2 * ceil(3 sigma) + 1``) plus the sharp image, linearly by that distance; the sigma
    steps are <= 1.5 px up to ``max_sigma`` = 9 and ``max_sigma / 6`` above.  Rounded half
    to even and saturated once at the end.
    """
    check_image(image)
    _check_number(band_center, "band_center", 0.0, 1.0)
    _check_number(band_width, "band_width", 0.0, 1.0)
    _check_number(max_sigma, "max_sigma", 0.0, 32.0)
    _check_number(angle, "angle")
    h, w = image.shape[:2]
    t = math.radians(angle)
    ny, nx = math.cos(t), math.sin(t)  # unit normal of the band (y down)
    extent = abs(h * ny) + abs(w * nx)  # image extent along the normal
    yy = np.arange(h, dtype=np.float32)[:, None] - (h - 1) / 2.0
    xx = np.arange(w, dtype=np.float32)[None, :] - (w - 1) / 2.0
    dist = np.abs(yy * ny + xx * nx - (band_center - 0.5) * extent)
    dist = np.maximum(dist - 0.5 * band_width * extent, 0.0)
    far = float(dist.max())
    if max_sigma == 0 or far == 0:
        return image.copy()
    n_steps = min(6, max(1, math.ceil(max_sigma / 1.5)))
    # level position in [0, n_steps]: 0 = sharp copy, n_steps = max_sigma copy
    level = dist * np.float32(n_steps / far)
    img = image.astype(np.float32)  # float blurs with 3-sigma kernels beat OpenCV's uint8 path
    out = None
    # From the blurriest copy down to the sharp one: a pixel at level l in [k, k + 1] ends
    # as (k + 1 - l) * copy_k + (l - k) * copy_{k+1}; copies above keep weight 1, below 0.
    for k in range(n_steps, -1, -1):
        if k:
            sigma = max_sigma * k / n_steps
            ksize = 2 * math.ceil(3 * sigma) + 1
            copy = cv2.GaussianBlur(img, (ksize, ksize), sigma)
        else:
            copy = img
        if out is None:
            out = copy
            continue
        weight = np.minimum(np.maximum(np.float32(k + 1) - level, 0), 1)
        out = cv2.blendLinear(copy, out, weight, 1 - weight)
    return round_uint8(out)


# --------------------------------------------------------------------------- compression

def _encode_jpeg(image_bgr: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", image_bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("cv2.imencode failed to encode a JPEG")
    return buf


def _decode_jpeg(buf: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def jpeg(image: np.ndarray, quality: int = 75) -> np.ndarray:
    """JPEG round trip (encode, decode) through OpenCV/libjpeg.

    Parameters
    ----------
    image : numpy.ndarray, uint8 (H, W, 3), RGB
        Not modified.
    quality : int, optional
        JPEG quality, an integer in [1, 100] (a bool is refused).  Default 75.  OpenCV's
        default 4:2:0 chroma subsampling is used.

    Returns
    -------
    out : numpy.ndarray, uint8 (H, W, 3), RGB
        The decoded image, a new array.

    Raises
    ------
    ValueError
        ``image`` is not a numpy uint8 (H, W, 3) array with H, W >= 1;
        ``quality`` is not an integer in [1, 100].
    RuntimeError
        OpenCV failed to encode the image.
    """
    check_image(image)
    _check_number(quality, "quality", 1, 100, integer=True)
    return _decode_jpeg(_encode_jpeg(cv2.cvtColor(image, cv2.COLOR_RGB2BGR), quality))


def _search_quality(image: np.ndarray, ratio: float) -> tuple[int, float, np.ndarray]:
    """Binary search of the JPEG quality whose compressed size / raw size is closest to ratio."""
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    raw = float(image.size)
    cache: dict[int, np.ndarray] = {}

    def achieved(q: int) -> float:
        if q not in cache:
            cache[q] = _encode_jpeg(bgr, q)
        return cache[q].size / raw

    # Size grows (almost always) monotonically with quality: find the smallest quality
    # reaching the target, then keep it or its lower neighbour, whichever is closer.
    # lo = 0 and hi = 101 are virtual bounds (never encoded): about 7 encodes in all.
    lo, hi = 0, 101
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if achieved(mid) >= ratio:
            hi = mid
        else:
            lo = mid
    candidates = [q for q in (lo, hi) if 1 <= q <= 100]
    best = min(candidates, key=lambda q: (abs(achieved(q) - ratio), q))
    return best, achieved(best), cache[best]


def jpeg_quality_for_ratio(image: np.ndarray, ratio: float) -> tuple[int, float]:
    """Integer JPEG quality whose compressed size / raw size is closest to ``ratio``.

    Parameters
    ----------
    image : numpy.ndarray, uint8 (H, W, 3), RGB
        Not modified.
    ratio : float
        Target ratio compressed bytes / raw bytes (``H * W * 3``), a finite real number in
        (0, 1] (a bool is refused).

    Returns
    -------
    quality : int
        In [1, 100].  Ratios outside what quality 1..100 reaches give 1 or 100.
    achieved_ratio : float
        The ratio reached at ``quality``.

    Raises
    ------
    ValueError
        ``image`` is not a numpy uint8 (H, W, 3) array with H, W >= 1;
        ``ratio`` is not a finite real number in (0, 1].
    RuntimeError
        OpenCV failed to encode the image.

    Notes
    -----
    A binary search over qualities 1..100 (about 7 encodes) finds the smallest quality
    reaching ``ratio``; of it and the quality below, the one whose ratio is closer wins (the
    lower one on ties).  This relies on the size growing with quality, which it almost
    always does.
    """
    check_image(image)
    _check_number(ratio, "ratio", 0.0, 1.0, low_open=True)
    quality, achieved, _ = _search_quality(image, ratio)
    return quality, achieved


def jpeg_ratio(image: np.ndarray, ratio: float = 0.05) -> np.ndarray:
    """JPEG round trip at the quality whose compression ratio is closest to ``ratio``.

    Parameters
    ----------
    image : numpy.ndarray, uint8 (H, W, 3), RGB
        Not modified.
    ratio : float, optional
        Target ratio compressed bytes / raw bytes (``H * W * 3``), a finite real number in
        (0, 1] (a bool is refused).  Default 0.05.  The quality is chosen as in
        :func:`jpeg_quality_for_ratio` (about 7 encodes per call).

    Returns
    -------
    out : numpy.ndarray, uint8 (H, W, 3), RGB
        The decoded image, a new array.

    Raises
    ------
    ValueError
        ``image`` is not a numpy uint8 (H, W, 3) array with H, W >= 1;
        ``ratio`` is not a finite real number in (0, 1].
    RuntimeError
        OpenCV failed to encode the image.
    """
    check_image(image)
    _check_number(ratio, "ratio", 0.0, 1.0, low_open=True)
    _, _, buf = _search_quality(image, ratio)
    return _decode_jpeg(buf)


# --------------------------------------------------------------------------- resampling

def downup(image: np.ndarray, scale: float = 0.5, interpolation: str = "linear") -> np.ndarray:
    """Downscale by ``scale`` and resize back up to the original size.

    Parameters
    ----------
    image : numpy.ndarray, uint8 (H, W, 3), RGB
        Not modified.
    scale : float, optional
        Downscale factor, a finite real number in (0, 1] (a bool is refused).  Default 0.5.
        The intermediate image is ``max(1, round(W * scale))`` x ``max(1, round(H * scale))``
        (Python ``round``: half to even).
    interpolation : {"nearest", "linear", "cubic", "area", "lanczos"}, optional
        A key of :data:`INTERPOLATIONS`, used both ways.  Default ``"linear"``.  ``"linear"``
        and ``"nearest"`` downscaling alias like a naive resizer does.

    Returns
    -------
    out : numpy.ndarray, uint8 (H, W, 3), RGB
        A new array.

    Raises
    ------
    ValueError
        ``image`` is not a numpy uint8 (H, W, 3) array with H, W >= 1;
        ``scale`` is not a finite real number in (0, 1]; ``interpolation`` is not
        a key of :data:`INTERPOLATIONS`.
    """
    check_image(image)
    _check_number(scale, "scale", 0.0, 1.0, low_open=True)
    check_choice(interpolation, "interpolation", INTERPOLATIONS)
    h, w = image.shape[:2]
    flag = INTERPOLATIONS[interpolation]
    small = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=flag)
    return cv2.resize(small, (w, h), interpolation=flag)


# --------------------------------------------------------------------------- texture

def guided_smooth(image: np.ndarray, radius: int = 4, strength: float = 10.0) -> np.ndarray:
    """Edge-preserving smoothing: each channel through its own guided filter.

    Removes fine texture and sensor noise while keeping strong edges (eyes, lips, the
    face contour): the look of a face rendered by an autoencoder or a beautifying filter,
    which a blur (that softens edges as much as texture) does not give.  A local window
    whose standard deviation is well below ``strength`` is replaced by its mean; one
    well above it is kept (He et al., "Guided Image Filtering", 2013, with the image as
    its own guide).

    Parameters
    ----------
    image : numpy.ndarray, uint8 (H, W, 3), RGB
        Not modified.
    radius : int, optional
        Window radius in pixels, 1..16 (window side 2r+1).  Default 4.
    strength : float, optional
        Standard deviation, in 0..255 units, at which a window is half smoothed (the
        filter's regularisation is ``strength**2``); a finite real number in (0, 255].
        Default 10.

    Returns
    -------
    out : numpy.ndarray, uint8 (H, W, 3), RGB
        A new array (reflect-101 border); the same input gives the same bytes on every CPU.

    Raises
    ------
    ValueError
        ``image`` is not a numpy uint8 (H, W, 3) array with H, W >= 1; ``radius`` is
        not an integer in 1..16 (a bool is refused); ``strength`` is not a finite real
        number in (0, 255] (a bool is refused).
    """
    check_image(image)
    _check_number(radius, "radius", 1, 16, integer=True)
    _check_number(strength, "strength", 0.0, 255.0, low_open=True)
    window = (2 * int(radius) + 1,) * 2
    x = image.astype(np.float32)
    # cv2.boxFilter sums float32 input in float64 in a fixed order, so the bytes do not depend
    # on the SIMD width OpenCV picks (AVX-512, AVX2, SSE: tested with OPENCV_CPU_DISABLE)
    mean = cv2.boxFilter(x, -1, window)
    var = np.maximum(cv2.boxFilter(x * x, -1, window) - mean * mean, 0.0)
    a = var / (var + np.float32(strength) ** 2)
    b = mean * (1.0 - a)
    return to_uint8(cv2.boxFilter(a, -1, window) * x + cv2.boxFilter(b, -1, window))


# --------------------------------------------------------------------------- noise

@functools.lru_cache(maxsize=1)
def _normal_table() -> np.ndarray:
    """Standard normal quantiles at the 65536 midpoints (k + 0.5) / 65536 (read-only)."""
    table = ndtri((np.arange(65536) + 0.5) / 65536).astype(np.float32)
    table.flags.writeable = False
    return table


def _standard_normal(rng: np.random.Generator, shape) -> np.ndarray:
    """float32 N(0, 1) samples by inverse CDF of 16-bit uniforms (raw generator bits).

    About 4x faster than ``rng.standard_normal``; the discretisation (65536 levels,
    tails cut at +-4.17 sigma) is invisible after rounding to uint8.
    """
    n = math.prod(shape)
    bits = rng.bit_generator.random_raw((n + 3) // 4).view(np.uint16)[:n]
    return np.take(_normal_table(), bits.astype(np.intp)).reshape(shape)


def gaussian_noise(image: np.ndarray, rng: np.random.Generator, mean: float = 0.0,
                   sigma: float = 5.0) -> np.ndarray:
    """Additive Gaussian noise, independent per pixel and channel, in 0..255 units.

    Parameters
    ----------
    image : numpy.ndarray, uint8 (H, W, 3), RGB
        Not modified.
    rng : numpy.random.Generator
        Source of all random draws: the same generator state gives the same output.
    mean : float, optional
        Mean of the noise in gray levels, any finite real number (a bool is refused).
        Default 0.0.
    sigma : float, optional
        Standard deviation in gray levels, a finite real number >= 0.  Default 5.0.

    Returns
    -------
    out : numpy.ndarray, uint8 (H, W, 3), RGB
        ``image + noise``, rounded half to even and saturated to 0..255; a new array.

    Raises
    ------
    ValueError
        ``image`` is not a numpy uint8 (H, W, 3) array with H, W >= 1;
        ``rng`` is not a ``numpy.random.Generator``; ``mean`` is not a finite
        real number; ``sigma`` is not a finite real number >= 0.

    Notes
    -----
    Normal draws use an inverse-CDF table of 16-bit uniforms taken from the generator's raw
    bits (see ``_standard_normal``): 65536 levels, tails cut at +-4.17 sigma.
    """
    check_image(image)
    check_rng(rng)
    _check_number(mean, "mean")
    _check_number(sigma, "sigma", 0.0)
    noise = _standard_normal(rng, image.shape)
    noise *= sigma
    noise += mean
    # saturating add, round half to even: to_uint8(image + noise) up to float32 ties, faster
    return cv2.add(image, noise, dtype=cv2.CV_8U)


_POISSON_EXACT_BELOW = 16.0


def poisson_noise(image: np.ndarray, rng: np.random.Generator, peak: float = 1000.0) -> np.ndarray:
    """Shot (Poisson) noise: a pixel of value v collects Poisson(v / 255 * peak) photons.

    Parameters
    ----------
    image : numpy.ndarray, uint8 (H, W, 3), RGB
        Not modified.
    rng : numpy.random.Generator
        Source of all random draws: the same generator state gives the same output.
    peak : float, optional
        Photon count at white, a finite real number > 0 (a bool is refused).  Default
        1000.0.  Lower peak = noisier: the variance in gray levels is ``255 * v / peak``.

    Returns
    -------
    out : numpy.ndarray, uint8 (H, W, 3), RGB
        Photon counts scaled back by ``255 / peak``, rounded half to even and saturated to
        0..255; a new array.

    Raises
    ------
    ValueError
        ``image`` is not a numpy uint8 (H, W, 3) array with H, W >= 1;
        ``rng`` is not a ``numpy.random.Generator``; ``peak`` is not a finite real
        number > 0.

    Notes
    -----
    Means below 16 photons are drawn exactly with ``rng.poisson``; above, the Gaussian
    N(lam, lam) approximation is used (several times faster; its quantiles differ from
    Poisson's by about (z**2 - 1) / 6 photons, i.e. < 0.2 gray level at abs(z) < 2 for the
    default peak of 1000).
    """
    check_image(image)
    check_rng(rng)
    _check_number(peak, "peak", 0.0, low_open=True)
    lam = image.astype(np.float32) * np.float32(peak / 255.0)
    counts = _standard_normal(rng, image.shape)
    counts *= np.sqrt(lam)
    counts += lam
    low = lam < _POISSON_EXACT_BELOW
    if low.any():
        counts[low] = rng.poisson(lam[low])
    counts *= np.float32(255.0 / peak)
    return round_uint8(counts)


def salt_pepper(image: np.ndarray, rng: np.random.Generator, amount: float = 0.01,
                salt_ratio: float = 0.5) -> np.ndarray:
    """Impulse (salt-and-pepper) noise on whole pixels.

    Parameters
    ----------
    image : numpy.ndarray, uint8 (H, W, 3), RGB
        Not modified.
    rng : numpy.random.Generator
        Source of all random draws: the same generator state gives the same output.
    amount : float, optional
        Expected fraction of pixels hit, in [0, 1].  Default 0.01.
    salt_ratio : float, optional
        Fraction of the hit pixels set to white (the others are set to black), in [0, 1].
        Default 0.5.

    Returns
    -------
    out : numpy.ndarray, uint8 (H, W, 3), RGB
        A copy of ``image`` with the hit pixels set to (255, 255, 255) or (0, 0, 0) (all 3
        channels).

    Raises
    ------
    ValueError
        ``image`` is not a numpy uint8 (H, W, 3) array with H, W >= 1;
        ``rng`` is not a ``numpy.random.Generator``; ``amount`` or ``salt_ratio``
        is not a finite real number in [0, 1] (a bool is refused).

    Notes
    -----
    One float32 uniform ``u`` in [0, 1) per pixel: ``u < amount * salt_ratio`` -> white,
    ``amount * salt_ratio <= u < amount`` -> black.
    """
    check_image(image)
    check_rng(rng)
    _check_number(amount, "amount", 0.0, 1.0)
    _check_number(salt_ratio, "salt_ratio", 0.0, 1.0)
    u = rng.random(image.shape[:2], dtype=np.float32)
    out = image.copy()
    salt = amount * salt_ratio
    out[u < salt] = 255
    out[(u >= salt) & (u < amount)] = 0
    return out


# --------------------------------------------------------------------------- registry

_KSIZE = Param("int", choices=KSIZES, default=5, doc="kernel size (pixels)")

OPS: tuple[Op, ...] = (
    Op("gaussian_blur", "blur", gaussian_blur, {
        "ksize": _KSIZE,
        "sigma": Param("float", 0.0, 10.0, default=0.0, doc="pixels; 0 = derived from ksize"),
    }, doc="Gaussian blur"),
    Op("mean_blur", "blur", mean_blur, {"ksize": _KSIZE}, doc="box blur"),
    Op("dual_blur", "blur", dual_blur, {
        "iterations": Param("int", 1, 4, default=2, doc="down/up pass pairs"),
        "offset": Param("float", 0.5, 3.0, default=1.0, doc="tap spread (half source pixels)"),
    }, doc="Kawase dual-filter blur"),
    Op("bokeh_blur", "blur", bokeh_blur, {
        "radius": Param("float", 1.0, 8.0, default=3.0, doc="disc radius (pixels)"),
    }, doc="lens (disc) blur"),
    Op("tilt_shift_blur", "blur", tilt_shift_blur, {
        "band_center": Param("float", 0.0, 1.0, default=0.5, doc="fraction across the band"),
        "band_width": Param("float", 0.0, 1.0, default=0.3, doc="fraction of the image extent"),
        "max_sigma": Param("float", 0.5, 8.0, default=3.0, doc="sigma at the farthest pixel"),
        "angle": Param("float", -90.0, 90.0, default=0.0, doc="degrees, 0 = horizontal band"),
    }, doc="tilt-shift blur"),
    Op("motion_blur", "blur", motion_blur, {
        "length": Param("int", 3, 21, default=7, doc="pixels"),
        "angle": Param("float", 0.0, 180.0, default=0.0, doc="degrees, 0 = horizontal"),
    }, doc="linear motion blur"),
    Op("jpeg", "compression", jpeg, {
        "quality": Param("int", 1, 100, default=75),
    }, doc="JPEG at a quality"),
    Op("jpeg_ratio", "compression", jpeg_ratio, {
        "ratio": Param("float", 0.005, 1.0, default=0.05, doc="compressed / raw bytes"),
    }, doc="JPEG at a compression ratio"),
    Op("downup", "resample", downup, {
        "scale": Param("float", 0.1, 1.0, default=0.5),
        "interpolation": Param("choice", choices=tuple(INTERPOLATIONS), default="linear"),
    }, doc="downscale then upscale back"),
    Op("guided_smooth", "blur", guided_smooth, {
        "radius": Param("int", 1, 16, default=4, doc="window radius (pixels)"),
        "strength": Param("float", 0.5, 255.0, default=10.0, doc="0..255 units; texture below it is smoothed"),
    }, doc="edge-preserving smoothing (guided filter)"),
    Op("gaussian_noise", "noise", gaussian_noise, {
        "mean": Param("float", -20.0, 20.0, default=0.0, doc="0..255 units"),
        "sigma": Param("float", 0.0, 50.0, default=5.0, doc="0..255 units"),
    }, random=True, doc="additive Gaussian noise"),
    Op("poisson_noise", "noise", poisson_noise, {
        "peak": Param("float", 5.0, 10000.0, default=1000.0, doc="photons at white"),
    }, random=True, doc="shot noise"),
    Op("salt_pepper", "noise", salt_pepper, {
        "amount": Param("float", 0.0, 0.2, default=0.01, doc="fraction of pixels"),
        "salt_ratio": Param("float", 0.0, 1.0, default=0.5, doc="fraction of those set white"),
    }, random=True, doc="salt-and-pepper noise"),
)
