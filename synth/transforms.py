"""albumentations transforms for the synth ops that albumentations does not have.

Put the generator's ops into an ``A.Compose`` pipeline::

    import albumentations as A
    from synth.transforms import SelfBlend, DualBlur, JpegRatio

    pipe = A.Compose([
        SelfBlend(recipe="self-blend", p=0.5),   # fake image + its mask under "mask"
        DualBlur(iterations=(1, 2), p=0.2),
        JpegRatio(ratio=(0.03, 0.15), p=0.3),
    ], seed=0)
    out = pipe(image=face, landmarks=lm, mask=np.zeros(face.shape[:2], np.uint8))
    is_fake = out["mask"].any()

Transforms and the synth function each one calls (nothing is reimplemented here):

================  ====================================  =========================================
transform         synth op                               data it reads besides ``image``
================  ====================================  =========================================
``SelfBlend``     ``synth.visibility.plan_and_render``  ``landmarks`` (or ``keypoints``, or none:
                  (the path of ``make_fake``)           detected); writes the mask to ``mask``
``ColorTransfer`` ``synth.color.transfer``              ``color_reference`` (+ optional masks)
``JpegRatio``     ``synth.degrade.jpeg_ratio``          -
``DualBlur``      ``synth.degrade.dual_blur``           -
``BokehBlur``     ``synth.degrade.bokeh_blur``          -
``TiltShiftBlur`` ``synth.degrade.tilt_shift_blur``     -
``GuidedSmooth``  ``synth.degrade.guided_smooth``       -
``PoissonBlend``  ``synth.blend.poisson_blend``         ``blend_source``, ``mask``
``PyramidBlend``  ``synth.blend.pyramid_blend``         ``blend_source``, ``mask``
``WaveletBlend``  ``synth.blend.wavelet_blend``         ``blend_source``, ``mask``
================  ====================================  =========================================

Conventions, as albumentations' own transforms:

- Ranges are validated when the transform is built (a pydantic ``InitSchema``; a bad value
  raises ``ValueError`` whose message names the parameter).  A range is ``(low, high)``,
  inclusive, drawn uniformly (integers: every integer in it); a single number means that
  value exactly.  A set of choices is a tuple of names (one name: that one), drawn uniformly.
- Parameters are drawn in ``get_params`` / ``get_params_dependent_on_data`` from the
  transform's own random state (``A.Compose(..., seed=...)`` sets it) and only then applied,
  so a pipeline with a fixed seed gives the same output every run, and
  ``A.ReplayCompose`` / ``save_applied_params=True`` record what was drawn.  Ops that draw
  random numbers themselves (IDT colour transfer, the self-blend plan) get an integer seed
  drawn there.
- albumentations 2.0.8's ``A.Compose(..., seed=s)`` gives every child transform the same
  seed, hence the same random stream: a transform is applied only when every one with a
  higher ``p`` is (and two with equal ``p`` together or not at all).  The transforms here derive their stream from ``s`` and their
  class name, so they are independent of the others (two instances of one class in one
  pipeline still share a stream).
- Every transform serialises with ``A.to_dict`` / ``A.save``; ``A.from_dict`` / ``A.load``
  find the classes once this module is imported (their registered name is
  ``synth.transforms.NAME``).
- Images are uint8 HxWx3 RGB (what every synth op takes; a float image is a ``ValueError``
  naming ``image``).  Masks are HxW uint8 0..255, bool, or float in [0, 1].

Ops albumentations already has
------------------------------
The generator's other ops have albumentations counterparts; use those in a pipeline.
``SelfBlend`` runs the synth versions inside its recipe (so its plans are the generator's),
and they are not the same functions:

- ``gaussian_blur``: ``A.GaussianBlur`` builds its own kernel and separable convolution, not
  ``cv2.GaussianBlur``; with the same kernel size and sigma the outputs differ by at most
  1 grey level (rounding).
- ``mean_blur``: equal to ``A.Blur``'s box blur (``albumentations...functional.box_blur``).
  synth has no median blur (``A.MedianBlur``).
- ``motion_blur``: synth's kernel is a centred, anti-aliased line (bilinear rotation, half
  weights at the ends of even lengths); ``A.MotionBlur`` rasterises the line's rounded
  points, and can bias the direction or shift the kernel.
- ``bokeh_blur`` vs ``A.Defocus``: see :class:`BokehBlur`.
- ``jpeg`` / ``jpeg_ratio`` vs ``A.ImageCompression``: see :class:`JpegRatio` (albumentations
  2.0 hands the RGB array to OpenCV as if it were BGR).
- ``downup``: equal to ``A.Downscale`` with the same interpolation both ways when
  ``W * scale`` and ``H * scale`` are whole numbers; otherwise albumentations resizes by the
  factor (``fx``/``fy``) and synth to the rounded size, a slightly different sampling grid.
- ``gaussian_noise``: sigma in 0..255 units, drawn through an inverse-CDF table of 16-bit
  uniforms (4x faster; the same distribution after rounding) - ``A.GaussNoise`` takes the
  standard deviation as a fraction of the maximum value and draws differently.
- ``poisson_noise``: photon counts of the stored (gamma-encoded) values, ``peak`` photons at
  white; ``A.ShotNoise`` works in linear light (gamma 2.2).
- ``salt_pepper``: each pixel independently with probability ``amount``;
  ``A.SaltAndPepper`` sets an exact number of pixels.
- ``rgb_shift`` (``A.RGBShift``), ``sharpen`` (an unsharp mask parameterised by sigma, without
  ``A.UnsharpMask``'s threshold; ``A.Sharpen`` uses a 3x3 kernel), ``color_shift``
  (``A.HueSaturationValue`` + ``A.RandomBrightnessContrast`` in one op, contrast about the
  image mean) and ``affine_shift`` (``A.Affine``; rotation about (W/2, H/2), reflect-101
  border) are the same ideas with synth's own parameterisation, recorded in plans.

The synth ops are kept (not swapped for albumentations' functional forms) because recorded
plans replay them bit for bit with ``synth replay``, whatever albumentations version is
installed.
"""
from __future__ import annotations

