"""A small convolutional network on relational statistic maps, told where the forgery is.

The MLP of :mod:`detector.models.patch_stats` reads an 8 x 8 grid of statistics as one vector,
so a pasted region's cells must be learnt at every position separately. This network reads a
finer grid (16 x 16 cells, 16 px each on a 256-px face) of the same nine statistics
(:func:`~detector.statistics.statistic_maps`) as image channels with shared 3 x 3 filters: a
step between neighbouring cells is the same evidence wherever it lies. A mask head at the
grid's resolution is trained on the pasted region (:func:`detector.fit_statistics.fit_stats_conv`).
The features are relative to the image's median cell, like the MLP's; the model is still cheap
enough to fit on tens of thousands of faces in minutes on a CPU.

``stats_conv_fine`` reads a 32 x 32 grid (8-px cells, finer than a feathered seam) through one more
block at that resolution (``stem`` channels) before the same three stages; its mask head works at
32 x 32. How it compares with ``stats_conv``: BENCHMARKS.md, session 27. ``stats_conv_extended`` reads
the 13 statistics of :data:`~detector.statistics.EXTENDED_STATISTICS` (chroma detail and the noise
floor too: what a face pasted from another photo brings with it) on the 16 x 16 grid.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from detector.models.patch_stats import StatisticsModel
from detector.models.registry import register_model
from detector.statistics import statistic_names


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class StatsConvDetector(StatisticsModel):
    """``forward(x)`` -> ``{"logit": (B,), "mask": (B, 1, H, W) logits, "sim": None}``.

    Three stages of two 3 x 3 convolutions (``widths`` channels) at the grid's resolution, half
    and a quarter of it; the label from the mean and maximum of the last stage, the mask (at grid
    resolution, upsampled bilinearly to the input's size) from the first two. With ``stem`` > 0 one
    more block of ``stem`` channels runs at the grid's resolution first, the three stages at half,
    a quarter and an eighth of it, and the mask comes from the stem and the first stage (a fine grid
    at the cost of a coarse one). With ``extended`` the maps have the 13 channels of
    :data:`~detector.statistics.EXTENDED_STATISTICS` instead of 9. The buffers ``feature_mean`` and
    ``feature_std`` (one per statistic) standardise the maps (set when the model is fitted).
    """

    def __init__(self, grid: int = 16, widths: tuple[int, int, int] = (32, 64, 96), dropout: float = 0.3,
                 stem: int = 0, extended: bool = False):
        super().__init__(grid, dropout, extended)
        widths = tuple(widths)
        if len(widths) != 3 or not all(isinstance(w, int) and w > 0 for w in widths):
            raise ValueError(f"widths: expected three positive ints, got {widths!r}")
        if isinstance(stem, bool) or not isinstance(stem, int) or stem < 0:
            raise ValueError(f"stem: expected an int >= 0, got {stem!r}")
        poolings = 3 if stem else 2
        if grid % 2 ** poolings:
            raise ValueError(f"grid: expected a multiple of {2 ** poolings} ({poolings} 2x poolings), got {grid!r}")
        c = len(statistic_names(self.extended))
        self.register_buffer("feature_mean", torch.zeros(c))
        self.register_buffer("feature_std", torch.ones(c))
        self.stem = _block(c, stem) if stem else None
        self.stages = nn.ModuleList([_block(stem or c, widths[0]), _block(widths[0], widths[1]), _block(widths[1], widths[2])])
        self.mask_head = nn.Conv2d((stem + widths[0]) if stem else (widths[0] + widths[1]), 1, 1)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(2 * widths[2], 1)

    def classify_maps(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B,) and mask logits (B, grid, grid) of features (B, S * grid^2) from :meth:`features`."""
        c = len(self.feature_mean)
        x = (features.float().view(-1, c, self.grid, self.grid) - self.feature_mean.view(1, c, 1, 1)) \
            / self.feature_std.view(1, c, 1, 1)
        f0 = self.stem(x) if self.stem is not None else None
        f1 = self.stages[0](x if f0 is None else F.max_pool2d(f0, 2))
        f2 = self.stages[1](F.max_pool2d(f1, 2))
        f3 = self.stages[2](F.max_pool2d(f2, 2))
        fine, coarse = (f1, f2) if f0 is None else (f0, f1)
        mask = self.mask_head(torch.cat([fine, F.interpolate(coarse, size=fine.shape[-2:], mode="nearest")], 1))[:, 0]
        pooled = torch.cat([f3.mean((2, 3)), f3.amax((2, 3))], 1)
        return self.fc(self.drop(pooled))[:, 0], mask

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Logits (B,) of features (B, S * grid^2) as returned by :meth:`features`."""
        return self.classify_maps(features)[0]

    def forward_logit(self, x: torch.Tensor) -> torch.Tensor:
        """``forward(x)["logit"]`` without upsampling the mask."""
        return self.classify(self.features(x))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor | None]:
        logit, mask = self.classify_maps(self.features(x))
        mask = F.interpolate(mask[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)
        return {"logit": logit, "mask": mask, "sim": None}


@register_model("stats_conv")
def stats_conv(**kwargs) -> StatsConvDetector:
    return StatsConvDetector(**kwargs)


@register_model("stats_conv_fine")
def stats_conv_fine(**kwargs) -> StatsConvDetector:
    """``stats_conv`` on a 32 x 32 grid (8-px cells on a 256-px face) with a 16-channel stem block."""
    return StatsConvDetector(**{"grid": 32, "stem": 16, **kwargs})


@register_model("stats_conv_extended")
def stats_conv_extended(**kwargs) -> StatsConvDetector:
    """``stats_conv`` on the 13 extended statistics (chroma detail, noise floor) instead of 9."""
    return StatsConvDetector(**{"extended": True, **kwargs})
