"""Tests for synth.perturb: the lookup-table ops equal their elementwise float32 formulas."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data

from synth import perturb as P


def _img(seed: int = 0) -> np.ndarray:
    face = cv2.resize(data.astronaut(), (96, 80), interpolation=cv2.INTER_AREA)
    noise = np.random.default_rng(seed).integers(-20, 21, face.shape)
    return np.clip(face.astype(int) + noise, 0, 255).astype(np.uint8)


def _round(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _color_shift_reference(image, hue, saturation, brightness, contrast):
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV_FULL).astype(np.float32)
    hsv[..., 0] = np.mod(hsv[..., 0] + hue * 256.0 / 360.0, 256.0)
    hsv[..., 1] *= 1.0 + saturation
    out = cv2.cvtColor(_round(hsv), cv2.COLOR_HSV2RGB_FULL).astype(np.float32)
    mean = out.mean()
    return _round((out - mean) * (1.0 + contrast) + mean + brightness * 255.0)


@pytest.mark.parametrize("params", [
    dict(hue=0.0, saturation=0.0, brightness=0.0, contrast=0.0),
    dict(hue=-8.0, saturation=0.2, brightness=-0.08, contrast=0.15),
    dict(hue=59.5, saturation=1.7, brightness=0.4, contrast=-0.8),
    dict(hue=-60.0, saturation=-0.9, brightness=-0.5, contrast=2.0),
])
def test_color_shift_equals_elementwise_formula(params):
    for seed in range(3):
        img = _img(seed)
        out = P.color_shift(img, **params)
        assert out.dtype == np.uint8 and out.shape == img.shape
        assert np.array_equal(out, _color_shift_reference(img, **params))


def test_color_shift_changes_colours():
    img = _img()
    assert not np.array_equal(P.color_shift(img, hue=20.0), img)
    assert P.color_shift(img, brightness=0.2).astype(int).mean() > img.mean() + 40


@pytest.mark.parametrize("rgb", [(0.0, 0.0, 0.0), (-15.0, 3.5, 14.5), (128.0, -128.0, 0.49)])
def test_rgb_shift_equals_elementwise_formula(rgb):
    img = _img()
    ref = _round(img.astype(np.float32) + np.array(rgb, np.float32))
    assert np.array_equal(P.rgb_shift(img, *rgb), ref)


@pytest.mark.parametrize("amount,sigma", [(0.0, 1.0), (0.5, 1.0), (1.0, 0.7), (5.0, 3.0), (-0.5, 1.2), (-1.0, 1.0)])
def test_sharpen_matches_unsharp_mask(amount, sigma):
    img = _img()
    f = img.astype(np.float32)
    ref = f + amount * (f - cv2.GaussianBlur(f, (0, 0), sigma))
    out = P.sharpen(img, amount=amount, sigma=sigma)
    # float32 evaluation order may move a value across a .5 tie: at most 1 level, rarely
    diff = np.abs(out.astype(int) - _round(ref))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
    if amount == 0.0:
        assert np.array_equal(out, img)


def test_bad_inputs():
    with pytest.raises(ValueError, match="sigma"):
        P.sharpen(_img(), sigma=0.0)
    with pytest.raises(ValueError, match="dtype"):
        P.color_shift(_img().astype(np.float32))
    with pytest.raises(ValueError, match="shape"):
        P.rgb_shift(_img()[..., 0])


@pytest.mark.parametrize("fn, kwargs, key", [
    (P.sharpen, {"amount": float("nan")}, "amount"),
    (P.sharpen, {"sigma": float("nan")}, "sigma"),
    (P.sharpen, {"sigma": float("inf")}, "sigma"),
    (P.affine_shift, {"scale": float("nan")}, "scale"),
    (P.affine_shift, {"dx": float("nan")}, "dx"),
    (P.affine_shift, {"dy": float("inf")}, "dy"),
    (P.affine_shift, {"angle": float("nan")}, "angle"),
])
def test_non_finite_parameters_are_refused_by_name(fn, kwargs, key):
    with pytest.raises(ValueError, match=f"^{key}: must be"):
        fn(np.zeros((8, 8, 3), np.uint8), **kwargs)
