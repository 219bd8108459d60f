"""Detection metrics: AUC, AP, EER, TPR at fixed FPR, per-generator and per-video breakdowns.

Conventions: ``labels`` are 0 (real) / 1 (fake), ``scores`` are any real numbers where larger means
"more likely fake" (logits or probabilities; every metric here depends only on their order, apart
from the returned thresholds, which are in score units).

EER and TPR@FPR interpolate linearly between the points of the full ROC curve
(``sklearn.metrics.roc_curve(..., drop_intermediate=False)``), so they are exact for hand-checkable
examples and do not jump with tiny score changes.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

#: FPR operating points reported by :func:`compute_metrics` (key ``"tpr@fpr<x>"``).
FPR_POINTS = (0.1, 0.01)

#: Names of the scalar metrics in a :func:`compute_metrics` result.
METRIC_NAMES = ("auc", "ap", "eer") + tuple(f"tpr@fpr{f:g}" for f in FPR_POINTS)


def _check(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or s.ndim != 1:
        raise ValueError(f"labels and scores must be 1-D, got shapes {y.shape} and {s.shape}")
    if y.shape != s.shape:
        raise ValueError(f"labels ({y.shape[0]}) and scores ({s.shape[0]}) must have the same length")
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError(f"labels must be 0 (real) or 1 (fake), got values {sorted(set(np.unique(y).tolist()))[:5]}")
    if not np.isfinite(s).all():
        raise ValueError(f"scores contain {int((~np.isfinite(s)).sum())} non-finite values")
    return y.astype(np.int64), s


def _one_class_warning(y: np.ndarray) -> str | None:
    n_fake = int(y.sum())
    n_real = int(y.size - n_fake)
    if n_fake == 0 or n_real == 0:
        return f"only one class present (n_real={n_real}, n_fake={n_fake}): ranking metrics are undefined (NaN)"
    return None


def roc(labels, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Full ROC curve; a point predicts fake when ``score >= threshold``.

    Parameters
    ----------
    labels : array_like, (N,)
        0 (real) or 1 (fake).
    scores : array_like, (N,)
        Finite real numbers, larger = more likely fake (converted to float64).

    Returns
    -------
    fpr, tpr : numpy.ndarray, float64 (M,)
        False and true positive rates in [0, 1], non-decreasing; ``M`` = number of distinct
        scores + 1.  The first point is (0, 0).
    thresholds : numpy.ndarray, float64 (M,)
        Decreasing; the first is ``+inf``, the others are the distinct scores.

    Raises
    ------
    ValueError
        labels or scores not 1-D, of different lengths, a label other than 0 or 1, or a
        non-finite score; only one class present (empty input included).

    Notes
    -----
    ``sklearn.metrics.roc_curve(labels, scores, drop_intermediate=False)``.
    """
    y, s = _check(labels, scores)
    warning = _one_class_warning(y)
    if warning:
        raise ValueError(warning)
    return roc_curve(y, s, drop_intermediate=False)


def eer(labels, scores) -> tuple[float, float]:
    """Equal error rate and its decision threshold.

    Parameters
    ----------
    labels : array_like, (N,)
        0 (real) or 1 (fake).
    scores : array_like, (N,)
        Finite real numbers, larger = more likely fake (converted to float64).

    Returns
    -------
    eer : float
        The rate where FPR equals FNR = 1 - TPR, linearly interpolated between the
        neighbouring points of :func:`roc`; in [0, 1].
    threshold : float
        The threshold of the first ROC point at or past the crossing (predict fake when
        ``score >= threshold``), i.e. a real, usable score value.

    Raises
    ------
    ValueError
        labels or scores not 1-D, of different lengths, a label other than 0 or 1, or a
        non-finite score; only one class present.
    """
    fpr, tpr, thr = roc(labels, scores)
    d = fpr - (1.0 - tpr)  # -1 at (0, 0), +1 at (1, 1), non-decreasing
    j = int(np.argmax(d >= 0))
    if d[j] == 0 or j == 0:
        return float(fpr[j]), float(thr[j])
    t = -d[j - 1] / (d[j] - d[j - 1])
    value = fpr[j - 1] + t * (fpr[j] - fpr[j - 1])
    return float(value), float(thr[j])


