"""Model registry in the manner of timm: ``@register_model(name)``, ``create_model(name, **kw)``.

``create_model`` records ``model.model_name`` and ``model.model_kwargs`` (used by
:mod:`detector.checkpoint` to rebuild the model) and makes sure ``model.input_norm``
exists (ImageNet mean/std unless the factory set something else).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

IMAGENET_NORM = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}

# The default backbone is the own dense-conv "plainnet" (detector.models.backbones): trained from
# scratch within a CPU budget, freq_attention on it learns the blending traces, where timm's
# mobilenetv3_large_100 (a choice by speed alone, bench_models.py) stayed at chance; see
# BENCHMARKS.md, "Detector design choices".
DEFAULT_BACKBONE = "plainnet"
DEFAULT_INPUT_SIZE = 224

# Deliberate per-process registry, filled at import time by the model modules.
_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering a factory ``fn(**kwargs) -> nn.Module`` under ``name``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"name: expected a non-empty str, got {name!r}")

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _MODELS and _MODELS[name] is not fn:
            raise ValueError(f"model {name!r} is already registered")
        _MODELS[name] = fn
        return fn

    return deco


def list_models() -> list[str]:
    """Sorted names of the registered models."""
    return sorted(_MODELS)


def create_model(name: str, **kwargs) -> nn.Module:
    """Build registered model ``name`` with ``kwargs``; unknown name -> ValueError listing known ones.

    The returned model follows the common output contract: ``forward(x)`` with x float
    (B, 3, H, W) normalised by ``model.input_norm`` returns
    ``{"logit": (B,), "mask": (B, 1, H, W) logits or None, "sim": (B, g*g, g*g) or None}``; a model may
    also define ``forward_logit(x)`` -> the same logits without the other outputs (:func:`logits_of`).
    """
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    model = _MODELS[name](**kwargs)
    model.model_name = name
    model.model_kwargs = dict(kwargs)
    if not hasattr(model, "input_norm"):
        model.input_norm = {k: list(v) for k, v in IMAGENET_NORM.items()}
    return model


def logits_of(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The logits (B,) of ``model`` on ``x``: ``model.forward_logit(x)`` where the model defines it, else
    ``model(x)["logit"]``.

    Scoring needs only the logit; a model whose other outputs cost time (the mask decoder of
    ``freq_attention``) defines ``forward_logit`` returning exactly ``forward(x)["logit"]`` without them.
    """
    fn = getattr(model, "forward_logit", None)
    return fn(x) if fn is not None else model(x)["logit"]
