"""Save / load detector checkpoints that rebuild their own model.

A checkpoint is a ``torch.save`` of a plain dict::

    {"state_dict", "model_name", "model_kwargs", "input_norm", "extra", "version"}

``model_name`` / ``model_kwargs`` are the ones recorded by
:func:`detector.models.create_model`, so :func:`load_checkpoint` rebuilds the model
without knowing its class. Loading uses ``torch.load(weights_only=True)``: no code
from the file is executed.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
from torch import nn

from detector.models import create_model
from synth.io import atomic_write

DEFAULT_CHECKPOINT = "weights/default.pt"  # inside the package: the detector that ships (README, "Detector")

CHECKPOINT_VERSION = 2
# constructor defaults that changed since a checkpoint version: a checkpoint of that version
# that did not pass the argument was built with the old value (v1: freq_input defaulted to DCT)
_LEGACY_DEFAULTS = {1: {"freq_attention": {"freq_input": "dct"}}}
_KEYS = ("state_dict", "model_name", "model_kwargs", "input_norm", "extra", "version")


def _json_roundtrip(value, name: str):
    """Return ``value`` as plain JSON types (tuples become lists); ValueError if it is not JSON-able."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name}: must be JSON-serialisable ({e})") from e


def default_checkpoint() -> Path:
    """Path of the checkpoint shipped in the package (``detector/weights/default.pt``), which
    ``detector eval`` / ``detector predict`` and :class:`~detector.predict.Predictor` use when no
    checkpoint is given. How it was trained and what it scores is in the README.

    Raises
    ------
    FileNotFoundError
        When the installation does not hold it (e.g. a wheel built without package data).
    """
    from importlib.resources import files

    path = Path(str(files("detector").joinpath(DEFAULT_CHECKPOINT)))
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the shipped detector checkpoint is missing from this installation; "
                                "pass a checkpoint (--ckpt) or reinstall the package")
    return path


