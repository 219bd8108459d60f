"""Baseline detectors with the common output contract.

- ``timm_classifier``: any timm image classifier with one output (mask, sim = None).
- ``wavelet_dual_branch``: stationary-wavelet input, a small conv encoder, a
  segmentation branch and a classification branch fused by bilinear pooling.
"""
from __future__ import annotations

import timm
import torch
import torch.nn.functional as F
from torch import nn

from detector.frequency import swd
from detector.models.backbones import create_backbone, list_backbones
from detector.models.blocks import ConvBNAct, UNetDecoder, bilinear_pool
from detector.models.registry import DEFAULT_BACKBONE, IMAGENET_NORM, register_model


class _PooledClassifier(nn.Module):
    """Deepest feature map of an own backbone -> global average pool -> linear -> (B, 1)."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.fc = nn.Linear(backbone.feature_info.channels()[-1], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.backbone(x)[-1].mean(dim=(2, 3)))


class TimmClassifier(nn.Module):
    """``timm.create_model(backbone, num_classes=1)`` returning ``{"logit", "mask": None, "sim": None}``.

    ``backbone`` may also name an own backbone (:func:`~detector.models.backbones.list_backbones`):
    its stride-16 features are pooled into a linear layer (the same depth freq_attention fuses to).
    """

    def __init__(self, backbone: str = DEFAULT_BACKBONE, pretrained: bool = False, **timm_kwargs):
        super().__init__()
        if backbone in list_backbones():
            self.net = _PooledClassifier(create_backbone(backbone, 3, (3,), pretrained))
        else:
            self.net = timm.create_model(backbone, pretrained=pretrained, num_classes=1, **timm_kwargs)
        cfg = getattr(self.net, "pretrained_cfg", None) or {}
        mean, std = cfg.get("mean", IMAGENET_NORM["mean"]), cfg.get("std", IMAGENET_NORM["std"])
        self.input_norm = {"mean": [float(v) for v in mean], "std": [float(v) for v in std]}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor | None]:
        return {"logit": self.net(x).squeeze(1), "mask": None, "sim": None}


class WaveletDualBranch(nn.Module):
    """Small-scale dual-branch wavelet detector (mask + label).

    x -> :func:`detector.frequency.swd` (``levels`` Haar levels: 3*(3*levels+1) channels,
    30 for 3 levels) -> shared conv encoder to stride 8 (skip kept at stride 4), then

    - segmentation branch: 3x3 conv at stride 8, decoder with the stride-4 skip -> mask
      logits at the input size;
    - classification branch: two stride-2 convs to stride 32.

    Both branches are reduced to ``bilinear_dim`` channels by 1x1 convs, the segmentation
    feature is average-pooled to the classification grid, and the two are fused by
    bilinear pooling (outer product averaged over positions, signed square root, L2
    normalisation) -> linear -> logit.
    """

    def __init__(self, levels: int = 3, width: int = 32, bilinear_dim: int = 32, decoder_dim: int = 32):
        super().__init__()
        self.levels = levels
        c_in = 3 * (3 * levels + 1)
        w = width
        self.enc1 = nn.Sequential(ConvBNAct(c_in, w, 3, 2), ConvBNAct(w, w, 3))          # stride 2
        self.enc2 = ConvBNAct(w, 2 * w, 3, 2)                                           # stride 4
        self.enc3 = ConvBNAct(2 * w, 3 * w, 3, 2)                                       # stride 8
        self.seg = ConvBNAct(3 * w, 3 * w, 3)
        self.decoder = UNetDecoder(3 * w, [2 * w], decoder_dim)
        self.cls = nn.Sequential(ConvBNAct(3 * w, 4 * w, 3, 2), ConvBNAct(4 * w, 4 * w, 3, 2))  # stride 32
        self.seg_proj = nn.Conv2d(3 * w, bilinear_dim, 1)
        self.cls_proj = nn.Conv2d(4 * w, bilinear_dim, 1)
        self.fc = nn.Linear(bilinear_dim * bilinear_dim, 1)
        self.input_norm = {k: list(v) for k, v in IMAGENET_NORM.items()}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor | None]:
        s4 = self.enc2(self.enc1(swd(x, self.levels)))
        s8 = self.enc3(s4)
        seg = self.seg(s8)
        cls = self.cls(s8)
        seg_small = F.adaptive_avg_pool2d(self.seg_proj(seg), cls.shape[-2:])
        z = bilinear_pool(seg_small, self.cls_proj(cls))
        return {
            "logit": self.fc(z).squeeze(1),
            "mask": self.decoder(seg, [s4], x.shape[-2:]),
            "sim": None,
        }


@register_model("timm_classifier")
def timm_classifier(**kwargs) -> TimmClassifier:
    """Plain timm classifier baseline; kwargs: backbone, pretrained, any timm create_model kwarg."""
    return TimmClassifier(**kwargs)


@register_model("wavelet_dual_branch")
def wavelet_dual_branch(**kwargs) -> WaveletDualBranch:
    """Wavelet dual-branch baseline; kwargs as :class:`WaveletDualBranch`."""
    return WaveletDualBranch(**kwargs)
