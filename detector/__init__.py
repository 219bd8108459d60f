"""detector: frequency-attention face-forgery detector, baselines, and the train/eval loop.

    from detector import create_model, load
    model = create_model("freq_attention")          # pretrained=False by default
    model, meta = load("runs/r1/round-01/checkpoint.pt")

The public names below are imported on first use (``import detector.readers`` does not pay for
torch and the models).
"""
from __future__ import annotations

from synth._lazy import lazy_exports

# public name -> (module, attribute)
_PUBLIC = {
    "Predictor": ("detector.predict", "Predictor"),
    "create_model": ("detector.models", "create_model"),
    "list_models": ("detector.models", "list_models"),
    "load": ("detector.checkpoint", "load_checkpoint"),
    "load_checkpoint": ("detector.checkpoint", "load_checkpoint"),
    "save_checkpoint": ("detector.checkpoint", "save_checkpoint"),
    "train_round": ("detector.train", "train_round"),
    "evaluate": ("detector.train", "evaluate"),
    "run_loop": ("detector.loop", "run_loop"),
    "LoopConfig": ("detector.settings", "LoopConfig"),
    "FaceDataset": ("detector.data", "FaceDataset"),
    "read_dataset": ("detector.readers", "read_dataset"),
    "compute_metrics": ("detector.metrics", "compute_metrics"),
}

__all__ = sorted(_PUBLIC)


__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)