def save_checkpoint(path: str | os.PathLike, model: nn.Module, extra: dict | None = None) -> Path:
    """Write ``model`` (built by ``create_model``) and ``extra`` (JSON-able dict) to ``path``.

    The write is atomic: a temporary file in the same folder is renamed over ``path``, so a
    reader never sees a half-written checkpoint. Parent folders are created. Returns the path.
    """
    path = Path(path)
    for attr in ("model_name", "model_kwargs"):
        if not hasattr(model, attr):
            raise ValueError(f"model: has no {attr!r}; build it with detector.models.create_model")
    if extra is not None and not isinstance(extra, dict):
        raise ValueError(f"extra: expected a dict or None, got {type(extra).__name__}")
    payload = {
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "model_name": model.model_name,
        "model_kwargs": _json_roundtrip(model.model_kwargs, "model.model_kwargs"),
        "input_norm": _json_roundtrip(getattr(model, "input_norm", None), "model.input_norm"),
        "extra": _json_roundtrip(extra or {}, "extra"),
        "version": CHECKPOINT_VERSION,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(payload, path)
    return path


def atomic_torch_save(obj, path: Path) -> None:
    """``torch.save`` to a temp file in the same folder, then ``os.replace``: a crash never
    leaves a half-written file under ``path`` (:func:`synth.io.atomic_write`)."""
    atomic_write(path, lambda f: torch.save(obj, f), binary=True)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model saved at ``path``; returns ``(model in eval mode, meta)``.

    ``meta`` holds ``model_name``, ``model_kwargs``, ``input_norm``, ``extra`` and
    ``version``. ``pretrained`` is forced to False when rebuilding (the weights come from the
    file; nothing is downloaded). Raises FileNotFoundError for a missing file and ValueError
    naming the file (one line) when it is not a detector checkpoint: a field of the wrong
    type, a model its ``model_kwargs`` cannot build, or weights that do not fit the model.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint file not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - the unpickler raises many types on foreign files; re-raised with the path
        raise ValueError(f"{path}: not a readable detector checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in _KEYS):
        found = sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"{path}: not a detector checkpoint (expected keys {list(_KEYS)}, found {found})")
    _check_fields(path, ckpt)
    if ckpt["version"] > CHECKPOINT_VERSION:
        raise ValueError(f"{path}: checkpoint version {ckpt['version']} is newer than supported ({CHECKPOINT_VERSION})")
    for version, per_model in _LEGACY_DEFAULTS.items():
        if ckpt["version"] <= version:
            ckpt["model_kwargs"] = {**per_model.get(ckpt["model_name"], {}), **ckpt["model_kwargs"]}
    kwargs = dict(ckpt["model_kwargs"])
    if "pretrained" in kwargs:
        kwargs["pretrained"] = False
    try:
        model = create_model(ckpt["model_name"], **kwargs)
    except (TypeError, ValueError, RuntimeError) as e:  # unknown model or kwarg, bad kwarg value
        raise ValueError(f"{path}: cannot build model {ckpt['model_name']!r} from its model_kwargs "
                         f"({_one_line(e)})") from e
    model.model_kwargs = dict(ckpt["model_kwargs"])
    _load_weights(path, model, ckpt["state_dict"])
    if ckpt["input_norm"] is not None:
        model.input_norm = ckpt["input_norm"]
    model.to(map_location).eval()
    meta = {k: ckpt[k] for k in _KEYS if k != "state_dict"}
    return model, meta


def _one_line(exc: BaseException, limit: int = 300) -> str:
    """``str(exc)`` on one line, cut to ``limit`` characters."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _check_fields(path: Path, ckpt: dict) -> None:
    """Refuse checkpoint fields of the wrong type; ValueError naming the file and the field."""
    version = ckpt["version"]
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"{path}: 'version' must be an integer >= 1, got {type(version).__name__} {version!r:.40}")
    if not isinstance(ckpt["model_name"], str):
        raise ValueError(f"{path}: 'model_name' must be a string, got {type(ckpt['model_name']).__name__}")
    kwargs = ckpt["model_kwargs"]
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise ValueError(f"{path}: 'model_kwargs' must be a dict of keyword arguments, got {type(kwargs).__name__}")
    state = ckpt["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise ValueError(f"{path}: 'state_dict' must map parameter names to tensors")
    if not isinstance(ckpt["extra"], dict):
        raise ValueError(f"{path}: 'extra' must be a dict, got {type(ckpt['extra']).__name__}")
    norm = ckpt["input_norm"]
    if norm is not None and not (isinstance(norm, dict) and all(_is_norm(norm.get(k), k) for k in ("mean", "std"))):
        raise ValueError(f"{path}: 'input_norm' must be {{'mean': [1 or 3 finite numbers], 'std': [1 or 3 finite "
                         f"numbers > 0]}} (a std of 0 makes every score NaN), got {norm!r:.80}")


def _is_norm(values, key: str) -> bool:
    """Whether ``values`` is a valid ``input_norm[key]``: 1 or 3 finite numbers, std ones > 0."""
    return (isinstance(values, list) and len(values) in (1, 3)
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                    and (key != "std" or v > 0) for v in values))


def _load_weights(path: Path, model: nn.Module, state: dict) -> None:
    """Load ``state`` into ``model``; ValueError naming the file and summarising the misfit
    (missing, unexpected and reshaped tensors: another model's or another configuration's weights)."""
    own = model.state_dict()
    reshaped = [k for k in own if k in state and state[k].shape != own[k].shape]
    missing, unexpected = [k for k in own if k not in state], [k for k in state if k not in own]
    if not reshaped:  # torch's own account of the keys (its load hooks may fill some in)
        try:
            result = model.load_state_dict(state, strict=False)
        except RuntimeError as e:
            raise ValueError(f"{path}: cannot load the weights ({_one_line(e)})") from e
        missing, unexpected = result.missing_keys, result.unexpected_keys
    misfit = [(what, keys) for what, keys in (("missing", missing), ("unexpected", unexpected),
                                               ("of another shape", reshaped)) if keys]
    if misfit:
        summary = "; ".join(f"{len(keys)} {what}, e.g. {keys[0]!r}" for what, keys in misfit)
        raise ValueError(f"{path}: the weights do not fit model {model.model_name!r} with its model_kwargs "
                         f"({summary}): a checkpoint of another model or configuration")
