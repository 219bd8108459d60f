"""Tests for synth.pool: nearest-shape swap partners."""
from __future__ import annotations

import numpy as np
import pytest

from synth.pool import FacePool, normalised_shape


def _pool(n: int = 300, seed: int = 0, duplicates: int = 0) -> FacePool:
    rng = np.random.default_rng(seed)
    base = rng.uniform(50, 150, (468, 2))
    lm = (base[None] + rng.normal(0, 3, (n, 468, 2))).astype(np.float32)
    lm[n - duplicates:] = lm[:duplicates]  # exact duplicate shapes: ties
    return FacePool(keys=[f"f{i}" for i in range(n)], landmarks=lm, loader=lambda key: None)


def _reference(pool: FacePool, t: int, k: int) -> list[int]:
    """k nearest by exact squared distance, ties to the lower index, target excluded."""
    s = normalised_shape(pool.landmarks)
    d = ((s - s[t]) ** 2).sum(axis=1)
    order = [int(j) for j in np.lexsort((np.arange(len(d)), d)) if j != t]
    return order[:k]


@pytest.mark.parametrize("duplicates", [0, 40])
def test_neighbours_are_the_k_nearest_and_batching_does_not_matter(duplicates):
    k = 16
    single, batched = _pool(duplicates=duplicates), _pool(duplicates=duplicates)
    batched.prefetch_neighbours(range(0, 300, 3), k)
    for t in range(0, 300, 3):
        single.partner(t, k, np.random.default_rng(0))
        ref = _reference(single, t, k)
        assert single._neighbours[(t, k)] == ref
        assert batched._neighbours[(t, k)] == ref


def test_partner_is_uniform_among_neighbours_and_deterministic():
    pool = _pool()
    k = 8
    picks = [pool.partner(5, k, np.random.default_rng(s)) for s in range(400)]
    assert set(picks) == set(_reference(pool, 5, k))
    assert 5 not in picks
    assert picks == [pool.partner(5, k, np.random.default_rng(s)) for s in range(400)]
    # k is capped at the pool size minus the target
    small = _pool(n=4)
    assert set(small.partner(0, 16, np.random.default_rng(s)) for s in range(50)) == {1, 2, 3}


def test_partner_needs_two_faces():
    pool = _pool(n=1)
    with pytest.raises(ValueError, match="two faces"):
        pool.partner(0, 4, np.random.default_rng(0))