import copy
import functools
import hashlib
import json
import zlib
from typing import Annotated, Any, Literal, Sequence, Union

import cv2
import numpy as np
import pywt
from albumentations.core.transforms_interface import BaseTransformInitSchema, ImageOnlyTransform
from albumentations.core.type_definitions import Targets
from pydantic import AfterValidator

from synth import blend as _blend
from synth import color as _color
from synth import degrade as _degrade
from synth._checks import check_image, round_uint8

__all__ = [
    "SelfBlend", "self_blend", "ColorTransfer", "JpegRatio", "DualBlur", "BokehBlur", "TiltShiftBlur",
    "GuidedSmooth", "PoissonBlend", "PyramidBlend", "WaveletBlend",
]


# ------------------------------------------------------------------------------ validation
def _range(low: float | None, high: float | None, *, integer: bool = False, low_open: bool = False):
    """pydantic type of a ``(low, high)`` range (or one number) inside the op's domain."""

    def check(value):
        lo, hi = (value, value) if isinstance(value, (int, float)) else tuple(value)
        for v in (lo, hi):  # the ops' own domain check (finite, inside the bounds)
            _degrade._check_number(v, "each value", low, high, integer=integer, low_open=low_open)
        if lo > hi:
            raise ValueError(f"expected (low, high) with low <= high, got {value!r}")
        return (int(lo), int(hi)) if integer else (float(lo), float(hi))

    base = Union[tuple[int, int], int] if integer else Union[tuple[float, float], float]
    return Annotated[base, AfterValidator(check)]


def _choices(allowed: Sequence[str]):
    """pydantic type of a non-empty set of names from ``allowed`` (one name allowed)."""
    allowed = tuple(allowed)

    def check(value):
        names = (value,) if isinstance(value, str) else tuple(value)
        if not names:
            raise ValueError(f"expected at least one of {list(allowed)}")
        unknown = [n for n in names if n not in allowed]
        if unknown:
            raise ValueError(f"unknown {unknown}; expected names from {list(allowed)}")
        return names

    return Annotated[Union[str, tuple[str, ...]], AfterValidator(check)]


def _recipe_name(value: str) -> str:
    _pipeline_recipe(value)  # RecipeError (a ValueError) names the file, the key and the problem
    return value


_Iterations = _range(1, 8, integer=True)
_Offset = _range(0.0, 8.0, low_open=True)
_Radius = _range(0.0, 64.0, low_open=True)
_Fraction = _range(0.0, 1.0)
_SmoothRadius = _range(1, 16, integer=True)
_Strength = _range(0.0, 255.0, low_open=True)
_MaxSigma = _range(0.0, 32.0)
_Angle = _range(None, None)
_Ratio = _range(0.0, 1.0, low_open=True)
_NIter = _range(1, 100, integer=True)
_Levels = _range(1, 16, integer=True)
_ColorMethods = _choices(_color.METHODS)
_PoissonModes = _choices(_blend.POISSON_MODES)
_PoissonDomains = _choices(_blend.POISSON_DOMAINS)
_Wavelets = _choices(pywt.wavelist(kind="discrete"))
_Recipe = Annotated[str, AfterValidator(_recipe_name)]


def _int_in(low: int, high: int, *, optional: bool = False):
    """pydantic type of one integer in ``low..high`` (or None when ``optional``)."""

    def check(value):
        if value is not None and not low <= value <= high:
            raise ValueError(f"expected {'None or ' if optional else ''}an integer in {low}..{high}, got {value!r}")
        return value

    return Annotated[Union[int, None] if optional else int, AfterValidator(check)]


_CropSize = _int_in(8, 8192, optional=True)
_Retries = _int_in(1, 100)


def _data_array(data: dict[str, Any], key: str, owner: str) -> np.ndarray:
    value = data.get(key)
    if value is None:
        raise ValueError(f"{owner}: pass {key}=... to the pipeline call (the key {key!r} is missing or None)")
    return value


def _one_of(value, rng, key: str) -> tuple[int, np.ndarray]:
    """``(index, array)``: ``value`` itself (index 0) or one array of a non-empty sequence."""
    if isinstance(value, np.ndarray):
        return 0, value
    if not isinstance(value, Sequence) or not value or not all(isinstance(v, np.ndarray) for v in value):
        raise ValueError(f"{key}: expected an image array or a non-empty sequence of image arrays")
    i = rng.randrange(len(value))
    return i, value[i]