def tpr_at_fpr(labels, scores, target_fpr: float) -> float:
    """TPR at FPR = ``target_fpr``, linearly interpolated on the ROC curve.

    Parameters
    ----------
    labels : array_like, (N,)
        0 (real) or 1 (fake).
    scores : array_like, (N,)
        Finite real numbers, larger = more likely fake (converted to float64).
    target_fpr : float
        In [0, 1].

    Returns
    -------
    tpr : float
        In [0, 1].  Where the ROC is vertical exactly at ``target_fpr`` (several points with
        that FPR), the highest TPR is taken: the best operating point that does not exceed
        the FPR budget.

    Raises
    ------
    ValueError
        ``target_fpr`` outside [0, 1] (checked first);
        labels or scores not 1-D, of different lengths, a label other than 0 or 1, or a
        non-finite score; only one class present.
    """
    if not 0.0 <= target_fpr <= 1.0:
        raise ValueError(f"target_fpr must lie in [0, 1], got {target_fpr}")
    fpr, tpr, _ = roc(labels, scores)
    i = int(np.searchsorted(fpr, target_fpr, side="right")) - 1  # last point with fpr <= target
    if fpr[i] == target_fpr or i == fpr.size - 1:
        return float(tpr[i])
    t = (target_fpr - fpr[i]) / (fpr[i + 1] - fpr[i])
    return float(tpr[i] + t * (tpr[i + 1] - tpr[i]))


def binary_metrics(labels, scores) -> dict:
    """Scalar metrics for one set of labels and scores.

    Parameters
    ----------
    labels : array_like, (N,)
        0 (real) or 1 (fake).
    scores : array_like, (N,)
        Finite real numbers, larger = more likely fake (converted to float64).

    Returns
    -------
    metrics : dict
        ``"n"``, ``"n_real"``, ``"n_fake"`` (int); ``"auc"`` (ROC AUC), ``"ap"`` (average
        precision), ``"eer"``, ``"eer_threshold"`` (:func:`eer`), ``"tpr@fpr0.1"``,
        ``"tpr@fpr0.01"`` (:func:`tpr_at_fpr`), all float.  With only one class present
        (empty input included) every metric is NaN and a ``"warning"`` string is added;
        no exception.

    Raises
    ------
    ValueError
        labels or scores not 1-D, of different lengths, a label other than 0 or 1, or a
        non-finite score.
    """
    y, s = _check(labels, scores)
    out: dict = {"n": int(y.size), "n_real": int((y == 0).sum()), "n_fake": int((y == 1).sum())}
    warning = _one_class_warning(y)
    if warning:
        out.update({name: math.nan for name in METRIC_NAMES})
        out["eer_threshold"] = math.nan
        out["warning"] = warning
        return out
    out["auc"] = float(roc_auc_score(y, s))
    out["ap"] = float(average_precision_score(y, s))
    out["eer"], out["eer_threshold"] = eer(y, s)
    for f in FPR_POINTS:
        out[f"tpr@fpr{f:g}"] = tpr_at_fpr(y, s, f)
    return out


