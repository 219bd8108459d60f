"""Recipes: YAML files naming which ops may run, how often, and the ranges of their parameters.

A recipe is validated completely before any work starts (unknown op, unknown key, wrong
type, empty or inverted range -> :class:`RecipeError` naming the file, the key and the
problem), may ``extends:`` another recipe (deep merge, the child wins), and is sampled
into a *plan* per sample: a plain JSON-able dict that records every choice and every
parameter, so :func:`synth.render.render` can replay the sample from it alone.

Layout (see ``recipes/mixed.yaml`` for a commented example)::

    crop_scale: 1.3                      # face crop side / landmark box side
    pairing: {self: 1, swap: 1}          # choice weights
    swap: {k_nearest: 16, warp: similarity}
    perturb:  PIPELINE                   # SBI-style source copy changes
    degrade:  PIPELINE                   # blur -> compression -> noise ... on the source
    target_degrade: PIPELINE             # the same, on the target photo: the real and the background
    color:    {p: 0.8, masked: 0.7, ops: GROUP}
    mask:     {regions: {full: 3, ...}, params: {...ranges...}, occlusion: {p: .., estimator: skin}}
    blend:    {ops: GROUP}
    post:     PIPELINE                   # applied identically to real and fake
    min_visible: 2.0                     # resample a fake whose mean |fake - real| over mask >= 128
    max_attempts: 8                      #   is below this (0..255 units; 0 = off), at most this often

    PIPELINE = {order: [stage, ...], stages: {stage: {p: 0.5, ops: GROUP}}}
    GROUP    = {op_name: {weight: 1, params: {name: RANGE}}}
    RANGE    = scalar (fixed) | [lo, hi] (uniform; ints inclusive) | {choices: [...]}
               (for choice-type parameters a plain list is the set of choices)
"""
from __future__ import annotations

import bisect
import copy
import hashlib
import importlib.resources
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import yaml

from synth import mask as masklib
from synth.ops import REGISTRY, get_op
from synth.params import Param


def _shipped_recipe_dir() -> Path:
    """The folder of the shipped recipes: the package data ``synth/recipes`` of an installed
    wheel (found through :mod:`importlib.resources`), else the repository's top-level
    ``recipes/`` (a source checkout or an editable install).  ``recipes/`` is the only copy:
    the build maps it to ``synth/recipes`` (``setup.py``)."""
    packaged = importlib.resources.files("synth") / "recipes"
    if isinstance(packaged, Path) and packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "recipes"


#: Where recipes given by name live (see :func:`_shipped_recipe_dir`).
RECIPE_DIR = _shipped_recipe_dir()

#: Which op stages each recipe section may use.
PIPELINE_STAGES = {
    "perturb": ("perturb",),
    "degrade": ("blur", "resample", "compression", "noise"),
    "target_degrade": ("blur", "resample", "compression", "noise"),
    # post runs on real and fake alike, so perturb ops (e.g. a global sharpen) are allowed too
    "post": ("blur", "resample", "compression", "noise", "perturb"),
}
#: Upper bound of ``max_attempts`` (each attempt is one full render).
MAX_ATTEMPTS_LIMIT = 64
#: Upper bound of a recipe file's YAML nodes with aliases expanded (``mixed.yaml``: ~650).
MAX_RECIPE_NODES = 100_000
PAIRINGS = ("self", "swap")
WARPS = ("similarity", "affine")


class RecipeError(ValueError):
    """A recipe file is invalid; the message names the file, the key and the problem."""


@dataclass(frozen=True)
class Recipe:
    """A validated, fully merged recipe.  ``spec`` is plain data; ``hash`` identifies it."""

    name: str
    path: str
    spec: Mapping[str, Any]
    hash: str


# ----------------------------------------------------------------------------- loading

