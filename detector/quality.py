"""Is a detector blind to global image quality?

A forgery detector must not call a photo fake because it is sharp or soft, compressed or
resampled: those are properties of the whole image, not of a forgery. The check scores a set of
*real* faces as they are and again after one global operation (whole image, no blend), and
reports, per operation, the AUC of "processed" against "as is". 0.5 means the score ignores the
operation; 1.0 means every processed copy scores as more fake than every original, 0.0 the reverse.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np

from synth.degrade import downup, gaussian_blur, jpeg
from synth.perturb import sharpen


# Module-level functions, not lambdas: a dataset carrying one as its ``global_op`` must pickle into
# DataLoader workers started by forkserver or spawn.
def global_blur(im: np.ndarray) -> np.ndarray:
    return gaussian_blur(im, ksize=7, sigma=1.2)


def global_sharpen(im: np.ndarray) -> np.ndarray:
    return sharpen(im, amount=1.0, sigma=1.0)


def global_downup(im: np.ndarray) -> np.ndarray:
    return downup(im, scale=0.5, interpolation="linear")


def global_jpeg50(im: np.ndarray) -> np.ndarray:
    return jpeg(im, quality=50)


#: The global operations of the check: name -> function uint8 HxWx3 -> uint8 HxWx3.
QUALITY_OPS: Mapping[str, Callable[[np.ndarray], np.ndarray]] = {
    "blur": global_blur,
    "sharpen": global_sharpen,
    "downup": global_downup,
    "jpeg50": global_jpeg50,
}


# Ranges of the global operations a training twin draws from (see :func:`draw_global_op`). They
# bracket the check's fixed settings above, so invariance is learnt over a range, not at one point.
TWIN_RANGES: Mapping[str, tuple[float, float]] = {
    "blur": (0.6, 2.0),       # Gaussian sigma, px
    "sharpen": (0.3, 1.5),    # unsharp-mask amount, sigma 1 px
    "downup": (0.35, 0.85),   # down-then-up scale factor
    "jpeg": (30.0, 90.0),     # JPEG quality
}


def _blur(im: np.ndarray, sigma: float) -> np.ndarray:
    return gaussian_blur(im, ksize=2 * int(np.ceil(2.5 * sigma)) + 1, sigma=sigma)  # 5 to 11 px


def _sharpen(im: np.ndarray, amount: float) -> np.ndarray:
    return sharpen(im, amount=amount, sigma=1.0)


def _downup(im: np.ndarray, scale: float) -> np.ndarray:
    return downup(im, scale=scale, interpolation="linear")


def _jpeg(im: np.ndarray, quality: float) -> np.ndarray:
    return jpeg(im, quality=int(round(quality)))


_TWIN_OPS: Mapping[str, Callable[[np.ndarray, float], np.ndarray]] = {
    "blur": _blur, "sharpen": _sharpen, "downup": _downup, "jpeg": _jpeg,
}


def draw_global_op(rng: np.random.Generator) -> tuple[str, float]:
    """Draw one global operation and its strength: ``(name, value)`` with ``name`` uniform over
    :data:`TWIN_RANGES` and ``value`` uniform in its range."""
    name = list(TWIN_RANGES)[int(rng.integers(len(TWIN_RANGES)))]
    lo, hi = TWIN_RANGES[name]
    return name, float(rng.uniform(lo, hi))


def apply_global_op(image: np.ndarray, name: str, value: float) -> np.ndarray:
    """Apply a drawn global operation to the whole image.

    Parameters
    ----------
    image : uint8 array, shape (H, W, 3), RGB.
    name, value : as returned by :func:`draw_global_op`.

    Returns
    -------
    numpy.ndarray
        uint8, shape (H, W, 3).

    Raises
    ------
    ValueError
        ``name`` is not in :data:`TWIN_RANGES`.
    """
    if name not in _TWIN_OPS:
        raise ValueError(f"global op: unknown {name!r}; expected one of {list(_TWIN_OPS)}")
    return _TWIN_OPS[name](image, value)


def paired_auc(before: np.ndarray, after: np.ndarray) -> float:
    """AUC of ``after`` (positives) against ``before`` (negatives); NaN-free inputs, ties count 1/2."""
    from sklearn.metrics import roc_auc_score

    b, a = np.asarray(before, np.float64), np.asarray(after, np.float64)
    return float(roc_auc_score(np.r_[np.zeros(len(b)), np.ones(len(a))], np.r_[b, a]))


def quality_check(model, samples: Sequence, ops: Sequence[str] = tuple(QUALITY_OPS), *, full_size: int | None = None,
                  batch_size: int = 16, workers: int = 0, device: str = "cpu", progress: bool = False) -> dict:
    """Score real ``samples`` as they are and after each global op in ``ops``.

    Parameters
    ----------
    model : a detector (``forward(x)["logit"]``), put in eval mode for the call.
    samples : :class:`detector.data.Sample` s; only the reals (label 0) are used.
    ops : names from :data:`QUALITY_OPS`.
    full_size : side the faces are scored at (as the evaluation does), or None for native.

    Returns
    -------
    dict
        ``{"n": reals scored, "auc": {op: AUC processed vs as-is}, "max_dev": max_op |AUC - 0.5|}``.
        Unreadable images are left out of every op alike.
    """
    from detector.data import FaceDataset
    from detector.train import score_dataset

    unknown = [o for o in ops if o not in QUALITY_OPS]
    if unknown:
        raise ValueError(f"ops: unknown {unknown}; expected some of {list(QUALITY_OPS)}")
    reals = [s for s in samples if s.label == 0]
    if not reals:
        raise ValueError("quality_check: no real samples to score")
    norm = getattr(model, "input_norm", None)

    def scores(op):
        ds = FaceDataset(reals, mode="full", norm=norm, full_size=full_size, global_op=op)
        return score_dataset(model, ds, batch_size, workers, device, progress, "quality")[0]

    base = scores(None)
    out = {"n": int(np.isfinite(base).sum()), "auc": {}}
    for name in ops:
        after = scores(QUALITY_OPS[name])
        ok = np.isfinite(base) & np.isfinite(after)
        out["auc"][name] = paired_auc(base[ok], after[ok]) if ok.any() else float("nan")
    devs = [abs(v - 0.5) for v in out["auc"].values() if np.isfinite(v)]
    out["max_dev"] = max(devs) if devs else float("nan")
    return out
