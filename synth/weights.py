"""Choice-key weights of a run: multipliers of a recipe's choice probabilities
(``{"blend=poisson": 2, ...}``, see :func:`synth.recipe.choice_keys`), checked and normalised.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Mapping

from synth.recipe import CHOICE_KINDS, Recipe, load_recipe, weight_keys

__all__ = ["normalise_weights", "read_weights"]


def normalise_weights(weights) -> dict | None:
    """``weights`` as a dict of ``KIND=VALUE`` key -> float, sorted by key (``None`` stays ``None``);
    ``ValueError`` for an unknown kind or a value that is not a finite number >= 0."""
    if weights is None:
        return None
    if not isinstance(weights, Mapping):
        raise ValueError(f"weights: expected a mapping of choice key -> multiplier, got {type(weights).__name__}")
    out = {}
    for key, value in sorted(weights.items()):
        kind = key.partition("=")[0] if isinstance(key, str) and "=" in key else None
        if kind not in CHOICE_KINDS:
            raise ValueError(f"weights: unknown key {key!r}; expected KIND=VALUE with KIND one of {', '.join(CHOICE_KINDS)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"weights[{key!r}]: expected a finite number >= 0, got {value!r}")
        out[str(key)] = float(value)
    return out


def read_weights(path, recipe: str | Recipe) -> dict:
    """The choice-key multipliers in the JSON file ``path`` (``{"blend=poisson": 2, ...}``), checked
    against ``recipe``: every key must be a choice the recipe can make (:func:`synth.recipe.weight_keys`)
    and every value a finite number >= 0. ``ValueError`` naming the file otherwise."""
    path = Path(path)
    try:
        weights = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"--weights {path}: no such file") from None
    except OSError as e:
        raise ValueError(f"--weights {path}: cannot read ({e.strerror or e})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"--weights {path}: not valid JSON ({e})") from None
    if not isinstance(weights, dict):
        raise ValueError(f"--weights {path}: expected a JSON object of choice key -> multiplier, "
                         f"got {type(weights).__name__}")
    rec = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    known = weight_keys(rec)
    for key in sorted(weights):
        if key not in known:
            kind = key.partition("=")[0]
            same = sorted(k for k in known if k.partition("=")[0] == kind)
            hint = (f"its {kind} choices: {', '.join(same)}" if same else
                    f"keys are KIND=VALUE with KIND one of {', '.join(CHOICE_KINDS)}")
            raise ValueError(f"--weights {path}: {key[:60]!r} is not a choice of recipe {rec.name!r}; {hint}")
    try:
        return normalise_weights(weights)
    except ValueError as e:
        raise ValueError(f"--weights {path}: {e}") from None
