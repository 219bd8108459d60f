"""Training configuration files: ``detector train --config run.yaml``.

A config file is a YAML mapping of :class:`detector.settings.LoopConfig` settings (``examples/train.yaml``
lists every key with its default)::

    data_dirs: [out/base]          # training data (one directory may be given as a plain string)
    eval_dir: path/to/eval-set
    condition: auc>0.8 and eer<0.2
    lr: 3e-4
    batch_scale: [0.5, 1.0]        # tuples are YAML lists
    model_kwargs: {backbone: plainnet_wide}

Keys are the ``LoopConfig`` field names (taken from the dataclass, so a new field is a new key);
``-`` may stand for ``_`` (``batch-size``), and the ``detector train`` option names that differ from
their field are accepted too: ``data`` (data_dirs), ``eval`` (eval_dir), ``model`` (model_name),
``augment-until`` (condition). ``out_dir`` is not a key: the run directory is ``--out``. Relative
paths are relative to the current directory, as on the command line.

The file is validated completely before any work starts, like a recipe: an unknown key, a key given
twice, a wrong type (checked against the field's annotation: ``int``, ``float`` (an integer is
accepted), ``str``, ``X | None`` (``null``), ``list[str]``, ``tuple[float, float]`` (a list of
two), ``dict`` (a mapping of JSON-able values)), or a value that fails the loop's own range checks
(:func:`detector.settings.check_config`) is a :class:`ConfigError` (a ``ValueError``) naming the file and
the key. Loading is ``yaml.SafeLoader`` (plus ``1e-3`` read as a number, as YAML 1.2 does), refuses
alias bombs (the recipe loader's node count), and files over :data:`MAX_CONFIG_BYTES`.

Precedence (:func:`resolve_settings`): defaults (or, with ``--resume``, the stored run's settings)
< the file < command-line options. The run records the result in ``RUN/state.json`` and, readable
and reusable as ``--config``, in ``RUN/config.yaml`` (:func:`write_run_config`), each key annotated
with where its value came from.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Mapping, Union

import yaml

from detector.settings import LoopConfig
from synth.io import atomic_write
from synth.recipe import checked_yaml_node, cut_text, read_yaml_file

CONFIG_YAML = "config.yaml"
#: Largest config file read (a real one is ~2 kB).
MAX_CONFIG_BYTES = 1_000_000
#: Upper bound of a config file's YAML nodes with aliases expanded.
MAX_CONFIG_NODES = 10_000
#: ``detector train`` option names that differ from the LoopConfig field they set.
OPTION_ALIASES = {"data": "data_dirs", "eval": "eval_dir", "model": "model_name", "augment_until": "condition"}
#: Fields that are not settings of a file, and why.
NOT_IN_FILE = {"out_dir": "the run directory is given by --out, not by the config file"}
DEFAULT = "default"


class ConfigError(ValueError):
    """A config file (or a value for it) is invalid; the message names the file and the key."""


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-3`` / ``5E+2`` as floats (YAML 1.1 wants a dot: ``1.0e-3``)."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float",
                              re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


def field_types() -> dict[str, Any]:
    """Config key -> annotated type, for every LoopConfig field a file may set."""
    hints = typing.get_type_hints(LoopConfig)
    return {f.name: hints[f.name] for f in dataclasses.fields(LoopConfig) if f.name not in NOT_IN_FILE}


def field_defaults() -> dict[str, Any]:
    """Config key -> default value (fields without one, data_dirs and eval_dir, are left out)."""
    out = {}
    for f in dataclasses.fields(LoopConfig):
        if f.name in NOT_IN_FILE:
            continue
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def canonical_key(key: str) -> str | None:
    """The LoopConfig field a config key (or option spelling) names, else None."""
    name = key.replace("-", "_")
    name = OPTION_ALIASES.get(name, name)
    return name if name in field_types() else None


# ---------------------------------------------------------------------------------- types

class _Mismatch(Exception):
    pass


def _describe(tp) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if tp is type(None):
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is tuple and args and args[-1] is not Ellipsis:
        inner = {_describe(a) for a in args}
        return f"a list of {len(args)} " + (_plural(inner.pop()) if len(inner) == 1 else "values")
    if origin in (list, tuple):
        return f"a list of {_plural(_describe(args[0]))}" if args else "a list"
    if tp is dict or origin in (dict, Mapping):
        return "a mapping of plain values (strings, numbers, true/false, null, lists, mappings)"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


def _plural(desc: str) -> str:
    return {"an integer": "integers", "a number": "numbers", "a string": "strings"}.get(desc, desc)


def _json_value(value):
    """``value`` if it is plain JSON data (what state.json can store), else _Mismatch."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Mismatch
        return value
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _json_value(v) for k, v in value.items()}
    raise _Mismatch


