"""Relational patch statistics of a face image (torch, batched, no trainable parameters).

A blended face differs from its surroundings in colour, sharpness and noise. These features
measure exactly that and nothing global: the image is cut into a ``grid x grid`` lattice of
cells, nine statistics are averaged over each cell, and each statistic is expressed relative to
the image's median cell. A photo that is blurred, sharpened or re-compressed as a whole moves
every cell together and leaves the features nearly unchanged; a pasted region moves its cells
against the rest.

The nine statistics, in the order of :data:`STATISTICS`:

- ``L``, ``a``, ``b``: CIE L*a*b* colour (D65, sRGB input), scaled by 1/100, 1/50, 1/50;
- ``hf``, ``mf``, ``lf``: log mean absolute band-pass energy of the luma between Gaussian
  scales (0, 1), (1, 2) and (2, 4) px;
- ``laplacian``, ``gradient``: log mean absolute 3x3 Laplacian and Sobel gradient magnitude;
- ``hf_mf``: ``hf - mf`` (sharpness independent of the local contrast).

With ``extended=True`` four more follow (:data:`EXTENDED_STATISTICS`), aimed at a pasted face that
comes from another photo (its own camera noise and colour processing):

- ``a_detail``, ``b_detail``: log mean absolute chroma detail, ``|c - G_1 * c|`` of the a* and b*
  channels (colour noise and colour texture; colour transfer and other cameras change it);
- ``noise``: log noise floor, the smallest mean ``hf`` energy of the cell's 8 x 8-px blocks (flat
  blocks hold sensor noise, not texture);
- ``noise_hf``: ``noise - hf`` (how much of the cell's fine detail is noise).

Colour statistics are differences from the median cell, log energies are log-ratios to it.
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

__all__ = ["STATISTICS", "EXTENDED_STATISTICS", "statistic_names", "patch_statistics", "statistic_maps"]

STATISTICS = ("L", "a", "b", "hf", "mf", "lf", "laplacian", "gradient", "hf_mf")
EXTENDED_STATISTICS = STATISTICS + ("a_detail", "b_detail", "noise", "noise_hf")
_NOISE_BLOCK = 8  # px: side of the blocks whose least detailed one gives a cell's noise floor
_SIGMAS = (1.0, 2.0, 4.0)
_EPS = 1e-4  # floor of a cell's mean energy before the log: flat, noise-free cells stay finite
_LUMA = (0.299, 0.587, 0.114)
_RGB_TO_XYZ = ((0.412453, 0.357580, 0.180423), (0.212671, 0.715160, 0.072169), (0.019334, 0.119193, 0.950227))
_WHITE_D65 = (0.950456, 1.0, 1.088754)


@functools.lru_cache(maxsize=16)
def _blur_matrix(n: int, device: torch.device) -> torch.Tensor:
    """(n, 3n) float32: ``x @ M`` blurs the rows of x at :data:`_SIGMAS` side by side.

    Gaussian kernels cut at 3 sigma, reflected borders (``d c b | a b c d | c b a``, OpenCV's
    default); as matrices so that a blur is one matrix product instead of a 1-channel convolution.
    """
    blocks = []
    for s in _SIGMAS:
        r = int(math.ceil(3 * s))
        x = torch.arange(-r, r + 1, dtype=torch.float64)
        k = torch.exp(-x * x / (2 * s * s))
        k /= k.sum()
        m = torch.zeros(n, n, dtype=torch.float64)
        for i in range(n):
            for j, w in zip(range(i - r, i + r + 1), k.tolist()):
                jj = abs(j) if j < 0 else (2 * (n - 1) - j if j >= n else j)
                m[jj, i] += w
        blocks.append(m)
    return torch.cat(blocks, 1).to(device=device, dtype=torch.float32)


def _blurs(luma: torch.Tensor, k: int = len(_SIGMAS)) -> torch.Tensor:
    """(B, 1, H, W) -> (B, k, H, W) Gaussian blurs at the first ``k`` of :data:`_SIGMAS`, reflected borders."""
    b, _, h, w = luma.shape
    n = len(_SIGMAS)
    rows = (luma[:, 0] @ _blur_matrix(w, luma.device)[:, :k * w]).view(b, h, k, w).permute(0, 2, 1, 3)  # (B, k, H, W)
    mh = _blur_matrix(h, luma.device).view(h, n, h)[:, :k].permute(1, 0, 2)  # (k, H, H): column blur per sigma
    return mh.transpose(1, 2).unsqueeze(0) @ rows


def _lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB (B, 3, H, W) in [0, 1] -> L*a*b* scaled to about [0, 1], [-1, 1], [-1, 1]."""
    lin = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    m = torch.tensor(_RGB_TO_XYZ, dtype=rgb.dtype, device=rgb.device)
    white = torch.tensor(_WHITE_D65, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
    xyz = torch.einsum("ij,bjhw->bihw", m, lin) / white
    f = torch.where(xyz > 0.008856, xyz.clamp_min(1e-12) ** (1 / 3), 7.787 * xyz + 16 / 116)
    return torch.stack([(116 * f[:, 1] - 16) / 100, 10 * (f[:, 0] - f[:, 1]), 4 * (f[:, 1] - f[:, 2])], 1)


def statistic_names(extended: bool = False) -> tuple[str, ...]:
    """Names of the statistics :func:`statistic_maps` returns, in channel order."""
    return EXTENDED_STATISTICS if extended else STATISTICS


def patch_statistics(rgb: torch.Tensor, grid: int = 8, extended: bool = False) -> torch.Tensor:
    """Relational colour, sharpness and noise statistics of each cell of a grid, as one vector per image.

    :func:`statistic_maps` flattened: float32 (B, S * grid * grid), for each name of
    :func:`statistic_names` in turn its ``grid * grid`` cells in row-major order (S = 9, or 13 with
    ``extended``; the first 9 * grid * grid values are the same either way). Parameters, errors:
    :func:`statistic_maps`.
    """
    return statistic_maps(rgb, grid, extended).flatten(1)


def statistic_maps(rgb: torch.Tensor, grid: int = 8, extended: bool = False) -> torch.Tensor:
    """Relational colour, sharpness and noise statistics of each cell of a grid, as maps.

    Parameters
    ----------
    rgb : torch.Tensor
        Float tensor (B, 3, H, W), RGB in [0, 1] (not ImageNet-normalised); H, W >= 2 * grid
        (faces of 256 px were used to design it; other sizes work, the scales are in pixels).
    grid : int
        Cells per side (cells are adaptive-average-pooled, so H and W need not divide).
    extended : bool
        Also the four statistics of :data:`EXTENDED_STATISTICS` (chroma detail, noise floor).

    Returns
    -------
    torch.Tensor
        Float32 (B, S, grid, grid), S = 9 (13 with ``extended``): channel k is statistic
        ``statistic_names(extended)[k]`` of every cell, relative to the image's median cell.

    Raises
    ------
    ValueError
        On a non-float or wrongly shaped input, or ``grid < 2``.
    """
    if not isinstance(rgb, torch.Tensor) or rgb.ndim != 4 or rgb.shape[1] != 3 or not rgb.is_floating_point():
        raise ValueError(f"rgb: expected a float tensor (B, 3, H, W), got "
                         f"{tuple(rgb.shape) if isinstance(rgb, torch.Tensor) else type(rgb).__name__}")
    if not isinstance(grid, int) or grid < 2:
        raise ValueError(f"grid: expected an int >= 2, got {grid!r}")
    if min(rgb.shape[-2:]) < 2 * grid:
        raise ValueError(f"rgb: expected H and W >= 2 * grid = {2 * grid}, got {tuple(rgb.shape[-2:])}")
    rgb = rgb.float().clamp(0.0, 1.0)
    luma = sum(w * rgb[:, i:i + 1] for i, w in enumerate(_LUMA))
    b = _blurs(luma)
    bands = [(luma - b[:, :1]).abs(), (b[:, :1] - b[:, 1:2]).abs(), (b[:, 1:2] - b[:, 2:3]).abs()]
    p = F.pad(luma, (1, 1, 1, 1), mode="reflect")
    up, down, left, right, mid = p[..., :-2, 1:-1], p[..., 2:, 1:-1], p[..., 1:-1, :-2], p[..., 1:-1, 2:], luma
    lap = (up + down + left + right - 4 * mid).abs()
    # Sobel as slices: [1 2 1]^T smoothing times a central difference, in each direction
    gx = (p[..., :-2, 2:] + 2 * right + p[..., 2:, 2:]) - (p[..., :-2, :-2] + 2 * left + p[..., 2:, :-2])
    gy = (p[..., 2:, :-2] + 2 * down + p[..., 2:, 2:]) - (p[..., :-2, :-2] + 2 * up + p[..., :-2, 2:])
    energy = torch.cat(bands + [lap, torch.sqrt(gx * gx + gy * gy)], 1)

    def cells(maps: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C, grid * grid)
        return F.adaptive_avg_pool2d(maps, grid).flatten(2)

    log_energy = torch.log(cells(energy) + _EPS)
    lab = _lab(rgb)
    parts = [cells(lab), log_energy, log_energy[:, :1] - log_energy[:, 1:2]]
    if extended:
        chroma = lab[:, 1:].reshape(-1, 1, *lab.shape[-2:])  # a*, b* of every image as single channels
        detail = (chroma - _blurs(chroma, 1)).abs().view(len(rgb), 2, *lab.shape[-2:])
        # noise floor: the least detailed block of each cell (blocks shrink so that a cell holds >= 1)
        block = max(1, min(_NOISE_BLOCK, min(rgb.shape[-2:]) // grid))
        floor = -F.adaptive_max_pool2d(-F.avg_pool2d(bands[0], block), grid).flatten(2)
        extra = torch.log(torch.cat([cells(detail), floor], 1) + _EPS)
        parts += [extra, extra[:, 2:3] - log_energy[:, :1]]
    stats = torch.cat(parts, 1)
    return (stats - stats.quantile(0.5, dim=2, keepdim=True)).view(len(rgb), stats.shape[1], grid, grid)
