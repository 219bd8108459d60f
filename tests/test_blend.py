"""Tests for synth.blend: formulas vs references, Poisson exactness, OpenCV agreement."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import pywt
from skimage import data

from synth import blend as B
from synth.params import Op, Param


def _face_pair(size: int = 128):
    """Astronaut target, chelsea source (both resized), face-sized elliptical uint8 mask."""
    target = cv2.resize(data.astronaut(), (size, size), interpolation=cv2.INTER_AREA)
    source = cv2.resize(data.chelsea(), (size, size), interpolation=cv2.INTER_AREA)
    mask = np.zeros((size, size), np.uint8)
    f = size / 512
    cv2.ellipse(mask, (round(215 * f), round(115 * f)), (round(45 * f), round(60 * f)), 0, 0, 360, 255, -1)
    return source, target, mask


def _lap(a: np.ndarray) -> np.ndarray:
    """5-point Laplacian on the image interior (shape (H-2, W-2, ...)), float64."""
    a = a.astype(np.float64)
    return a[2:, 1:-1] + a[:-2, 1:-1] + a[1:-1, 2:] + a[1:-1, :-2] - 4 * a[1:-1, 1:-1]


def _domain(mask: np.ndarray) -> np.ndarray:
    """The documented Poisson domain: mask > 0.5 (uint8: > 127) minus the image frame."""
    dom = B.mask_to_float(mask) > 0.5
    dom[0] = dom[-1] = False
    dom[:, 0] = dom[:, -1] = False
    return dom


def _mixed_div(s: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Reference: -sum_q v_pq on the interior, v_pq = larger of (s_p-s_q, t_p-t_q) in magnitude."""
    s, t = s.astype(np.float64), t.astype(np.float64)
    total = np.zeros(s[1:-1, 1:-1].shape)
    c = np.s_[1:-1, 1:-1]
    for nb in (np.s_[2:, 1:-1], np.s_[:-2, 1:-1], np.s_[1:-1, 2:], np.s_[1:-1, :-2]):
        ds, dt = s[c] - s[nb], t[c] - t[nb]
        total -= np.where(np.abs(ds) > np.abs(dt), ds, dt)
    return total


# ----------------------------------------------------------------------------- alpha
def test_alpha_matches_formula_with_rounding():
    rng = np.random.default_rng(0)
    s = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    t = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    m = rng.integers(0, 256, (40, 50), dtype=np.uint8)
    out = B.alpha_blend(s, t, m)
    a = (m.astype(np.float32) / 255).astype(np.float64)[..., None]
    exact = (1 - a) * t + a * s
    ref = np.clip(np.rint(exact), 0, 255)
    assert out.dtype == np.uint8 and out.shape == s.shape
    diff = np.abs(out.astype(np.float64) - ref)
    # float32 vs float64 can only disagree on values within round-off of a .5 tie
    near_tie = np.abs(exact - np.floor(exact) - 0.5) < 1e-3
    assert diff.max() <= 1 and not (diff > 0)[~near_tie].any()
    # binary masks are exact copies
    mb = m > 127
    out_b = B.alpha_blend(s, t, mb)
    assert np.array_equal(out_b[mb], s[mb]) and np.array_equal(out_b[~mb], t[~mb])


# ----------------------------------------------------------------------------- Poisson
@pytest.mark.parametrize("size", [64, 128])
def test_poisson_normal_is_exact_on_mask_domain(size):
    s, t, m = _face_pair(size)
    f = B.poisson_blend_float(s, t, m)
    assert f.dtype == np.float32 and f.shape == t.shape
    dom = _domain(m)
    inner = dom[1:-1, 1:-1]
    residual = (_lap(f) - _lap(s))[inner]
    assert np.abs(residual).max() < 1e-2  # float32 round-off; measured ~1e-4
    assert np.array_equal(f[~dom], t[~dom].astype(np.float32))
    u = B.poisson_blend(s, t, m)
    assert u.dtype == np.uint8 and np.array_equal(u[~dom], t[~dom])
    assert np.array_equal(u, np.clip(np.rint(f), 0, 255).astype(np.uint8))
    # the solution really moved: the composite is not a plain paste of the source
    assert np.abs(f[dom] - s[dom]).mean() > 5


def test_poisson_mixed_is_exact_and_differs_from_normal():
    s, t, m = _face_pair(96)
    f = B.poisson_blend_float(s, t, m, mode="mixed")
    dom = _domain(m)
    inner = dom[1:-1, 1:-1]
    assert np.abs((_lap(f) - _mixed_div(s, t))[inner]).max() < 1e-2
    assert np.array_equal(f[~dom], t[~dom].astype(np.float32))
    normal = B.poisson_blend(s, t, m, mode="normal")
    assert np.abs(B.poisson_blend(s, t, m, mode="mixed").astype(int) - normal)[dom].mean() > 2


