"""Video frames for ``detector predict``: frames sampled evenly over a clip."""
from __future__ import annotations

import cv2
import numpy as np

from detector.checks import check_frames

#: Extensions read as videos (any other file is read as an image).
VIDEO_EXTS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm"})


def _open_video(path) -> cv2.VideoCapture:
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ValueError(f"{path}: cannot open as a video")
    return cap


def _count_frames(path) -> int:
    cap = _open_video(path)
    n = 0
    while cap.grab():
        n += 1
    cap.release()
    return n


def _evenly(n: int, k: int) -> list[int]:
    return sorted(set(np.linspace(0, n - 1, min(k, n)).round().astype(int).tolist()))


def sample_video_frames(path, frames: int = 16) -> list[tuple[int, np.ndarray]]:
    """``frames`` frames spread evenly over the video at ``path`` as (index, uint8 HxWx3 RGB).

    Seeks with ``CAP_PROP_POS_FRAMES``; when the container reports no frame count or a
    seek fails, reads the video sequentially instead. Raises ``ValueError`` naming the
    file when it cannot be opened or holds no frame.
    """
    check_frames(frames)
    cap = _open_video(path)
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    out = []
    if n > 0:
        for i in _evenly(n, frames):
            if not cap.set(cv2.CAP_PROP_POS_FRAMES, i):
                break
            ok, frame = cap.read()
            if not ok:
                break
            out.append((i, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)))
    cap.release()
    if n <= 0 or len(out) < min(frames, n):
        # Frame count missing or wrong, or seeking unsupported: decode in order.
        n = _count_frames(path)
        if n == 0:
            raise ValueError(f"{path}: video holds no readable frame")
        wanted = set(_evenly(n, frames))
        cap = _open_video(path)
        out = []
        for i in range(n):
            if not cap.grab():
                break
            if i in wanted:
                ok, frame = cap.retrieve()
                if ok:
                    out.append((i, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)))
        cap.release()
        if not out:
            raise ValueError(f"{path}: video holds no readable frame")
    return out