def _own_seed(seed: int, name: str) -> int:
    """Seed of transform class ``name`` under a pipeline seed: its own stream (see ``_SynthTransform``)."""
    state = np.random.SeedSequence([int(seed), zlib.crc32(f"synth.transforms.{name}".encode())]).generate_state(2)
    return int(state[0]) << 32 | int(state[1])


class _SynthTransform(ImageOnlyTransform):
    """Base of this module's transforms: a random stream of its own under a pipeline seed.

    albumentations 2.0's ``A.Compose(..., seed=s)`` seeds every child transform with the same
    ``s``, so their streams are identical: one is applied only when every one with a higher
    ``p`` is (a flip would come with every self-blend).  These transforms seed
    themselves from ``(s, class name)`` instead: still fixed by ``s``, independent of the
    other transforms of other classes.
    """

    def set_random_seed(self, seed: int | None) -> None:
        super().set_random_seed(None if seed is None else _own_seed(seed, type(self).__name__))
        self.seed = seed


# ------------------------------------------------------------------------------ blurs
class DualBlur(_SynthTransform):
    """Kawase dual-filter blur (:func:`synth.degrade.dual_blur`).

    ``iterations`` downsample passes (each halves the image) and as many upsample passes,
    taps spread by ``offset``; the blur radius roughly doubles per iteration.  albumentations
    has no such blur.

    Parameters
    ----------
    iterations : int or (int, int)
        Down/up pass pairs, drawn from this inclusive range; each in 1..8.
    offset : float or (float, float)
        Tap spread in half source pixels, drawn uniformly; each in (0, 8].
    p : float
        Probability of applying the transform.

    Notes
    -----
    Targets: image.  Image types: uint8 HxWx3 RGB; the output has the input's shape and dtype.
    Defaults are the ``mixed`` recipe's ranges.
    """

    class InitSchema(BaseTransformInitSchema):
        iterations: _Iterations
        offset: _Offset

    def __init__(self, iterations: tuple[int, int] | int = (1, 2), offset: tuple[float, float] | float = (0.5, 1.5),
                 p: float = 0.5):
        super().__init__(p=p)
        self.iterations = iterations
        self.offset = offset

    def get_params(self) -> dict[str, Any]:
        return {"iterations": self.py_random.randint(*self.iterations), "offset": self.py_random.uniform(*self.offset)}

    def apply(self, img: np.ndarray, iterations: int, offset: float, **params: Any) -> np.ndarray:
        return _degrade.dual_blur(img, iterations=iterations, offset=offset)


class BokehBlur(_SynthTransform):
    """Lens blur with an anti-aliased disc of a real-valued radius (:func:`synth.degrade.bokeh_blur`).

    Differs from ``A.Defocus``: albumentations' disc has an integer radius, is a hard
    (aliased) disc on a grid of at least 17x17 smoothed by a Gaussian ``alias_blur``; synth's
    kernel weights each pixel by its approximate coverage of a disc of any radius > 0, with
    no extra Gaussian, so a radius of 1.5 is a 1.5-pixel defocus and the strength varies
    continuously with the drawn radius.  That is the blur the generator's ``bokeh_blur`` step
    applies; ``A.Defocus`` is the choice when its softer, Gaussian-smoothed disc is wanted.

    Parameters
    ----------
    radius : float or (float, float)
        Disc radius in pixels, drawn uniformly; each in (0, 64].
    p : float
        Probability of applying the transform.

    Notes
    -----
    Targets: image.  Image types: uint8 HxWx3 RGB; output of the same shape and dtype.
    """

    class InitSchema(BaseTransformInitSchema):
        radius: _Radius

    def __init__(self, radius: tuple[float, float] | float = (1.0, 3.0), p: float = 0.5):
        super().__init__(p=p)
        self.radius = radius

    def get_params(self) -> dict[str, Any]:
        return {"radius": self.py_random.uniform(*self.radius)}

    def apply(self, img: np.ndarray, radius: float, **params: Any) -> np.ndarray:
        return _degrade.bokeh_blur(img, radius=radius)


class TiltShiftBlur(_SynthTransform):
    """Tilt-shift (miniature) blur: a sharp band, Gaussian blur growing away from it
    (:func:`synth.degrade.tilt_shift_blur`).  albumentations has no such blur.

    Parameters
    ----------
    band_center : float or (float, float)
        Centre of the sharp band as a fraction across it (0 = top for angle 0), drawn
        uniformly; each in [0, 1].
    band_width : float or (float, float)
        Width of the sharp band, fraction of the image extent across the band; each in [0, 1].
    max_sigma : float or (float, float)
        Gaussian sigma (pixels) reached at the pixel farthest from the band; each in [0, 32].
    angle : float or (float, float)
        Band rotation in degrees, counter-clockwise on screen (0 = horizontal band).
    p : float
        Probability of applying the transform.

    Notes
    -----
    Targets: image.  Image types: uint8 HxWx3 RGB; output of the same shape and dtype.
    Defaults are the ``mixed`` recipe's ranges.
    """

    class InitSchema(BaseTransformInitSchema):
        band_center: _Fraction
        band_width: _Fraction
        max_sigma: _MaxSigma
        angle: _Angle

    def __init__(self, band_center: tuple[float, float] | float = (0.3, 0.7),
                 band_width: tuple[float, float] | float = (0.1, 0.3),
                 max_sigma: tuple[float, float] | float = (1.0, 3.0),
                 angle: tuple[float, float] | float = (-30.0, 30.0), p: float = 0.5):
        super().__init__(p=p)
        self.band_center = band_center
        self.band_width = band_width
        self.max_sigma = max_sigma
        self.angle = angle

    def get_params(self) -> dict[str, Any]:
        u = self.py_random.uniform
        return {"band_center": u(*self.band_center), "band_width": u(*self.band_width),
                "max_sigma": u(*self.max_sigma), "angle": u(*self.angle)}

    def apply(self, img: np.ndarray, band_center: float, band_width: float, max_sigma: float, angle: float,
              **params: Any) -> np.ndarray:
        return _degrade.tilt_shift_blur(img, band_center=band_center, band_width=band_width,
                                        max_sigma=max_sigma, angle=angle)


