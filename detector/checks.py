"""Argument checks shared by :class:`detector.predict.Predictor` and the ``detector`` commands.

Each ``check_*`` returns the value converted to its type, or raises ``ValueError`` naming the
argument (the command line shows that message as a usage error).
"""
from __future__ import annotations

CROP_SCALE_RANGE = (1.2, 2.0)


def check_crop_scale(crop_scale: float) -> float:
    lo, hi = CROP_SCALE_RANGE
    if not lo <= float(crop_scale) <= hi:
        raise ValueError(f"crop_scale: must lie in [{lo}, {hi}], got {crop_scale}")
    return float(crop_scale)


def check_size(size: int) -> int:
    if int(size) != size or size < 32 or size % 32:
        raise ValueError(f"size: must be a positive multiple of 32 (the detector downsamples by 32), got {size}")
    return int(size)


def check_fraction(value: float, name: str) -> float:
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name}: must lie in [0, 1], got {value}")
    return float(value)


def check_batch_size(batch_size: int) -> int:
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size: must be a positive integer, got {batch_size}")
    return int(batch_size)


def check_frames(frames: int) -> int:
    if int(frames) != frames or frames < 1:
        raise ValueError(f"frames: must be a positive integer, got {frames}")
    return int(frames)


def check_device(device):
    """torch device from a name; "auto" picks CUDA when available. ``ValueError`` naming the
    device when it is not one (or CUDA is asked for and absent)."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"--device {device!r}: not a torch device ({_first_line(exc)})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device!r}: requested but CUDA is not available")
    return dev


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
