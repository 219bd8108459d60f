"""Source perturbations for self-blends (SBI-style mismatch of colour, sharpness and geometry).

A self-blended fake pastes a face onto *itself*; it only leaves traces if the pasted copy
differs slightly from the original.  These ops make that copy: small colour shifts,
sharpening and a small scale/shift.  All are deterministic given their parameters and
take/return uint8 HxWx3 RGB.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from synth._checks import check_image, round_uint8, to_uint8
from synth.params import Op, Param


def _levels() -> np.ndarray:
    return np.arange(256, dtype=np.float32)


def color_shift(image: np.ndarray, hue: float = 0.0, saturation: float = 0.0,
                brightness: float = 0.0, contrast: float = 0.0) -> np.ndarray:
    """Shift hue, saturation, brightness and contrast.

    Parameters
    ----------
    image : numpy.ndarray, uint8 (H, W, 3), RGB
        Not modified.
    hue : float, optional
        Hue shift in degrees (wraps around).  Default 0.0.
    saturation : float, optional
        Saturation is multiplied by ``1 + saturation`` (-1 desaturates fully; lower values
        also give 0).  Default 0.0.
    brightness : float, optional
        Added to every channel as ``brightness * 255`` gray levels.  Default 0.0.
    contrast : float, optional
        Deviation from the mean is multiplied by ``1 + contrast``.  Default 0.0.

    Returns
    -------
    out : numpy.ndarray, uint8 (H, W, 3), RGB
        A new array.

    Raises
    ------
    ValueError
        ``image`` is not a numpy uint8 (H, W, 3) array with H, W >= 1.

    Notes
    -----
    The four scalars are not validated (the recipe registry :data:`OPS` samples hue in
    [-60, 60], saturation and contrast in [-0.9, 2], brightness in [-0.5, 0.5]).

    In float32 on OpenCV's 8-bit full-range HSV: ``H' = (H + hue * 256/360) mod 256``,
    ``S' = S * (1 + saturation)``, each rounded (half to even) and clipped to uint8; back to
    RGB, then ``(x - mean) * (1 + contrast) + mean + brightness * 255`` with ``mean`` over
    all pixels and channels, rounded and clipped.  Every step maps uint8 levels to uint8
    levels, so each is one lookup table (bit-identical to the elementwise float32 formula).
    """
    check_image(image)
    levels = _levels()
    hue_lut = to_uint8(np.mod(levels + hue * 256.0 / 360.0, 256.0))
    sat_lut = to_uint8(levels * (1.0 + saturation))
    hsv_lut = np.stack([hue_lut, sat_lut, np.arange(256, dtype=np.uint8)], axis=-1)[None]
    hsv = cv2.LUT(cv2.cvtColor(image, cv2.COLOR_RGB2HSV_FULL), hsv_lut)
    rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB_FULL)
    mean = rgb.astype(np.float32).mean()  # float32 pairwise sum, as the elementwise formula
    return cv2.LUT(rgb, to_uint8((levels - mean) * (1.0 + contrast) + mean + brightness * 255.0))


def rgb_shift(image: np.ndarray, r: float = 0.0, g: float = 0.0, b: float = 0.0) -> np.ndarray:
    """Add a constant to each RGB channel.

    Parameters
    ----------
    image : numpy.ndarray, uint8 (H, W, 3), RGB
        Not modified.
    r, g, b : float, optional
        Offsets of the red, green and blue channels in gray levels (0..255 units).  Default
        0.0.  Not validated (the recipe registry :data:`OPS` samples them in [-128, 128]).

    Returns
    -------
    out : numpy.ndarray, uint8 (H, W, 3), RGB
        ``x + offset`` in float32, rounded half to even and clipped to 0..255 (applied as one
        per-channel lookup table); a new array.

    Raises
    ------
    ValueError
        ``image`` is not a numpy uint8 (H, W, 3) array with H, W >= 1.
    """
    check_image(image)
    lut = to_uint8(_levels()[:, None] + np.array([r, g, b], np.float32))
    return cv2.LUT(image, lut[None])


def sharpen(image: np.ndarray, amount: float = 0.5, sigma: float = 1.0) -> np.ndarray:
    """Unsharp mask: ``image + amount * (image - gaussian(image, sigma))``.

    Parameters
    ----------
    image : numpy.ndarray, uint8 (H, W, 3), RGB
        Not modified.
    amount : float, optional
        Weight of the detail added back, finite.  Default 0.5.  0 returns the image; a
        negative amount blurs.
    sigma : float, optional
        Standard deviation of the Gaussian in pixels, must be > 0.  Default 1.0.  OpenCV
        derives the kernel size from it; reflect-101 border.

    Returns
    -------
    out : numpy.ndarray, uint8 (H, W, 3), RGB
        Computed in float32, rounded half to even and saturated to 0..255; a new array.

    Raises
    ------
    ValueError
        ``image`` is not a numpy uint8 (H, W, 3) array with H, W >= 1; ``sigma`` is not a
        finite number > 0; ``amount`` is not finite.
    """
    check_image(image)
    if not 0 < sigma < math.inf:
        raise ValueError(f"sigma: must be a finite number > 0, got {sigma}")
    if not math.isfinite(amount):
        raise ValueError(f"amount: must be finite, got {amount}")
    img = image.astype(np.float32)
    detail = cv2.subtract(img, cv2.GaussianBlur(img, (0, 0), sigma))
    return round_uint8(cv2.scaleAdd(detail, float(amount), img))  # img + amount * detail


def affine_shift(image: np.ndarray, scale: float = 1.0, dx: float = 0.0, dy: float = 0.0,
                 angle: float = 0.0) -> np.ndarray:
    """Scale and rotate about the image centre, then shift.

    Parameters
    ----------
    image : numpy.ndarray, uint8 (H, W, 3), RGB
        Not modified.
    scale : float, optional
        Uniform scale factor about the centre (W / 2, H / 2), must be > 0.  Default 1.0.
    dx, dy : float, optional
        Shift as fractions of the width and height (positive: right, down), finite.
        Default 0.0.
    angle : float, optional
        Rotation in degrees, counter-clockwise on screen, finite.  Default 0.0.

    Returns
    -------
    out : numpy.ndarray, uint8 (H, W, 3), RGB
        Same size as ``image``; bilinear interpolation, borders reflected (OpenCV's
        reflect-101).  A new array.

    Raises
    ------
    ValueError
        ``image`` is not a numpy uint8 (H, W, 3) array with H, W >= 1; ``scale`` is not a
        finite number > 0; ``dx``, ``dy`` or ``angle`` is not finite.
    """
    check_image(image)
    if not 0 < scale < math.inf:
        raise ValueError(f"scale: must be a finite number > 0, got {scale}")
    for name, value in (("dx", dx), ("dy", dy), ("angle", angle)):
        if not math.isfinite(value):
            raise ValueError(f"{name}: must be finite, got {value}")
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), angle, scale)
    m[0, 2] += dx * w
    m[1, 2] += dy * h
    return cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


OPS = (
    Op("color_shift", "perturb", color_shift, {
        "hue": Param("float", -60.0, 60.0, default=0.0, doc="degrees"),
        "saturation": Param("float", -0.9, 2.0, default=0.0),
        "brightness": Param("float", -0.5, 0.5, default=0.0),
        "contrast": Param("float", -0.9, 2.0, default=0.0),
    }, doc="HSV hue/saturation shift plus brightness/contrast"),
    Op("rgb_shift", "perturb", rgb_shift, {
        "r": Param("float", -128.0, 128.0, default=0.0),
        "g": Param("float", -128.0, 128.0, default=0.0),
        "b": Param("float", -128.0, 128.0, default=0.0),
    }, doc="per-channel additive shift"),
    Op("sharpen", "perturb", sharpen, {
        "amount": Param("float", -1.0, 5.0, default=0.5),  # < 0 softens (-1: the blurred image)
        "sigma": Param("float", 0.3, 10.0, default=1.0),
    }, doc="unsharp mask"),
    Op("affine_shift", "perturb", affine_shift, {
        "scale": Param("float", 0.5, 1.5, default=1.0),
        "dx": Param("float", -0.25, 0.25, default=0.0),
        "dy": Param("float", -0.25, 0.25, default=0.0),
        "angle": Param("float", -45.0, 45.0, default=0.0),
    }, doc="small scale/rotation/shift of the pasted copy"),
)