class GuidedSmooth(_SynthTransform):
    """Edge-preserving smoothing (:func:`synth.degrade.guided_smooth`): skin texture and noise
    go, edges stay, the look of a face rendered by a face-swap autoencoder or a beautifying
    filter.  albumentations has no edge-preserving filter (its blurs soften edges as much as
    texture).

    Parameters
    ----------
    radius : int or (int, int)
        Window radius in pixels, drawn from this inclusive range; each in 1..16.
    strength : float or (float, float)
        Standard deviation (0..255 units) at which a window is half smoothed, drawn uniformly;
        each in (0, 255].
    p : float
        Probability of applying the transform.

    Notes
    -----
    Targets: image.  Image types: uint8 HxWx3 RGB; output of the same shape and dtype.
    Defaults are the ``rendered-swap`` recipe's ranges.
    """

    class InitSchema(BaseTransformInitSchema):
        radius: _SmoothRadius
        strength: _Strength

    def __init__(self, radius: tuple[int, int] | int = (2, 6), strength: tuple[float, float] | float = (4.0, 20.0),
                 p: float = 0.5):
        super().__init__(p=p)
        self.radius = radius
        self.strength = strength

    def get_params(self) -> dict[str, Any]:
        return {"radius": self.py_random.randint(*self.radius), "strength": self.py_random.uniform(*self.strength)}

    def apply(self, img: np.ndarray, radius: int, strength: float, **params: Any) -> np.ndarray:
        return _degrade.guided_smooth(img, radius=radius, strength=strength)


# ------------------------------------------------------------------------------ compression
class JpegRatio(_SynthTransform):
    """JPEG round trip at the quality whose compressed size is closest to a target ratio
    (:func:`synth.degrade.jpeg_ratio`).

    ``ratio`` = compressed bytes / raw bytes (H * W * 3).  The quality is searched per image
    (about 7 encodes), so a flat and a textured image drawn at the same ratio end at the same
    bit rate, not at the same quality - what a platform re-encoding to a size budget does.

    Differs from ``A.ImageCompression``, which draws a quality.  Also, albumentations 2.0
    passes the RGB array to ``cv2.imencode`` as if it were BGR, so libjpeg's luma/chroma
    split weights red and blue the wrong way round (its output equals synth's JPEG of the
    channel-swapped image, swapped back); synth converts RGB to BGR first, so its chroma
    subsampling loss falls where a camera's or a browser's would.

    Parameters
    ----------
    ratio : float or (float, float)
        Target compression ratio, drawn uniformly; each in (0, 1].  Ratios beyond what
        quality 1..100 reaches give quality 1 or 100.
    p : float
        Probability of applying the transform.

    Notes
    -----
    Targets: image.  Image types: uint8 HxWx3 RGB; output of the same shape and dtype.
    Default range: the ``mixed`` recipe's.
    """

    class InitSchema(BaseTransformInitSchema):
        ratio: _Ratio

    def __init__(self, ratio: tuple[float, float] | float = (0.03, 0.15), p: float = 0.5):
        super().__init__(p=p)
        self.ratio = ratio

    def get_params(self) -> dict[str, Any]:
        return {"ratio": self.py_random.uniform(*self.ratio)}

    def apply(self, img: np.ndarray, ratio: float, **params: Any) -> np.ndarray:
        return _degrade.jpeg_ratio(img, ratio=ratio)


