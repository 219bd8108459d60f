"""Input validation shared by the op modules.

Every op takes images as uint8 HxWx3 RGB and masks as HxW (uint8 0..255, bool or
float in [0, 1]); these helpers turn bad input into a ``ValueError`` that names the
argument and what is wrong with it.
"""
from __future__ import annotations

import cv2
import numpy as np


def check_image(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Return ``image`` if it is a uint8 HxWx3 array, else raise ``ValueError`` naming ``name``."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"{name}: expected a numpy array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{name}: expected shape (H, W, 3), got {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"{name}: expected dtype uint8, got {image.dtype}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"{name}: empty image of shape {image.shape}")
    return image


def check_same_shape(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    """Raise ``ValueError`` if the spatial shapes (H, W) of ``a`` and ``b`` differ."""
    if a.shape[:2] != b.shape[:2]:
        raise ValueError(f"{name_a} {a.shape[:2]} and {name_b} {b.shape[:2]} must have the same height and width")


def mask_to_float(mask: np.ndarray, shape: tuple[int, int] | None = None, name: str = "mask") -> np.ndarray:
    """Convert a mask to float32 HxW in [0, 1].

    Accepts uint8 (0..255), bool, or float in [0, 1]; an HxWx1 mask is squeezed.
    ``shape`` (H, W), when given, must match.
    """
    if not isinstance(mask, np.ndarray):
        raise ValueError(f"{name}: expected a numpy array, got {type(mask).__name__}")
    if mask.ndim == 3 and mask.shape[2] == 1:
        mask = mask[..., 0]
    if mask.ndim != 2:
        raise ValueError(f"{name}: expected shape (H, W), got {mask.shape}")
    if shape is not None and mask.shape != tuple(shape):
        raise ValueError(f"{name}: shape {mask.shape} does not match image shape {tuple(shape)}")
    if mask.dtype == np.bool_:
        return mask.astype(np.float32)
    if mask.dtype == np.uint8:
        return mask.astype(np.float32) / 255.0
    if np.issubdtype(mask.dtype, np.floating):
        # min/max propagate NaN and a NaN fails both comparisons: one check, two passes
        if mask.size and not (mask.min() >= 0.0 and mask.max() <= 1.0):
            raise ValueError(f"{name}: float mask values must lie in [0, 1], got [{np.nanmin(mask):.3g}, {np.nanmax(mask):.3g}]")
        return mask.astype(np.float32, copy=False)
    raise ValueError(f"{name}: expected dtype uint8, bool or float, got {mask.dtype}")


def to_uint8(x: np.ndarray) -> np.ndarray:
    """Round and clip a float array to uint8 (values are in 0..255 units)."""
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def round_uint8(x: np.ndarray) -> np.ndarray:
    """``to_uint8`` (round half to even, saturate) for a float32 HxW or HxWxC (C <= 4) image in
    one OpenCV pass, ~3x faster."""
    return cv2.add(x, 0.0, dtype=cv2.CV_8U)


def check_choice(value, name: str, choices) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value`` is one of ``choices`` (a bool is
    never a choice, although ``True == 1``)."""
    if isinstance(value, (bool, np.bool_)) or value not in choices:
        raise ValueError(f"{name}: expected one of {list(choices)}, got {value!r}")


def check_rng(rng) -> np.random.Generator:
    """Return ``rng`` if it is a ``np.random.Generator``, else raise ``ValueError``."""
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng: expected numpy.random.Generator (np.random.default_rng(seed)), got {type(rng).__name__}")
    return rng
