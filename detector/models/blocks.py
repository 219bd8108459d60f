"""Building blocks shared by the detector models (all fully convolutional)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvBNAct(nn.Sequential):
    """Conv(k x k, stride) -> BatchNorm -> ReLU, 'same' padding."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, stride: int = 1):
        super().__init__(
            nn.Conv2d(in_ch, out_ch, kernel_size, stride=stride, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        )


class AttentionFusion(nn.Module):
    """RGB-frequency attention fusion of two same-shape feature maps.

    ``concat(rgb, freq) -> Conv1x1 -> BN -> ReLU -> Conv3x3 -> Sigmoid`` gives two maps
    (B, 2, h, w) in [0, 1], one per stream; the fused feature is the sum of the two streams
    each weighted by its own map: ``a_rgb * rgb + a_freq * freq`` (B, C, h, w).
    Returns ``(fused, maps)``.
    """

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        mid = max(16, channels // reduction)
        self.attn = nn.Sequential(
            nn.Conv2d(2 * channels, mid, 1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, 2, 3, padding=1),
            nn.Sigmoid(),
        )

    def forward(self, rgb: torch.Tensor, freq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps = self.attn(torch.cat([rgb, freq], dim=1))
        return maps[:, :1] * rgb + maps[:, 1:] * freq, maps


def patch_similarity(feat: torch.Tensor, grid: int = 5) -> torch.Tensor:
    """Local relation of a feature map: (B, C, h, w) -> (B, grid**2, grid**2) in [0, 1].

    The map is average-pooled onto a grid x grid lattice of patches (adaptive pooling, so
    any h, w works), each patch is a C-vector, and ``s_ij = (cos(f_i, f_j) + 1) / 2``.
    Patches are numbered row-major (patch ``r*grid + c``), matching
    :func:`detector.losses.similarity_target`.
    """
    p = F.adaptive_avg_pool2d(feat, grid).flatten(2).transpose(1, 2)  # (B, g*g, C)
    p = F.normalize(p, dim=2, eps=1e-6)
    return ((p @ p.transpose(1, 2)) + 1.0).mul(0.5).clamp(0.0, 1.0)


class UNetDecoder(nn.Module):
    """Upsample + 3x3 conv blocks with skips, then a 1x1 conv to mask logits at ``out_size``.

    ``forward(deep, skips, out_size)``: ``deep`` (B, C_deep, h, w); ``skips`` ordered from
    deep to shallow, each at a larger size; output (B, 1, *out_size) raw logits (the last
    upsampling to the input size is bilinear).
    """

    def __init__(self, deep_channels: int, skip_channels: list[int], width: int = 64):
        super().__init__()
        self.inp = ConvBNAct(deep_channels, width, 1)
        self.skip_proj = nn.ModuleList(ConvBNAct(c, width, 1) for c in skip_channels)
        self.blocks = nn.ModuleList(ConvBNAct(2 * width, width, 3) for _ in skip_channels)
        self.out = nn.Conv2d(width, 1, 1)

    def forward(self, deep: torch.Tensor, skips: list[torch.Tensor], out_size: tuple[int, int]) -> torch.Tensor:
        y = self.inp(deep)
        for proj, block, skip in zip(self.skip_proj, self.blocks, skips):
            y = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            y = block(torch.cat([y, proj(skip)], dim=1))
        return F.interpolate(self.out(y), size=out_size, mode="bilinear", align_corners=False)


def bilinear_pool(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Bilinear pooling of two maps on the same grid: (B, Ca, h, w), (B, Cb, h, w) -> (B, Ca*Cb).

    Mean over positions of the outer product a_p b_p^T, then signed square root and L2
    normalisation (Lin et al., bilinear CNNs).
    """
    if a.shape[-2:] != b.shape[-2:]:
        raise ValueError(f"bilinear_pool: spatial sizes differ: {tuple(a.shape[-2:])} vs {tuple(b.shape[-2:])}")
    z = torch.einsum("bihw,bjhw->bij", a, b).flatten(1) / (a.shape[-2] * a.shape[-1])
    z = torch.sign(z) * torch.sqrt(z.abs() + 1e-8)
    return F.normalize(z, dim=1)


def mlp_head(in_features: int, hidden: int = 256, dropout: float = 0.2) -> nn.Sequential:
    """Linear -> ReLU -> Dropout -> Linear(1): a logit per sample, shape (B, 1)."""
    return nn.Sequential(
        nn.Linear(in_features, hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(hidden, 1),
    )