# ------------------------------------------------------------------------------ colour
class ColorTransfer(_SynthTransform):
    """Colour transfer of the image towards a reference image (:func:`synth.color.transfer`).

    The reference comes with the data, as albumentations' ``FDA`` / ``HistogramMatching``
    take theirs: ``pipe(image=img, color_reference=ref)`` (one array, or a sequence of arrays
    of which one is drawn per call).  Statistics can be restricted to a region of each image
    (e.g. the face) with ``mask_key`` / ``reference_mask_key``; the fitted mapping recolours
    the whole image.  Methods: ``linear`` (RGB mean/std), ``reinhard`` (Lab mean/std),
    ``idt`` (iterative distribution transfer, random: its seed is drawn with the other
    parameters), ``histogram`` (per-channel CDF matching; equal to
    ``skimage.exposure.match_histograms`` without masks, and to ``A.HistogramMatching`` at
    ``blend_ratio=(1, 1)``, which has no masks).

    Parameters
    ----------
    method : str or tuple of str
        Methods to draw from, uniformly: any of ``"linear"``, ``"reinhard"``, ``"idt"``,
        ``"histogram"``.
    n_iter : int or (int, int)
        IDT iterations (random rotations), drawn from this inclusive range; each in 1..100.
    reference_key : str
        Data key of the reference: uint8 HxWx3 RGB (any size), or a sequence of them.
    mask_key : str, optional
        Data key of a mask (HxW, same size as the image) selecting the pixels whose
        statistics are matched; None: the whole image.
    reference_mask_key : str, optional
        Data key of the reference's mask (one per reference when a sequence is given).
    p : float
        Probability of applying the transform.

    Notes
    -----
    Targets: image.  Image types: uint8 HxWx3 RGB; output of the image's shape and dtype.
    """

    class InitSchema(BaseTransformInitSchema):
        method: _ColorMethods
        n_iter: _NIter
        reference_key: str
        mask_key: Union[str, None]
        reference_mask_key: Union[str, None]

    def __init__(self, method: str | tuple[str, ...] = ("reinhard", "linear", "histogram", "idt"),
                 n_iter: tuple[int, int] | int = (5, 10), reference_key: str = "color_reference",
                 mask_key: str | None = None, reference_mask_key: str | None = None, p: float = 0.5):
        super().__init__(p=p)
        self.method = method
        self.n_iter = n_iter
        self.reference_key = reference_key
        self.mask_key = mask_key
        self.reference_mask_key = reference_mask_key

    @property
    def targets_as_params(self) -> list[str]:
        return [self.reference_key]

    def get_params(self) -> dict[str, Any]:
        return {"method": self.py_random.choice(self.method), "n_iter": self.py_random.randint(*self.n_iter),
                "seed": int(self.random_generator.integers(2**31))}

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        index, reference = _one_of(_data_array(data, self.reference_key, type(self).__name__), self.py_random,
                                   self.reference_key)
        ref_mask = None
        if self.reference_mask_key is not None:
            masks = _data_array(data, self.reference_mask_key, type(self).__name__)
            ref_mask = masks if isinstance(masks, np.ndarray) else masks[index]
        mask = _data_array(data, self.mask_key, type(self).__name__) if self.mask_key is not None else None
        return {"reference": reference, "reference_index": index, "image_mask": mask, "reference_mask": ref_mask}

    def apply(self, img: np.ndarray, method: str, n_iter: int, seed: int, reference: np.ndarray,
              image_mask: np.ndarray | None = None, reference_mask: np.ndarray | None = None,
              **params: Any) -> np.ndarray:
        options = {"rng": np.random.default_rng(seed), "n_iter": n_iter} if method == "idt" else {}
        return _color.transfer(img, reference, method, mask=image_mask, ref_mask=reference_mask, **options)


# ------------------------------------------------------------------------------ blends
class _Blend(_SynthTransform):
    """Shared part of the blends: the image is the target; the source and the blend mask
    come with the data (``blend_source``, ``mask`` by default)."""

    def __init__(self, source_key: str, mask_key: str, p: float):
        super().__init__(p=p)
        self.source_key = source_key
        self.mask_key = mask_key

    @property
    def targets_as_params(self) -> list[str]:
        return [self.source_key, self.mask_key]

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        name = type(self).__name__
        return {"source": _data_array(data, self.source_key, name), "blend_mask": _data_array(data, self.mask_key, name)}


_BLEND_PARAMS_DOC = """source_key : str
        Data key of the source image pasted into the image: uint8 HxWx3 RGB, the image's
        size, already aligned with it.
    mask_key : str
        Data key of the blend mask (HxW uint8 0..255, bool or float in [0, 1]; 1 takes the
        source).  The mask itself is left as it is."""


class PoissonBlend(_Blend):
    """Seamless (Poisson) cloning of a source into the image on a mask
    (:func:`synth.blend.poisson_blend`, synth's own exact solver).  albumentations has no
    gradient-domain blend.

    Parameters
    ----------
    mode : str or tuple of str
        Guidance drawn from: ``"normal"`` (source gradients) and/or ``"mixed"`` (per pixel
        pair the larger of the source and image gradients).
    domain : str or tuple of str
        ``"mask"`` (exact solve on the binarised mask; pixels outside stay bit-exact) and/or
        ``"box"`` (OpenCV ``seamlessClone``'s formulation on the mask's box).
    composite : bool
        Alpha-composite the clone into the image with the soft mask afterwards, so pixels
        where the mask is 0 keep their values also with ``domain="box"``.
    {blend}
    p : float
        Probability of applying the transform.

    Notes
    -----
    Targets: image.  Image types: uint8 HxWx3 RGB; output of the same shape and dtype.
    An empty mask leaves the image as it is.
    """

    class InitSchema(BaseTransformInitSchema):
        mode: _PoissonModes
        domain: _PoissonDomains
        composite: bool
        source_key: str
        mask_key: str

    def __init__(self, mode: str | tuple[str, ...] = ("normal", "mixed"), domain: str | tuple[str, ...] = "mask",
                 composite: bool = False, source_key: str = "blend_source", mask_key: str = "mask", p: float = 0.5):
        super().__init__(source_key=source_key, mask_key=mask_key, p=p)
        self.mode = mode
        self.domain = domain
        self.composite = composite

    def get_params(self) -> dict[str, Any]:
        return {"mode": self.py_random.choice(self.mode), "domain": self.py_random.choice(self.domain)}

    def apply(self, img: np.ndarray, source: np.ndarray, blend_mask: np.ndarray, mode: str, domain: str,
              **params: Any) -> np.ndarray:
        return _blend.poisson_blend(source, img, blend_mask, mode=mode, domain=domain, composite=self.composite)


