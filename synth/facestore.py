"""A run's store of per-face work, shared by all its worker processes through files.

In a run of ``n`` samples over a pool of ``F`` faces, each face is a target about ``n / F``
times (and a swap partner as often), each time in whichever worker drew it. A worker's
in-memory cache (:class:`synth.render.FaceCache`) is small, so without a shared store a
100k-sample run on a 10k-face pool decodes, crops and analyses every face ~15 times. The
store keeps what the face cache derives from a face, once per run:

- ``face``: the crop (uint8 SxSx3), its landmarks (float32 (468, 2)) and face-oval region
  (uint8 SxS), raw after a 12-byte header (magic, S, number of landmarks) in one ``.raw``
  file;
- ``occ-NAME``: the occlusion map of estimator NAME (float32 SxS; stored as bool when it
  is exactly 0/1, as the estimators' maps are);
- ``real.png``: the PNG of the untouched crop, which is the real of every sample drawn
  without a background degradation or post-process.

Layout: ``root/s{size}-c{crop_scale}/{n // 1000:03d}/{n}.{item}`` with ``n`` the face's
position in the pool; ``root`` names the index (its hash), so a rebuilt index never reads
stale crops. Files are written atomically (temporary file + rename, no fsync: the store
can always be derived again), so workers that derive the same face at the same time write
the same bytes and a reader never sees a partial file. A file that cannot be read back is
treated as absent. The store holds exactly what the in-process path computes, so outputs
are byte-identical with or without it.
"""
from __future__ import annotations

import io
import os
import shutil
import struct
from pathlib import Path

import numpy as np

from synth.io import write_bytes_atomic

__all__ = ["FaceStore"]

# face record: magic, crop size, landmark count, then crop, landmarks (float32), region, raw
_FACE_MAGIC = b"FFS1"
_FACE_HEADER = struct.Struct("<4sII")


class FaceStore:
    """Per-face derived data under ``root`` (see the module docstring)."""

    def __init__(self, root):
        self.root = Path(root)

    def _path(self, n: int, size: int, crop_scale: float, item: str) -> Path:
        return self.root / f"s{int(size)}-c{float(crop_scale):g}" / f"{int(n) // 1000:03d}" / f"{int(n)}.{item}"

    def _write(self, path: Path, data) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(path, data, fsync=False)

    # face crops ---------------------------------------------------------------------
    def load_face(self, n: int, size: int, crop_scale: float):
        """(crop, landmarks, region) of face ``n``, or None if not stored (or unreadable)."""
        try:
            with open(self._path(n, size, crop_scale, "face.raw"), "rb") as f:
                head = f.read(_FACE_HEADER.size)
                if len(head) != _FACE_HEADER.size:
                    return None
                magic, stored_size, n_points = _FACE_HEADER.unpack(head)
                # a bound on the landmark count: a corrupt header must not allocate gigabytes
                if magic != _FACE_MAGIC or stored_size != size or not 0 < n_points <= 4096:
                    return None
                lengths = (size * size * 3, n_points * 2 * 4, size * size)
                buf = bytearray(sum(lengths) + 1)  # one spare byte: a longer file is not ours
                if f.readinto(buf) != sum(lengths):
                    return None
        except OSError:
            return None
        # writable views of one buffer (np.load parsed a text header per record: ~0.1 ms each)
        crop = np.frombuffer(buf, np.uint8, lengths[0]).reshape(size, size, 3)
        landmarks = np.frombuffer(buf, np.float32, n_points * 2, lengths[0]).reshape(n_points, 2)
        region = np.frombuffer(buf, np.uint8, lengths[2], lengths[0] + lengths[1]).reshape(size, size)
        return crop, landmarks, region

    def save_face(self, n: int, size: int, crop_scale: float, crop: np.ndarray, landmarks: np.ndarray,
                  region: np.ndarray) -> None:
        data = b"".join((_FACE_HEADER.pack(_FACE_MAGIC, crop.shape[0], len(landmarks)), np.ascontiguousarray(crop).data,
                         np.ascontiguousarray(landmarks, np.float32).data, np.ascontiguousarray(region).data))
        self._write(self._path(n, size, crop_scale, "face.raw"), data)

    # occlusion maps -----------------------------------------------------------------
    def load_occlusion(self, n: int, size: int, crop_scale: float, estimator: str) -> np.ndarray | None:
        """float32 SxS occlusion map of face ``n`` by ``estimator``, or None if not stored."""
        try:
            occ = np.load(self._path(n, size, crop_scale, f"occ-{estimator}.npy"), allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None
        if occ.shape != (size, size) or occ.dtype not in (np.bool_, np.float32):
            return None
        return occ.astype(np.float32) if occ.dtype == np.bool_ else occ

    def save_occlusion(self, n: int, size: int, crop_scale: float, estimator: str, occ: np.ndarray) -> None:
        binary = occ.dtype == np.float32 and bool(((occ == 0) | (occ == 1)).all())
        buf = io.BytesIO()
        np.save(buf, occ.astype(np.bool_) if binary else occ, allow_pickle=False)  # bool: 4x smaller, exact
        self._write(self._path(n, size, crop_scale, f"occ-{estimator}.npy"), buf.getbuffer())

    # encoded reals ------------------------------------------------------------------
    def load_png(self, n: int, size: int, crop_scale: float) -> bytes | None:
        """PNG bytes of face ``n``'s untouched crop, or None if not stored."""
        try:
            data = self._path(n, size, crop_scale, "real.png").read_bytes()
        except OSError:
            return None
        return data if data.startswith(b"\x89PNG") and data.endswith(b"IEND\xaeB`\x82") else None

    def save_png(self, n: int, size: int, crop_scale: float, data: bytes) -> None:
        self._write(self._path(n, size, crop_scale, "real.png"), data)

    def remove(self) -> None:
        """Delete the whole store (a finished run no longer needs it)."""
        shutil.rmtree(self.root, ignore_errors=True)
        parent = self.root.parent
        try:
            os.rmdir(parent)  # the run's cache/ folder, if the store was all it held
        except OSError:
            pass
