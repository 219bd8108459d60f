"""Blending an aligned source face into a target image.

Every blend has the signature ``fn(source, target, mask, **options) -> uint8 HxWx3``:

- ``source``, ``target``: uint8 HxWx3 RGB, same H and W; the source is already warped
  into the target's frame.
- ``mask``: HxW uint8 (0..255), bool, or float in [0, 1]; 1 takes the source, 0 keeps
  the target.

Methods: :func:`alpha_blend`, :func:`poisson_blend` (gradient-domain, own DST-based
solver), :func:`pyramid_blend` (Laplacian pyramid), :func:`wavelet_blend`.  They are
registered in :data:`BLENDS` (dispatch with :func:`blend`) and in :data:`OPS` for recipes.

Poisson solver (``domain="mask"``, the default)
-----------------------------------------------
The result is Pérez et al.'s discrete Poisson image editing on the binarised mask
``Omega = mask > 0.5`` (minus the image's outer 1-px frame, which always carries the
boundary condition): ``f = target`` outside ``Omega`` and, for every ``p`` in ``Omega``,
``sum_q (f_p - f_q) = sum_q v_pq`` over the 4 neighbours ``q`` (``v_pq = s_p - s_q``
for ``mode="normal"``).  It is solved exactly (up to float32 round-off; to within 0.05
gray levels for rings above 896 px, see "Cost" below) on the mask's
bounding box with one fast DST-I solve plus a small "capacitance" system:

1. ``f = p - h`` with a particular solution ``p`` (the source itself in normal mode,
   one DST box solve of the mixed guidance in mixed mode), and ``h`` harmonic in
   ``Omega`` with ``h = p - target`` on the ring ``B`` of pixels just outside ``Omega``.
2. ``h`` is written as a single-layer potential ``h = sum_b sigma_b a(x - b)`` over the
   ring, with ``a`` the potential kernel of the 5-point Laplacian on the infinite
   lattice (``Delta a = delta``; tabulated once per process, mask-independent).  Then
   ``h`` is exactly harmonic off the ring, and matching ``h`` on ``B`` is an ``m x m``
   linear system (``m`` = ring size, 460 for issue #19's 140x180-px ellipse).
3. ``h`` on the box is recovered with one DST-I Poisson solve (sources ``sigma`` on the
   ring, Dirichlet values from the potential on the box border).

Cost: two DST-I transforms of the padded box, the ``m x m`` capacitance system and a
mask-independent kernel table cached per process (float32, (2 S - 1)^2 for boxes below S
px, S a power of two: 1 MB at S = 256, 16 MB at 1024).  Rings up to 896 pixels (issue
#19's ellipse at 256 px: m = 460; the generator's face-oval masks at 256 px: ~560) get a
dense float32 Cholesky factor (O(m^3)).  Larger rings get a hierarchical (HODLR)
factorisation instead (measured break-even, build plus solve, ~800-900 pixels): the ring
is split recursively into spatially compact halves, blocks up to 256 pixels are
Cholesky-factored, and the kernel between two halves is compressed to rank 24 (randomised
range finder with a fixed seed) and joined by Woodbury's formula: the factorisation takes
2.6 instead of 4.3 ms at m = 918 (issue #19's ellipse at 512 px), the whole per-mask build
~1.3x less at m ~ 1000 and ~1.4x at m ~ 1400, but each solve costs a little more
(refinement).  It is an approximation, so every solve refines its result against the exact
matrix until the ring residual is at most 2e-3 gray levels; where float32 round-off stalls
the refinement above that (large charges, e.g. noise images: measured up to 0.02) a
residual up to 0.05 is accepted, and beyond that the dense Cholesky solve is used.  The
error inside the domain is bounded by the ring residual (discrete maximum principle), so
the result is within 0.05 gray levels (measured: ~1e-3) of the exact discrete solution
plus float32 round-off, far inside issue #19's 0.5; rounded to uint8 it can differ by 1
from the dense solve only where the value lies that close to a .5 tie.  Masks do repeat
(video with a fixed mask, faces aligned to one template, benchmarks), so everything that
depends on the mask alone -- the ring, the kernel gathers and the factorisation -- is
cached per process for the last 4 masks (at most 64 MB; keyed by the mask's domain inside
its bounding box, wherever that box lies): a mask seen again costs only the two DSTs plus
an O(m^2) solve.  The result is deterministic and bit-identical with or without the cache.
Timings, and against ``cv2.seamlessClone``: see BENCHMARKS.md, "Blending", "Issue #19".

A plain DST solve on the box alone would put the boundary condition on the box border,
not the mask border, and change target pixels outside the mask; this scheme keeps every
pixel outside ``Omega`` bit-exact and the Laplacian residual inside ``Omega`` at ~1e-4.

``domain="box"`` reproduces OpenCV's ``seamlessClone`` formulation instead: one DST
solve on a box around the mask with Dirichlet = target on the box border and guidance =
source gradients weighted by the mask eroded by 3 px (target gradients elsewhere).  The
box is the bounding box of ``mask > 0`` grown by a few pixels (split between both ends;
at most 9 for sides up to 256 px) to the next size whose DST is FFT-friendly, because a
side with a large prime factor makes the solve several times slower (see
:func:`_fast_span`).  It agrees with ``cv2.seamlessClone(..., NORMAL_CLONE)`` given a mask
with that bounding box to within 1 gray level (OpenCV truncates, we round) but modifies
target pixels inside the box outside the mask and keeps target content in a 3-px band
inside the mask.  The grown box changes the result little, most at the mask's extreme
pixels, which a box without margin pins to the target (see BENCHMARKS.md, "Blending",
"Issue #4").

The two formulations differ by design, not by solver error: OpenCV anchors the clone
3-4 px inside the mask and spreads the colour mismatch of the boundary over the whole box
(least squares), the exact solve anchors it on the mask border.  On astronaut (target)
/ chelsea (source) with a face ellipse, ``"mask"`` vs OpenCV differs by 1.5 (256 px) /
0.8 (512 px) gray levels mean over the image, but 45 / 22 mean inside the mask (see
benchmarks/bench_blend.py).  If the source equals the target plus any harmonic (e.g.
affine) field, the exact solve returns the target; OpenCV's only for a constant field.

Gotcha: ``cv2.seamlessClone`` erodes and inverts its ``mask`` argument in place; pass a
copy when comparing.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from functools import lru_cache
from typing import NamedTuple

import cv2
import numpy as np
import pywt
import scipy.fft as sfft
from numpy.lib.stride_tricks import as_strided
from scipy.linalg import lapack

from synth._checks import check_choice, check_image, check_same_shape, mask_to_float, round_uint8
from synth.params import Op, Param

POISSON_MODES = ("normal", "mixed")
POISSON_DOMAINS = ("mask", "box")
WAVELETS = ("haar", "db2", "sym2", "db3", "sym3", "db4", "coif1", "bior2.2")


# ----------------------------------------------------------------------------- helpers
def _prepare(source, target, mask) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    check_image(source, "source")
    check_image(target, "target")
    check_same_shape(source, target, "source", "target")
    return source, target, mask_to_float(mask, target.shape[:2], "mask")


def _rgb(a: np.ndarray) -> np.ndarray:
    """HxW float32 -> HxWx3 copy; numpy broadcasting over a trailing axis of length 3 is
    ~4x slower than elementwise ops on matching shapes, so masks are expanded once."""
    return cv2.cvtColor(np.ascontiguousarray(a, dtype=np.float32), cv2.COLOR_GRAY2RGB)


def _check_levels(levels) -> int:
    if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) or levels < 1:
        raise ValueError(f"levels: expected an integer >= 1, got {levels!r}")
    return int(levels)


# ----------------------------------------------------------------------------- alpha
def _add_to_uint8(x: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``to_uint8(x + target)`` for float32 x, uint8 target (HxWx3) in one OpenCV pass: its
    saturating conversion rounds half to even like ``np.rint`` and clips to 0..255, with
    none of the full-size temporaries (fresh large arrays cost page faults)."""
    return cv2.add(x, target, dtype=cv2.CV_8U)


