"""Detector models: ``create_model(name, **kwargs)``, ``list_models()``.

Importing this package registers every model module.
"""
from detector.models import baselines, freq_attention, fusion, patch_stats, stats_conv  # noqa: F401  (registers the models)
from detector.models.registry import (
    DEFAULT_BACKBONE,
    DEFAULT_INPUT_SIZE,
    IMAGENET_NORM,
    create_model,
    list_models,
    logits_of,
    register_model,
)

__all__ = ["create_model", "list_models", "logits_of", "register_model", "IMAGENET_NORM", "DEFAULT_BACKBONE", "DEFAULT_INPUT_SIZE"]
