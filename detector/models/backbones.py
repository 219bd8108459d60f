"""Feature backbones with timm's ``features_only`` interface, plus small CPU-friendly ones.

:func:`create_backbone` returns a module whose ``forward(x)`` gives a list of feature maps
and whose ``feature_info.channels()`` / ``feature_info.reduction()`` describe them, for any
timm model name or for the plain conv nets registered here.

Feature index ``i`` has stride ``2 ** (i + 1)``, as in timm (index 2 = stride 8).

Why own backbones: ImageNet-style backbones (depthwise convs, stride-2 stems that drop
half the pixels at once) are slow on a CPU and throw the highest frequencies away in
their first layer, where blending traces live. ``plainnet`` keeps a full-resolution 3x3
conv before the first downsampling and uses only dense 3x3 convs, which a CPU runs well;
it stops at the deepest index asked for, so a stride-16 pyramid costs no stride-32 stage.
"""
from __future__ import annotations

from typing import Callable, Sequence

import timm
from torch import nn

from detector.models.blocks import ConvBNAct

__all__ = ["create_backbone", "list_backbones", "PlainConvNet", "FeatureInfo"]


class FeatureInfo:
    """``channels()`` and ``reduction()`` (stride) of each returned feature map, as timm's."""

    def __init__(self, channels: Sequence[int], reductions: Sequence[int]):
        self._channels, self._reductions = list(channels), list(reductions)

    def channels(self) -> list[int]:
        return list(self._channels)

    def reduction(self) -> list[int]:
        return list(self._reductions)


class PlainConvNet(nn.Module):
    """Dense 3x3 conv stages; stage ``i`` halves the resolution and returns stride ``2**(i+1)``.

    Stage 0 is a stride-1 conv (``stem`` channels, full resolution) then a stride-2 conv to
    ``widths[0]``; every later stage is a stride-2 conv then ``depth - 1`` stride-1 convs.
    All convs are Conv-BN-ReLU. ``forward(x)`` -> [features at ``out_indices``].
    """

    def __init__(self, widths: Sequence[int] = (24, 32, 64, 128, 192), depth: int = 2, stem: int = 16,
                 in_chans: int = 3, out_indices: Sequence[int] = (1, 2, 3)):
        super().__init__()
        out_indices = tuple(int(i) for i in out_indices)
        if not out_indices or min(out_indices) < 0 or max(out_indices) >= len(widths):
            raise ValueError(f"out_indices: expected indices in 0..{len(widths) - 1}, got {out_indices!r}")
        if depth < 1:
            raise ValueError(f"depth: expected >= 1, got {depth}")
        self.out_indices = out_indices
        stages, prev = [], in_chans
        for i in range(max(out_indices) + 1):
            layers = [ConvBNAct(prev, stem, 3, 1), ConvBNAct(stem, widths[0], 3, 2)] if i == 0 else \
                [ConvBNAct(prev, widths[i], 3, 2)] + [ConvBNAct(widths[i], widths[i], 3, 1) for _ in range(depth - 1)]
            stages.append(nn.Sequential(*layers))
            prev = widths[i]
        self.stages = nn.ModuleList(stages)
        self.feature_info = FeatureInfo([widths[i] for i in out_indices], [2 ** (i + 1) for i in out_indices])

    def forward(self, x):
        feats = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.out_indices:
                feats.append(x)
        return feats


# Own backbones by name (a constant table; timm names are resolved by timm).
_BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "plainnet": lambda **kw: PlainConvNet(**kw),
    "plainnet_wide": lambda **kw: PlainConvNet(widths=(32, 48, 96, 192, 256), stem=24, **kw),
}


def list_backbones() -> list[str]:
    """Names of the backbones defined here (any timm model name works as well)."""
    return sorted(_BACKBONES)


def create_backbone(name: str, in_chans: int = 3, out_indices: Sequence[int] = (2, 3, 4),
                    pretrained: bool = False) -> nn.Module:
    """A feature-pyramid backbone: one of :func:`list_backbones` or a timm model name.

    Own backbones have no pretrained weights (``pretrained=True`` raises); for timm names it
    is passed through and weights are fetched only when True.
    """
    if name in _BACKBONES:
        if pretrained:
            raise ValueError(f"backbone {name!r} has no pretrained weights; use pretrained=False")
        return _BACKBONES[name](in_chans=in_chans, out_indices=tuple(out_indices))
    if not timm.is_model(name):
        raise ValueError(f"backbone: unknown {name!r}; expected one of {list_backbones()} or a timm model name")
    return timm.create_model(name, pretrained=pretrained, features_only=True, out_indices=tuple(out_indices),
                             in_chans=in_chans)