def _difference(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``source - target`` as float32 HxWx3 in one OpenCV pass."""
    return cv2.subtract(source, target, dtype=cv2.CV_32F)


def alpha_blend(source: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Alpha-blend ``source`` into ``target`` with ``mask`` as the per-pixel opacity.

    Computes ``round((1 - a) * target + a * source)`` per pixel and channel, ``a`` being the
    mask as float in [0, 1].

    Parameters
    ----------
    source : numpy.ndarray, uint8 (H, W, 3), RGB
        The face, already warped into the target's frame.  Any strides; not modified.
    target : numpy.ndarray, uint8 (H, W, 3), RGB
        Same H and W as ``source``.  Any strides; not modified.
    mask : numpy.ndarray, (H, W) or (H, W, 1)
        Opacity of the source: uint8 0..255 (divided by 255), bool, or any float dtype with
        values in [0, 1].  1 takes the source, 0 keeps the target.

    Returns
    -------
    out : numpy.ndarray, uint8 (H, W, 3), RGB
        A new array.

    Raises
    ------
    ValueError
        ``source`` or ``target`` is not a numpy uint8 (H, W, 3) array with H, W >= 1, or
        their H, W differ; ``mask`` is not a numpy array, its shape is not (H, W) or
        (H, W, 1), its dtype is not uint8, bool or floating, or a float mask has a value
        outside [0, 1] (NaN included).

    Notes
    -----
    Computed in float32 as ``target + a * (source - target)`` and converted with OpenCV's
    saturating, round-half-to-even conversion: equal to the formula above up to float32
    round-off (~1e-5), so only values within that of a .5 tie can round differently.
    """
    source, target, a = _prepare(source, target, mask)
    diff = _difference(source, target)
    cv2.multiply(diff, _rgb(a), dst=diff)
    return _add_to_uint8(diff, target)


# ----------------------------------------------------------------------------- Poisson
_CROSS_3x3 = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
_EXACT_RADIUS = 48  # beyond this the 3-term asymptotic expansion of a(x) is within 6e-9


def _lattice_potential(size: int) -> np.ndarray:
    """Potential kernel ``a(i, j)``, ``0 <= i, j < size``, of the 5-point Laplacian.

    ``a(0) = 0`` and ``sum_nbrs a - 4 a = delta``.  Exact values near the origin from
    ``a(x1, x2) = 1/(2 pi) int_0^pi (1 - exp(-s|x1|) cos(x2 t)) / sinh(s) dt`` with
    ``cosh s = 2 - cos t`` (Gauss-Legendre; converged to 1e-12), the asymptotic expansion
    ``ln r / 2pi + (2 gamma + ln 8) / 4pi - cos(4 phi) / (24 pi r^2)`` elsewhere.
    """
    i = np.arange(size, dtype=np.float64)
    x2, y2 = i[:, None] ** 2, i[None, :] ** 2
    r2 = x2 + y2
    with np.errstate(divide="ignore", invalid="ignore"):
        table = (np.log(r2) / (4 * np.pi) + (2 * np.euler_gamma + np.log(8.0)) / (4 * np.pi)
                 - (x2 * x2 - 6 * x2 * y2 + y2 * y2) / (24 * np.pi * r2 ** 3))
    n = min(size, _EXACT_RADIUS + 1)
    nodes, weights = np.polynomial.legendre.leggauss(512)
    theta = (nodes + 1) * (np.pi / 2)
    weights = weights * (np.pi / 2)
    s = np.arccosh(2.0 - np.cos(theta))
    k = np.arange(n, dtype=np.float64)
    # 1 - e^{-s x1} cos(x2 t) = -expm1(-s x1) + e^{-s x1} 2 sin^2(x2 t / 2): no cancellation
    first = (-np.expm1(-np.outer(k, s)) / np.sinh(s)) @ weights
    decay = np.exp(-np.outer(k, s)) * (weights / np.sinh(s))
    table[:n, :n] = (first[:, None] + decay @ (2 * np.sin(np.outer(theta, k) / 2) ** 2)) / (2 * np.pi)
    return table


@lru_cache(maxsize=None)
def _potential_table(size: int) -> np.ndarray:
    """Per-process float32 cache of :func:`_lattice_potential` (abs. error ~1e-7),
    mirrored to all signs of the offset: ``table[size - 1 + dy, size - 1 + dx] =
    a(|dy|, |dx|)``, shape (2 size - 1, 2 size - 1).  With it, kernel matrices are one
    outer subtraction of flat indices plus one gather, and ``a(r, |x - c|)`` for a run
    of ``x`` is one contiguous slice.  size is a power of two: at most ~log2(image size)
    tables (16 MB at size 1024).
    """
    quadrant = _lattice_potential(size).astype(np.float32)
    half = np.concatenate([quadrant[:, :0:-1], quadrant], axis=1)
    table = np.concatenate([half[:0:-1], half], axis=0)
    table.flags.writeable = False
    return table


@lru_cache(maxsize=256)
def _inverse_eigenvalues(nh: int, nw: int) -> np.ndarray:
    """1 / eigenvalues of the 5-point Dirichlet Laplacian on an nh x nw grid, repeated
    for the 3 channels: float32 (nh, nw, 3)."""
    ly = 2.0 * np.cos(np.pi * np.arange(1, nh + 1) / (nh + 1)) - 2.0
    lx = 2.0 * np.cos(np.pi * np.arange(1, nw + 1) / (nw + 1)) - 2.0
    inv = _rgb((1.0 / (ly[:, None] + lx[None, :])).astype(np.float32))
    inv.flags.writeable = False
    return inv


def _dst(x):
    return sfft.dstn(x, type=1, axes=(0, 1), norm="ortho", overwrite_x=True)


def _dst_solve(rhs: np.ndarray) -> np.ndarray:
    """Solve ``Delta u = rhs`` (5-point) with zero Dirichlet border; rhs (nh, nw, 3)."""
    spec = _dst(rhs)
    spec *= _inverse_eigenvalues(*rhs.shape[:2])
    return _dst(spec)


def _guidance_div(s: np.ndarray, t: np.ndarray, mode: str) -> np.ndarray:
    """``-sum_q v_pq`` per pixel (the Laplacian the solution must have), float32 (h, w, 3).

    ``v`` for the pair (p, p+1) along each axis: source difference (normal), the larger of
    the source/target differences per channel (mixed; ties keep the target).
    """
    div = np.zeros_like(s)
    for axis in (0, 1):
        ds = np.diff(s, axis=axis)
        if mode == "mixed":
            dt = np.diff(t, axis=axis)
            v = np.where(np.abs(ds) > np.abs(dt), ds, dt)
        else:
            v = ds
        if axis == 0:
            div[:-1] += v
            div[1:] -= v
        else:
            div[:, :-1] += v
            div[:, 1:] -= v
    return div


def _row_runs(table: np.ndarray, n: int) -> np.ndarray:
    """Read-only view ``[r, c, k] = table[r, c + k]``, k < n (a sliding window along rows;
    ``as_strided`` directly, since ``sliding_window_view``'s checks cost ~20 us a call)."""
    rows, cols = table.shape
    return as_strided(table, (rows, cols - n + 1, n), (table.strides[0], table.strides[1], table.strides[1]),
                      writeable=False)


def _capacitance_factor(cap: np.ndarray, alpha: float) -> np.ndarray:
    """Upper Cholesky factor of ``A = alpha 11^T - C``, ``C = cap`` float32 (n, n), or None
    if ``A`` is not positive definite (``spotrf`` failed).

    ``C`` (potential kernel between ring pixels) is conditionally negative definite, so
    ``A`` is positive definite once ``alpha`` is large enough (``max C`` is, in practice,
    with cond(A) ~ 1e2-1e3).
    """
    # A is exactly symmetric, so its transpose is A in Fortran order: no copy in LAPACK's wrapper
    factor, info = lapack.spotrf(np.subtract(alpha, cap, dtype=np.float32).T, lower=0, clean=0, overwrite_a=1)
    return factor if info == 0 else None


_HODLR_LEAF = 256  # diagonal blocks up to this size are factored densely (Cholesky)
_HODLR_RANK = 24  # rank of each off-diagonal block (measured: 1e-6 relative needs ~19)
_RING_TOL = 2e-3  # gray levels: max residual of the capacitance system on the ring
_RING_TOL_MAX = 0.05  # gray levels: above this (float32 round-off stalls), the dense fallback
_RING_STEPS = 6  # at most this many refinement steps
_HODLR_DENSE_MAX = 896  # rings up to this size: dense Cholesky (measured break-even ~800-900)


def _spatial_order(by: np.ndarray, bx: np.ndarray) -> np.ndarray:
    """Permutation of the ring pixels by recursive bisection (at the median of the longer
    side of each part's bounding box) down to parts of <= :data:`_HODLR_LEAF` pixels; the
    part ``[lo, hi)`` splits at ``lo + (hi - lo) // 2``, as :func:`_hodlr_factor` does."""
    parts, stack = [], [np.arange(by.size)]
    while stack:
        ix = stack.pop()
        if ix.size <= _HODLR_LEAF:
            parts.append(ix)
            continue
        y, x = by[ix], bx[ix]
        key = y if np.ptp(y) >= np.ptp(x) else x
        ix = ix[np.argsort(key, kind="stable")]
        half = ix.size // 2
        stack += [ix[half:], ix[:half]]  # the first half is popped (and emitted) first
    return np.concatenate(parts)


@lru_cache(maxsize=64)
def _sketch(n: int, rank: int) -> np.ndarray:
    """Fixed Gaussian test matrix (n, rank), float32: the compression is randomised but
    reproducible (same domain, same factorisation, same result)."""
    out = np.random.default_rng(19).standard_normal((n, rank)).astype(np.float32)
    out.flags.writeable = False
    return out


class _Leaf(NamedTuple):
    factor: np.ndarray  # upper Cholesky factor of the diagonal block of A


class _Node(NamedTuple):
    """A part split in two: ``A = [[A1, Q Bt^T], [Bt Q^T, A2]]`` with the off-diagonal block
    of rank <= :data:`_HODLR_RANK`; solved by Woodbury, ``W = D^-1 Z`` (``Z = diag(Q, Bt)``,
    ``D = diag(A1, A2)``) and ``Sinv = (J + Z^T W)^-1``, ``J = [[0, I], [I, 0]]``."""

    half: int
    first: object
    second: object
    q: np.ndarray
    bt: np.ndarray
    w: np.ndarray
    sinv: np.ndarray


def _hodlr_apply(node, b: np.ndarray) -> np.ndarray:
    """``A^-1 b`` with the approximate factorisation ``node``; b float32 (n, k)."""
    if isinstance(node, _Leaf):
        x, info = lapack.spotrs(node.factor, b, lower=0)
        if info != 0:  # only for malformed arguments
            raise RuntimeError(f"poisson_blend: spotrs failed (info={info})")
        return x
    h = node.half
    y = np.concatenate([_hodlr_apply(node.first, b[:h]), _hodlr_apply(node.second, b[h:])])
    z = np.concatenate([node.q.T @ y[:h], node.bt.T @ y[h:]])
    y -= node.w @ (node.sinv @ z)
    return y


def _hodlr_factor(cap: np.ndarray, alpha: float):
    """Hierarchical (HODLR) factorisation of ``A = alpha 11^T - C``, ``C = cap`` float32
    (n, n) in :func:`_spatial_order`; None if a diagonal block is not positive definite.

    Diagonal blocks up to :data:`_HODLR_LEAF` get a Cholesky factor; above, the two
    off-diagonal blocks (the kernel between two halves of the ring, numerically of low rank)
    are compressed to rank :data:`_HODLR_RANK` with a randomised range finder, and the
    halves are glued by Woodbury's formula.  Cost ~O(n k^2 log n) plus two passes over the
    off-diagonal blocks, instead of the O(n^3) Cholesky.  An approximation: the solve
    refines its result with the exact ``A`` (see :meth:`_RingSystem.solve`).
    """
    n = cap.shape[0]
    if n <= _HODLR_LEAF:
        factor = _capacitance_factor(cap, alpha)
        return None if factor is None else _Leaf(factor)
    h = n // 2
    first, second = _hodlr_factor(cap[:h, :h], alpha), _hodlr_factor(cap[h:, h:], alpha)
    if first is None or second is None:
        return None
    c12 = cap[:h, h:]
    omega = _sketch(n - h, min(_HODLR_RANK, h, n - h))
    y = np.subtract(alpha * omega.sum(axis=0), c12 @ omega, dtype=np.float32)  # A12 omega
    q = lapack.sorgqr(*lapack.sgeqrf(y, overwrite_a=1)[:2], overwrite_a=1)[0]
    bt = np.subtract(alpha * q.sum(axis=0), c12.T @ q, dtype=np.float32)  # A12^T q: A12 ~ q bt^T
    k = q.shape[1]
    w = np.zeros((n, 2 * k), np.float32)
    w[:h, :k] = _hodlr_apply(first, q)
    w[h:, k:] = _hodlr_apply(second, bt)
    s = np.zeros((2 * k, 2 * k))
    s[:k, :k] = q.T @ w[:h, :k]
    s[k:, k:] = bt.T @ w[h:, k:]
    s[:k, k:] = s[k:, :k] = np.eye(k)
    lu, piv, info = lapack.dgetrf(s, overwrite_a=1)
    if info != 0:
        return None
    sinv = lapack.dgetri(lu, piv, overwrite_lu=1)[0].astype(np.float32)
    return _Node(h, first, second, q, bt, w, sinv)


class _RingSystem(NamedTuple):
    """The part of the exact solve that depends on the domain only (see :func:`_ring_system`).

    ``by``, ``bx``: ring pixels (crop coordinates, intp (m,); in :func:`_spatial_order` if
    ``hodlr`` is set); ``nh``, ``nw``: the DST grid; ``alpha``: the shift that makes
    ``A = alpha 11^T - C`` positive definite (``C``: the potential kernel between ring
    pixels); ``exact``: a list holding the dense upper Cholesky factor of ``A`` (filled
    at build time for rings up to :data:`_HODLR_DENSE_MAX` pixels, else only if the
    fallback needs it); ``cap``, ``hodlr``: ``C`` (float32 (m, m)) and
    :func:`_hodlr_factor` of ``A`` for larger rings (else None); ``runs``: per ring pixel,
    the potential along the four sides of the grid border, one pixel outside the grid (top,
    bottom: float32 (m, nw); left, right: (m, nh)).
    """

    by: np.ndarray
    bx: np.ndarray
    nh: int
    nw: int
    alpha: float
    exact: list
    cap: np.ndarray | None
    hodlr: object
    runs: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]

    @property
    def nbytes(self) -> int:
        def size(node):
            if node is None:
                return 0
            if isinstance(node, _Leaf):
                return node.factor.nbytes
            return (size(node.first) + size(node.second) + node.q.nbytes + node.bt.nbytes + node.w.nbytes
                    + node.sinv.nbytes)
        cap = 0 if self.cap is None else self.cap.nbytes
        return (self.by.nbytes + self.bx.nbytes + cap + size(self.hodlr) + sum(f.nbytes for f in self.exact)
                + sum(r.nbytes for r in self.runs))

    def _residual(self, b: np.ndarray, x: np.ndarray) -> np.ndarray:
        """``b - A x``, ``A = alpha 11^T - C`` applied without forming it."""
        r = self.cap @ x
        r += b
        r -= self.alpha * x.sum(axis=0, dtype=np.float64).astype(np.float32)
        return r

    def solve(self, rhs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``sigma``, ``c`` with ``C sigma + c = rhs`` (rhs float32 (m, 3)): ``A x = -rhs``
        gives ``sigma = x``, ``c = -alpha sum(x)``.

        Rings up to :data:`_HODLR_DENSE_MAX` pixels: the dense Cholesky factor (float32
        round-off, ~1e-4 gray levels on the ring).  Larger rings: ``x`` from the
        hierarchical factorisation, refined (``x += P r``, ``r`` the residual with the exact
        ``A``) until ``max |r|`` is at most :data:`_RING_TOL` gray levels; if float32
        round-off stops the refinement above that (large charges, e.g. noise images), the
        result is kept if ``max |r| <= _RING_TOL_MAX``, else the dense Cholesky solve is
        used (computed once and kept; not seen in practice).  Deterministic: the same
        domain and right-hand side give bit-identical results, cached or not.
        """
        b = -rhs
        if self.hodlr is None:
            x = lapack.spotrs(self.exact[0], b, lower=0)[0]
        else:
            x, err = self._refine(b, _hodlr_apply(self.hodlr, b), lambda r: _hodlr_apply(self.hodlr, r))
            if err > _RING_TOL_MAX:
                if not self.exact:
                    factor = _capacitance_factor(self.cap, self.alpha)
                    if factor is None:  # (the hierarchical factorisation's blocks were)
                        raise RuntimeError("poisson_blend: capacitance system is not positive definite")
                    self.exact.append(factor)
                factor = self.exact[0]
                x, _ = self._refine(b, lapack.spotrs(factor, b, lower=0)[0],
                                    lambda r: lapack.spotrs(factor, r, lower=0)[0])
        return x, (-self.alpha * x.sum(axis=0, dtype=np.float64)).astype(np.float32)

    def _refine(self, b: np.ndarray, x: np.ndarray, precondition) -> tuple[np.ndarray, float]:
        """``x`` refined with ``x += precondition(b - A x)`` until ``max |b - A x| <=
        _RING_TOL``, at most :data:`_RING_STEPS` times, stopping early once a step no
        longer halves the residual (float32 round-off); returns ``x`` and its residual."""
        r = self._residual(b, x)
        err = float(np.abs(r).max())
        for _ in range(_RING_STEPS):
            if err <= _RING_TOL:
                break
            trial = x + precondition(r)
            r_trial = self._residual(b, trial)
            err_trial = float(np.abs(r_trial).max())
            if err_trial < err:
                x, r = trial, r_trial
            if err_trial > 0.5 * err:
                err = min(err, err_trial)
                break
            err = err_trial
        return x, err


def _dense_factor(cap: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
    """:func:`_capacitance_factor` of the whole ring, doubling ``alpha`` until ``A`` is
    positive definite (never needed in practice; kept for safety)."""
    for _ in range(8):
        factor = _capacitance_factor(cap, alpha)
        if factor is not None:
            return factor, alpha
        alpha *= 2.0
    raise RuntimeError("poisson_blend: capacitance system is not positive definite")


_KERNEL_ROWS = 64  # kernel rows gathered per pass: their index block (64 m intp) stays in cache


def _ring_kernel(by: np.ndarray, bx: np.ndarray, table: np.ndarray, triangle: bool) -> tuple[np.ndarray, float]:
    """Potential kernel between ring pixels, ``C[i, j] = a(by_i - by_j, bx_i - bx_j)``,
    float32 (m, m), and ``max C`` (a Python float).

    ``table`` is :func:`_potential_table`.  ``triangle``: only ``C[i, j]`` for ``j <= i``
    is needed (what LAPACK reads of ``C.T``); entries of blocks of :data:`_KERNEL_ROWS`
    rows up to the block's last row are gathered, the rest stay 0.  ``max C`` is the same
    either way (``C`` is symmetric).  Each block is one outer subtraction of flat indices
    into the mirrored table and one gather, through one reused index buffer, so no (m, m)
    ``intp`` index matrix (7 MB at m ~ 950) is allocated.
    """
    width = table.shape[1]
    centre = (width - 1) // 2 * (width + 1)  # flat index of offset (0, 0)
    flat = by * width + bx
    shifted = flat + centre
    values = table.ravel()
    m = flat.size
    cap = np.zeros((m, m), np.float32)
    buffer = np.empty(min(m, _KERNEL_ROWS) * m, np.intp)
    top = -np.inf
    for k0 in range(0, m, _KERNEL_ROWS):
        k1 = min(m, k0 + _KERNEL_ROWS)
        cols = k1 if triangle else m
        idx = buffer[:(k1 - k0) * cols].reshape(k1 - k0, cols)
        np.subtract.outer(shifted[k0:k1], flat[:cols], out=idx)
        block = cap[k0:k1, :cols]
        # mode "clip" writes straight into the strided block (the default "raise" buffers
        # it); every index is in range, the table being larger than every offset
        np.take(values, idx, out=block, mode="clip")
        top = max(top, float(block.max()))
    return cap, top


def _build_ring_system(dom: np.ndarray) -> _RingSystem:
    """:class:`_RingSystem` of the crop domain ``dom`` ((hc, wc) bool, False on the frame)."""
    hc, wc = dom.shape
    # ring: pixels outside dom with a 4-neighbour in it (dom is False on the crop frame)
    ring = cv2.dilate(dom.view(np.uint8), _CROSS_3x3)
    ring[dom] = 0
    by, bx = np.nonzero(ring)
    dense = by.size <= _HODLR_DENSE_MAX
    if not dense:
        order = _spatial_order(by, bx)
        by, bx = by[order], bx[order]
    # grid for the DST: the crop, padded (bottom/right) to FFT-friendly sizes; the padding
    # lies outside the domain, where h is harmonic anyway, so it changes nothing
    nh = sfft.next_fast_len(hc + 1, real=True) - 1
    nw = sfft.next_fast_len(wc + 1, real=True) - 1
    size = 1 << max(6, max(nh, nw).bit_length())  # > every offset below
    table = _potential_table(size)
    # the dense Cholesky reads one triangle only, so only that is gathered
    cap, alpha = _ring_kernel(by, bx, table, triangle=dense)
    hodlr, exact = None if dense else _hodlr_factor(cap, alpha), []
    if hodlr is None:  # small ring, or a diagonal block not positive definite (never seen)
        dense = True
        factor, alpha = _dense_factor(cap, alpha)
        exact.append(factor)
    # potential on the DST grid border, one pixel outside the grid (may leave the image):
    # each ring pixel contributes a contiguous run of a table row per side
    runs_w = _row_runs(table, nw)  # [size-1+r, size-1-c, x] = a(r, x - c)
    runs_h = _row_runs(table, nh)
    start_x, start_y = size - 1 - bx, size - 1 - by
    runs = (runs_w[size + by, start_x],  # row y = -1, offset by + 1
            runs_w[size - 1 + nh - by, start_x],  # row y = nh
            runs_h[size + bx, start_y],  # column x = -1 (a is symmetric)
            runs_h[size - 1 + nw - bx, start_y])  # column x = nw
    if dense:
        cap = None  # the factor is all the solve needs
    for a in (by, bx, *exact, *runs) if dense else (by, bx, cap, *runs):
        a.flags.writeable = False
    return _RingSystem(by, bx, nh, nw, alpha, exact, cap, hodlr, runs)


_RING_CACHE: OrderedDict = OrderedDict()  # (shape, domain bytes) -> _RingSystem, most recent last
_RING_CACHE_LOCK = threading.Lock()
_RING_CACHE_ENTRIES = 4
_RING_CACHE_BYTES = 64 << 20


def _ring_system(dom: np.ndarray) -> _RingSystem:
    """:func:`_build_ring_system`, cached per process for the last few domains.

    The key is the crop domain itself (shape and bits), so a mask seen again (a video with
    a fixed mask, a batch of faces aligned to one template) skips the ring, the kernel
    gathers and the O(m^3) Cholesky factorisation; results are bit-identical either way.
    At most :data:`_RING_CACHE_ENTRIES` systems and :data:`_RING_CACHE_BYTES` bytes are
    kept (least recently used first out; ~2 MB for a face at 256 px, ~8 MB at 512 px); a
    larger system is not kept.
    """
    key = (dom.shape, np.packbits(dom).tobytes())  # packing first: 8x less to copy and hash
    with _RING_CACHE_LOCK:
        system = _RING_CACHE.get(key)
        if system is not None:
            _RING_CACHE.move_to_end(key)
            return system
    system = _build_ring_system(dom)
    if system.nbytes <= _RING_CACHE_BYTES:
        with _RING_CACHE_LOCK:
            _RING_CACHE[key] = system
            total = sum(s.nbytes for s in _RING_CACHE.values())
            while len(_RING_CACHE) > _RING_CACHE_ENTRIES or total > _RING_CACHE_BYTES:
                total -= _RING_CACHE.popitem(last=False)[1].nbytes
    return system


def _poisson_mask_domain(s: np.ndarray, t: np.ndarray, dom: np.ndarray, mode: str) -> np.ndarray:
    """Exact solve on ``dom``; returns the solution on the crop (valid where ``dom``).

    ``s``, ``t``: float32 (hc, wc, 3) crops; ``dom`` (hc, wc) bool, False on the crop frame.
    """
    hc, wc = dom.shape
    system = _ring_system(dom)
    by, bx, nh, nw = system.by, system.bx, system.nh, system.nw
    inv_eig = _inverse_eigenvalues(nh, nw)

    if mode == "normal":
        particular, spec_p = s, None
    else:  # particular solution of the mixed guidance: one box solve, zero border
        rho = np.zeros((nh, nw, 3), np.float32)
        rho[:hc, :wc][dom] = _guidance_div(s, t, mode)[dom]
        spec_p = _dst(rho)
        spec_p *= inv_eig
        particular = _dst(spec_p.copy())[:hc, :wc]
    target_on_ring = particular[by, bx] - t[by, bx]  # h must equal this on the ring
    sigma, const = system.solve(target_on_ring)

    top, bottom, left, right = (sigma.T @ run for run in system.runs)  # (3, nw) / (3, nh)
    rhs = np.zeros((nh, nw, 3), np.float32)
    rhs[by, bx] = sigma
    rhs[0] -= top.T + const
    rhs[-1] -= bottom.T + const
    rhs[:, 0] -= left.T + const
    rhs[:, -1] -= right.T + const
    spec = _dst(rhs)
    spec *= inv_eig
    if spec_p is None:
        return particular - _dst(spec)[:hc, :wc]
    spec_p -= spec
    return _dst(spec_p)[:hc, :wc]


def _poisson_box_domain(s: np.ndarray, t: np.ndarray, weight: np.ndarray, mode: str) -> np.ndarray:
    """OpenCV's formulation on the crop (the box): returns f on the crop, float32.

    ``s``, ``t``: uint8 (hc, wc, 3) crops; ``weight``: float32 (hc, wc, 3).  With
    ``e = s - t`` and ``f = t + g``, the guidance ``v = W D+s + (1 - W) D+t`` (per pair,
    ``W`` = weight of its first pixel) gives ``Delta g = sum_axes D-(W' D+e)`` inside and
    ``g = 0`` on the crop border, ``W' = W`` (normal) or ``W [|D+s| > |D+t|]`` (mixed: the
    pairs where the source difference wins; ties keep the target): the same system as
    ``Delta f = div v`` with ``f = t`` on the border, without the border terms.
    """
    e = cv2.subtract(s, t, dtype=cv2.CV_32F)
    if mode == "mixed":
        sf, tf = s.astype(np.float32), t.astype(np.float32)
    rhs = np.zeros_like(e)
    for first, second, head, tail in ((np.s_[:-1], np.s_[1:], rhs[:-1], rhs[1:]),
                                      (np.s_[:, :-1], np.s_[:, 1:], rhs[:, :-1], rhs[:, 1:])):
        w = weight[first]
        if mode == "mixed":
            wins = np.abs(cv2.subtract(sf[second], sf[first])) > np.abs(cv2.subtract(tf[second], tf[first]))
            w = w * wins
        flux = cv2.multiply(cv2.subtract(e[second], e[first]), w)
        head += flux
        tail -= flux
    f = t.astype(np.float32)
    f[1:-1, 1:-1] += _dst_solve(rhs[1:-1, 1:-1])
    return f


def _fast_span(lo: int, hi: int, limit: int) -> tuple[int, int]:
    """Grow the box side ``[lo, hi)`` on an image axis of ``limit`` pixels to the shortest
    side ``n`` whose DST-I (``n - 2`` interior points, an FFT of ``2 (n - 1)``) has only
    the factors 2, 3, 5, 7 and 11 (box sides with large prime factors cost 3-8x more).
    The growth is split between both ends (shifted inwards at the image edges); the span
    is unchanged when the image is too small for it."""
    want = sfft.next_fast_len(hi - lo - 1) + 1
    if want > limit:
        return lo, hi
    start = max(0, lo - (want - (hi - lo)) // 2)
    end = min(limit, start + want)
    return end - want, end


_ERODE_7x7 = np.ones((7, 7), np.uint8)  # = OpenCV's 3 iterations of a 3x3 erosion


def _poisson(source, target, mask, mode, domain):
    """Shared core: ``None`` (keep the target) or ``(box, f, region)``: write the float32
    solution ``f`` on the crop ``box`` where ``region`` (crop-shaped bool; ``None``: the
    whole crop) is set."""
    source, target, m = _prepare(source, target, mask)
    check_choice(mode, "mode", POISSON_MODES)
    check_choice(domain, "domain", POISSON_DOMAINS)
    if domain == "mask":
        dom = m > 0.5
        if dom.all():
            return np.s_[:, :], source.astype(np.float32), None
        dom[0] = dom[-1] = False  # the image frame carries the boundary condition
        dom[:, 0] = dom[:, -1] = False
        rows, cols = np.flatnonzero(dom.any(axis=1)), np.flatnonzero(dom.any(axis=0))
        if rows.size == 0:
            return None
        box = np.s_[rows[0] - 1:rows[-1] + 2, cols[0] - 1:cols[-1] + 2]
        sub = dom[box]
        return box, _poisson_mask_domain(source[box].astype(np.float32), target[box].astype(np.float32), sub, mode), sub
    if (m == 1).all():
        return np.s_[:, :], source.astype(np.float32), None
    nz = m > 0
    rows, cols = np.flatnonzero(nz.any(axis=1)), np.flatnonzero(nz.any(axis=0))
    if rows.size == 0 or rows[-1] - rows[0] < 2 or cols[-1] - cols[0] < 2:
        return None  # no pixel inside the box's Dirichlet border
    h, w = m.shape
    y0, y1 = _fast_span(int(rows[0]), int(rows[-1]) + 1, h)
    x0, x1 = _fast_span(int(cols[0]), int(cols[-1]) + 1, w)
    # erode a 3-px larger window: the result inside the box only depends on it
    wy0, wx0 = max(y0 - 3, 0), max(x0 - 3, 0)
    weight = cv2.erode(m[wy0:min(y1 + 3, h), wx0:min(x1 + 3, w)], _ERODE_7x7)
    weight = _rgb(weight[y0 - wy0:y1 - wy0, x0 - wx0:x1 - wx0])
    box = np.s_[y0:y1, x0:x1]
    return box, _poisson_box_domain(source[box], target[box], weight, mode), None


def _copy_where(src: np.ndarray, region: np.ndarray, base: np.ndarray) -> np.ndarray:
    """A copy of ``base`` (HxWx3) with ``src`` where ``region`` (HxW bool) is set; one
    OpenCV pass (numpy's boolean-mask indexing is ~10x slower)."""
    return cv2.copyTo(src, region.view(np.uint8), base.copy())


def poisson_blend_float(source: np.ndarray, target: np.ndarray, mask: np.ndarray, *,
                        mode: str = "normal", domain: str = "mask") -> np.ndarray:
    """Poisson image editing; the float32 result before rounding and clipping.

    Parameters
    ----------
    source, target : numpy.ndarray
        uint8 (H, W, 3) RGB, 0..255, same H and W; ``source`` already warped into the
        target's frame.  Any strides; neither is modified.
    mask : numpy.ndarray
        (H, W) (or (H, W, 1)): uint8 0..255, bool, or float in [0, 1].
        ``domain="mask"`` binarises it: ``mask > 0.5`` (uint8: > 127) is the domain.
        ``domain="box"`` takes the box of ``mask > 0`` (grown to an FFT-friendly size)
        and uses the soft mask eroded by 3 px as gradient weight, like OpenCV.
    mode : {"normal", "mixed"}
        Guidance: source gradients, or per neighbour pair and channel the source or
        target difference with the larger magnitude (ties keep the target).
    domain : {"mask", "box"}
        The exact solve on the mask (default) or OpenCV ``seamlessClone``'s box
        formulation; see the module docstring.

    Returns
    -------
    numpy.ndarray
        float32 (H, W, 3), in gray levels; not clipped, so values may leave 0..255 where
        the guidance asks for it.  With ``domain="mask"`` every pixel outside the domain,
        and the image's outer 1-px frame (it carries the boundary condition), equals
        ``target`` exactly.  An empty domain returns the target (not an error); a mask
        that is 1 (``"box"``) or > 0.5 (``"mask"``) everywhere leaves no target pixel to
        anchor the solution and returns the source.

    Raises
    ------
    ValueError
        Inputs of the wrong type, dtype or shape, a float mask outside [0, 1], an unknown
        ``mode`` or ``domain``.

    Notes
    -----
    ``domain="mask"`` is within float32 round-off (~1e-4 gray levels) of the exact
    discrete solution for rings (pixels just outside the domain) of up to 896 pixels, and
    within 0.05 gray levels (measured ~1e-3) above, where the capacitance system is solved
    hierarchically (see the module docstring and :func:`poisson_blend`'s Notes).
    """
    solved = _poisson(source, target, mask, mode, domain)
    out = target.astype(np.float32)
    if solved is not None:
        box, f, region = solved
        out[box] = f if region is None else _copy_where(f, region, out[box])
    return out


def poisson_blend(source: np.ndarray, target: np.ndarray, mask: np.ndarray, *,
                  mode: str = "normal", domain: str = "mask", composite: bool = False) -> np.ndarray:
    """Seamless (Poisson) cloning of ``source`` into ``target`` on ``mask``.

    :func:`poisson_blend_float` rounded (half to even) and clipped to uint8; the
    parameters are the same, plus ``composite``.

    Parameters
    ----------
    source, target : numpy.ndarray
        uint8 (H, W, 3) RGB, 0..255, same H and W (any strides; not modified).
    mask : numpy.ndarray
        (H, W) uint8 0..255, bool, or float in [0, 1]; see :func:`poisson_blend_float`.
    mode : {"normal", "mixed"}
        Source gradients, or the larger of the source/target gradients.
    domain : {"mask", "box"}
        ``"mask"`` (default): the exact solve on ``mask > 0.5``, pixels outside it and
        the image's outer 1-px frame keep the target exactly.  ``"box"``: OpenCV's
        formulation on a box around the mask (faster, but it shifts colours outside the
        mask inside its box).
    composite : bool
        Then alpha-blend the clone into the target with the (soft) mask, as DeepFaceLab's
        merger does after ``seamlessClone``: with ``domain="box"`` this keeps the target
        intact wherever the mask is 0, so the mask stays an exact label of the changed
        pixels.

    Returns
    -------
    numpy.ndarray
        uint8 (H, W, 3), 0..255, a new array.  Empty domain: a copy of the target; mask
        1 (``"box"``) or > 0.5 (``"mask"``) everywhere: a copy of the source.

    Raises
    ------
    ValueError
        As :func:`poisson_blend_float`: inputs of the wrong type, dtype or shape, a float
        mask outside [0, 1], an unknown ``mode`` or ``domain``.

    Notes
    -----
    The default solve caches its mask-dependent factorisation for the last 4 masks (see
    the module docstring): calling again with the same mask skips the factorisation, with
    a bit-identical result (timings: BENCHMARKS.md, "Blending", "Issue #19").  Accuracy
    of ``domain="mask"``: within float32 round-off (~1e-4 gray levels) of the exact
    discrete solution when the ring around the domain has at most 896 pixels; above, the
    capacitance system is solved hierarchically and refined to a ring residual of 2e-3
    gray levels (at most 0.05 where float32 round-off stalls the refinement; measured
    ~1e-3), which bounds the error inside the domain -- so the float result is within
    0.05 gray levels of the exact solve and the uint8 result can differ by 1 only where
    the value lies that close to a .5 tie.
    """
    solved = _poisson(source, target, mask, mode, domain)
    out = target.copy()
    if solved is not None:
        box, f, region = solved
        clone = round_uint8(f)
        if region is not None:
            clone = _copy_where(clone, region, target[box])
        if composite:  # outside the box the clone is the target, and so is the composite
            clone = alpha_blend(clone, target[box], mask[box])
        out[box] = clone
    return out


# ----------------------------------------------------------------------------- pyramid
def _pyramid_depth(h: int, w: int, levels: int) -> int:
    """Number of pyrDown steps (<= levels) that keep the coarsest level >= 2 px per side."""
    depth = 0
    while depth < levels and min((h + 1) // 2, (w + 1) // 2) >= 2:
        h, w, depth = (h + 1) // 2, (w + 1) // 2, depth + 1
    return depth


def pyramid_blend(source: np.ndarray, target: np.ndarray, mask: np.ndarray, *, levels: int = 5) -> np.ndarray:
    """Laplacian-pyramid blend (Burt & Adelson) with a Gaussian pyramid of the mask.

    Parameters
    ----------
    source : numpy.ndarray, uint8 (H, W, 3), RGB
        The face, already warped into the target's frame.  Any strides; not modified.
    target : numpy.ndarray, uint8 (H, W, 3), RGB
        Same H and W as ``source``.  Any strides; not modified.
    mask : numpy.ndarray, (H, W) or (H, W, 1)
        uint8 0..255, bool, or float in [0, 1]; 1 takes the source, 0 keeps the target.
    levels : int, optional
        Number of ``cv2.pyrDown`` steps, an integer >= 1 (Python or numpy integer; a bool is
        refused).  Default 5.  Clamped to the largest depth whose coarsest level keeps
        >= 2 px per side (each step maps a side n to (n + 1) // 2), so any H, W works, odd
        sizes included; with a side below 3 px no step fits and the result is
        :func:`alpha_blend`'s.

    Returns
    -------
    out : numpy.ndarray, uint8 (H, W, 3), RGB
        A new array.  An all-ones mask gives ``source`` and an all-zeros mask ``target``,
        exactly after rounding (float32 round-off is ~1e-5).

    Raises
    ------
    ValueError
        ``levels`` is not an integer >= 1; the images or the mask are invalid as for
        :func:`alpha_blend` (dtype, shape, float mask outside [0, 1]).

    Notes
    -----
    The blend is linear, so it is computed as ``target`` plus the collapse of (Gaussian
    pyramid of the mask) x (Laplacian pyramid of ``source - target``), equal to the usual
    two-pyramid blend with half the filtering.  Float32 throughout (OpenCV's 5x5 Gaussian
    ``pyrDown``/``pyrUp``, reflect-101 border), rounded half to even and saturated once at
    the end.
    """
    source, target, m = _prepare(source, target, mask)
    depth = _pyramid_depth(*m.shape, _check_levels(levels))
    # the blend is linear: target + collapse(mask pyramid * Laplacian pyramid of
    # (source - target)) equals the usual two-pyramid blend with half the filtering
    gd, gm = [_difference(source, target)], [m]
    for _ in range(depth):
        gd.append(cv2.pyrDown(gd[-1]))
        gm.append(cv2.pyrDown(gm[-1]))
    out = cv2.multiply(_rgb(gm[depth]), gd[depth])
    for i in range(depth - 1, -1, -1):
        size = (gd[i].shape[1], gd[i].shape[0])
        detail = cv2.subtract(gd[i], cv2.pyrUp(gd[i + 1], dstsize=size))
        cv2.multiply(detail, _rgb(gm[i]), dst=detail)
        out = cv2.add(cv2.pyrUp(out, dstsize=size), detail)
    return _add_to_uint8(out, target)


# ----------------------------------------------------------------------------- wavelet
def wavelet_blend(source: np.ndarray, target: np.ndarray, mask: np.ndarray, *,
                  levels: int = 5, wavelet: str = "haar") -> np.ndarray:
    """Blend 2-D wavelet coefficients level by level with the mask (pywavelets).

    Parameters
    ----------
    source : numpy.ndarray, uint8 (H, W, 3), RGB
        The face, already warped into the target's frame.  Any strides; not modified.
    target : numpy.ndarray, uint8 (H, W, 3), RGB
        Same H and W as ``source``.  Any strides; not modified.
    mask : numpy.ndarray, (H, W) or (H, W, 1)
        uint8 0..255, bool, or float in [0, 1]; 1 takes the source, 0 keeps the target.
    levels : int, optional
        Decomposition levels, an integer >= 1 (Python or numpy integer; a bool is refused).
        Default 5.  Clamped to ``pywt.dwt_max_level(min(H, W), filter length)``; when that
        is 0 the result is :func:`alpha_blend`'s.
    wavelet : str, optional
        Any name in ``pywt.wavelist(kind="discrete")`` (:data:`WAVELETS` lists the ones the
        recipe registry offers).  Default ``"haar"``.

    Returns
    -------
    out : numpy.ndarray, uint8 (H, W, 3), RGB
        A new array.  An all-ones mask gives ``source`` and an all-zeros mask ``target``,
        exactly after rounding.

    Raises
    ------
    ValueError
        ``levels`` is not an integer >= 1, ``wavelet`` is not a discrete pywavelets wavelet;
        the images or the mask are invalid as for :func:`alpha_blend`.

    Notes
    -----
    Every band of the ``wavedec2`` (``mode="periodization"``, so coefficient grids halve
    exactly) is multiplied by the mask resampled (area interpolation) to that band's size,
    then ``waverec2`` and a crop to H x W.  Computed as ``target`` plus the transform of
    ``source - target``, the same linear blend with half the transforms, in float32, rounded
    half to even and saturated at the end.  ``"haar"`` on images whose sides are multiples
    of ``2**levels`` (after clamping; e.g. the generator's 256 px crops) is computed in
    OpenCV (:func:`_haar_blend`, ~4x faster), equal to the pywavelets path up to float32
    round-off.
    """
    source, target, m = _prepare(source, target, mask)
    levels = _check_levels(levels)
    if wavelet not in pywt.wavelist(kind="discrete"):
        raise ValueError(f"wavelet: {wavelet!r} is not a discrete pywavelets wavelet (e.g. {list(WAVELETS)})")
    h, w = m.shape
    diff = _difference(source, target)
    depth = min(levels, pywt.dwt_max_level(min(h, w), pywt.Wavelet(wavelet).dec_len))
    if depth < 1:
        return _add_to_uint8(cv2.multiply(diff, _rgb(m)), target)
    if wavelet == "haar" and h % (1 << depth) == 0 and w % (1 << depth) == 0:
        out = _haar_blend(diff, m, depth)
    else:
        out = _pywt_blend(diff, m, depth, wavelet)
    return _add_to_uint8(out, target)


def _band_mask(m: np.ndarray, band_hw: tuple[int, int]) -> np.ndarray:
    """The mask resampled (area interpolation) to one band's grid."""
    return cv2.resize(m, (band_hw[1], band_hw[0]), interpolation=cv2.INTER_AREA)


def _pywt_blend(diff: np.ndarray, m: np.ndarray, depth: int, wavelet: str) -> np.ndarray:
    """Wavelet-domain blend of ``diff`` (float32 HxWx3) with pywavelets; float32 HxWx3."""
    h, w = m.shape
    # channels first: pywavelets is faster along the contiguous last axes
    coeffs = pywt.wavedec2(np.ascontiguousarray(diff.transpose(2, 0, 1)), wavelet, level=depth,
                           mode="periodization", axes=(1, 2))
    blended = [_band_mask(m, coeffs[0].shape[1:]) * coeffs[0]]
    for detail in coeffs[1:]:
        a = _band_mask(m, detail[0].shape[1:])  # the three bands of a level share one grid
        blended.append(tuple(a * band for band in detail))
    out = pywt.waverec2(blended, wavelet, mode="periodization", axes=(1, 2))[:, :h, :w]
    return np.ascontiguousarray(out.transpose(1, 2, 0), dtype=np.float32)


def _haar_blend(diff: np.ndarray, m: np.ndarray, depth: int) -> np.ndarray:
    """:func:`_pywt_blend` for ``"haar"`` when H and W are multiples of ``2**depth`` (no
    periodization padding), in OpenCV; equal up to float32 round-off.

    The four Haar coefficients of a 2x2 block are an orthonormal basis whose approximation
    vector is constant, so scaling a level's three detail bands by ``a`` replaces the
    block by ``a * (block - block mean)`` plus the (blended) approximation.  In units of
    block means (``M_l``: 2^l x 2^l block means of ``diff``, ``a_l``: mask at level l):
    ``Z_depth = a_depth * M_depth`` and ``Z_{l-1} = up(Z_l) + up(a_l) * (M_{l-1} - up(M_l))``,
    ``up`` = pixel replication; the blend is ``Z_0``.
    """
    means = [diff]
    for _ in range(depth):  # exact 2x2 block means (sizes are even)
        prev = means[-1]
        means.append(cv2.resize(prev, (prev.shape[1] // 2, prev.shape[0] // 2), interpolation=cv2.INTER_AREA))
    z = cv2.multiply(means[depth], _rgb(_band_mask(m, means[depth].shape[:2])))
    for level in range(depth, 0, -1):
        fine = means[level - 1]
        size = (fine.shape[1], fine.shape[0])
        a = cv2.resize(_band_mask(m, means[level].shape[:2]), size, interpolation=cv2.INTER_NEAREST)
        detail = cv2.subtract(fine, cv2.resize(means[level], size, interpolation=cv2.INTER_NEAREST))
        cv2.multiply(detail, _rgb(a), dst=detail)
        z = cv2.add(cv2.resize(z, size, interpolation=cv2.INTER_NEAREST), detail)
    return z


# ----------------------------------------------------------------------------- registry
BLENDS = {
    "alpha": alpha_blend,
    "poisson": poisson_blend,
    "pyramid": pyramid_blend,
    "wavelet": wavelet_blend,
}


def blend(source: np.ndarray, target: np.ndarray, mask: np.ndarray, method: str, **options) -> np.ndarray:
    """Blend ``source`` into ``target`` with the method named ``method``.

    Parameters
    ----------
    source : numpy.ndarray, uint8 (H, W, 3), RGB
        The face, already warped into the target's frame.
    target : numpy.ndarray, uint8 (H, W, 3), RGB
        Same H and W as ``source``.
    mask : numpy.ndarray, (H, W) or (H, W, 1)
        uint8 0..255, bool, or float in [0, 1]; 1 takes the source, 0 keeps the target.
    method : {"alpha", "poisson", "pyramid", "wavelet"}
        A key of :data:`BLENDS`: :func:`alpha_blend`, :func:`poisson_blend`,
        :func:`pyramid_blend` or :func:`wavelet_blend`.
    **options
        Keyword arguments of that function: ``mode``, ``domain``, ``composite``
        (``"poisson"``); ``levels`` (``"pyramid"``); ``levels``, ``wavelet``
        (``"wavelet"``); none for ``"alpha"``.

    Returns
    -------
    out : numpy.ndarray, uint8 (H, W, 3), RGB
        A new array.

    Raises
    ------
    ValueError
        ``method`` is not a key of :data:`BLENDS`, or the chosen function rejects its
        arguments.
    TypeError
        An option the chosen function does not take.
    """
    fn = BLENDS.get(method)
    if fn is None:
        raise ValueError(f"method: unknown blend {method!r}; known: {sorted(BLENDS)}")
    return fn(source, target, mask, **options)


OPS = (
    Op("alpha", "blend", alpha_blend, {}, doc="(1 - a) * target + a * source"),
    Op("poisson", "blend", poisson_blend, {
        "mode": Param("choice", choices=POISSON_MODES, default="normal",
                      doc="guidance: source gradients or per-pair larger of source/target"),
        "domain": Param("choice", choices=POISSON_DOMAINS, default="mask",
                        doc="exact solve on the mask, or OpenCV seamlessClone's box formulation"),
        "composite": Param("bool", default=False, doc="alpha-composite the clone with the soft mask afterwards"),
    }, doc="Poisson image editing (own DST-based solver)"),
    Op("pyramid", "blend", pyramid_blend, {
        "levels": Param("int", low=1, high=8, default=5, doc="pyrDown steps (clamped to the image size)"),
    }, doc="Laplacian-pyramid blend"),
    Op("wavelet", "blend", wavelet_blend, {
        "levels": Param("int", low=1, high=8, default=5, doc="decomposition levels (clamped)"),
        "wavelet": Param("choice", choices=WAVELETS, default="haar", doc="pywavelets wavelet name"),
    }, doc="wavelet-coefficient blend"),
)
