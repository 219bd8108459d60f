"""The pool of usable faces a generation run draws targets and swap partners from.

A :class:`FacePool` holds the keys (paths relative to the index root) and landmarks of
every face the index found, a loader for the pixels, and the normalised landmark shapes,
so a swap partner can be drawn among the k faces of most similar geometry (similar pose
and shape make swaps that look plausible).  It is built once per process.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from synth.face import face_size
from synth.io import read_image
from synth.mask import region_size

# A subsample of the 468-point mesh is enough to compare face shapes and keeps the tree small.
_SHAPE_POINTS = np.arange(0, 468, 6)


def normalised_shape(landmarks: np.ndarray) -> np.ndarray:
    """(N, 468, 2) landmarks -> (N, 2*len(_SHAPE_POINTS)) vectors, centred and scale-normalised."""
    pts = landmarks[:, _SHAPE_POINTS, :].astype(np.float64)
    pts = pts - pts.mean(axis=1, keepdims=True)
    scale = np.sqrt((pts ** 2).sum(axis=(1, 2), keepdims=True) / pts.shape[1])
    return (pts / np.maximum(scale, 1e-9)).reshape(len(pts), -1)


def read_under(root: Path, key: str) -> np.ndarray:
    """The image ``root / key`` (uint8 HxWx3 RGB): the loader of pools built from an index.

    A module-level function (bound with :func:`functools.partial`), not a lambda, so a pool
    pickles: DataLoader workers started by spawn or forkserver receive it pickled.
    """
    return read_image(Path(root) / key)


@dataclass(eq=False)
class FacePool:
    """Faces available to a run.

    keys: one string per face (relative path under ``root``, or any name for in-memory pools).
    landmarks: float32 (N, 468, 2) in the original image's pixel coordinates.
    loader: key -> uint8 HxWx3 RGB image; picklable (no lambda) for the pool to reach
    processes started by spawn (:func:`read_under`, or ``partial(operator.getitem, images)``).
    """

    keys: Sequence[str]
    landmarks: np.ndarray
    loader: Callable[[str], np.ndarray]
    root: str = ""

    def __post_init__(self) -> None:
        if len(self.keys) != len(self.landmarks):
            raise ValueError(f"keys ({len(self.keys)}) and landmarks ({len(self.landmarks)}) differ in length")
        if len(self.keys) == 0:
            raise ValueError("the face pool is empty: no image with a detected face"
                             + (f" under {self.root}" if self.root else ""))
        self._pos = {k: n for n, k in enumerate(self.keys)}
        self._neighbours: dict[tuple[int, int], list[int]] = {}  # (target, k) -> nearest faces
        self._region_sizes: dict[tuple[int, str], tuple[float, float]] = {}  # (face, region) -> sizes
        self._shapes: np.ndarray | None = None  # normalised shapes, built on first use

    def __len__(self) -> int:
        return len(self.keys)

    @classmethod
    def from_index(cls, index) -> "FacePool":
        """Pool of the ``ok`` entries of a :class:`synth.index.Index`."""
        ok = np.flatnonzero(index.ok)
        root = Path(index.root)
        keys = [index.records[n]["relpath"] for n in ok]
        return cls(keys=keys, landmarks=np.asarray(index.landmarks[ok], np.float32),
                   loader=partial(read_under, root), root=str(root))

    @classmethod
    def from_arrays(cls, images: Mapping[str, np.ndarray], landmarks: Mapping[str, np.ndarray]) -> "FacePool":
        """In-memory pool (library use): ``images[key]`` uint8 RGB, ``landmarks[key]`` (468, 2)."""
        keys = list(images)
        return cls(keys=keys, landmarks=np.stack([np.asarray(landmarks[k], np.float32) for k in keys]),
                   loader=partial(operator.getitem, dict(images)))

    def __contains__(self, key) -> bool:
        """Whether ``key`` names a face of the pool."""
        return isinstance(key, str) and key in self._pos

    def index_of(self, key: str) -> int:
        return self._pos[key]

    def target_for(self, i: int, global_seed: int) -> int:
        """Target face of sample ``i``: every face is used once per pass, in a seeded order per pass."""
        n = len(self)
        order = _pass_order(n, int(global_seed), i // n)
        return int(order[i % n])

    def region_sizes(self, n: int, region: str) -> tuple[float, float]:
        """(size of ``region``, face size) of face ``n`` in its image's pixels
        (:func:`synth.mask.region_size`, :func:`synth.face.face_size`); computed once per
        face and region, as every plan of the face asks for them."""
        sizes = self._region_sizes.get((n, region))
        if sizes is None:
            lm = self.landmarks[n]
            sizes = self._region_sizes[(n, region)] = (region_size(lm, region), face_size(lm))
        return sizes

    def partner(self, target: int, k: int, rng: np.random.Generator) -> int:
        """A swap partner for ``target`` drawn uniformly among its ``k`` nearest faces by shape."""
        if len(self) < 2:
            raise ValueError("a swap needs at least two faces in the pool")
        k = min(k, len(self) - 1)
        nn = self._neighbours.get((target, k))
        if nn is None:
            self.prefetch_neighbours([target], k)
            nn = self._neighbours[(target, k)]
        return nn[int(rng.integers(len(nn)))]

    def prefetch_neighbours(self, targets: Iterable[int], k: int) -> None:
        """Find (and cache) the ``k`` nearest faces of each of ``targets`` in one pass.

        Nearest = smallest Euclidean distance between normalised shapes, ties broken by the
        lower face number; the target itself is excluded.  A query is a matrix product
        against all N shapes (candidates), then the exact float64 distances of the few
        candidates decide, so a face's neighbours do not depend on how queries were
        batched.  Batching the targets of a chunk makes it a matrix-matrix product: ~0.1 ms
        per target instead of ~1-3 ms for one query at N ~ 10,000 (156-d shapes).
        """
        if len(self) < 2:
            raise ValueError("a swap needs at least two faces in the pool")
        k = min(k, len(self) - 1)
        todo = sorted({int(t) for t in targets if (int(t), k) not in self._neighbours})
        if not todo:
            return
        if self._shapes is None:
            self._shapes = np.ascontiguousarray(normalised_shape(self.landmarks))
            self._norms = np.einsum("ij,ij->i", self._shapes, self._shapes)
        shapes = self._shapes
        for lo in range(0, len(todo), 256):  # bounded memory: 256 x N distances at a time
            block = np.array(todo[lo:lo + 256])
            # |a - b|^2 - |a|^2 = |b|^2 - 2 a.b: BLAS, rounding error ~1e-12 (|a|^2 ~ 78).
            # The row constant |a|^2 changes no ranking; -2 scales the small factor and |b|^2
            # is added in place (the full 3-temporary expression cost as much as the product).
            approx = np.matmul(shapes[block] * -2.0, shapes.T)
            approx += self._norms
            kth = np.partition(approx, k, axis=1)[:, k]  # (k+1)-th smallest, the target included
            for t, row, limit in zip(block.tolist(), approx, kth):
                cand = np.flatnonzero(row <= limit + 1e-6)  # every face that can be in the k + 1
                exact = ((shapes[cand] - shapes[t]) ** 2).sum(axis=1)
                ranked = cand[np.lexsort((cand, exact))]
                self._neighbours[(t, k)] = [int(j) for j in ranked[:k + 1] if j != t][:k]


@lru_cache(maxsize=8)
def _pass_order(n: int, global_seed: int, pass_no: int) -> np.ndarray:
    return np.random.default_rng([global_seed, pass_no, 0x7A57]).permutation(n)


def as_pool(obj) -> FacePool:
    """Return ``obj`` if it is a pool, else the pool of an index object (built once, kept on it)."""
    if isinstance(obj, FacePool):
        return obj
    pool = getattr(obj, "_face_pool", None)
    if pool is None:
        pool = FacePool.from_index(obj)
        object.__setattr__(obj, "_face_pool", pool)
    return pool