def _convert(value, tp):
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return _json_value(value)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is not type(None):
                try:
                    return _convert(value, a)
                except _Mismatch:
                    pass
        raise _Mismatch
    if tp is type(None):
        if value is None:
            return None
        raise _Mismatch
    if origin is Literal:
        if value in args and not isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        raise _Mismatch
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    if origin is list or tp is list:
        if isinstance(value, str) and args == (str,):  # one directory for a list of directories
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        return [_convert(v, args[0]) if args else _json_value(v) for v in value]
    if origin is tuple or tp is tuple:
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        if args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise _Mismatch
            return tuple(_convert(v, a) for v, a in zip(value, args))
        return tuple(_convert(v, args[0]) if args else _json_value(v) for v in value)
    if tp is dict or origin in (dict, Mapping):
        if not isinstance(value, dict):
            raise _Mismatch
        out = _json_value(value)
        if len(args) == 2:
            out = {_convert(k, args[0]): _convert(v, args[1]) for k, v in out.items()}
        return out
    return _json_value(value)  # an annotation this checker does not know: any plain JSON data


def check_value(key: str, value: Any) -> Any:
    """``value`` for setting ``key`` checked against the field's annotation and converted to its
    form (a list -> tuple for tuple fields, an integer -> float for float fields).
    :class:`ConfigError` ``"KEY: expected ..., got ..."`` otherwise."""
    tp = field_types()[key]
    try:
        return _convert(value, tp)
    except _Mismatch:
        raise ConfigError(f"{key}: expected {_describe(tp)}, got {type(value).__name__} {cut_text(repr(value), 200)}") from None


# ---------------------------------------------------------------------------------- reading

def _load_mapping(text: str, path: Path) -> list[tuple[Any, Any]]:
    """The top-level (key, value) pairs of a YAML mapping, in order and with duplicates kept."""
    loader = _Loader(text)
    try:
        node = checked_yaml_node(loader, path, MAX_CONFIG_NODES, "config", ConfigError)
        if node is None:
            return []
        if not isinstance(node, yaml.MappingNode):
            kind = type(loader.construct_object(node, deep=True)).__name__
            raise ConfigError(f"{path}: top level must be a mapping of settings, got {kind}")
        return [(loader.construct_object(k, deep=True), loader.construct_object(v, deep=True)) for k, v in node.value]
    finally:
        loader.dispose()


def parse_option(key: str, text: str) -> Any:
    """The value of setting ``key`` given on the command line as ``text``: kept as text where the
    field takes a string, else read as a YAML value (``LO,HI`` for a tuple), then :func:`check_value`."""
    tp = field_types()[key]
    if tp is str or str in typing.get_args(tp):
        return check_value(key, text)
    origin = typing.get_origin(tp) or tp
    sequence = any((typing.get_origin(a) or a) in (list, tuple) for a in typing.get_args(tp)) or origin in (list, tuple)
    if sequence and not text.lstrip().startswith("["):
        text = f"[{text}]"
    loader = _Loader(text)
    try:
        node = checked_yaml_node(loader, f"--{key.replace('_', '-')}", MAX_CONFIG_NODES, "config", ConfigError)
        value = None if node is None else loader.construct_object(node, deep=True)
    except yaml.YAMLError:
        raise ConfigError(f"{key}: expected {_describe(tp)}, got {cut_text(text, 200)!r}") from None
    finally:
        loader.dispose()
    return check_value(key, value)


def read_config(path: str | Path) -> dict[str, Any]:
    """Read and validate a config file: ``{field: value}`` for the keys it sets, each value of its
    field's type (see the module docstring). ``ConfigError`` naming the file and the key; range
    checks need the whole resolved config and run in :func:`check_settings`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes; not a training config")
    pairs = read_yaml_file(path, _load_mapping, ConfigError)
    out: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    for key, value in pairs:
        if not isinstance(key, str):
            raise ConfigError(f"{path}: {cut_text(repr(key), 80)}: a key must be a setting name")
        if key.replace("-", "_") in NOT_IN_FILE:
            raise ConfigError(f"{path}: {key}: {NOT_IN_FILE[key.replace('-', '_')]}")
        name = canonical_key(key)
        if name is None:
            close = difflib.get_close_matches(key.replace("-", "_"), list(field_types()) + list(OPTION_ALIASES), 1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{path}: {cut_text(key, 80)}: unknown key{hint}; the keys are the LoopConfig fields, "
                              "see examples/train.yaml")
        if name in spelled:
            same = f"{spelled[name]!r} and {key!r} both set" if spelled[name] != key else "given twice"
            raise ConfigError(f"{path}: {name}: {same}")
        spelled[name] = key
        try:
            out[name] = check_value(name, value)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
    return out


# ---------------------------------------------------------------------------------- resolving

def _json(value):
    return json.loads(json.dumps(value))


def _normalised(key: str, value: Any) -> Any:
    """A stored value in its field's form (JSON lists back to tuples), as stored if it does not fit."""
    try:
        return check_value(key, value) if key in field_types() else value
    except ConfigError:
        return value


