"""detector: frequency-attention face-forgery detector, baselines, and the train/eval loop.

    from detector import create_model, load
    model = create_model("freq_attention")          # pretrained=False by default
    model, meta = load("runs/r1/round-01/checkpoint.pt")
"""
from detector.checkpoint import load_checkpoint as load, save_checkpoint
from detector.models import create_model, list_models

__all__ = ["create_model", "list_models", "load", "save_checkpoint"]