def recipe_path(name_or_path: str | Path) -> Path:
    """Resolve a recipe name (``mixed``) or a path to a YAML file."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise RecipeError(f"{p}: recipe file not found")
        return p
    candidate = RECIPE_DIR / f"{name_or_path}.yaml"
    if not candidate.is_file():
        known = ", ".join(list_recipes()) or f"none (no *.yaml in {RECIPE_DIR})"
        raise RecipeError(f"unknown recipe {name_or_path!r}; known recipes: {known} "
                          f"(or give a path to a .yaml file)")
    return candidate


def read_yaml_file(path: Path, parse: Callable[[str, Path], Any], error: type = ValueError) -> Any:
    """``parse(text, path)`` of the file at ``path``, with the ways a YAML file can be unreadable
    (invalid YAML, nesting too deep, not UTF-8 text) raised as ``error`` naming ``path``."""
    try:
        return parse(path.read_text(), path)
    except yaml.YAMLError as e:
        raise error(f"{path}: not valid YAML: {cut_text(str(e))}") from None
    except RecursionError:
        raise error(f"{path}: YAML nested too deeply") from None
    except UnicodeDecodeError:
        raise error(f"{path}: not a text file (UTF-8)") from None


def _read_yaml(path: Path, chain: tuple[Path, ...]) -> dict:
    if path.resolve() in chain:
        raise RecipeError(f"{path}: extends: circular chain {' -> '.join(str(c) for c in chain + (path,))}")
    data = read_yaml_file(path, _load_yaml, RecipeError)
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise RecipeError(f"{path}: extends: expected a recipe name or path, got {parent!r}")
    parent_path = Path(parent)
    if not parent_path.is_absolute() and (path.parent / parent).suffix in (".yaml", ".yml"):
        parent_path = path.parent / parent
    try:
        parent_file = recipe_path(parent_path if parent_path.suffix else parent)
    except RecipeError as e:
        raise RecipeError(f"{path}: extends: {e}") from None
    base = _read_yaml(parent_file, chain + (path.resolve(),))
    return _deep_merge(base, data)


def cut_text(text: str, limit: int = 300) -> str:
    """``text`` cut to ``limit`` characters: a hostile file must not make a huge error message."""
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _yaml_children(node: yaml.Node) -> list:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _expanded_nodes(root: yaml.Node, limit: int) -> int:
    """Number of nodes of ``root`` with every alias expanded (an alias shares its anchor's node
    object), counted without expanding anything; stops as soon as it exceeds ``limit``.
    Raises ``ValueError`` on a node that contains itself through an alias."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()  # entered, not finished: the current path from the root
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            open_nodes.discard(key)
            sizes[key] = 1 + sum(sizes[id(c)] for c in _yaml_children(node))
            if sizes[key] > limit:
                return sizes[key]
        elif key not in sizes:
            if key in open_nodes:
                raise ValueError("an alias refers to a node that contains it (a recursive structure)")
            open_nodes.add(key)
            stack.append((node, True))
            stack.extend((c, False) for c in _yaml_children(node))
    return sizes[id(root)]


def checked_yaml_node(loader: yaml.SafeLoader, path, max_nodes: int, what: str, error: type = ValueError):
    """The loader's single document node (None for an empty document), refused with ``error`` naming
    ``path`` when its aliases (``*name``) expand to more than ``max_nodes`` nodes ("billion laughs":
    a few lines that expand to gigabytes) or into themselves, before anything is expanded. ``what``
    names the kind of file in the message ("recipe", "config")."""
    node = loader.get_single_node()
    if node is None:
        return None
    try:
        n = _expanded_nodes(node, max_nodes)
    except ValueError as e:
        raise error(f"{path}: YAML anchors/aliases: {e}") from None
    if n > max_nodes:
        raise error(f"{path}: YAML aliases expand to more than {max_nodes} nodes (an alias "
                    f"bomb?); write the {what} without nested anchors/aliases")
    return node


def _load_yaml(text: str, path: Path) -> Any:
    """``yaml.safe_load`` of a recipe, refusing alias bombs first (:func:`checked_yaml_node`)."""
    loader = yaml.SafeLoader(text)
    try:
        node = checked_yaml_node(loader, path, MAX_RECIPE_NODES, "recipe", RecipeError)
        return None if node is None else loader.construct_document(node)
    finally:
        loader.dispose()