class PyramidBlend(_Blend):
    """Laplacian-pyramid (Burt & Adelson) blend of a source into the image on a mask
    (:func:`synth.blend.pyramid_blend`).  albumentations has no multi-band blend.

    Parameters
    ----------
    levels : int or (int, int)
        pyrDown steps, drawn from this inclusive range; each in 1..16 (clamped to what the
        image size allows).
    {blend}
    p : float
        Probability of applying the transform.

    Notes
    -----
    Targets: image.  Image types: uint8 HxWx3 RGB; output of the same shape and dtype.
    The coarse levels spread the change a few pixels beyond the mask's non-zero pixels.
    """

    class InitSchema(BaseTransformInitSchema):
        levels: _Levels
        source_key: str
        mask_key: str

    def __init__(self, levels: tuple[int, int] | int = (3, 6), source_key: str = "blend_source",
                 mask_key: str = "mask", p: float = 0.5):
        super().__init__(source_key=source_key, mask_key=mask_key, p=p)
        self.levels = levels

    def get_params(self) -> dict[str, Any]:
        return {"levels": self.py_random.randint(*self.levels)}

    def apply(self, img: np.ndarray, source: np.ndarray, blend_mask: np.ndarray, levels: int,
              **params: Any) -> np.ndarray:
        return _blend.pyramid_blend(source, img, blend_mask, levels=levels)


class WaveletBlend(_Blend):
    """Blend of 2-D wavelet coefficients, level by level, with the mask
    (:func:`synth.blend.wavelet_blend`, pywavelets).  albumentations has no wavelet blend.

    Parameters
    ----------
    levels : int or (int, int)
        Decomposition levels, drawn from this inclusive range; each in 1..16 (clamped to
        ``pywt.dwt_max_level``).
    wavelet : str or tuple of str
        Discrete pywavelets wavelet names to draw from (``"haar"``, ``"db2"``, ...).
    {blend}
    p : float
        Probability of applying the transform.

    Notes
    -----
    Targets: image.  Image types: uint8 HxWx3 RGB; output of the same shape and dtype.
    Coarse levels spread the change a few pixels beyond the mask's non-zero pixels.
    """

    class InitSchema(BaseTransformInitSchema):
        levels: _Levels
        wavelet: _Wavelets
        source_key: str
        mask_key: str

    def __init__(self, levels: tuple[int, int] | int = (2, 4), wavelet: str | tuple[str, ...] = "haar",
                 source_key: str = "blend_source", mask_key: str = "mask", p: float = 0.5):
        super().__init__(source_key=source_key, mask_key=mask_key, p=p)
        self.levels = levels
        self.wavelet = wavelet

    def get_params(self) -> dict[str, Any]:
        return {"levels": self.py_random.randint(*self.levels), "wavelet": self.py_random.choice(self.wavelet)}

    def apply(self, img: np.ndarray, source: np.ndarray, blend_mask: np.ndarray, levels: int, wavelet: str,
              **params: Any) -> np.ndarray:
        return _blend.wavelet_blend(source, img, blend_mask, levels=levels, wavelet=wavelet)


for _cls in (PoissonBlend, PyramidBlend, WaveletBlend):
    _cls.__doc__ = _cls.__doc__.replace("{blend}", _BLEND_PARAMS_DOC)
del _cls


# ------------------------------------------------------------------------------ self-blend
_NO_STAGES = {"order": [], "stages": {}}


@functools.lru_cache(maxsize=16)
def _pipeline_recipe(recipe: str):
    """The recipe ``recipe`` (shipped name or path) without ``target_degrade`` and ``post``.

    In a pipeline the image is both the real and the fake's background, and the transforms
    after :class:`SelfBlend` are the post-process (applied to reals and fakes alike)."""
    from synth.recipe import Recipe, load_recipe

    base = load_recipe(recipe)
    spec = copy.deepcopy(dict(base.spec))
    spec["target_degrade"] = copy.deepcopy(_NO_STAGES)
    spec["post"] = copy.deepcopy(_NO_STAGES)
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return Recipe(name=base.name, path=base.path, spec=spec,
                  hash=hashlib.sha256(canonical.encode()).hexdigest()[:16])


def _render_crop(image: np.ndarray, landmarks: np.ndarray, recipe, seed: int, size: int, retries: int):
    """Sample ``k`` = 0, 1, ... of ``(recipe, seed)`` on this face through the generator's path
    (:func:`synth.visibility.plan_and_render`, as :func:`synth.make_fake` does for ``k`` = 0),
    until one renders: ``(plan, real, fake, mask)`` on the face crop."""
    from synth.pool import FacePool
    from synth.render import DegenerateSample, FaceCache
    from synth.visibility import plan_and_render

    pool = FacePool.from_arrays({"target": image}, {"target": landmarks})
    faces = FaceCache(pool)
    error: DegenerateSample | None = None
    for k in range(retries):
        try:
            return plan_and_render(recipe, pool, faces, k, seed, size, target_key="target")
        except DegenerateSample as exc:
            error = exc
    raise DegenerateSample(f"self-blend: {retries} plan(s) in a row rendered no usable fake (last: {error})")