def test_poisson_mixed_keeps_strong_target_edges():
    h = w = 64
    yy, xx = np.mgrid[0:h, 0:w]
    t = np.full((h, w, 3), 200, np.uint8)
    t[:, 30:32] = 20  # strong dark line crossing the mask
    s = np.dstack([(80 + xx + yy // 2).astype(np.uint8)] * 3)  # smooth ramp
    m = np.zeros((h, w), np.uint8)
    m[12:52, 12:52] = 255
    rows = slice(24, 40)
    line = lambda img: img[rows, 30:32].astype(float).mean()  # noqa: E731
    side = lambda img: img[rows, 24:27].astype(float).mean()  # noqa: E731
    mixed = B.poisson_blend(s, t, m, mode="mixed")
    normal = B.poisson_blend(s, t, m, mode="normal")
    assert side(mixed) - line(mixed) > 150  # the target's line survives (contrast 180)
    assert abs(side(normal) - line(normal)) < 20  # normal cloning erases it


def test_poisson_soft_mask_binarised_at_half_and_mask_types_agree():
    s, t, m = _face_pair(64)
    mb = m > 127
    ref = B.poisson_blend(s, t, m)
    assert np.array_equal(B.poisson_blend(s, t, mb), ref)
    assert np.array_equal(B.poisson_blend(s, t, mb.astype(np.float32)), ref)
    soft = np.where(mb, 0.6, 0.5).astype(np.float32)  # 0.5 is outside, 0.6 inside
    assert np.array_equal(B.poisson_blend(s, t, soft), ref)


def test_poisson_mask_touching_border_and_several_components():
    rng = np.random.default_rng(1)
    s = rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)
    t = cv2.GaussianBlur(rng.integers(0, 256, (48, 40, 3), dtype=np.uint8), (7, 7), 2)
    m = np.zeros((48, 40), bool)
    m[:15, :12] = True  # touches the top-left corner
    m[30:44, 25:40] = True  # touches the right edge
    m[20, 20] = True  # a single pixel
    f = B.poisson_blend_float(s, t, m)
    dom = _domain(m)
    assert np.abs((_lap(f) - _lap(s))[dom[1:-1, 1:-1]]).max() < 1e-2
    assert np.array_equal(f[~dom], t[~dom].astype(np.float32))  # incl. the image frame


def _cv_clone(s, t, m, flag):
    x, y, w, h = cv2.boundingRect(m)
    # OpenCV centres the mask's bounding rect on `center`: this centre keeps it in place.
    # seamlessClone erodes/inverts the mask array in place, hence the copy.
    return cv2.seamlessClone(s, t, m.copy(), (x + w // 2, y + h // 2), flag)


def _grown_box_mask(m: np.ndarray) -> np.ndarray:
    """``m`` plus single pixels at the corners of the documented box-domain box: the
    bounding box of ``m > 0`` grown (split between both ends) to the shortest side ``n``
    with ``n - 1`` a product of 2, 3, 5, 7, 11.  Single pixels vanish in OpenCV's 3-px
    erosion, so OpenCV then solves on that box with the same guidance weights."""
    def smooth(k):
        for p in (2, 3, 5, 7, 11):
            while k % p == 0:
                k //= p
        return k == 1

    x, y, w, h = cv2.boundingRect((m > 0).view(np.uint8))
    out = m.copy()
    box = []
    for lo, side, limit in ((y, h, m.shape[0]), (x, w, m.shape[1])):
        n = side
        while not smooth(n - 1):
            n += 1
        start = max(0, lo - (n - side) // 2)
        end = min(limit, start + n)
        box.append((end - n, end - 1))
    (y0, y1), (x0, x1) = box
    if (y0, y1, x0, x1) == (y, y + h - 1, x, x + w - 1):
        return out  # not grown
    for yy in (y0, y1):
        for xx in (x0, x1):
            out[yy, xx] = 255
    return out


@pytest.mark.parametrize("size,axes", [(96, None), (128, None), (128, (18, 26)), (160, (26, 36))])
def test_poisson_box_domain_matches_opencv(size, axes):
    s, t, m = _face_pair(size)
    if axes is not None:  # bounding boxes (w x h) 37x53 / 53x73: 53 - 1 = 4 * 13 -> grown
        m[:] = 0
        cv2.ellipse(m, (size // 2, size // 2 - 8), axes, 0, 0, 360, 255, -1)
    grown = _grown_box_mask(m)
    assert np.array_equal(grown, m) == (axes is None)  # 17x23 / 23x31 are FFT-friendly already
    ref = _cv_clone(s, t, grown, cv2.NORMAL_CLONE).astype(int)
    out = B.poisson_blend(s, t, m, domain="box").astype(int)
    diff = np.abs(out - ref)
    assert diff.max() <= 1  # OpenCV truncates to uint8, we round
    assert diff.mean() < 0.1  # measured 0.04 (image) at 128-512 px


def test_poisson_box_domain_fast_box_is_not_grown():
    # a bounding box whose sides are already FFT-friendly (33 x 45: 32 = 2^5, 44 = 4 * 11)
    s, t, _ = _face_pair(128)
    m = np.zeros((128, 128), np.uint8)
    cv2.ellipse(m, (60, 50), (22, 16), 0, 0, 360, 255, -1)
    assert cv2.boundingRect(m)[2:] == (45, 33) and np.array_equal(_grown_box_mask(m), m)
    diff = np.abs(B.poisson_blend(s, t, m, domain="box").astype(int) - _cv_clone(s, t, m, cv2.NORMAL_CLONE))
    assert diff.max() <= 1 and diff.mean() < 0.1


@pytest.mark.parametrize("lo,hi,limit", [(10, 50, 256), (0, 164, 256), (100, 256, 256), (0, 256, 256),
                                         (3, 200, 210), (40, 43, 64)])
def test_fast_span_is_shortest_fft_friendly_superset(lo, hi, limit):
    import scipy.fft as sfft

    a, b = B._fast_span(lo, hi, limit)
    assert 0 <= a <= lo and hi <= b <= limit
    if b - a != hi - lo:  # grown: minimal, and the growth is split between the ends
        assert b - a - 1 == sfft.next_fast_len(hi - lo - 1)
        assert abs((lo - a) - (b - hi)) <= 1 or a == 0 or b == limit
    else:  # not grown: already fast, or no room in the image
        assert sfft.next_fast_len(hi - lo - 1) == hi - lo - 1 or sfft.next_fast_len(hi - lo - 1) + 1 > limit


def _sparse_reference(s: np.ndarray, t: np.ndarray, m: np.ndarray, mode: str = "normal") -> np.ndarray:
    """Independent reference: Perez's system on the documented domain (mask > 0.5 minus
    the image frame) assembled pixel by pixel and solved with scipy's spsolve; float64
    (H, W, 3), the target outside the domain."""
    import scipy.sparse as sp
    from scipy.sparse.linalg import spsolve

    dom = _domain(m)
    ref = t.astype(np.float64)
    if not dom.any():
        return ref
    index = -np.ones(dom.shape, int)
    index[dom] = np.arange(dom.sum())
    ys, xs = np.nonzero(dom)
    rows, cols, vals = [np.arange(len(ys))], [np.arange(len(ys))], [np.full(len(ys), 4.0)]
    # sum_q v_pq: sum_q (s_p - s_q) in normal mode
    rhs = (-_lap(s) if mode == "normal" else -_mixed_div(s, t))[ys - 1, xs - 1]
    for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        nb = index[ys + dy, xs + dx]
        inside = nb >= 0
        rows.append(np.flatnonzero(inside)), cols.append(nb[inside]), vals.append(-np.ones(inside.sum()))
        rhs[~inside] += t[ys + dy, xs + dx][~inside]  # Dirichlet: target just outside
    a = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))))
    ref[dom] = spsolve(a.tocsc(), rhs)
    return ref


def test_poisson_mask_domain_matches_sparse_reference_solve():
    s, t, m = _face_pair(48)
    m[18:22, 5:40] = 255  # make the domain non-convex
    assert np.abs(B.poisson_blend_float(s, t, m) - _sparse_reference(s, t, m)).max() < 1e-2


def _edge_masks(size: int) -> dict[str, np.ndarray]:
    """Masks for the documented edge cases, uint8 (size, size)."""
    ellipse = np.zeros((size, size), np.uint8)  # issue #19's 140x180 ellipse at 256 px, scaled
    cv2.ellipse(ellipse, (size // 2, size // 2), (round(size * 70 / 256), round(size * 90 / 256)), 0, 0, 360, 255, -1)
    border = np.zeros((size, size), np.uint8)
    border[: size // 3, : size // 2] = 255  # touches the top and left edges (and the corner)
    border[size // 2:, -size // 4:] = 255  # touches the right edge and the bottom-right corner
    parts = np.zeros((size, size), np.uint8)
    cv2.circle(parts, (size // 4, size // 4), size // 6, 255, -1)
    cv2.circle(parts, (3 * size // 4, 2 * size // 3), size // 5, 255, -1)
    parts[size // 2, size // 2] = 255  # a lone pixel
    parts[size - 8: size - 5, 4: size // 2] = 255  # a thin bar
    ring = np.zeros((size, size), np.uint8)  # a domain with a hole in it
    cv2.circle(ring, (size // 2, size // 2), size // 3, 255, -1)
    cv2.circle(ring, (size // 2, size // 2), size // 8, 0, -1)
    inner = np.zeros((size, size), np.uint8)
    inner[1:-1, 1:-1] = 255  # everything but the frame: the frame alone anchors the solve
    return {"ellipse": ellipse, "border": border, "components": parts, "hole": ring, "all-but-frame": inner}


@pytest.mark.parametrize("mode", B.POISSON_MODES)
@pytest.mark.parametrize("case", ["ellipse", "border", "components", "hole", "all-but-frame"])
def test_poisson_default_agrees_with_reference_within_half_a_level(case, mode):
    """Issue #19's accuracy bound for the default exact solve: within 0.5 gray levels of an
    independent spsolve of the same masked system, target outside the domain, on masks
    touching the border, with several components, with a hole, and with no target pixel
    left but the frame."""
    s, t, _ = _face_pair(64)
    m = _edge_masks(64)[case]
    ref = _sparse_reference(s, t, m, mode)
    B._RING_CACHE.clear()
    f = B.poisson_blend_float(s, t, m, mode=mode)
    assert f.dtype == np.float32 and f.shape == t.shape
    assert np.abs(f - ref).max() < 0.5 / 4  # measured ~1e-4; the goal is 0.5
    dom = _domain(m)
    assert np.array_equal(f[~dom], t[~dom].astype(np.float32))  # frame and outside: exact
    u = B.poisson_blend(s, t, m, mode=mode)
    assert u.dtype == np.uint8 and u.shape == t.shape and np.array_equal(u[~dom], t[~dom])
    assert np.abs(u - np.clip(ref, 0, 255)).max() <= 0.5 + 0.5 / 4  # rounding plus the bound
    assert np.array_equal(B.poisson_blend(s, t, m, mode=mode), u)  # again, from the cache


@pytest.fixture
def small_hodlr(monkeypatch):
    """Rings above 48 pixels take the hierarchical capacitance solve (diagonal blocks of
    <= 24), so the small test images exercise the path that rings above
    ``B._HODLR_DENSE_MAX`` (896) pixels take, with up to ~4 levels."""
    monkeypatch.setattr(B, "_HODLR_LEAF", 24)
    monkeypatch.setattr(B, "_HODLR_DENSE_MAX", 48)
    B._RING_CACHE.clear()
    yield
    B._RING_CACHE.clear()


def _soft_multi_ellipse_mask(size: int, rng: np.random.Generator) -> np.ndarray:
    """float32 (size, size) mask in [0, 1]: 1-3 random ellipses, blurred (soft edges)."""
    m = np.zeros((size, size), np.float32)
    for _ in range(int(rng.integers(1, 4))):
        e = np.zeros((size, size), np.uint8)
        centre = tuple(int(v) for v in rng.integers(size // 6, 5 * size // 6, 2))
        axes = tuple(int(v) for v in rng.integers(size // 10, size // 3, 2))
        cv2.ellipse(e, centre, axes, float(rng.uniform(0, 180)), 0, 360, 255, -1)
        m = np.maximum(m, cv2.GaussianBlur(e, (0, 0), 2.0).astype(np.float32) / 255)
    return m


@pytest.mark.parametrize("mode", B.POISSON_MODES)
@pytest.mark.parametrize("case", ["ellipse", "border", "components", "hole", "all-but-frame"])
def test_poisson_hierarchical_solve_agrees_with_reference(small_hodlr, case, mode):
    """Issue #19: the hierarchical capacitance solve (large rings) is within the
    documented bound of an independent spsolve: the ring residual is refined to
    ``_RING_TOL`` (at worst ``_RING_TOL_MAX``), which bounds the error inside the domain
    (discrete maximum principle); the issue's goal is 0.5 gray levels."""
    s, t, _ = _face_pair(64)
    m = _edge_masks(64)[case]
    ref = _sparse_reference(s, t, m, mode)
    f = B.poisson_blend_float(s, t, m, mode=mode)
    system = next(reversed(B._RING_CACHE.values()))
    assert system.hodlr is not None and not system.exact  # the hierarchical path, no fallback
    assert np.abs(f - ref).max() < B._RING_TOL_MAX + 1e-3  # measured ~1e-3 and below
    dom = _domain(m)
    assert np.array_equal(f[~dom], t[~dom].astype(np.float32))  # frame and outside: exact
    u = B.poisson_blend(s, t, m, mode=mode)
    assert np.array_equal(u, np.clip(np.rint(f), 0, 255).astype(np.uint8))
    assert np.array_equal(u[~dom], t[~dom])
    B._RING_CACHE.clear()  # solved from scratch again: bit-identical (deterministic sketch)
    assert np.array_equal(B.poisson_blend_float(s, t, m, mode=mode), f)


@pytest.mark.parametrize("mode", B.POISSON_MODES)
def test_poisson_hierarchical_solve_matches_dense_on_random_soft_masks(small_hodlr, mode):
    """Random soft multi-ellipse masks (binarised at 0.5), chelsea/astronaut and noise
    sources: the hierarchical solve vs the dense Cholesky solve: max abs difference far
    below the issue's 0.5 gray levels, uint8 results differ by at most 1."""
    rng = np.random.default_rng(19)
    s0, t, _ = _face_pair(96)
    noise = rng.integers(0, 256, s0.shape, dtype=np.uint8)
    worst = 0.0
    for i in range(8):
        m = _soft_multi_ellipse_mask(96, rng)
        s = noise if i % 2 else s0
        hier = B.poisson_blend_float(s, t, m, mode=mode)
        assert next(reversed(B._RING_CACHE.values())).hodlr is not None
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(B, "_HODLR_DENSE_MAX", 10**9)
            mp.setattr(B, "_RING_CACHE", type(B._RING_CACHE)())
            dense = B.poisson_blend_float(s, t, m, mode=mode)
            dense_u = B.poisson_blend(s, t, m, mode=mode)
        worst = max(worst, float(np.abs(hier - dense).max()))
        assert np.abs(B.poisson_blend(s, t, m, mode=mode).astype(int) - dense_u).max() <= 1
    assert worst < B._RING_TOL_MAX  # measured ~2e-3 (noise sources), goal 0.5


def test_poisson_hierarchical_solve_falls_back_to_dense(small_hodlr, monkeypatch):
    s, t, _ = _face_pair(64)
    m = _edge_masks(64)["ellipse"]
    ref = _sparse_reference(s, t, m)
    monkeypatch.setattr(B, "_RING_TOL_MAX", 0.0)  # no hierarchical result is good enough
    f = B.poisson_blend_float(s, t, m)
    system = next(reversed(B._RING_CACHE.values()))
    assert system.hodlr is not None and len(system.exact) == 1  # the dense factor, kept
    assert np.abs(f - ref).max() < 1e-2
    assert np.array_equal(B.poisson_blend_float(s, t, m), f)  # again, with the kept factor


def test_poisson_empty_and_full_masks_are_documented_copies():
    s, t, _ = _face_pair(32)
    for mode in B.POISSON_MODES:
        for full in (np.ones((32, 32), bool), np.full((32, 32), 0.51, np.float32)):  # > 0.5 everywhere
            out = B.poisson_blend(s, t, full, mode=mode)
            assert np.array_equal(out, s) and out is not s
        for empty in (np.zeros((32, 32), np.uint8), np.full((32, 32), 0.5, np.float32)):  # 0.5 is outside
            out = B.poisson_blend(s, t, empty, mode=mode)
            assert np.array_equal(out, t) and out is not t
            assert np.array_equal(B.poisson_blend_float(s, t, empty, mode=mode), t.astype(np.float32))


def test_poisson_mask_cache_is_bit_identical_and_position_independent(monkeypatch):
    s, t, m = _face_pair(96)
    B._RING_CACHE.clear()
    first = {mode: B.poisson_blend_float(s, t, m, mode=mode) for mode in B.POISSON_MODES}
    assert len(B._RING_CACHE) == 1  # one domain, whatever the mode

    def no_build(dom):
        raise AssertionError("the cached system should have been used")

    with monkeypatch.context() as mp:
        mp.setattr(B, "_build_ring_system", no_build)
        for mode in B.POISSON_MODES:
            assert np.array_equal(B.poisson_blend_float(s, t, m, mode=mode), first[mode])
        # the same mask shape elsewhere in the image is the same crop domain: a cache hit,
        # and the result is the one solved from scratch
        shifted = np.roll(m, (7, -5), axis=(0, 1))
        hit = B.poisson_blend(s, t, shifted)
    B._RING_CACHE.clear()
    assert np.array_equal(hit, B.poisson_blend(s, t, shifted))


def test_poisson_mask_cache_is_bounded(monkeypatch):
    s, t, _ = _face_pair(64)
    B._RING_CACHE.clear()
    masks, keys = [], []
    for r in range(8, 16):
        m = np.zeros((64, 64), np.uint8)
        cv2.circle(m, (32, 32), r, 255, -1)
        masks.append(m)
        B.poisson_blend(s, t, m)
        keys.append(next(reversed(B._RING_CACHE)))  # most recently used last
        assert len(B._RING_CACHE) <= B._RING_CACHE_ENTRIES
    assert len(set(keys)) == len(masks)
    assert list(B._RING_CACHE) == keys[-B._RING_CACHE_ENTRIES:]  # least recently used out first
    B.poisson_blend(s, t, masks[-4])  # a hit moves it to the back
    assert list(B._RING_CACHE) == keys[-3:] + [keys[-4]]
    B._RING_CACHE.clear()
    monkeypatch.setattr(B, "_RING_CACHE_BYTES", 10_000)  # smaller than any of these systems
    out = B.poisson_blend(s, t, masks[-1])
    assert len(B._RING_CACHE) == 0  # too large to keep, still solved
    monkeypatch.undo()
    assert np.array_equal(out, B.poisson_blend(s, t, masks[-1]))


def test_poisson_reproduces_target_when_source_differs_by_harmonic_field():
    # source = target + a harmonic field: the exact solve gives the target back for any
    # harmonic field (here affine); OpenCV's box formulation only for a constant one (its
    # guidance switches between two fields along the eroded mask border).  On the sharp
    # astronaut/chelsea pair the two formulations differ by ~20-60 gray levels inside the
    # mask -- see the module docstring and benchmarks/bench_blend.py.
    s, t, m = _face_pair(128)
    t = (20 + t // 3).astype(np.uint8)  # 20..105
    affine = (t + 10 + np.arange(128)[None, :, None]).astype(np.uint8)  # no overflow
    assert np.abs(B.poisson_blend_float(affine, t, m) - t).max() < 1e-2
    shifted = t + 40
    assert np.abs(_cv_clone(shifted, t, m, cv2.NORMAL_CLONE).astype(int) - t).max() <= 1
    assert np.abs(B.poisson_blend(shifted, t, m, domain="box").astype(int) - t).max() <= 1


@pytest.mark.parametrize("domain", ["box", "mask"])
@pytest.mark.parametrize("mode", ["normal", "mixed"])
def test_poisson_composite_is_alpha_blend_of_the_clone(domain, mode):
    s, t, m = _face_pair(96)
    soft = cv2.GaussianBlur(m, (0, 0), 2.5)
    out = B.poisson_blend(s, t, soft, mode=mode, domain=domain, composite=True)
    clone = B.poisson_blend(s, t, soft, mode=mode, domain=domain)
    assert np.array_equal(out, B.alpha_blend(clone, t, soft))
    assert np.array_equal(out[soft == 0], t[soft == 0])  # the mask labels every changed pixel
    assert not np.array_equal(out, t)


def test_poisson_all_ones_and_empty_masks():
    s, t, m = _face_pair(48)
    for domain in B.POISSON_DOMAINS:
        for mode in B.POISSON_MODES:
            assert np.array_equal(B.poisson_blend(s, t, np.ones((48, 48), bool), mode=mode, domain=domain), s)
            assert np.array_equal(B.poisson_blend(s, t, np.zeros((48, 48), np.uint8), mode=mode, domain=domain), t)
    tiny = np.zeros((48, 48), bool)
    tiny[0, :] = True  # only the frame: nothing to solve in either formulation
    assert np.array_equal(B.poisson_blend(s, t, tiny), t)


def test_lattice_potential_kernel():
    a = B._lattice_potential(80)  # exact block (<= 48) and asymptotic part
    assert a[0, 0] == 0 and abs(a[1, 0] - 0.25) < 1e-12 and np.allclose(a, a.T)
    n = np.arange(1, 80)
    assert np.allclose(np.diag(a)[1:], np.cumsum(1 / (2 * n - 1)) / np.pi, atol=1e-8)
    lap = a[2:, 1:-1] + a[:-2, 1:-1] + a[1:-1, 2:] + a[1:-1, :-2] - 4 * a[1:-1, 1:-1]
    assert np.abs(lap).max() < 1e-7  # harmonic away from the origin, seams included
    assert abs(4 * a[1, 0] - 4 * a[0, 0] - 1) < 1e-12  # Delta a = delta at 0 (symmetry)


# ----------------------------------------------------------------------------- pyramid / wavelet
@pytest.mark.parametrize("method,options", [
    ("alpha", {}), ("pyramid", {}), ("pyramid", {"levels": 8}), ("wavelet", {}),
    ("wavelet", {"wavelet": "db2", "levels": 3}), ("wavelet", {"wavelet": "sym2"}), ("poisson", {}),
])
@pytest.mark.parametrize("shape", [(64, 64), (37, 53)])
def test_all_ones_gives_source_all_zeros_gives_target(method, options, shape):
    rng = np.random.default_rng(2)
    s = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    t = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    assert np.array_equal(B.blend(s, t, np.full(shape, 255, np.uint8), method, **options), s)
    assert np.array_equal(B.blend(s, t, np.zeros(shape, bool), method, **options), t)


@pytest.mark.parametrize("method", ["alpha", "pyramid", "wavelet", "poisson"])
def test_mask_dtypes_agree(method):
    s, t, m = _face_pair(64)
    ref = B.blend(s, t, m, method)
    assert ref.dtype == np.uint8 and ref.shape == t.shape
    assert np.array_equal(B.blend(s, t, m > 0, method), ref)
    assert np.array_equal(B.blend(s, t, (m > 0).astype(np.float64), method), ref)
    assert np.array_equal(B.blend(s, t, m[..., None], method), ref)


@pytest.mark.parametrize("method", ["pyramid", "wavelet"])
def test_multiscale_blends_are_between_inputs_and_seam_is_smooth(method):
    s, t, m = _face_pair(128)
    out = B.blend(s, t, m, method, levels=3).astype(int)
    inside = cv2.erode(m, np.ones((15, 15), np.uint8)) > 0
    outside = cv2.dilate(m, np.ones((15, 15), np.uint8)) == 0
    assert np.abs(out - s)[inside].mean() < 12  # deep inside: mostly the source
    assert np.abs(out - t)[outside].mean() < 6  # far outside: mostly the target
    # a smooth transition: fewer large jumps across the mask border than a hard paste
    hard = B.alpha_blend(s, t, m).astype(int)
    band = (cv2.dilate(m, np.ones((3, 3), np.uint8)) > 0) & (cv2.erode(m, np.ones((3, 3), np.uint8)) == 0)
    jump = lambda img: np.abs(np.diff(img, axis=1)).sum(2)[band[:, 1:]].mean()  # noqa: E731
    assert jump(out) < jump(hard)


def _wavelet_reference(s, t, m, wavelet, levels):
    """Textbook wavelet blend in float64: per band, mask (area-resampled to the band grid)
    times the source's coefficients plus (1 - mask) times the target's; waverec2, crop."""
    h, w = m.shape
    m = B.mask_to_float(m)

    def dec(img):
        return pywt.wavedec2(img.astype(np.float64), wavelet, level=levels, mode="periodization", axes=(0, 1))

    def mix(a, cs, ct):
        a = cv2.resize(m, (cs.shape[1], cs.shape[0]), interpolation=cv2.INTER_AREA).astype(np.float64)[..., None]
        return a * cs + (1 - a) * ct

    cs, ct = dec(s), dec(t)
    out = [mix(m, cs[0], ct[0])] + [tuple(mix(m, x, y) for x, y in zip(ds, dt)) for ds, dt in zip(cs[1:], ct[1:])]
    return np.clip(np.rint(pywt.waverec2(out, wavelet, mode="periodization", axes=(0, 1))[:h, :w]), 0, 255)


@pytest.mark.parametrize("wavelet,levels,size", [("haar", 1, 64), ("haar", 3, 128), ("haar", 5, 96),
                                                 ("haar", 4, 100), ("db2", 3, 64)])
def test_wavelet_matches_textbook_blend(wavelet, levels, size):
    # haar at sizes divisible by 2**levels takes the OpenCV fast path (100 px at 4 levels
    # and db2 go through pywavelets); both must equal the two-transform textbook blend
    s, t, m = _face_pair(size)
    m = cv2.GaussianBlur(m, (0, 0), 3)  # soft edge: band masks take intermediate values
    out = B.wavelet_blend(s, t, m, levels=levels, wavelet=wavelet).astype(int)
    diff = np.abs(out - _wavelet_reference(s, t, m, wavelet, levels))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3  # float32 round-off at .5 ties only
    assert np.abs(out - t).max() > 50  # the blend did something


def test_levels_clamped_on_tiny_images():
    rng = np.random.default_rng(3)
    s = rng.integers(0, 256, (5, 3, 3), dtype=np.uint8)
    t = rng.integers(0, 256, (5, 3, 3), dtype=np.uint8)
    m = np.linspace(0, 1, 15, dtype=np.float32).reshape(5, 3)
    for method in ("pyramid", "wavelet"):
        out = B.blend(s, t, m, method, levels=8)
        assert out.shape == s.shape and out.dtype == np.uint8
    s, t, m = s[:2, :2], t[:2, :2], m[:2, :2]
    # no room for a single level: both reduce to the alpha blend
    assert np.array_equal(B.pyramid_blend(s, t, m, levels=8), B.alpha_blend(s, t, m))
    one = np.ones((1, 1, 3), np.uint8)
    assert B.wavelet_blend(one, one * 3, np.ones((1, 1)), levels=2).shape == (1, 1, 3)


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("method", ["alpha", "poisson", "pyramid", "wavelet"])
def test_bad_inputs_name_the_argument(method):
    s, t, m = _face_pair(32)
    with pytest.raises(ValueError, match="source"):
        B.blend(s[:20], t, m, method)
    with pytest.raises(ValueError, match="target"):
        B.blend(s, t.astype(np.float32), m, method)
    with pytest.raises(ValueError, match="source"):
        B.blend(s[..., 0], t, m, method)
    with pytest.raises(ValueError, match="mask"):
        B.blend(s, t, m.astype(np.float32), method)  # float mask in 0..255: out of range
    with pytest.raises(ValueError, match="mask"):
        B.blend(s, t, m[:10], method)


def test_bad_options_name_the_option():
    s, t, m = _face_pair(32)
    with pytest.raises(ValueError, match="mode"):
        B.poisson_blend(s, t, m, mode="monochrome")
    with pytest.raises(ValueError, match="domain"):
        B.poisson_blend(s, t, m, domain="image")
    with pytest.raises(ValueError, match="levels"):
        B.pyramid_blend(s, t, m, levels=0)
    with pytest.raises(ValueError, match="levels"):
        B.wavelet_blend(s, t, m, levels=2.5)
    with pytest.raises(ValueError, match="wavelet"):
        B.wavelet_blend(s, t, m, wavelet="morlet")
    with pytest.raises(ValueError, match=r"method: unknown blend 'laplace'.*alpha.*wavelet"):
        B.blend(s, t, m, "laplace")


# ----------------------------------------------------------------------------- registry
def test_registry_and_ops():
    assert set(B.BLENDS) == {op.name for op in B.OPS} == {"alpha", "poisson", "pyramid", "wavelet"}
    s, t, m = _face_pair(32)
    for op in B.OPS:
        assert isinstance(op, Op) and op.stage == "blend" and op.fn is B.BLENDS[op.name]
        defaults = {}
        for name, param in op.params.items():
            assert isinstance(param, Param)
            param.check(param.default, f"{op.name}.{name}")
            defaults[name] = param.default
        # every op runs with its defaults and equals the dispatcher
        assert np.array_equal(op.fn(s, t, m, **defaults), B.blend(s, t, m, op.name, **defaults))
    params = {op.name: op.params for op in B.OPS}
    assert params["poisson"]["mode"].choices == ("normal", "mixed")
    assert (params["pyramid"]["levels"].low, params["pyramid"]["levels"].high) == (1, 8)
    for w in params["wavelet"]["wavelet"].choices:  # every listed wavelet runs
        assert B.wavelet_blend(s, t, m, wavelet=w).shape == t.shape


@pytest.mark.parametrize("method", ["alpha", "poisson", "pyramid", "wavelet"])
def test_non_contiguous_inputs_and_determinism(method):
    s, t, m = _face_pair(64)
    flipped = B.blend(s[:, ::-1], t[::-1], m.T, method)
    assert np.array_equal(flipped, B.blend(s[:, ::-1].copy(), t[::-1].copy(), m.T.copy(), method))
    wide = np.zeros((64, 128, 3), np.uint8)
    wide[:, ::2] = s
    assert np.array_equal(B.blend(wide[:, ::2], t, m, method), B.blend(s, t, m, method))
    s0, t0, m0 = s.copy(), t.copy(), m.copy()
    assert np.array_equal(B.blend(s, t, m, method), B.blend(s, t, m, method))
    assert np.array_equal(s, s0) and np.array_equal(t, t0) and np.array_equal(m, m0)  # inputs untouched


@pytest.mark.parametrize("triangle", [False, True])
def test_ring_kernel_blocks_match_the_potential(triangle):
    """The blocked kernel gather gives ``a(by_i - by_j, bx_i - bx_j)`` across block
    boundaries (m > _KERNEL_ROWS), its maximum, and (triangle) zeros above the blocks."""
    rng = np.random.default_rng(3)
    m = 2 * B._KERNEL_ROWS + 17
    by, bx = rng.integers(0, 100, m), rng.integers(0, 100, m)
    size = 128
    cap, top = B._ring_kernel(by, bx, B._potential_table(size), triangle=triangle)
    a = B._lattice_potential(size)
    want = a[np.abs(by[:, None] - by[None, :]), np.abs(bx[:, None] - bx[None, :])].astype(np.float32)
    lower = np.tril(np.ones((m, m), bool))
    got = cap[lower] if triangle else cap
    np.testing.assert_allclose(got, want[lower] if triangle else want, rtol=0, atol=1e-6)
    assert top == float(cap.max()) == float(want.max())
    if triangle:
        rows = np.arange(m)[:, None] // B._KERNEL_ROWS
        beyond = np.arange(m)[None, :] >= np.minimum((rows + 1) * B._KERNEL_ROWS, m)
        assert not cap[beyond].any()
