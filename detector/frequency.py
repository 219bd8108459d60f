"""Fixed frequency transforms for the detector's frequency stream (torch, batched).

All functions take float tensors of shape (B, C, H, W) and act on the last two dims.
Nothing here has trainable parameters: the transforms are fixed filters, so the
frequency stream sees the same representation at train and test time.

- ``dct2`` / ``idct2``: orthonormal 2-D DCT-II and its inverse (matrix products).
- ``dct_highpass`` / ``DCTHighPass``: remove low DCT frequencies (u/H + v/W < alpha).
- ``swd`` / ``iswd``: stationary (undecimated, a trous) Haar wavelet decomposition
  with periodic boundaries, exactly invertible.
- ``SRMConv``: the three classic fixed SRM noise-residual kernels.
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

# ITU-R BT.601 luma weights (the usual RGB -> Y used for JPEG).
_LUMA = (0.299, 0.587, 0.114)


def _check_bchw(x: torch.Tensor, name: str = "x") -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"{name}: expected shape (B, C, H, W), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name}: expected a floating dtype, got {x.dtype}")
    return x


@functools.lru_cache(maxsize=64)
def _dct_matrix_cached(n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    k = torch.arange(n, dtype=torch.float64).unsqueeze(1)  # frequency (rows)
    i = torch.arange(n, dtype=torch.float64).unsqueeze(0)  # sample (columns)
    d = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d.to(dtype=dtype, device=device)


def dct_matrix(n: int, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> torch.Tensor:
    """Orthonormal DCT-II matrix ``D``: ``X = D @ x`` for a length-n signal x.

    Parameters
    ----------
    n : int
        Signal length, a Python int >= 1.
    dtype : torch.dtype, optional
        Default ``torch.float32``.  Computed in float64, then converted.
    device : torch.device or str, optional
        Default ``"cpu"``.

    Returns
    -------
    D : torch.Tensor, (n, n)
        Row k holds frequency k.  ``D @ D.T`` is the identity, so ``D.T`` is the inverse
        (DCT-III).  Cached per (n, dtype, device): the returned tensor is shared and must not
        be modified.

    Raises
    ------
    ValueError
        ``n`` is not an int >= 1.
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected a positive int, got {n!r}")
    return _dct_matrix_cached(n, dtype, torch.device(device))


def dct2(x: torch.Tensor) -> torch.Tensor:
    """2-D orthonormal DCT-II over the last two dims: ``D_H @ x @ D_W.T`` (H != W allowed).

    Parameters
    ----------
    x : torch.Tensor, float (B, C, H, W)
        Any floating dtype, any value range, any device.

    Returns
    -------
    coeffs : torch.Tensor, (B, C, H, W)
        Same dtype and device as ``x``; ``coeffs[..., u, v]`` is vertical frequency u,
        horizontal frequency v.

    Raises
    ------
    ValueError
        ``x`` is not a ``torch.Tensor``, not 4-D, or not of a floating dtype.
    """
    _check_bchw(x)
    h, w = x.shape[-2:]
    return dct_matrix(h, x.dtype, x.device) @ x @ dct_matrix(w, x.dtype, x.device).T


