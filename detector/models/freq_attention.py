"""Two-stream RGB / frequency detector with attention fusion and local relation learning.

After Chen et al., "Local Relation Learning for Face Forgery Detection" (AAAI 2021):

1. Two backbones of the same architecture (timm ``features_only=True`` or an own
   :mod:`~detector.models.backbones` net such as ``plainnet``): one on the RGB
   input, one on a fixed high-pass image of it (``freq_input``: SRM residuals ``"srm"``,
   the default, measured best in ``benchmarks/bench_detector_variants.py``; DCT high-pass
   ``"dct"``, the paper's; or both ``"dct+srm"``), optionally divided by its per-image RMS
   (``freq_norm="image"``: blind to the photo's overall high-frequency level).
2. At each of the ``fusion_depths`` (feature indices; default 1, 2, 3 = strides 4, 8,
   16, so a 256-px face keeps a 16x16 map for the 5x5 relation) an :class:`~detector.models.blocks.AttentionFusion` block weights each
   stream by its own sigmoid map and sums them. As in the paper the two streams go on
   separately; the fused features of every depth are collected.
3. The fused features are average-pooled to the deepest size, concatenated and mixed by
   a 1x1 conv + BN (no ReLU, so patch features can point in opposite directions) to
   ``embed_dim`` channels (the aggregated map).
4. Local relation: the aggregated map is pooled onto a ``grid x grid`` lattice of
   patches and ``sim = (cos + 1) / 2`` between all patch pairs, (B, grid^2, grid^2).
5. Head: upper triangle of ``sim`` (+ globally pooled aggregated features when
   ``head_pooled``) -> MLP -> logit.
6. Decoder: from the aggregated map, upsampling + 3x3 conv blocks with the shallower
   fused features as skips -> mask logits at the input size.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from detector.frequency import DCTHighPass, SRMConv
from detector.models.backbones import create_backbone
from detector.models.blocks import AttentionFusion, UNetDecoder, mlp_head, patch_similarity
from detector.models.registry import DEFAULT_BACKBONE, IMAGENET_NORM, register_model

# Fixed frequency transforms of the RGB input: name -> (builder(alpha), output channels).
FREQ_TRANSFORMS: dict[str, tuple[Callable[[float], nn.Module], int]] = {
    "dct": (lambda alpha: DCTHighPass(alpha), 3),
    "srm": (lambda alpha: SRMConv(3), 9),
}
FREQ_INPUTS = ("dct", "srm", "dct+srm")
FREQ_NORMS = ("none", "image")
_RMS_FLOOR = 1e-3


class FrequencyInput(nn.Module):
    """The frequency stream's input: the named fixed transforms of x, concatenated on channels.

    ``kind`` is ``"dct"`` (DCT high-pass, 3 channels), ``"srm"`` (SRM residuals, 9) or
    ``"dct+srm"`` (12). ``norm``: ``"none"``, or ``"image"``: each channel divided by its root mean
    square over the image, so the stream sees where high frequencies are stronger or weaker than in
    the rest of the face, not how sharp the photo is as a whole (a global blur, sharpening or
    resampling scales every residual of an image nearly alike). No trainable parameters.
    """

    def __init__(self, kind: str = "dct", alpha: float = 0.33, norm: str = "none"):
        super().__init__()
        if kind not in FREQ_INPUTS:
            raise ValueError(f"freq_input: expected one of {list(FREQ_INPUTS)}, got {kind!r}")
        if norm not in FREQ_NORMS:
            raise ValueError(f"freq_norm: expected one of {list(FREQ_NORMS)}, got {norm!r}")
        self.norm = norm
        names = kind.split("+")
        self.transforms = nn.ModuleList(FREQ_TRANSFORMS[n][0](alpha) for n in names)
        self.out_channels = sum(FREQ_TRANSFORMS[n][1] for n in names)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # always in float32, also under autocast: the high-pass filters subtract nearly equal pixel
        # values, and bfloat16's 8-bit mantissa would round away residuals of a grey level or two
        with torch.autocast(x.device.type, enabled=False):
            x = x.float()
            out = self.transforms[0](x) if len(self.transforms) == 1 else torch.cat([t(x) for t in self.transforms], 1)
            if self.norm == "image":
                # the floor keeps a flat (residual-free) image finite; natural faces' residuals are far above it
                out = out * torch.rsqrt(out.square().mean(dim=(2, 3), keepdim=True) + _RMS_FLOOR ** 2)
            return out


class FreqAttentionDetector(nn.Module):
    """See the module docstring. ``forward(x)`` -> ``{"logit", "mask", "sim"}`` (+ ``"attention"``).

    ``model.attention_maps`` holds the last forward's attention maps (detached), one
    (B, 2, h_d, w_d) tensor per fusion depth, channel 0 for RGB and 1 for frequency.
    """

    def __init__(
        self,
        backbone: str = DEFAULT_BACKBONE,
        pretrained: bool = False,
        alpha: float = 0.33,
        freq_input: str = "srm",
        freq_norm: str = "none",
        grid: int = 5,
        fusion_depths: Sequence[int] = (1, 2, 3),
        embed_dim: int = 128,
        decoder_dim: int = 64,
        head_pooled: bool = True,
        head_hidden: int = 256,
        dropout: float = 0.2,
        fusion_reduction: int = 4,
    ):
        super().__init__()
        depths = tuple(int(d) for d in fusion_depths)
        if len(depths) < 1 or list(depths) != sorted(set(depths)):
            raise ValueError(f"fusion_depths: expected increasing, distinct feature indices, got {fusion_depths!r}")
        if not isinstance(grid, int) or grid < 2:
            raise ValueError(f"grid: expected an int >= 2, got {grid!r}")
        self.grid = grid
        self.head_pooled = bool(head_pooled)
        self.freq_input = FrequencyInput(freq_input, alpha, freq_norm)
        # pretrained is passed through; timm only fetches weights when it is True.
        self.rgb = create_backbone(backbone, 3, depths, pretrained)
        self.freq = create_backbone(backbone, self.freq_input.out_channels, depths, pretrained)
        chans = self.rgb.feature_info.channels()
        self.fusion = nn.ModuleList(AttentionFusion(c, fusion_reduction) for c in chans)
        # No ReLU: the relation needs signed patch features (cos = -1 <=> s_ij = 0).
        self.aggregate = nn.Sequential(nn.Conv2d(sum(chans), embed_dim, 1, bias=False), nn.BatchNorm2d(embed_dim))
        n_pairs = grid * grid * (grid * grid - 1) // 2
        self.register_buffer("_triu", torch.triu_indices(grid * grid, grid * grid, offset=1), persistent=False)
        self.head = mlp_head(n_pairs + (embed_dim if self.head_pooled else 0), head_hidden, dropout)
        self.decoder = UNetDecoder(embed_dim, list(chans[:-1])[::-1], decoder_dim)
        self.input_norm = {k: list(v) for k, v in IMAGENET_NORM.items()}
        self.attention_maps: list[torch.Tensor] = []

    def _encode(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor, torch.Tensor,
                                                 torch.Tensor]:
        """Fused features per depth, attention maps, aggregated features, relation map and logit."""
        rgb_feats = self.rgb(x)
        freq_feats = self.freq(self.freq_input(x))
        fused, maps = [], []
        for block, fr, ff in zip(self.fusion, rgb_feats, freq_feats):
            f, a = block(fr, ff)
            fused.append(f)
            maps.append(a)
        self.attention_maps = [a.detach() for a in maps]
        size = fused[-1].shape[-2:]
        agg = self.aggregate(torch.cat([F.adaptive_avg_pool2d(f, size) for f in fused], dim=1))
        sim = patch_similarity(agg, self.grid)
        head_in = sim[:, self._triu[0], self._triu[1]]
        if self.head_pooled:
            head_in = torch.cat([head_in, agg.mean(dim=(2, 3))], dim=1)
        return fused, maps, agg, sim, self.head(head_in).squeeze(1)

    def forward_logit(self, x: torch.Tensor) -> torch.Tensor:
        """``forward(x)["logit"]`` without running the mask decoder (scoring needs only the logit)."""
        return self._encode(x)[-1]

    def forward(self, x: torch.Tensor, return_attention: bool = False) -> dict[str, torch.Tensor | None]:
        fused, maps, agg, sim, logit = self._encode(x)
        out = {
            "logit": logit,
            "mask": self.decoder(agg, fused[:-1][::-1], x.shape[-2:]),
            "sim": sim,
        }
        if return_attention:
            out["attention"] = maps
        return out


@register_model("freq_attention")
def freq_attention(**kwargs) -> FreqAttentionDetector:
    """Two-stream RGB/frequency attention detector; kwargs as :class:`FreqAttentionDetector`."""
    return FreqAttentionDetector(**kwargs)