def self_blend(image: np.ndarray, landmarks: np.ndarray, seed: int, recipe: str = "self-blend",
               size: int | None = 256, retries: int = 4) -> tuple[np.ndarray, np.ndarray, dict]:
    """Self-blended fake of ``image`` in the image's own frame, through the generator's path.

    The face is cropped as ``synth generate`` crops it (``crop_scale`` x the landmark box,
    resized to ``size``), sample ``k`` of ``(recipe, seed)`` is planned and rendered on the
    crop (:func:`synth.visibility.plan_and_render`, as :func:`synth.make_fake` does; the
    recipe's ``target_degrade`` and ``post`` are left out, the pipeline's later transforms
    are the post-process; ``k`` = 0 unless that plan renders no usable fake, then 1, ...),
    and the change the fake makes to the crop (fake - real, where the plan's mask is
    non-zero) is warped back into the frame (bilinear) and added to ``image``.  Pixels the
    change does not reach keep their values exactly, and the face keeps its own detail: the
    unchanged content is never resampled.

    Parameters
    ----------
    image : numpy.ndarray
        uint8 (H, W, 3) RGB photo with one face.
    landmarks : numpy.ndarray
        (468, 2) float MediaPipe face-mesh points in ``image`` pixels (x, y).
    seed : int
        Seed of the plan; with ``recipe``, ``size`` and the inputs it fixes the output.
    recipe : str
        Shipped recipe name or path to a recipe YAML file.
    size : int or None
        Side of the face crop the recipe renders at (its pixel ranges - blur kernels, mask
        feathering - are meant for 256); None: the face's own resolution in ``image``.
    retries : int
        Plans tried before giving up (a plan can leave an empty mask, e.g. a small region
        eroded away).

    Returns
    -------
    fake : numpy.ndarray
        uint8 (H, W, 3) RGB.
    mask : numpy.ndarray
        uint8 (H, W), 0..255: the plan's blend weight warped into the frame, at least 1
        wherever ``fake`` differs from ``image``, 0 where it does not reach.
    plan : dict
        The rendered plan (JSON-able; ``plan["index"]`` is ``k``).

    Raises
    ------
    ValueError
        Bad image or landmarks (naming the argument), an invalid recipe, or
        :class:`synth.render.DegenerateSample` when ``retries`` plans rendered no usable fake.
    """
    from synth.face import check_landmarks, crop_face, face_box

    check_image(image)
    lm = check_landmarks(landmarks)
    rec = _pipeline_recipe(recipe)
    if size is None:
        x0, y0, x1, y1 = face_box(lm)
        size = int(min(8192, max(8, round(float(rec.spec["crop_scale"]) * max(x1 - x0, y1 - y0, 1.0)))))
    plan, real, fake, mask = _render_crop(image, lm, rec, int(seed), int(size), int(retries))
    matrix = crop_face(image, lm, scale=plan["crop_scale"], size=int(size))[2]  # frame -> crop
    change = cv2.subtract(fake, real, dtype=cv2.CV_32F)
    change[mask == 0] = 0  # the plan's mask is the label: pyramid/wavelet spill beyond it is cut
    h, w = image.shape[:2]
    back = cv2.invertAffineTransform(matrix)

    def to_frame(a):
        return cv2.warpAffine(a, back, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)

    out = round_uint8(cv2.add(image.astype(np.float32), to_frame(change)))
    weight = to_frame(mask.astype(np.float32))
    # both warps use the same bilinear weights: a pixel reached by a change is reached by the mask
    frame_mask = np.where(weight > 0, np.maximum(np.rint(weight), 1), 0).astype(np.uint8)
    return out, frame_mask, plan


