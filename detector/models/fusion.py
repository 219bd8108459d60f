"""Score fusion: several detectors as one, by a weighted mean of their standardised logits.

Detectors that look at different evidence (a CNN's learnt local traces, the patch statistics'
colour and sharpness relations) fail on different forgeries; averaging their logits after
putting them on one scale keeps what each sees. The scale of each member (``logit_mean``,
``logit_std``) is measured on labelled data the members were not trained on (the synth
validation split) by :func:`detector.fit_statistics.calibrate_fusion`, never on an evaluation set;
so are the weights (``logit_weight``, equal unless :func:`detector.fit_statistics.set_fusion_weights`
fits them).

With ``mirror=True`` the fusion also scores the left-right mirror image of its input and averages
the two: a face and its mirror image are equally real or fake, and averaging the two views lowers the
variance of a detector trained from scratch on a few thousand faces.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn

from detector.models.registry import create_model, logits_of, register_model


class ScoreFusion(nn.Module):
    """``forward(x)`` -> ``{"logit", "mask", "sim"}``: weighted mean z-scored logit of the members.

    The logit is ``sum_i logit_weight[i] (logit_i - logit_mean[i]) / logit_std[i]``; the weights
    (non-negative, summing to 1) are equal unless set, and a checkpoint saved before they existed
    loads with equal weights, as it was used.

    ``members`` is a list of ``{"name": registered model, "kwargs": {...}}``; each is built with
    ``pretrained=False`` where it takes that argument (weights come from the checkpoint).
    ``mask`` and ``sim`` are those of the first member that gives them. All members must share
    one ``input_norm``.

    ``mirror``: also score ``x`` mirrored left-right and return the mean of both fused logits (and of
    both mask logits, the mirrored one mirrored back); ``sim`` stays the unmirrored view's. Twice the
    compute. Checkpoints saved without it load with ``mirror=False``, as they were used.
    """

    def __init__(self, members: Sequence[Mapping], mirror: bool = False):
        super().__init__()
        if not isinstance(members, (list, tuple)) or len(members) < 2:
            raise ValueError(f"members: expected a list of at least two {{'name', 'kwargs'}} dicts, got {members!r}")
        built = []
        for i, m in enumerate(members):
            if not isinstance(m, Mapping) or not isinstance(m.get("name"), str):
                raise ValueError(f"members[{i}]: expected a dict with a model 'name', got {m!r}")
            kwargs = dict(m.get("kwargs") or {})
            if "pretrained" in kwargs:
                kwargs["pretrained"] = False
            built.append(create_model(m["name"], **kwargs))
        norms = {repr(getattr(b, "input_norm", None)) for b in built}
        if len(norms) > 1:
            raise ValueError(f"members: input_norm differs between members ({sorted(norms)}); they must share one")
        if not isinstance(mirror, bool):
            raise ValueError(f"mirror: expected True or False, got {mirror!r}")
        self.mirror = mirror
        self.members = nn.ModuleList(built)
        self.input_norm = dict(built[0].input_norm)
        self.register_buffer("logit_mean", torch.zeros(len(built)))
        self.register_buffer("logit_std", torch.ones(len(built)))
        self.register_buffer("logit_weight", torch.full((len(built),), 1.0 / len(built)))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # fusions stored before the weights existed were equal-weight means: keep them so
        if f"{prefix}logit_mean" in state_dict and f"{prefix}logit_weight" not in state_dict:
            state_dict[f"{prefix}logit_weight"] = torch.full_like(self.logit_weight, 1.0 / len(self.members))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _combine(self, logits: Sequence[torch.Tensor]) -> torch.Tensor:
        """The fused logit (B,) of the members' logits, each (B,)."""
        stacked = torch.stack([x.float() for x in logits], 1)
        return ((stacked - self.logit_mean) / self.logit_std * self.logit_weight).sum(1)

    def _view(self, x: torch.Tensor) -> tuple[torch.Tensor, list[dict]]:
        outs = [m(x) for m in self.members]
        return self._combine([o["logit"] for o in outs]), outs

    def forward_logit(self, x: torch.Tensor) -> torch.Tensor:
        """``forward(x)["logit"]``, each member scored through :func:`~detector.models.registry.logits_of`."""
        fused = self._combine([logits_of(m, x) for m in self.members])
        if self.mirror:
            flipped = torch.flip(x, dims=(-1,))
            fused = (fused + self._combine([logits_of(m, flipped) for m in self.members])) / 2
        return fused

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor | None]:
        fused, outs = self._view(x)
        mask, sim = _first(outs, "mask"), _first(outs, "sim")
        if self.mirror:
            fused_m, outs_m = self._view(torch.flip(x, dims=(-1,)))
            fused = (fused + fused_m) / 2
            if mask is not None:
                mask = (mask + torch.flip(_first(outs_m, "mask"), dims=(-1,))) / 2
        return {"logit": fused, "mask": mask, "sim": sim}


def _first(outs: Sequence[Mapping], key: str) -> torch.Tensor | None:
    """``key`` of the first member output that gives it, else None."""
    return next((o[key] for o in outs if o.get(key) is not None), None)


@register_model("score_fusion")
def score_fusion(**kwargs) -> ScoreFusion:
    return ScoreFusion(**kwargs)


def fusion_of(models: Sequence[nn.Module], mirror: bool = False) -> ScoreFusion:
    """A ``score_fusion`` of copies of trained ``models`` (each built by ``create_model``), in eval mode on the first
    one's device, scale unset: the plain mean of their logits until ``logit_mean`` / ``logit_std`` are set."""
    fusion = create_model("score_fusion", members=[{"name": m.model_name, "kwargs": m.model_kwargs} for m in models],
                          mirror=mirror)
    for member, model in zip(fusion.members, models):
        member.load_state_dict(model.state_dict())
    return fusion.to(next(models[0].parameters()).device).eval()
