"""A small MLP on relational patch statistics (:mod:`detector.statistics`).

The features are fixed and cheap, so the MLP can be fitted on tens of thousands of generated
faces in minutes (:mod:`detector.fit_statistics`), far more than a CNN sees in a CPU budget. It
sees colour, sharpness and noise of each cell relative to the face's median cell, so global
image quality moves it little. No mask or relation map (``mask`` and ``sim`` are None).
"""
from __future__ import annotations

import torch
from torch import nn

from detector.models.registry import IMAGENET_NORM, register_model
from detector.statistics import patch_statistics, statistic_names


class StatisticsModel(nn.Module):
    """Base of the models on :mod:`detector.statistics`: ``features(x)`` of normalised images.

    x is float (B, 3, H, W) normalised by ``input_norm``; it is mapped back to RGB in [0, 1]
    for :func:`~detector.statistics.patch_statistics`. Subclasses set ``grid`` and implement
    ``classify(features) -> (B,) logits``.
    """

    def __init__(self, grid: int, dropout: float, extended: bool = False):
        super().__init__()
        if not isinstance(grid, int) or grid < 2:
            raise ValueError(f"grid: expected an int >= 2, got {grid!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout: expected a value in [0, 1), got {dropout!r}")
        if not isinstance(extended, bool):
            raise ValueError(f"extended: expected a bool, got {extended!r}")
        self.grid = grid
        self.extended = extended  # the 13 statistics of EXTENDED_STATISTICS instead of the 9
        self.input_norm = {k: list(v) for k, v in IMAGENET_NORM.items()}

    @property
    def n_features(self) -> int:
        """Length of one image's feature vector, ``S * grid ** 2`` (S = 9, or 13 ``extended``)."""
        return len(statistic_names(self.extended)) * self.grid * self.grid

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Unstandardised statistics (B, :attr:`n_features`) of normalised images x (B, 3, H, W)."""
        mean = torch.tensor(self.input_norm["mean"], dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.input_norm["std"], dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
        with torch.autocast(x.device.type, enabled=False):  # log energies of small residuals need float32
            return patch_statistics(x.float() * std + mean, self.grid, self.extended)


class PatchStatsClassifier(StatisticsModel):
    """``forward(x)`` -> ``{"logit": (B,), "mask": None, "sim": None}``.

    The buffers ``feature_mean`` and ``feature_std`` standardise the features (set when the
    model is fitted).
    """

    def __init__(self, grid: int = 8, hidden: int = 256, dropout: float = 0.3, extended: bool = False):
        super().__init__(grid, dropout, extended)
        if not isinstance(hidden, int) or hidden < 1:
            raise ValueError(f"hidden: expected a positive int, got {hidden!r}")
        n = self.n_features
        self.register_buffer("feature_mean", torch.zeros(n))
        self.register_buffer("feature_std", torch.ones(n))
        self.mlp = nn.Sequential(nn.Linear(n, hidden), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 1))

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Logits (B,) of features (B, :attr:`n_features`) as returned by :meth:`features`."""
        return self.mlp((features - self.feature_mean) / self.feature_std).squeeze(1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor | None]:
        return {"logit": self.classify(self.features(x)), "mask": None, "sim": None}


@register_model("patch_stats")
def patch_stats(**kwargs) -> PatchStatsClassifier:
    return PatchStatsClassifier(**kwargs)


@register_model("patch_stats_extended")
def patch_stats_extended(**kwargs) -> PatchStatsClassifier:
    """The MLP on the 13 statistics of :data:`~detector.statistics.EXTENDED_STATISTICS`."""
    return PatchStatsClassifier(**{"extended": True, **kwargs})