# Choice sets are replaced whole, not merged: a child recipe lists what it allows.
_REPLACED_WHOLE = ("ops", "regions", "pairing")


def _deep_merge(base: dict, child: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key not in _REPLACED_WHOLE:
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_recipe(name_or_path: str | Path) -> Recipe:
    """Load, merge (``extends``) and validate a recipe by name or path."""
    path = recipe_path(name_or_path)
    spec = _read_yaml(path, ())
    validate_spec(spec, str(path))
    spec = _with_defaults(spec)
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    name = spec.get("name", path.stem)
    return Recipe(name=name, path=str(path), spec=spec, hash=hashlib.sha256(canonical.encode()).hexdigest()[:16])


# -------------------------------------------------------------------------- validation

def _fail(where: str, key: str, problem: str) -> None:
    raise RecipeError(f"{where}: {cut_text(key, 120)}: {cut_text(problem)}")


def _check_keys(obj: Any, allowed: tuple[str, ...], where: str, key: str) -> None:
    if not isinstance(obj, dict):
        _fail(where, key, f"expected a mapping, got {type(obj).__name__} {obj!r}")
    for k in obj:
        if k not in allowed:
            _fail(where, f"{key}.{k}" if key else str(k), f"unknown key; allowed: {', '.join(allowed)}")


def _check_prob(value: Any, where: str, key: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        _fail(where, key, f"expected a probability in [0, 1], got {value!r}")


def _check_weights(obj: Any, allowed: tuple[str, ...], where: str, key: str) -> None:
    _check_keys(obj, allowed, where, key)
    if not obj:
        _fail(where, key, "empty: list at least one choice")
    for k, w in obj.items():
        if isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0:
            _fail(where, f"{key}.{k}", f"weight must be a number >= 0, got {w!r}")
    if sum(obj.values()) <= 0:
        _fail(where, key, "all weights are zero")


def check_range(param: Param, value: Any, where: str, key: str) -> None:
    """Validate a recipe RANGE for ``param`` (see the module docstring)."""
    is_set = param.kind == "choice" or (param.kind == "int" and bool(param.choices)) or param.kind == "bool"
    if isinstance(value, dict):
        _check_keys(value, ("choices",), where, key)
        values = value["choices"] if "choices" in value else None
        if not isinstance(values, list) or not values:
            _fail(where, f"{key}.choices", "expected a non-empty list")
    elif isinstance(value, list):
        if not value:
            _fail(where, key, "empty range")
        if not is_set:
            if len(value) != 2:
                _fail(where, key, f"a numeric range is [low, high], got {value!r} "
                                  f"(use {{choices: [...]}} for a set of values)")
            lo, hi = value
            for v in value:
                try:
                    param.check(v, "")
                except ValueError as e:
                    _fail(where, key, str(e).lstrip(": "))
            if lo > hi:
                _fail(where, key, f"inverted range [{lo}, {hi}]")
            return
        values = value
    else:
        values = [value]
    for v in values:
        try:
            param.check(v, "")
        except ValueError as e:
            _fail(where, key, str(e).lstrip(": "))


def _check_group(group: Any, stages: tuple[str, ...], where: str, key: str) -> None:
    if not isinstance(group, dict) or not group:
        _fail(where, key, "expected a non-empty mapping of op name -> {weight, params}")
    for name, entry in group.items():
        k = f"{key}.{name}"
        if name not in REGISTRY:
            options = ", ".join(sorted(n for n, op in REGISTRY.items() if op.stage in stages))
            _fail(where, k, f"unknown op; ops allowed here: {options}")
        op = REGISTRY[name]
        if op.stage not in stages:
            _fail(where, k, f"op of stage {op.stage!r} is not allowed here (allowed stages: {', '.join(stages)})")
        entry = {} if entry is None else entry
        _check_keys(entry, ("weight", "params"), where, k)
        w = entry.get("weight", 1)
        if isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0:
            _fail(where, f"{k}.weight", f"must be a number >= 0, got {w!r}")
        params = entry.get("params") or {}
        _check_keys(params, tuple(op.params), where, f"{k}.params")
        for pname, rng_value in params.items():
            check_range(op.params[pname], rng_value, where, f"{k}.params.{pname}")


def _check_pipeline(pipe: Any, section: str, where: str) -> None:
    # Stage labels are free (blur, compression, ...): each is one step that runs with
    # probability p and picks one op of its group; ops must suit the section.
    allowed = PIPELINE_STAGES[section]
    _check_keys(pipe, ("order", "stages"), where, section)
    stage_specs = pipe.get("stages", {})
    if not isinstance(stage_specs, dict):
        _fail(where, f"{section}.stages", f"expected a mapping of stage name -> {{p, ops}}, got {stage_specs!r}")
    order = pipe.get("order", list(stage_specs))
    if not isinstance(order, list) or len(set(map(str, order))) != len(order):
        _fail(where, f"{section}.order", f"expected a list of distinct stage names, got {order!r}")
    for stage in order:
        if stage not in stage_specs:
            _fail(where, f"{section}.order", f"stage {stage!r} has no entry under {section}.stages")
    for stage, spec in stage_specs.items():
        k = f"{section}.stages.{stage}"
        if stage not in order:
            _fail(where, k, f"stage is not listed in {section}.order")
        _check_keys(spec, ("p", "ops"), where, k)
        _check_prob(spec.get("p", 1.0), where, f"{k}.p")
        if "ops" not in spec:
            _fail(where, k, "missing key 'ops'")
        _check_group(spec["ops"], allowed, where, f"{k}.ops")


def validate_spec(spec: Mapping[str, Any], where: str) -> None:
    """Raise :class:`RecipeError` unless ``spec`` is a valid (merged) recipe."""
    _check_keys(spec, ("name", "description", "crop_scale", "pairing", "swap", "perturb", "degrade",
                       "target_degrade", "color", "mask", "blend", "post", "min_visible", "max_attempts"),
                where, "")
    for key in ("name", "description"):
        if key in spec and not isinstance(spec[key], str):
            _fail(where, key, f"expected a string, got {spec[key]!r}")
    mv = spec.get("min_visible", 0.0)
    if isinstance(mv, bool) or not isinstance(mv, (int, float)) or not 0.0 <= mv <= 255.0:
        _fail(where, "min_visible", f"expected a number in [0, 255] (mean |fake - real| over the mask, "
                                    f"0..255 units; 0 = off), got {mv!r}")
    ma = spec.get("max_attempts", 8)
    if isinstance(ma, bool) or not isinstance(ma, int) or not 1 <= ma <= MAX_ATTEMPTS_LIMIT:
        _fail(where, "max_attempts", f"expected an integer in [1, {MAX_ATTEMPTS_LIMIT}], got {ma!r}")
    cs = spec.get("crop_scale", 1.3)
    if isinstance(cs, bool) or not isinstance(cs, (int, float)) or not 1.0 <= cs <= 3.0:
        _fail(where, "crop_scale", f"expected a number in [1.0, 3.0], got {cs!r}")
    _check_weights(spec.get("pairing", {"self": 1}), PAIRINGS, where, "pairing")
    swap = spec.get("swap", {})
    _check_keys(swap, ("k_nearest", "warp"), where, "swap")
    k = swap.get("k_nearest", 16)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        _fail(where, "swap.k_nearest", f"expected an integer >= 1, got {k!r}")
    if swap.get("warp", "similarity") not in WARPS:
        _fail(where, "swap.warp", f"expected one of {', '.join(WARPS)}, got {swap.get('warp')!r}")
    for section in PIPELINE_STAGES:
        if section in spec:
            _check_pipeline(spec[section], section, where)
    if "color" in spec:
        color = spec["color"]
        _check_keys(color, ("p", "masked", "ops"), where, "color")
        _check_prob(color.get("p", 1.0), where, "color.p")
        _check_prob(color.get("masked", 0.0), where, "color.masked")
        if "ops" not in color:
            _fail(where, "color", "missing key 'ops'")
        _check_group(color["ops"], ("color",), where, "color.ops")
    if "mask" not in spec:
        _fail(where, "mask", "missing section (regions to replace)")
    m = spec["mask"]
    _check_keys(m, ("regions", "params", "occlusion"), where, "mask")
    _check_weights(m.get("regions", {}), tuple(masklib.REGIONS), where, "mask.regions")
    params = m.get("params") or {}
    _check_keys(params, tuple(masklib.DEFAULT_RANGES), where, "mask.params")
    try:  # the mask module owns its ranges' limits: let it judge them
        masklib.sample_mask_params(np.random.default_rng(0), 100.0, **params)
    except ValueError as e:
        _fail(where, "mask.params", str(e))
    occ = m.get("occlusion", {})
    _check_keys(occ, ("p", "estimator"), where, "mask.occlusion")
    _check_prob(occ.get("p", 0.0), where, "mask.occlusion.p")
    from synth.occlusion import ESTIMATORS  # deferred: occlusion pulls in more than recipes need
    if occ.get("estimator", "skin") not in ESTIMATORS:
        _fail(where, "mask.occlusion.estimator", f"unknown estimator {occ.get('estimator')!r}; "
                                                 f"known: {', '.join(ESTIMATORS)}")
    if "blend" not in spec:
        _fail(where, "blend", "missing section (how the source is pasted)")
    _check_keys(spec["blend"], ("ops",), where, "blend")
    if "ops" not in spec["blend"]:
        _fail(where, "blend", "missing key 'ops'")
    _check_group(spec["blend"]["ops"], ("blend",), where, "blend.ops")


def _with_defaults(spec: Mapping[str, Any]) -> dict:
    """Fill optional sections so sampling never depends on code defaults changing silently."""
    out = copy.deepcopy(dict(spec))
    out.setdefault("crop_scale", 1.3)
    out.setdefault("pairing", {"self": 1})
    out.setdefault("swap", {})
    out["swap"].setdefault("k_nearest", 16)
    out["swap"].setdefault("warp", "similarity")
    for section in PIPELINE_STAGES:
        pipe = out.setdefault(section, {"order": [], "stages": {}})
        pipe.setdefault("stages", {})
        pipe.setdefault("order", list(pipe["stages"]))
    out.setdefault("color", None)
    out["min_visible"] = float(out.get("min_visible", 0.0))
    out.setdefault("max_attempts", 8)
    out["mask"].setdefault("params", {})
    out["mask"].setdefault("occlusion", {})
    out["mask"]["occlusion"].setdefault("p", 0.0)
    out["mask"]["occlusion"].setdefault("estimator", "skin")
    return out


# ---------------------------------------------------------------------------- sampling

def derive_seed(global_seed: int, index: int, attempt: int = 0) -> int:
    """Seed of sample ``index`` under ``global_seed`` (independent streams, 53-bit so JSON keeps it exact).

    ``attempt`` > 0 gives the seed of the attempt-th redraw of the sample (see ``min_visible``);
    attempt 0 is the sample's first plan, the same seed as before redraws existed."""
    entropy = [int(global_seed), int(index)] + ([int(attempt)] if attempt else [])
    state = np.random.SeedSequence(entropy).generate_state(2, np.uint32)
    return int((int(state[0]) << 21) ^ int(state[1]))


def sample_range(param: Param, value: Any, rng: np.random.Generator) -> Any:
    """Draw one concrete value from a validated RANGE (see module docstring)."""
    if isinstance(value, dict):
        choices = value["choices"]
    elif isinstance(value, list) and (param.kind in ("choice", "bool") or param.choices):
        choices = value
    elif isinstance(value, list):
        lo, hi = value
        if param.kind == "int":
            return int(rng.integers(lo, hi + 1))
        return round(float(rng.uniform(lo, hi)), 6)
    else:
        return value
    return choices[int(rng.integers(len(choices)))]


def _np_sum(values: list[float]) -> float:
    """``np.sum`` of a short float64 array, bit for bit: the reduction starts from the first
    element and adds the sequential sum of the rest (numpy's pairwise sum is sequential
    below 8 elements; longer lists go through numpy itself)."""
    if len(values) >= 8:
        return float(np.sum(values))
    rest = 0.0
    for v in values[1:]:
        rest += v
    return values[0] + rest


def _pick(weights: Mapping[str, float], rng: np.random.Generator, key_prefix: str,
          boost: Mapping[str, float] | None) -> str:
    names = list(weights)
    w = [float(weights[n]) * (boost or {}).get(f"{key_prefix}={n}", 1.0) for n in names]
    if _np_sum(w) <= 0:
        w = [1.0] * len(names)
    # Reachable: generate validates its weights, but library callers (sample_plan, OnlineFakes)
    # pass theirs as given, and a negative weight would silently bend the draw.
    if not all(v >= 0 for v in w):
        raise ValueError(f"{key_prefix}: negative choice weight in {dict(zip(names, w))}")
    # The draw of rng.choice(len(names), p=w / w.sum()): the same uniform against the same
    # cdf (np.cumsum(w / w.sum()) / its last value, in plain floats with numpy's order of
    # operations), so the same plans, at ~1/10 of the cost on these few-element lists.
    total = _np_sum(w)
    cdf, acc = [], 0.0
    for v in w:
        acc += v / total
        cdf.append(acc)
    last = cdf[-1]
    return names[bisect.bisect_right([c / last for c in cdf], rng.random())]


def _sample_op(group: Mapping[str, Any], rng: np.random.Generator, key_prefix: str,
               boost: Mapping[str, float] | None) -> dict:
    weights = {name: (entry or {}).get("weight", 1) for name, entry in group.items()}
    name = _pick(weights, rng, key_prefix, boost)
    op = get_op(name)
    ranges = (group[name] or {}).get("params") or {}
    params = {p: sample_range(schema, ranges[p], rng) if p in ranges else schema.default
              for p, schema in op.params.items()}
    step = {"op": name, "params": params}
    if op.random:
        step["seed"] = int(rng.integers(2**31))
    return step


def _sample_pipeline(pipe: Mapping[str, Any], rng: np.random.Generator, key_prefix: str,
                     boost: Mapping[str, float] | None) -> list[dict]:
    steps = []
    for stage in pipe["order"]:
        spec = pipe["stages"][stage]
        if rng.random() < spec.get("p", 1.0):
            steps.append(_sample_op(spec["ops"], rng, key_prefix, boost))
    return steps


def sample_plan(recipe: Recipe, pool, i: int, global_seed: int, size: int = 256,
                weights: Mapping[str, float] | None = None, target_key: str | None = None,
                attempt: int = 0) -> dict:
    """Sample the plan of sample ``i``: a JSON-able dict recording every choice and parameter.

    ``pool`` is a :class:`synth.pool.FacePool` (or an index, wrapped on the fly); ``weights``
    multiplies the recipe's choice weights by key (see :func:`choice_keys`), which the detector
    loop uses to aim regeneration at the detector's weaknesses.  ``target_key`` fixes the
    target face (library use) instead of drawing it from the pool.  ``attempt`` > 0 draws
    the attempt-th replacement plan of sample ``i`` (same target, every other choice redrawn
    from ``derive_seed(global_seed, i, attempt)``); it is recorded as ``plan["attempt"]``.
    """
    from synth.pool import as_pool

    pool = as_pool(pool)
    spec = recipe.spec
    seed = derive_seed(global_seed, i, attempt)
    rng = np.random.default_rng(seed)
    target = pool.index_of(target_key) if target_key is not None else pool.target_for(i, global_seed)
    pairing = _pick(spec["pairing"], rng, "pairing", weights)
    if pairing == "swap" and len(pool) < 2:
        pairing = "self"  # a single face cannot be swapped; recorded as self in the plan
    source = pool.partner(target, spec["swap"]["k_nearest"], rng) if pairing == "swap" else target
    plan: dict[str, Any] = {
        "index": int(i), "seed": seed, "recipe": recipe.name, "recipe_hash": recipe.hash,
        "pairing": pairing, "target": pool.keys[target], "source": pool.keys[source],
        "size": int(size), "crop_scale": float(spec["crop_scale"]), "attempt": int(attempt),
    }
    if pairing == "swap":
        plan["warp"] = spec["swap"]["warp"]
    plan["perturb"] = _sample_pipeline(spec["perturb"], rng, "perturb", weights)
    plan["source_degrade"] = _sample_pipeline(spec["degrade"], rng, "degrade", weights)
    # no stages -> no draws: recipes without target_degrade sample the same plans as before
    plan["target_degrade"] = _sample_pipeline(spec["target_degrade"], rng, "target_degrade", weights)
    color = spec["color"]
    if color and rng.random() < color.get("p", 1.0):
        step = _sample_op(color["ops"], rng, "color", weights)
        step["masked"] = bool(rng.random() < color.get("masked", 0.0))
        plan["color"] = step
    else:
        plan["color"] = None
    m = spec["mask"]
    region = _pick(m["regions"], rng, "region", weights)
    occ = m["occlusion"]
    use_occ = bool(rng.random() < occ["p"])
    plan["mask"] = {
        "region": region,
        "params": masklib.sample_mask_params(rng, _region_px(pool, target, region, size, spec["crop_scale"]),
                                             **m["params"]),
        "occlusion": occ["estimator"] if use_occ else "none",
    }
    plan["blend"] = _sample_op(spec["blend"]["ops"], rng, "blend", weights)
    plan["post"] = _sample_pipeline(spec["post"], rng, "post", weights)
    return plan


def _region_px(pool, target: int, region: str, size: int, crop_scale: float) -> float:
    """Size of ``region`` of face ``target`` in output-crop pixels (deformations scale with it,
    so small regions such as the eyes are deformed in proportion).  The crop side is
    ``crop_scale`` x the landmark box side, resized to ``size``."""
    region_px, face_px = pool.region_sizes(target, region)
    return region_px * size / (crop_scale * face_px)


def choice_keys(plan: Mapping[str, Any]) -> list[str]:
    """The discrete choices of a plan as ``"kind=value"`` keys (the keys ``weights`` accepts)."""
    keys = [f"pairing={plan['pairing']}", f"region={plan['mask']['region']}",
            f"blend={plan['blend']['op']}", f"occlusion={plan['mask']['occlusion']}"]
    if plan.get("color"):
        keys.append(f"color={plan['color']['op']}")
    keys += [f"perturb={s['op']}" for s in plan.get("perturb", [])]
    keys += [f"degrade={s['op']}" for s in plan.get("source_degrade", [])]
    keys += [f"target_degrade={s['op']}" for s in plan.get("target_degrade", [])]
    return keys


#: Kinds of the choice keys ``"kind=value"`` (:func:`choice_keys`, :func:`weight_keys`).
CHOICE_KINDS = ("pairing", "region", "blend", "occlusion", "color", "perturb", "degrade", "target_degrade", "post")


def weight_keys(recipe: Recipe) -> frozenset[str]:
    """Every choice key ``"kind=value"`` a plan of ``recipe`` can hold (what ``weights`` may name)."""
    spec = recipe.spec
    keys = {f"pairing={k}" for k in spec["pairing"]} | {f"region={k}" for k in spec["mask"]["regions"]}
    keys |= {f"blend={k}" for k in spec["blend"]["ops"]}
    keys |= {"occlusion=none", f"occlusion={spec['mask']['occlusion']['estimator']}"}
    if spec["color"]:
        keys |= {f"color={k}" for k in spec["color"]["ops"]}
    for kind, section in (("perturb", "perturb"), ("degrade", "degrade"), ("target_degrade", "target_degrade"),
                          ("post", "post")):
        keys |= {f"{kind}={op}" for stage in spec[section]["stages"].values() for op in stage["ops"]}
    return frozenset(keys)


@lru_cache(maxsize=None)
def list_recipes() -> tuple[str, ...]:
    """Names of the shipped recipes (the files of :data:`RECIPE_DIR`)."""
    return tuple(sorted(p.stem for p in RECIPE_DIR.glob("*.yaml")))