def video_scores(labels, scores, videos) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Aggregate frame scores per video.

    Parameters
    ----------
    labels : array_like, (N,)
        0 (real) or 1 (fake).
    scores : array_like, (N,)
        Finite real numbers, larger = more likely fake (converted to float64).
    videos : array_like, (N,)
        Video id of each frame; compared as strings (``astype(str)``).

    Returns
    -------
    video_ids : numpy.ndarray, str (V,)
        The distinct ids, sorted.
    video_labels : numpy.ndarray, int64 (V,)
        0 or 1, the label shared by the video's frames.
    mean_scores : numpy.ndarray, float64 (V,)
        Mean frame score per video.

    Raises
    ------
    ValueError
        labels or scores not 1-D, of different lengths, a label other than 0 or 1, or a
        non-finite score;
        ``videos`` not of the same shape as ``labels``; a video whose frames carry both
        labels (the message names it).
    """
    y, s = _check(labels, scores)
    v = np.asarray(videos).astype(str)
    if v.shape != y.shape:
        raise ValueError(f"videos ({v.shape[0]}) and labels ({y.shape[0]}) must have the same length")
    ids, inverse = np.unique(v, return_inverse=True)
    counts = np.bincount(inverse, minlength=ids.size)
    mean = np.bincount(inverse, weights=s, minlength=ids.size) / counts
    fake_frames = np.bincount(inverse, weights=y, minlength=ids.size)
    mixed = (fake_frames > 0) & (fake_frames < counts)
    if mixed.any():
        raise ValueError(f"video {ids[mixed][0]!r} has frames labelled both real and fake")
    return ids, (fake_frames > 0).astype(np.int64), mean


def compute_metrics(labels, scores, generators: Sequence | None = None, videos: Sequence | None = None,
                    real_generator: str = "real") -> dict:
    """All metrics for one evaluation.

    Parameters
    ----------
    labels : (N,) 0/1; scores : (N,) float, larger = more fake.
    generators : optional (N,) str, the generator of each fake (reals may hold anything, e.g.
        ``"real"``). Adds ``per_generator[g]`` = metrics of generator g's fakes against *all* reals.
    videos : optional (N,) video ids. Adds ``video`` = metrics on per-video mean scores.

    Returns a JSON-able dict: the :func:`binary_metrics` keys, plus ``per_generator`` and ``video``
    when requested. One-class input gives NaN metrics and a ``warning`` string, never an exception.
    """
    y, s = _check(labels, scores)
    out = binary_metrics(y, s)
    if generators is not None:
        g = np.asarray(generators).astype(str)
        if g.shape != y.shape:
            raise ValueError(f"generators ({g.shape[0]}) and labels ({y.shape[0]}) must have the same length")
        real = y == 0
        out["per_generator"] = {
            name: binary_metrics(y[real | (g == name)], s[real | (g == name)])
            for name in sorted(set(g[y == 1].tolist()) - {real_generator})
        }
    if videos is not None:
        _, vy, vs = video_scores(y, s, videos)
        out["video"] = binary_metrics(vy, vs)
    return out


_REQUIRED = object()


def lookup(metrics: Mapping, name: str, generator: str | None = None, default=_REQUIRED) -> float:
    """Read one scalar metric from a :func:`compute_metrics` result.

    Parameters
    ----------
    metrics : mapping
        A :func:`compute_metrics` (or :func:`binary_metrics`) result.
    name : str
        Metric key, e.g. ``"auc"`` or ``"tpr@fpr0.01"``.
    generator : str, optional
        Read ``metrics["per_generator"][generator]`` instead of the overall metrics.  Default
        None.
    default : float, optional
        Returned (as float) when the metric is missing, e.g. NaN: a stop condition on a
        metric the evaluation did not produce never holds.  Default: none, a missing metric
        is an error.

    Returns
    -------
    value : float

    Raises
    ------
    KeyError
        ``generator`` is not in ``metrics["per_generator"]`` (or there is none); ``name`` is
        missing and no ``default`` is given.
    """
    src = metrics
    if generator is not None:
        per = metrics.get("per_generator") or {}
        if generator not in per:
            raise KeyError(f"no generator {generator!r} in the evaluation metrics (have {sorted(per)})")
        src = per[generator]
    if name not in src:
        if default is not _REQUIRED:
            return float(default)
        raise KeyError(f"no metric {name!r} (have {[k for k in METRIC_NAMES if k in src]})")
    return float(src[name])


def format_metrics(metrics: Mapping) -> str:
    """Short human-readable summary of a :func:`compute_metrics` result.

    Parameters
    ----------
    metrics : mapping
        A :func:`compute_metrics` (or :func:`binary_metrics`) result; it and each of its
        ``per_generator`` / ``video`` entries must hold ``"n_real"`` and ``"n_fake"``.

    Returns
    -------
    text : str
        One line overall, then the warning (if any), one line per generator and one for the
        video level when present; metrics of :data:`METRIC_NAMES` printed with 4 decimals.

    Raises
    ------
    KeyError
        ``"n_real"`` or ``"n_fake"`` missing from a metrics block.
    """
    def line(m: Mapping) -> str:
        return "  ".join(f"{k}={m[k]:.4f}" for k in METRIC_NAMES if k in m) + f"  (n_real={m['n_real']}, n_fake={m['n_fake']})"

    rows = ["overall      " + line(metrics)]
    if metrics.get("warning"):
        rows.append(f"warning: {metrics['warning']}")
    for name, m in (metrics.get("per_generator") or {}).items():
        rows.append(f"{name:<12} " + line(m))
    if "video" in metrics:
        rows.append("video-level  " + line(metrics["video"]))
    return "\n".join(rows)