def idct2(coeffs: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`dct2`: ``D_H.T @ X @ D_W``.

    Parameters
    ----------
    coeffs : torch.Tensor, float (B, C, H, W)
        DCT coefficients; any floating dtype, any device.

    Returns
    -------
    x : torch.Tensor, (B, C, H, W)
        Same dtype and device as ``coeffs``.

    Raises
    ------
    ValueError
        ``coeffs`` is not a ``torch.Tensor``, not 4-D, or not of a floating dtype.
    """
    _check_bchw(coeffs, "coeffs")
    h, w = coeffs.shape[-2:]
    return dct_matrix(h, coeffs.dtype, coeffs.device).T @ coeffs @ dct_matrix(w, coeffs.dtype, coeffs.device)


def highpass_mask(h: int, w: int, alpha: float = 0.33, dtype: torch.dtype = torch.float32,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """0/1 mask over DCT coefficients: 0 where ``u/H + v/W < alpha``, else 1.

    Parameters
    ----------
    h, w : int
        Height H and width W of the coefficient grid (not validated).
    alpha : float, optional
        Cut-off, in [0, 2].  Default 0.33.  0 keeps every coefficient; 2 removes all.
    dtype : torch.dtype, optional
        Default ``torch.float32``.
    device : torch.device or str, optional
        Default ``"cpu"``.

    Returns
    -------
    mask : torch.Tensor, (H, W)
        Values 0.0 and 1.0; ``u`` is the row (vertical frequency) index and ``v`` the column
        (horizontal frequency) index.

    Raises
    ------
    ValueError
        ``alpha`` outside [0, 2] (or NaN).

    Notes
    -----
    For a square N x N image the rule reads ``u + v < alpha * N`` (the paper's form);
    normalising each axis by its own length keeps the same fraction of the spectrum removed
    when H != W.
    """
    if not 0.0 <= alpha <= 2.0:
        raise ValueError(f"alpha: expected a value in [0, 2], got {alpha!r}")
    u = torch.arange(h, dtype=torch.float64).unsqueeze(1) / h
    v = torch.arange(w, dtype=torch.float64).unsqueeze(0) / w
    return (u + v >= alpha).to(dtype=dtype, device=device)


def to_luminance(x: torch.Tensor) -> torch.Tensor:
    """RGB to BT.601 luma: ``0.299 R + 0.587 G + 0.114 B``.

    Parameters
    ----------
    x : torch.Tensor, float (B, 3, H, W)
        RGB; any value range (the map is linear), any floating dtype and device.

    Returns
    -------
    y : torch.Tensor, (B, 1, H, W)
        Same dtype and device as ``x``, same value range.

    Raises
    ------
    ValueError
        ``x`` is not a ``torch.Tensor``, not 4-D, not of a floating dtype, or has other than
        3 channels.
    """
    _check_bchw(x)
    if x.shape[1] != 3:
        raise ValueError(f"x: luminance needs 3 channels (RGB), got {x.shape[1]}")
    wts = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * wts).sum(dim=1, keepdim=True)


def _lowpass_operators(h: int, w: int, alpha: float, dtype: torch.dtype, device: torch.device):
    """Truncated DCT rows and the low-frequency mask for :func:`dct_highpass`.

    Only coefficients with u < alpha*H and v < alpha*W can be low (u/H + v/W < alpha), so the
    low-pass part needs just those rows of D_H and D_W: about (alpha)^2 of the full work.
    """
    ku = min(h, math.ceil(alpha * h))
    kv = min(w, math.ceil(alpha * w))
    low = 1.0 - highpass_mask(h, w, alpha, dtype, device)[:ku, :kv]
    return dct_matrix(h, dtype, device)[:ku], dct_matrix(w, dtype, device)[:kv], low


def _apply_highpass(x: torch.Tensor, dh: torch.Tensor, dw: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
    # x = lowpass + highpass exactly (orthonormal DCT), so highpass = x - D^T (low * D x D^T) D.
    return x - dh.T @ ((dh @ x @ dw.T) * low) @ dw


def dct_highpass(x: torch.Tensor, alpha: float = 0.33, grayscale: bool = False) -> torch.Tensor:
    """High-pass filter in the DCT domain: ``idct2(mask * dct2(x))``.

    Parameters
    ----------
    x : torch.Tensor, float (B, C, H, W)
        Any floating dtype, any value range, any device.
    alpha : float, optional
        Cut-off in [0, 2]: coefficients with ``u/H + v/W < alpha`` are zeroed, per channel
        (see :func:`highpass_mask`; ``u + v < alpha * N`` for N x N).  Default 0.33.
    grayscale : bool, optional
        Filter the BT.601 luminance (:func:`to_luminance`; ``x`` must then have 3 RGB
        channels) instead of every channel.  Default False.

    Returns
    -------
    out : torch.Tensor, (B, C, H, W), or (B, 1, H, W) with ``grayscale``
        Same dtype and device as ``x``.

    Raises
    ------
    ValueError
        ``x`` is not a ``torch.Tensor``, not 4-D, or not of a floating dtype; ``alpha``
        outside [0, 2]; ``grayscale`` with other than 3 channels.

    Notes
    -----
    Computed as ``x`` minus its low-pass part, which only needs the first
    ``ceil(alpha * H)`` x ``ceil(alpha * W)`` coefficients (exact, since the DCT is
    orthonormal).
    """
    _check_bchw(x)
    if grayscale:
        x = to_luminance(x)
    h, w = x.shape[-2:]
    return _apply_highpass(x, *_lowpass_operators(h, w, alpha, x.dtype, x.device))


class DCTHighPass(nn.Module):
    """Module form of :func:`dct_highpass` (no parameters).

    The low-frequency mask is kept as a non-persistent buffer ``low_mask`` and rebuilt only
    when the input size, dtype or device changes, so checkpoints do not depend on the size.
    """

    def __init__(self, alpha: float = 0.33, grayscale: bool = False):
        super().__init__()
        highpass_mask(1, 1, alpha)  # validate alpha early
        self.alpha = float(alpha)
        self.grayscale = bool(grayscale)
        self.register_buffer("low_mask", torch.empty(0), persistent=False)
        self._size: tuple[int, int] | None = None

    def out_channels(self, in_channels: int) -> int:
        """Channels produced for an input of ``in_channels`` channels."""
        return 1 if self.grayscale else in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_bchw(x)
        if self.grayscale:
            x = to_luminance(x)
        h, w = x.shape[-2:]
        if self._needs_mask(x):
            self.low_mask, self._size = _lowpass_operators(h, w, self.alpha, x.dtype, x.device)[2], (h, w)
        ku, kv = self.low_mask.shape
        return _apply_highpass(x, dct_matrix(h, x.dtype, x.device)[:ku], dct_matrix(w, x.dtype, x.device)[:kv],
                               self.low_mask)

    def _needs_mask(self, x: torch.Tensor) -> bool:
        m = self.low_mask
        return self._size != tuple(x.shape[-2:]) or m.dtype != x.dtype or m.device != x.device

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, grayscale={self.grayscale}"


# --- stationary Haar wavelet decomposition -------------------------------------------

# 2x2 analysis kernels as outer products of the 1-D pair low=[1/2, 1/2], high=[1/2, -1/2]
# (first factor along H, second along W). low + high = [1, 0] (a unit impulse), so the four
# sub-bands of one level sum back exactly to their input: the classic a trous reconstruction.
_HAAR_LOW = (0.5, 0.5)
_HAAR_HIGH = (0.5, -0.5)
_SWD_BANDS = {  # name: (filter along H, filter along W)
    "LL": (_HAAR_LOW, _HAAR_LOW),
    "LH": (_HAAR_LOW, _HAAR_HIGH),   # high-pass along W: responds to vertical edges
    "HL": (_HAAR_HIGH, _HAAR_LOW),   # high-pass along H: responds to horizontal edges
    "HH": (_HAAR_HIGH, _HAAR_HIGH),  # diagonal detail
}


def _haar_bank(channels: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    ks = [torch.tensor(fh, dtype=torch.float64).unsqueeze(1) * torch.tensor(fw, dtype=torch.float64).unsqueeze(0)
          for fh, fw in _SWD_BANDS.values()]
    bank = torch.stack(ks).unsqueeze(1)  # (4, 1, 2, 2)
    return bank.repeat(channels, 1, 1, 1).to(dtype=dtype, device=device)  # groups=C: [c0: LL,LH,HL,HH, c1: ...]


def swd(x: torch.Tensor, levels: int = 3) -> torch.Tensor:
    """Stationary (undecimated, a trous) 2-D Haar wavelet decomposition.

    Parameters
    ----------
    x : torch.Tensor, float (B, C, H, W)
        Any floating dtype, any value range, any device.
    levels : int, optional
        Number of levels, a Python int >= 1.  Default 3.

    Returns
    -------
    coeffs : torch.Tensor, (B, C * (3 * levels + 1), H, W)
        Same dtype and device as ``x``.  Channel blocks ordered ``[LH_1, HL_1, HH_1, LH_2,
        HL_2, HH_2, ..., LH_L, HL_L, HH_L, LL_L]``, each block C channels in input order.
        LH = low-pass along H, high-pass along W (responds to vertical edges); HL the
        converse; HH diagonal detail; LL_L the final approximation.

    Raises
    ------
    ValueError
        ``x`` is not a ``torch.Tensor``, not 4-D, or not of a floating dtype.
        Also: ``levels`` is not an int >= 1.

    Notes
    -----
    Level j (1-based) filters the previous approximation with the 2x2 Haar kernels (1-D
    pair low = [1/2, 1/2], high = [1/2, -1/2]) dilated by ``2**(j-1)``, with periodic
    (circular) boundaries, so every sub-band keeps the full H x W size and the transform is
    shift-invariant.  Coefficients are scaled so that ``x == LL_L + sum(all detail bands)``
    (see :func:`iswd`).
    """
    _check_bchw(x)
    if not isinstance(levels, int) or levels < 1:
        raise ValueError(f"levels: expected an int >= 1, got {levels!r}")
    b, c, h, w = x.shape
    bank = _haar_bank(c, x.dtype, x.device)
    approx, details = x, []
    for j in range(levels):
        d = 2 ** j
        # Circular wrap by d on the bottom/right: tap (0, 0) is the pixel itself, tap 1 is +d.
        padded = F.pad(approx, (0, d, 0, d), mode="circular") if d < min(h, w) else _wrap_pad(approx, d)
        y = F.conv2d(padded, bank, dilation=d, groups=c).view(b, c, 4, h, w)
        approx = y[:, :, 0]
        details.extend([y[:, :, 1], y[:, :, 2], y[:, :, 3]])
    return torch.cat(details + [approx], dim=1)


def _wrap_pad(x: torch.Tensor, d: int) -> torch.Tensor:
    # F.pad circular refuses padding larger than the input; index modulo the size instead.
    h, w = x.shape[-2:]
    rows = torch.arange(h + d, device=x.device) % h
    cols = torch.arange(w + d, device=x.device) % w
    return x[..., rows, :][..., cols]


def iswd(coeffs: torch.Tensor, levels: int = 3) -> torch.Tensor:
    """Inverse of :func:`swd`, exact up to rounding.

    Parameters
    ----------
    coeffs : torch.Tensor, float (B, C * (3 * levels + 1), H, W)
        As returned by :func:`swd`; any floating dtype and device.
    levels : int, optional
        The ``levels`` given to :func:`swd`.  Default 3.  Only used to split the channels
        into ``3 * levels + 1`` blocks.

    Returns
    -------
    x : torch.Tensor, (B, C, H, W)
        The sum of the ``3 * levels + 1`` channel blocks; same dtype and device as
        ``coeffs``.

    Raises
    ------
    ValueError
        ``coeffs`` is not a ``torch.Tensor``, not 4-D, or not of a floating dtype; its
        channel count is not a multiple of ``3 * levels + 1``.
    """
    _check_bchw(coeffs, "coeffs")
    n = 3 * levels + 1
    if coeffs.shape[1] % n:
        raise ValueError(f"coeffs: channel count {coeffs.shape[1]} is not a multiple of 3*levels+1 = {n}")
    b, _, h, w = coeffs.shape
    return coeffs.view(b, n, -1, h, w).sum(dim=1)


# --- SRM noise-residual filters ------------------------------------------------------

# The three SRM kernels used by Zhou et al. (CVPR 2018, RGB-N) and many forgery detectors:
# second-order KB, the 5x5 "KV" kernel and a first-order horizontal residual KH.
_SRM_KERNELS = (
    ([[0, 0, 0, 0, 0], [0, -1, 2, -1, 0], [0, 2, -4, 2, 0], [0, -1, 2, -1, 0], [0, 0, 0, 0, 0]], 4.0),
    ([[-1, 2, -2, 2, -1], [2, -6, 8, -6, 2], [-2, 8, -12, 8, -2], [2, -6, 8, -6, 2], [-1, 2, -2, 2, -1]], 12.0),
    ([[0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 1, -2, 1, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]], 2.0),
)


class SRMConv(nn.Module):
    """Fixed (untrained) SRM high-pass filters applied to every input channel.

    (B, C, H, W) -> (B, 3*C, H, W); output channel ``3*c + k`` is kernel k on channel c.
    Zero padding keeps the size. The kernels are a buffer, not a parameter.
    """

    def __init__(self, in_channels: int = 3):
        super().__init__()
        if not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"in_channels: expected a positive int, got {in_channels!r}")
        self.in_channels = in_channels
        k = torch.stack([torch.tensor(kern, dtype=torch.float32) / scale for kern, scale in _SRM_KERNELS])
        self.register_buffer("weight", k.unsqueeze(1).repeat(in_channels, 1, 1, 1), persistent=False)

    @property
    def out_channels(self) -> int:
        return 3 * self.in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_bchw(x)
        if x.shape[1] != self.in_channels:
            raise ValueError(f"x: expected {self.in_channels} channels, got {x.shape[1]}")
        return F.conv2d(x, self.weight.to(x.dtype), padding=2, groups=self.in_channels)