class SelfBlend(_SynthTransform):
    """Self-blended fake (SBI-style: the face pasted onto an altered copy of itself) and its
    mask, made by the generator's own path (:func:`self_blend`).

    The image becomes the fake (same frame and size) and ``data[mask_key]`` its mask (uint8
    HxW, 0..255, non-zero wherever the image changed).  When the transform is not applied
    (``p``) the image and ``data[mask_key]`` are left as they are, so pass an all-zero mask
    and read the label as ``out["mask"].any()``; later albumentations transforms move the
    mask along with the image like any mask.

    Landmarks (468 MediaPipe face-mesh points, pixel x, y) come from ``data[landmarks_key]``
    (passed as is: give them in the frame the image has when it reaches this transform),
    from ``keypoints`` (with ``A.KeypointParams(format="xy", remove_invisible=False)`` so
    earlier geometric transforms move them and none is dropped), or are detected with
    synth's MediaPipe detector (:func:`synth.face.get_detector`).

    The plan's ops are synth's (perturbations, degradations, colour, mask, blend), not
    albumentations' (see the module notes), so ``synth replay``-style rendering of the plan
    gives the same crop.  With ``A.Compose(..., save_applied_params=True)`` the plan is in
    ``out["applied_transforms"]``.

    Parameters
    ----------
    recipe : str
        Shipped recipe name (``"self-blend"``, ``"mixed"``, ...) or a path to a recipe YAML
        file; validated at construction.  Its ``target_degrade`` and ``post`` sections are
        left out (the pipeline's later transforms are the post-process, applied to reals and
        fakes alike); a swap recipe renders self-blends (there is one face).
    size : int or None
        Side (8..8192) of the face crop the recipe renders at; 256 = the generator's default,
        for which the recipes' pixel ranges are meant.  The change is warped back to the
        face's size in the image (bilinear).  None renders at the face's own resolution.
    landmarks : {"auto", "key", "keypoints", "detect"}
        Where the landmarks come from; ``"auto"``: ``data[landmarks_key]`` if given, else
        ``keypoints`` if there are exactly 468, else detection.
    landmarks_key : str
        Data key of the landmarks: float array (468, 2).
    mask_key : str
        Data key the mask is written to.
    retries : int
        Plans tried per call (1..100) before failing: a plan can leave an empty mask.
    on_failure : {"raise", "skip"}
        No face found, or no plan rendered: raise ``ValueError``, or leave the image as it
        is and write an all-zero mask (a correctly labelled real).
    p : float
        Probability of applying the transform.

    Notes
    -----
    Targets: image (the fake) and ``data[mask_key]`` (written); keypoints and bboxes are
    left as they are (the frame does not move).  Image types: uint8 HxWx3
    RGB.  Parameters drawn per call: ``seed`` (the plan's) and ``landmarks``.
    """

    _targets = (Targets.IMAGE, Targets.KEYPOINTS, Targets.BBOXES)

    class InitSchema(BaseTransformInitSchema):
        recipe: _Recipe
        size: _CropSize
        landmarks: Literal["auto", "key", "keypoints", "detect"]
        landmarks_key: str
        mask_key: str
        retries: _Retries
        on_failure: Literal["raise", "skip"]

    def __init__(self, recipe: str = "self-blend", size: int | None = 256,
                 landmarks: Literal["auto", "key", "keypoints", "detect"] = "auto",
                 landmarks_key: str = "landmarks", mask_key: str = "mask", retries: int = 4,
                 on_failure: Literal["raise", "skip"] = "raise", p: float = 0.5):
        super().__init__(p=p)
        self.recipe = recipe
        self.size = size
        self.landmarks = landmarks
        self.landmarks_key = landmarks_key
        self.mask_key = mask_key
        self.retries = retries
        self.on_failure = on_failure

    @property
    def targets(self) -> dict[str, Any]:
        # keypoints and boxes stay where they are: the fake keeps the image's frame
        return {"image": self.apply, "keypoints": self._unchanged, "bboxes": self._unchanged}

    @staticmethod
    def _unchanged(value: np.ndarray, **params: Any) -> np.ndarray:
        return value

    def get_params(self) -> dict[str, Any]:
        return {"seed": int(self.random_generator.integers(2**31))}

    def _find_landmarks(self, data: dict[str, Any]) -> np.ndarray | None:
        source = self.landmarks
        if source == "auto":
            if data.get(self.landmarks_key) is not None:
                source = "key"
            elif data.get("keypoints") is not None and len(data["keypoints"]) == 468:
                source = "keypoints"
            else:
                source = "detect"
        if source == "key":
            return np.asarray(_data_array(data, self.landmarks_key, "SelfBlend"), np.float32)
        if source == "keypoints":
            kp = np.asarray(_data_array(data, "keypoints", "SelfBlend"))
            if kp.ndim != 2 or kp.shape[0] != 468:
                raise ValueError(f"keypoints: expected the 468 face-mesh landmarks, got shape {kp.shape} "
                                 "(use A.KeypointParams(format='xy', remove_invisible=False))")
            return kp[:, :2].astype(np.float32)
        from synth.face import get_detector

        found = get_detector().detect(data["image"])
        if found is None:
            if self.on_failure == "raise":
                raise ValueError("image: no face found (pass landmarks, or on_failure='skip')")
            return None
        return found.landmarks

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        return {"landmarks": self._find_landmarks(data)}

    def _fake(self, img: np.ndarray, seed: int, landmarks: np.ndarray | None):
        from synth.render import DegenerateSample

        if landmarks is not None:
            try:
                return self_blend(img, landmarks, seed, recipe=self.recipe, size=self.size, retries=self.retries)
            except DegenerateSample:
                if self.on_failure == "raise":
                    raise
        check_image(img)
        return img, np.zeros(img.shape[:2], np.uint8), None

    def apply(self, img: np.ndarray, seed: int, landmarks: np.ndarray | None, **params: Any) -> np.ndarray:
        return self._fake(img, seed, landmarks)[0]

    def apply_with_params(self, params: dict[str, Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Render once, then write the fake to ``image`` and its mask to ``mask_key``."""
        if params is None or kwargs.get("image") is None:
            return super().apply_with_params(params, *args, **kwargs)
        fake, mask, plan = self._fake(kwargs["image"], params["seed"], params["landmarks"])
        params["plan"] = plan
        return {**kwargs, "image": fake, self.mask_key: mask}