def check_settings(settings: Mapping[str, Any], out_dir: str = "") -> list:
    """Build the LoopConfig of ``settings`` and run the loop's range checks on it
    (:func:`detector.settings.check_config`); returns the parsed condition. ValueError naming the key."""
    from detector.settings import check_config

    rest = {k: v for k, v in settings.items() if k not in ("data_dirs", "eval_dir")}
    return check_config(LoopConfig(data_dirs=list(settings.get("data_dirs", [])),
                                   eval_dir=settings.get("eval_dir", ""), out_dir=str(out_dir), **rest))


def resolve_settings(file: str | Path | None, options: Mapping[str, tuple[Any, str]],
                     base: Mapping[str, Any] | None = None, resume_path: Path | None = None,
                     file_values: Mapping[str, Any] | None = None) -> tuple[dict, dict]:
    """Merge ``base`` (a resumed run's stored settings; else nothing = the defaults) < the config
    ``file`` < ``options`` (field -> (value, option name)), each value type-checked.

    Returns ``(settings, sources)``: the settings given (LoopConfig fields, no out_dir) and, per
    setting given by the file or an option, where it came from (the file's path or the option name).
    With ``resume_path`` a file value that the stored run does not allow to change
    is refused here, naming the file (:func:`detector.settings.check_resume`, ``RESUME_MUTABLE``).
    A range error that the file's values alone already cause names the file too. ``file_values``:
    the file as :func:`read_config` read it, if already read."""
    from detector.settings import check_resume

    settings: dict[str, Any] = {k: _normalised(k, v) for k, v in (base or {}).items()}
    sources: dict[str, str] = {}
    from_file: dict[str, Any] = {}
    if file is not None:
        from_file = dict(file_values) if file_values is not None else read_config(file)
        if base is not None and resume_path is not None:
            try:
                check_resume(_json(dict(base)), _json(from_file), resume_path)
            except ValueError as e:
                raise ConfigError(f"{file}: {e}") from None
        settings.update(from_file)
        sources.update({k: str(file) for k in from_file})
    for key, (value, option) in options.items():
        settings[key] = check_value(key, value)
        sources[key] = option
        if key in ("index", "src"):  # one face source: an option replaces the file's other one
            other = "src" if key == "index" else "index"
            if settings.get(other) is not None and sources.get(other) != option:
                settings[other] = None
                sources[other] = option
    if file is not None:
        try:
            check_settings(settings)
        except ValueError as e:
            try:
                check_settings({**(base or {}), **from_file})
            except ValueError as own:
                if str(own) == str(e):  # the file's own values are at fault
                    raise ConfigError(f"{file}: {e}") from None
            raise
    return settings, sources


# ---------------------------------------------------------------------------------- recording

def write_run_config(out_dir: str | Path, config: Mapping[str, Any], sources: Mapping[str, str] | None = None) -> Path:
    """Write ``OUT/config.yaml``: the resolved ``config`` (a normalised LoopConfig dict; out_dir is
    left out) as a config file ``--config`` reads back, every key annotated with where its value came
    from (``sources``); a key without one is annotated as the default if it has the default's value
    (and nothing is annotated when ``sources`` is empty)."""
    sources = dict(sources or {})
    defaults = _json(field_defaults())
    lines = ["# The resolved settings of this run (detector train; see detector/config.py). Each comment says where",
             "# the value came from: a config file, a command-line option, the stored run or the default.",
             "# `detector train --config THIS_FILE --out NEW_RUN` starts the same run in another directory.",
             ""]
    for key, value in config.items():
        if key in NOT_IN_FILE:
            continue
        flow = None if isinstance(value, (list, tuple, dict)) else False  # [a, b], {k: v}; nested as blocks
        text = yaml.safe_dump({key: _json(value)}, default_flow_style=flow, sort_keys=False, width=10 ** 6).rstrip()
        note = (f"from {sources[key]}" if key in sources else
                DEFAULT if sources and key in defaults and defaults[key] == _json(value) else "")
        if not note:
            lines.append(text)
        elif "\n" in text:
            lines += [f"# {key}: {note}", text]
        else:
            lines.append(f"{text}  # {note}")
    path = Path(out_dir) / CONFIG_YAML
    return atomic_write(path, lambda fh: fh.write("\n".join(lines) + "\n"))
