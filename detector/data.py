"""Datasets for the detector: readers, identity-disjoint split, torch Dataset, balanced sampler.

Readers turn a dataset on disk into a list of :class:`Sample`:

* ``read_synth_dir(OUT)``: output of ``synth generate`` (``manifest.jsonl``); every ok line gives a
  real (the target face, label 0) and a fake (label 1, with pixel mask).
* ``read_manifest_csv(DIR)``: ``manifest.csv`` with columns ``path,label[,mask,generator,identity,video]``
  (paths relative to the csv), e.g. an evaluation set.
* ``read_folders(DIR)``: ``DIR/real/**`` and ``DIR/fake/**`` images (optional ``DIR/mask/<same rel path>``).
* ``read_deepfakebench_json(FILE.json)``: a dataset JSON of DeepfakeBench (``preprocessing/rearrange.py``:
  FF++, Celeb-DF, DFDC, ... or ``synth export --format deepfakebench``); every frame a sample, its
  video in ``meta["video"]`` (video-level metrics).
* ``read_dataset(path)`` picks the reader from what is on disk.

Resolution matters: blending traces live in the highest frequencies, so training defaults to
``mode="patch"`` (random native-resolution crops, dense mask target) and evaluation uses
``mode="full"`` (the whole face at native size, cropped to a multiple of 32, one logit from the
fully convolutional model). ``mode="resize"`` (whole face resized) is the classic baseline.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import random
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from detector.models.registry import IMAGENET_NORM
from synth.io import IMAGE_EXTENSIONS, read_image as synth_read_image
from synth.recipe import choice_keys
from synth.writer import iter_manifest

MODES = ("patch", "resize", "full")


@dataclass(frozen=True)
class Sample:
    """One image of a dataset.

    path: absolute image path. label: 0 real, 1 fake. mask_path: forged-pixel mask (fakes) or None.
    group: identities the image shows (a swap fake shows two); the split keeps each identity on one
    side. meta: ``generator`` (str), optional ``video``, and for synth fakes ``keys`` (the plan's
    choice keys, used to reweight regeneration) and ``i`` (sample index).
    """

    path: str
    label: int
    mask_path: str | None = None
    group: tuple[str, ...] = ()
    meta: Mapping = field(default_factory=dict)


# ----------------------------------------------------------------------------------------- readers

def _choice_keys(plan: Mapping | None) -> list[str]:
    """The plan's discrete choices (``synth.recipe.choice_keys``), used to aim regeneration."""
    return list(choice_keys(plan)) if plan else []


def read_synth_dir(out: str | Path) -> list[Sample]:
    """Samples of a ``synth generate`` output directory (reads ``OUT/manifest.jsonl``).

    Each ``status == "ok"`` line gives a real (``group = (target_id,)``) and a fake
    (``group = (target_id, source_id)``, ``meta["keys"] = choice_keys(plan)``). Other lines are skipped.
    """
    out = Path(out).absolute()
    manifest = out / "manifest.jsonl"
    if not manifest.is_file():
        raise ValueError(f"{out}: no manifest.jsonl (expected the output directory of `synth generate`)")
    samples: list[Sample] = []
    # complete lines only: a half-written last line of an interrupted run is not read (as synth does)
    for n, rec in iter_manifest(manifest):
        if rec.get("status") != "ok":
            continue
        missing = [k for k in ("real", "fake", "target_id") if not rec.get(k)]
        if missing:
            raise ValueError(f"{manifest}:{n}: ok line without key(s) {missing}")
        wrong = [k for k in ("real", "fake", "mask") if rec.get(k) and not isinstance(rec[k], str)]
        if wrong:
            raise ValueError(f"{manifest}:{n}: {wrong} must be paths (strings)")
        target = str(rec["target_id"])
        source = str(rec.get("source_id") or target)
        i = rec.get("i", n - 1)
        if isinstance(i, bool) or not isinstance(i, int):
            raise ValueError(f"{manifest}:{n}: 'i' must be an integer, got {str(i)[:40]!r}")
        try:
            keys = _choice_keys(rec.get("plan"))
        except (KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"{manifest}:{n}: malformed 'plan' ({type(e).__name__}: {str(e)[:80]})") from None
        samples.append(Sample(str(out / rec["real"]), 0, None, (target,),
                              {"generator": "real", "i": i, "dataset": str(out)}))
        samples.append(Sample(str(out / rec["fake"]), 1, str(out / rec["mask"]) if rec.get("mask") else None,
                              tuple(dict.fromkeys((target, source))),
                              {"generator": "synth", "i": i, "dataset": str(out), "keys": keys}))
    return samples


def read_manifest_csv(path: str | Path) -> list[Sample]:
    """Samples of ``manifest.csv`` (``path`` = the csv or its directory).

    Columns: ``path``, ``label`` (0/1) required; ``mask``, ``generator``, ``identity``, ``video``
    optional (empty cells allowed). Paths are relative to the csv's directory. Reals get generator
    ``"real"`` when the column is missing; a missing identity falls back to the video, then the path.
    """
    path = Path(path)
    csv_path = path / "manifest.csv" if path.is_dir() else path
    if not csv_path.is_file():
        raise ValueError(f"{path}: no manifest.csv")
    root = csv_path.parent.absolute()
    data = csv_path.read_bytes()
    try:
        text = data.decode()
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ValueError(f"{csv_path}:{line}: not UTF-8 text ({e.reason})") from None
    samples = []
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        cols = reader.fieldnames or []
        for need in ("path", "label"):
            if need not in cols:
                raise ValueError(f"{csv_path}: missing column {need!r} (have {cols}; expected path,label[,mask,generator,identity,video])")
        for n, row in enumerate(reader, 2):
            label_txt = (row.get("label") or "").strip()
            if label_txt not in ("0", "1"):
                raise ValueError(f"{csv_path}:{n}: label must be 0 or 1, got {label_txt!r}")
            label = int(label_txt)
            rel = (row.get("path") or "").strip()
            if not rel:
                raise ValueError(f"{csv_path}:{n}: empty path")
            mask = (row.get("mask") or "").strip()
            video = (row.get("video") or "").strip() or None
            identity = (row.get("identity") or "").strip() or video or rel
            meta = {"generator": (row.get("generator") or "").strip() or ("real" if label == 0 else "unknown"),
                    "dataset": str(root)}
            if video:
                meta["video"] = video
            samples.append(Sample(str(root / rel), label, str(root / mask) if mask else None, (identity,), meta))
    except csv.Error as e:  # e.g. a field beyond csv's size limit (an unclosed quote runs to the end)
        raise ValueError(f"{csv_path}:{reader.line_num + 1}: not a valid CSV line ({e})") from None
    return samples


def _images_under(d: Path) -> list[Path]:
    return sorted(p for p in d.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def read_folders(path: str | Path) -> list[Sample]:
    """Samples of ``DIR/real/**`` (label 0) and ``DIR/fake/**`` (label 1) images.

    A fake's mask is ``DIR/mask/<path relative to fake/>`` when that file exists. Each image is its
    own identity (folders carry no identity information).
    """
    path = Path(path).absolute()
    samples = []
    for sub, label in (("real", 0), ("fake", 1)):
        for p in _images_under(path / sub):
            rel = p.relative_to(path / sub)
            mask = path / "mask" / rel
            samples.append(Sample(str(p), label, str(mask) if label and mask.is_file() else None,
                                  (f"{sub}/{rel.as_posix()}",), {"generator": sub, "dataset": str(path)}))
    if not samples:
        raise ValueError(f"{path}: no images under real/ or fake/")
    return samples


#: DeepfakeBench label names (its ``training/config/*_config.yaml`` ``label_dict``) that say neither
#: "real" nor "fake": FaceForensics++'s manipulation methods, all fake.
DEEPFAKEBENCH_FAKE_LABELS = frozenset({"FF-DF", "FF-F2F", "FF-FS", "FF-NT", "FF-FH", "FF-SH"})
#: Splits of a DeepfakeBench JSON; ``"all"`` reads their union (a video listed in several once).
DEEPFAKEBENCH_SPLITS = ("train", "val", "test", "all")
#: Keys of FaceForensics++'s extra nesting level (dataset -> label -> split -> compression -> video).
DEEPFAKEBENCH_COMPRESSIONS = ("raw", "c23", "c40")


def deepfakebench_label(name: str, labels: Mapping[str, int] | None = None) -> int:
    """0 (real) or 1 (fake) for a DeepfakeBench label name, e.g. ``"FF-real"`` -> 0, ``"FF-DF"`` -> 1.

    ``labels`` (name -> 0/1) comes first, as DeepfakeBench's own ``label_dict``; then the
    FaceForensics++ method names (:data:`DEEPFAKEBENCH_FAKE_LABELS`); then the name itself: one
    containing "real" is real, one containing "fake" fake (case-insensitive). Anything else is a
    ``ValueError``: guessing a label would silently invert a metric.
    """
    if labels and name in labels:
        if labels[name] not in (0, 1):
            raise ValueError(f"label {name!r} maps to {labels[name]!r}, expected 0 or 1")
        return int(labels[name])
    if name in DEEPFAKEBENCH_FAKE_LABELS:
        return 1
    low = name.lower()
    real, fake = "real" in low, "fake" in low
    if real != fake:
        return int(fake)
    raise ValueError(f"label {name!r} is neither real nor fake: names containing 'real' or 'fake' and "
                     f"FaceForensics++'s {sorted(DEEPFAKEBENCH_FAKE_LABELS)} are understood")


def _dataset_jsons(folder: Path) -> list[Path]:
    """The ``*.json`` files of ``folder`` that may be a DeepfakeBench dataset JSON (not a synth run's
    own ``run.json`` or ``report.json``)."""
    return sorted(p for p in folder.glob("*.json") if p.name not in ("run.json", "report.json") and p.is_file())


def _deepfakebench_file(path: Path) -> Path:
    """The JSON itself, or the one dataset ``*.json`` in the folder ``path``."""
    if path.is_dir():
        found = _dataset_jsons(path)
        if len(found) != 1:
            names = ", ".join(p.name for p in found[:5]) + (", ..." if len(found) > 5 else "")
            raise ValueError(f"{path}: expected one DeepfakeBench .json in the folder, found {len(found)}"
                             + (f" ({names}); pass the one to read" if found else ""))
        return found[0]
    return path


def _is_video_record(node) -> bool:
    return isinstance(node, dict) and ("frames" in node or "label" in node)


def _deepfakebench_videos(data, split: str, compression: str | None, where: Callable[..., str]):
    """``(key path, video record)`` of every video of ``split`` in the parsed JSON ``data``; the key
    path is (dataset, label group, split[, compression], video). Checks the nesting, not the records."""
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{where()}expected a JSON object {{dataset name: label groups}}, the layout of "
                         "DeepfakeBench's preprocessing/rearrange.py")
    for dataset, groups in data.items():
        if not isinstance(groups, dict):
            raise ValueError(f"{where(dataset)} must be an object {{label group: splits}}")
        for group, splits in groups.items():
            if not isinstance(splits, dict):
                raise ValueError(f"{where(dataset, group)} must be an object {{split: videos}}")
            if split != "all" and split not in splits:
                raise ValueError(f"{where(dataset, group)}: missing key {split!r} (splits present: {sorted(splits)})")
            for sp in splits if split == "all" else [split]:
                videos, keys = splits[sp], (dataset, group, sp)
                if _is_video_record(videos):  # rearrange.py writes DFDC's val split as one video record
                    if split == "all":
                        continue
                    raise ValueError(f"{where(*keys)} is a single video record, not an object of videos "
                                     "(DeepfakeBench's rearrange.py writes DFDC's val split so); use split 'test'")
                if isinstance(videos, dict) and videos and set(videos) <= set(DEEPFAKEBENCH_COMPRESSIONS) and \
                        not any(_is_video_record(v) for v in videos.values()):  # FF++: split -> compression -> video
                    level = compression or ("c23" if "c23" in videos or len(videos) > 1 else next(iter(videos)))
                    if level not in videos:
                        what = f"missing key {level!r}" if compression else "several compression levels"
                        raise ValueError(f"{where(*keys)}: {what} (present: {sorted(videos)}); "
                                         "choose one with compression")
                    videos, keys = videos[level], keys + (level,)
                if not isinstance(videos, dict):
                    raise ValueError(f"{where(*keys)} must be an object {{video: record}}")
                for video, rec in videos.items():
                    yield keys + (video,), rec


def read_deepfakebench_json(path: str | Path, root: str | Path | None = None, split: str = "test",
                            compression: str | None = None, labels: Mapping[str, int] | None = None) -> list[Sample]:
    """Frames of a DeepfakeBench dataset JSON (``path`` = the ``.json`` or a folder holding just one).

    The layout is the one DeepfakeBench's ``preprocessing/rearrange.py`` writes::

        {DATASET: {LABEL_GROUP: {SPLIT: {VIDEO: {"label": NAME, "frames": [PATH, ...], "masks": [PATH, ...]}}}}}

    with one more level, ``{"c23": {VIDEO: ...}, "c40": ..., "raw": ...}``, under each split of
    FaceForensics++ and its subsets. ``split`` (train, val, test or all; default test, as
    DeepfakeBench tests) picks the videos; ``compression`` picks the level where there is one
    (default c23, as DeepfakeBench does, else the only level present). Each video's ``label`` name
    becomes 0/1 by :func:`deepfakebench_label` (``labels`` adds or overrides names).

    Paths: absolute ones are used as they are; relative ones (``\\`` separators allowed) are joined
    to ``root``, else to the folder the JSON is in (as given: a symbolic link to the JSON placed in
    DeepfakeBench's data root makes that root the base). A fake frame's mask is the entry of
    ``masks`` with the frame's file name; a listed mask that is not on disk is left out (the frame
    is kept, without mask). Frames are not opened here: a missing or unreadable one is skipped and
    counted by ``detector eval`` (:func:`check_samples`), as for the other readers.

    Each frame is a :class:`Sample` with ``meta["video"] = "DATASET/LABEL_GROUP/VIDEO"`` (so
    evaluation reports video-level metrics: the mean frame score per video), ``meta["generator"]``
    the label group for fakes (per-method metrics) and ``"real"`` for reals, ``group`` the video.
    A malformed file (not JSON, a missing key, a value of the wrong type, an unknown label) raises
    ``ValueError`` naming the file and the key path.
    """
    path = Path(path)
    if split not in DEEPFAKEBENCH_SPLITS:
        raise ValueError(f"split: expected one of {DEEPFAKEBENCH_SPLITS}, got {split!r}")
    if compression is not None and compression not in DEEPFAKEBENCH_COMPRESSIONS:
        raise ValueError(f"compression: expected one of {DEEPFAKEBENCH_COMPRESSIONS}, got {compression!r}")
    if not path.exists():
        raise ValueError(f"{path}: does not exist")
    file = _deepfakebench_file(path)
    base = Path(root) if root is not None else file.parent
    if not base.is_dir():
        raise ValueError(f"{base}: root is not a folder")
    base = base.absolute()
    try:
        data = json.loads(file.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{file}: not a JSON file ({e})") from None

    def where(*keys) -> str:
        return f"{file}: " + "".join(f"[{k!r}]" for k in keys)

    def resolve(rel: str) -> str:
        rel = rel.replace("\\", "/") if os.sep == "/" else rel  # DeepfakeBench's JSONs are often written on Windows
        return os.path.normpath(rel if os.path.isabs(rel) else base / rel)

    def paths(value, *keys) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(p, str) and p and "\0" not in p for p in value):
            raise ValueError(f"{where(*keys)} must be a list of paths (strings)")
        return [resolve(p) for p in value]

    samples: list[Sample] = []
    seen: set[tuple] = set()
    for keys, rec in _deepfakebench_videos(data, split, compression, where):
        if not isinstance(rec, dict):
            raise ValueError(f"{where(*keys)} must be an object {{label, frames[, masks]}}")
        for need in ("label", "frames"):
            if need not in rec:
                raise ValueError(f"{where(*keys)}: missing key {need!r}")
        if not isinstance(rec["label"], str):
            raise ValueError(f"{where(*keys, 'label')} must be a label name (string)")
        try:
            label = deepfakebench_label(rec["label"], labels)
        except ValueError as e:
            raise ValueError(f"{where(*keys, 'label')}: {e}") from None
        frames = paths(rec["frames"], *keys, "frames")
        masks = paths(rec.get("masks") or [], *keys, "masks") if label == 1 else []
        key = tuple(str(k) for k in (keys[0], keys[1], keys[-1]))  # dataset, label group, video
        if key in seen:  # split "all": a video listed in several splits is read once
            continue
        seen.add(key)
        by_name: dict[str, str] = {}
        for m in masks:
            by_name.setdefault(os.path.basename(m), m)
        vid = "/".join(key)
        for f in frames:
            mask = by_name.get(os.path.basename(f))
            samples.append(Sample(f, label, mask if mask and os.path.isfile(mask) else None, (vid,),
                                  {"generator": key[1] if label else "real", "video": vid}))
    if not samples:
        raise ValueError(f"{file}: no frame in split {split!r}")
    return samples


def read_dataset(path: str | Path, *, root: str | Path | None = None, split: str | None = None,
                 compression: str | None = None, labels: Mapping[str, int] | None = None) -> list[Sample]:
    """Read any supported layout (see module docstring); ``ValueError`` naming ``path`` otherwise.

    ``root``, ``split``, ``compression`` and ``labels`` apply to a DeepfakeBench JSON only
    (:func:`read_deepfakebench_json`; a ``.json`` file, or a folder holding one and no other layout).
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: dataset path does not exist")
    options = {k: v for k, v in (("root", root), ("split", split), ("compression", compression), ("labels", labels))
               if v is not None}
    reader = None
    if path.is_file():
        readers = {"manifest.jsonl": lambda p: read_synth_dir(p.parent), "manifest.csv": read_manifest_csv}
        reader = readers.get(path.name) or (read_deepfakebench_json if path.suffix.lower() == ".json" else None)
    elif (path / "manifest.jsonl").is_file():
        reader = read_synth_dir
    elif (path / "manifest.csv").is_file():
        reader = read_manifest_csv
    elif (path / "real").is_dir() or (path / "fake").is_dir():
        reader = read_folders
    elif _dataset_jsons(path):
        reader = read_deepfakebench_json
    if reader is None:
        raise ValueError(f"{path}: unknown dataset layout; expected manifest.jsonl (`synth generate` output), "
                         "manifest.csv (path,label[,mask,generator,identity,video]), real/ and fake/ image folders "
                         "or a DeepfakeBench dataset .json")
    if reader is read_deepfakebench_json:
        return reader(path, **options)
    if options:
        raise ValueError(f"{path}: {', '.join(options)} apply to a DeepfakeBench .json only, not to this layout")
    return reader(path)


def read_datasets(paths: Iterable[str | Path]) -> list[Sample]:
    """Concatenate :func:`read_dataset` over several paths."""
    return [s for p in paths for s in read_dataset(p)]


# ------------------------------------------------------------------------------ identity split

def _unit_hash(seed: int, key: str) -> float:
    """Stable pseudo-random number in [0, 1) for (seed, key); independent of PYTHONHASHSEED."""
    h = hashlib.blake2b(f"{seed}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") / 2.0 ** 64


def _components(samples: Sequence[Sample]) -> list[list[int]]:
    """Union-find over identities: sample indices grouped by connected identity components."""
    parent: dict[str, str] = {}

    def find(a: str) -> str:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for s in samples:
        ids = s.group or (s.path,)
        for a in ids:
            parent.setdefault(a, a)
        root = find(ids[0])
        for a in ids[1:]:
            ra = find(a)
            if ra != root:
                parent[ra] = root
    comps: dict[str, list[int]] = {}
    for k, s in enumerate(samples):
        comps.setdefault(find((s.group or (s.path,))[0]), []).append(k)
    return list(comps.values())


def split_by_identities(samples: Sequence[Sample], val_identities: set[str]) -> tuple[list[Sample], list[Sample], int]:
    """Split by a fixed set of validation identities: ``(train, val, n_dropped)``.

    A sample goes to val if all its identities are in ``val_identities``, to train if none are;
    a sample showing identities from both sides (a swap across the split) is dropped and counted,
    so no face ever appears on both sides. Used by the loop to keep the split stable as the pool grows.
    """
    train, val, dropped = [], [], 0
    for s in samples:
        ids = s.group or (s.path,)
        inside = [a in val_identities for a in ids]
        if all(inside):
            val.append(s)
        elif not any(inside):
            train.append(s)
        else:
            dropped += 1
    return train, val, dropped


def identity_split(samples: Sequence[Sample], val_fraction: float = 0.1, seed: int = 0) -> tuple[list[Sample], list[Sample]]:
    """Identity-disjoint train/val split.

    Identities linked by a sample (target and source of a swap) are merged with union-find; whole
    components are assigned to val in a seeded pseudo-random order until ``val_fraction`` of the
    samples is reached (components that would overshoot are skipped). When one giant component
    holds most samples (many swaps), identities are assigned individually instead and the swap
    samples that straddle both sides are dropped (with a warning). No identity is ever on both sides.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")
    samples = list(samples)
    if not samples:
        return [], []
    target = val_fraction * len(samples)
    comps = _components(samples)
    comps.sort(key=lambda c: min(_unit_hash(seed, a) for k in c for a in (samples[k].group or (samples[k].path,))))
    val_idx: list[int] = []
    slack = max(1.0, 0.1 * target)
    for c in comps:
        if len(val_idx) >= target:
            break
        if len(val_idx) + len(c) <= target + slack:
            val_idx.extend(c)
    if len(val_idx) >= 0.5 * target and len(val_idx) < len(samples):
        chosen = set(val_idx)
        return [s for k, s in enumerate(samples) if k not in chosen], [samples[k] for k in sorted(chosen)]
    # Giant component: per-identity assignment, dropping the straddling samples.
    ids = {a for s in samples for a in (s.group or (s.path,))}
    val_ids = {a for a in ids if _unit_hash(seed, a) < val_fraction}
    train, val, dropped = split_by_identities(samples, val_ids)
    warnings.warn(f"identity_split: identities are linked into one large component; split per identity "
                  f"and dropped {dropped} of {len(samples)} samples that straddle train and val", stacklevel=2)
    return train, val


def group_identities(samples: Iterable[Sample]) -> set[str]:
    """All identities shown by ``samples``."""
    return {a for s in samples for a in (s.group or (s.path,))}


# ------------------------------------------------------------------------------------ pairing

def _pair_key(s: Sample):
    """(dataset, manifest index) of a synth sample, shared by a fake and its own real; else None."""
    i, ds = s.meta.get("i"), s.meta.get("dataset")
    return None if i is None or ds is None else (ds, int(i))


def pair_ids(samples: Sequence[Sample]) -> np.ndarray:
    """int64 (N,): equal for a synth fake and its own real (same ``synth generate`` manifest line),
    unique otherwise. Ids of unpaired samples never collide with paired ones."""
    ids, seen = np.empty(len(samples), np.int64), {}
    for k, s in enumerate(samples):
        key = _pair_key(s)
        ids[k] = seen.setdefault(key, len(samples) + len(seen)) if key is not None else k
    return ids


def pair_indices(samples: Sequence[Sample]) -> np.ndarray:
    """(P, 2) int64 ``[real_index, fake_index]`` of every synth fake whose own real (the same target
    face through the same crop, post-process and encoding) is also in ``samples``."""
    reals, pairs = {}, []
    for k, s in enumerate(samples):
        key = _pair_key(s)
        if key is not None and s.label == 0:
            reals[key] = k
    for k, s in enumerate(samples):
        key = _pair_key(s)
        if key is not None and s.label == 1 and key in reals:
            pairs.append((reals[key], k))
    return np.asarray(pairs, np.int64).reshape(-1, 2)


# ---------------------------------------------------------------------------------- image I/O

def read_image(path: str) -> np.ndarray | None:
    """uint8 HxWx3 RGB (:func:`synth.io.read_image`), or None if the file cannot be read (robust
    datasets skip and count it)."""
    try:
        return synth_read_image(path)
    except (OSError, ValueError):
        return None


def read_mask(path: str) -> np.ndarray | None:
    """float32 HxW in [0, 1], or None if unreadable."""
    m = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if m is None:
        return None
    if m.ndim == 3:
        m = m[..., 0]
    scale = 65535.0 if m.dtype == np.uint16 else 255.0
    return m.astype(np.float32) / scale


def image_size(path: str) -> tuple[int, int] | None:
    """(H, W) from the file header (PIL, lazy) or None if unreadable."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.size[1], im.size[0]
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None  # a header claiming a decompression bomb's size is not a readable image either


def check_samples(samples: Sequence[Sample]) -> tuple[list[Sample], list[dict]]:
    """Split ``samples`` into those that can be scored and ``{"path", "reason"}`` records of the
    others, from the files alone (headers only, nothing decoded): an image that is missing or not
    an image; a fake whose mask is missing, not an image, or outside its dataset's folder
    (``meta["dataset"]``)."""
    usable, skipped = [], []
    for s in samples:
        reason = None
        if not os.path.isfile(s.path):
            reason = "image file not found"
        elif image_size(s.path) is None:
            reason = "not a readable image"
        elif s.label == 1 and s.mask_path is not None:
            root = s.meta.get("dataset")
            if root and not Path(os.path.realpath(s.mask_path)).is_relative_to(os.path.realpath(root)):
                reason = f"mask {s.mask_path} lies outside the dataset {root}"
            elif not os.path.isfile(s.mask_path):
                reason = f"mask {s.mask_path} not found"
            elif image_size(s.mask_path) is None:
                reason = f"mask {s.mask_path} is not a readable image"
        if reason is None:
            usable.append(s)
        else:
            skipped.append({"path": s.path, "reason": reason})
    return usable, skipped


def load_problem(sample: Sample) -> str:
    """Why :meth:`FaceDataset.load` gives None for ``sample`` (an image or mask that does not decode,
    or a mask of another size than its image)."""
    img = read_image(sample.path)
    if img is None:
        return "image does not decode (corrupt or truncated)"
    if sample.label == 1 and sample.mask_path is not None:
        mask = read_mask(sample.mask_path)
        if mask is None:
            return f"mask {sample.mask_path} does not decode"
        if mask.shape != img.shape[:2]:
            return f"mask {sample.mask_path} is {mask.shape[1]}x{mask.shape[0]}, the image {img.shape[1]}x{img.shape[0]}"
    return "unreadable"


# ------------------------------------------------------------------------------ augmentation

def _geometric(p_affine: float):
    import albumentations as A

    # Resampling low-passes the very traces we want, so affine warps are kept rare and mild;
    # flips and integer crops (patch mode) are lossless.
    return A.Compose([
        A.HorizontalFlip(p=0.5),
        A.Affine(scale=(0.9, 1.1), rotate=(-8, 8), translate_percent=(-0.03, 0.03), interpolation=cv2.INTER_LINEAR,
                 mask_interpolation=cv2.INTER_LINEAR, border_mode=cv2.BORDER_REFLECT_101, p=p_affine),
    ])


def _photometric():
    import albumentations as A

    # Global image quality (blur, sharpen, resampling, noise, JPEG over the whole image) must carry
    # no label: these ops are drawn often and, with paired augmentation, identically for a fake and
    # its own real, so softness, crispness or compression alone never separates the classes.
    return A.Compose([
        # per-pixel colour ops only: ColorJitter's contrast pivots on the image mean, which the
        # forged region shifts, so it would alter a fake's background differently from its real's
        A.OneOf([A.HueSaturationValue(hue_shift_limit=5, sat_shift_limit=15, val_shift_limit=10),
                 A.RandomBrightnessContrast(brightness_limit=0.15, contrast_limit=0.15)], p=0.4),
        A.OneOf([A.GaussianBlur(sigma_limit=(0.3, 1.6), p=1.0),
                 A.Sharpen(alpha=(0.2, 0.6), lightness=(1.0, 1.0), p=1.0),
                 A.Downscale(scale_range=(0.45, 0.9), p=1.0)], p=0.45),
        A.GaussNoise(std_range=(0.005, 0.03), p=0.15),
        A.ImageCompression(quality_range=(40, 100), p=0.4),
    ])


def _seed_pipeline(pipeline, rng: np.random.Generator) -> None:
    """Seed an albumentations Compose from ``rng`` with one stream its transforms draw from in turn."""
    seed = int(rng.integers(2 ** 31))
    pipeline.set_random_state(np.random.default_rng(seed), random.Random(seed))


def _boundary_points(mask: np.ndarray) -> np.ndarray:
    """(K, 2) row/col coordinates of pixels on the forged-region boundary (soft or hard mask)."""
    soft = (mask > 0.05) & (mask < 0.95)
    if soft.sum() < 16:
        hard = (mask > 0.5).astype(np.uint8)
        soft = cv2.morphologyEx(hard, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
    return np.argwhere(soft)


def _pad_to(img: np.ndarray, h: int, w: int) -> np.ndarray:
    ph, pw = max(0, h - img.shape[0]), max(0, w - img.shape[1])
    if ph == 0 and pw == 0:
        return img
    pads = ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)) + ((0, 0),) * (img.ndim - 2)
    return np.pad(img, pads, mode="reflect" if min(img.shape[:2]) > 1 else "edge")


def full_view(img: np.ndarray, mask: np.ndarray, multiple: int = 32, min_side: int = 64,
              max_side: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Whole face at native resolution for the fully convolutional model.

    Centre-crops each side down to a multiple of ``multiple`` (loses < 32 px of border), pads
    (reflect) sides below ``min_side``; faces larger than ``max_side`` are first downscaled
    (INTER_AREA) so the long side fits.
    """
    h, w = img.shape[:2]
    if max(h, w) > max_side:
        f = max_side / max(h, w)
        size = (max(1, round(w * f)), max(1, round(h * f)))
        img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
        mask = cv2.resize(mask, size, interpolation=cv2.INTER_AREA)
        h, w = img.shape[:2]
    img, mask = _pad_to(img, min_side, min_side), _pad_to(mask, min_side, min_side)
    h, w = img.shape[:2]
    th, tw = h // multiple * multiple, w // multiple * multiple
    y0, x0 = (h - th) // 2, (w - tw) // 2
    return img[y0:y0 + th, x0:x0 + tw], mask[y0:y0 + th, x0:x0 + tw]


# ---------------------------------------------------------------------------------- dataset

class FaceDataset(Dataset):
    """Torch dataset over :class:`Sample` s.

    Item: dict ``image`` (3,H,W) float32 normalised with ``norm``, ``label`` float32 scalar,
    ``mask`` (1,H,W) float32 [0,1] (forged pixels), ``mask_valid`` float32 scalar (0 when a fake
    has no mask), ``index`` int; or ``None`` when the image is unreadable (see :func:`collate`).

    Modes: ``patch`` (train): ``patch`` px crop at native resolution; a fake's crop is centred
    (with jitter of up to a quarter patch) near the mask boundary with probability
    ``boundary_fraction``, else on a forged pixel; a real's crop is uniform. The crop's label is 1
    when its mean mask value exceeds ``fake_threshold`` (a real's crop is always 0).
    ``resize``: whole face resized to ``size``. ``full``: whole face, native, multiple of 32; with
    ``full_size`` set (training, where a batch needs one size) a face of any other size is first
    resized to ``full_size`` x ``full_size`` (INTER_AREA), so a pool of one synth ``--size`` stays native.

    Augmentation (``augment=True``): geometric ops (flip, rare mild affine) on image and mask
    together, photometric ops (colour; global blur, sharpen, resampling, noise, JPEG) on the image
    only; the random state is derived from ``(seed, epoch, index)`` so a run replays exactly (call
    :meth:`set_epoch`). With ``paired_augment=True`` a synth fake and its own real (same manifest
    line, :func:`pair_ids`) share that state and so receive identical augmentation.
    ``global_op``: optional function uint8 HxWx3 -> uint8 HxWx3 applied to every image after
    loading (used to score globally processed copies, :mod:`detector.quality`).
    """

    def __init__(self, samples: Sequence[Sample], mode: str = "patch", patch: int = 128, size: int = 256,
                 augment: bool = False, norm: Mapping | None = None, seed: int = 0, fake_threshold: float = 0.1,
                 boundary_fraction: float = 0.5, p_affine: float = 0.2, full_size: int | None = None,
                 paired_augment: bool = False, global_op: Callable[[np.ndarray], np.ndarray] | None = None):
        if mode not in MODES:
            raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
        if mode == "patch" and (patch < 32 or patch % 32):
            raise ValueError(f"patch: expected a multiple of 32 >= 32, got {patch}")
        if mode == "resize" and (size < 32 or size % 32):
            raise ValueError(f"size: expected a multiple of 32 >= 32, got {size}")
        self.samples = list(samples)
        if full_size is not None and (full_size < 32 or full_size % 32):
            raise ValueError(f"full_size: expected a multiple of 32 >= 32, got {full_size}")
        self.mode, self.patch, self.size, self.full_size = mode, patch, size, full_size
        self.augment, self.seed = augment, seed
        self.fake_threshold, self.boundary_fraction = fake_threshold, boundary_fraction
        norm = norm or IMAGENET_NORM
        self.mean = np.asarray(norm["mean"], np.float32).reshape(3, 1, 1)
        self.std = np.asarray(norm["std"], np.float32).reshape(3, 1, 1)
        self.epoch = 0
        # a fake and its own real draw the same augmentation, so what differs between them is the forgery
        self._aug_ids = pair_ids(self.samples) if paired_augment else np.arange(len(self.samples))
        self.global_op = global_op
        self._geo = _geometric(p_affine) if augment else None
        self._photo = _photometric() if augment else None

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> np.ndarray:
        return np.array([s.label for s in self.samples], dtype=np.int64)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def sample_seed(self, index: int) -> int:
        key = int(self._aug_ids[index])
        return int(np.random.SeedSequence([self.seed, self.epoch, key]).generate_state(1)[0])

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, float] | None:
        """Raw ``(image uint8 HxWx3, mask float32 HxW, mask_valid)`` or None if unreadable."""
        s = self.samples[index]
        img = read_image(s.path)
        if img is None:
            return None
        h, w = img.shape[:2]
        if s.label == 0:
            return img, np.zeros((h, w), np.float32), 1.0  # a real has no forged pixel
        if s.mask_path is None:
            return img, np.zeros((h, w), np.float32), 0.0
        mask = read_mask(s.mask_path)
        if mask is None or mask.shape != (h, w):
            return None
        return img, mask, 1.0

    def _crop(self, img, mask, label, valid, rng):
        p = self.patch
        img, mask = _pad_to(img, p, p), _pad_to(mask, p, p)
        h, w = mask.shape
        pts = ()
        if label == 1 and valid:
            # fakes: centre on the blending boundary (where the traces are) or inside the forged
            # region, so fake images give forged patches; clean patches come from the reals
            pts = _boundary_points(mask) if rng.random() < self.boundary_fraction else np.argwhere(mask > 0.5)
        if len(pts):
            cy, cx = pts[rng.integers(len(pts))]
            jitter = rng.integers(-p // 4, p // 4 + 1, size=2)
            y0 = int(np.clip(cy + jitter[0] - p // 2, 0, h - p))
            x0 = int(np.clip(cx + jitter[1] - p // 2, 0, w - p))
        else:
            y0, x0 = int(rng.integers(0, h - p + 1)), int(rng.integers(0, w - p + 1))
        img, mask = img[y0:y0 + p, x0:x0 + p], mask[y0:y0 + p, x0:x0 + p]
        if label == 1 and valid:
            label = int(mask.mean() > self.fake_threshold)
        return img, mask, label

    def __getitem__(self, index: int):
        raw = self.load(index)
        if raw is None:
            return None
        img, mask, valid = raw
        label = self.samples[index].label
        rng = np.random.default_rng(self.sample_seed(index))
        side = self.size if self.mode == "resize" else self.full_size if self.mode == "full" else None
        if side and img.shape[:2] != (side, side):
            img = cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA)
            mask = cv2.resize(mask, (side, side), interpolation=cv2.INTER_LINEAR)
        if self.global_op is not None:
            img = self.global_op(img)
        if self.augment:
            # one stream shared by the transforms of a Compose: set_random_seed would give each child
            # its own copy of the same stream, so their "apply?" draws coincide and the ops come nested
            # (JPEG only ever with a colour change and a blur), never independently
            _seed_pipeline(self._geo, rng)
            out = self._geo(image=img, mask=mask)
            img, mask = out["image"], out["mask"]
            _seed_pipeline(self._photo, rng)
            img = self._photo(image=img)["image"]
        if self.mode == "patch":
            img, mask, label = self._crop(img, mask, label, valid, rng)
        elif self.mode == "full":
            img, mask = full_view(img, mask)
        x = (np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32) / 255.0 - self.mean) / self.std
        return {"image": torch.from_numpy(x), "label": torch.tensor(float(label)),
                "mask": torch.from_numpy(np.ascontiguousarray(np.clip(mask, 0, 1), dtype=np.float32))[None],
                "mask_valid": torch.tensor(float(valid)), "index": index}

    def native_sizes(self) -> list[tuple[int, int] | None]:
        """Per-sample (H, W) from file headers (None if unreadable), for size-grouped eval batches."""
        return [image_size(s.path) for s in self.samples]


def collate(items: list) -> dict:
    """Stack dataset items, dropping unreadable ones (``None``); ``batch["skipped"]`` counts them."""
    ok = [it for it in items if it is not None]
    batch = {"skipped": len(items) - len(ok)}
    if not ok:
        return batch
    shapes = {tuple(it["image"].shape) for it in ok}
    if len(shapes) > 1:  # mode "full" keeps native sizes; a training batch needs one size
        raise ValueError(f"a batch mixes image sizes {sorted(shapes)}: train mode 'full' needs same-size faces "
                         "(e.g. one synth --size); use mode 'patch' or 'resize' for mixed sizes")
    for k in ("image", "label", "mask", "mask_valid"):
        batch[k] = torch.stack([it[k] for it in ok])
    batch["index"] = torch.tensor([it["index"] for it in ok], dtype=torch.long)
    return batch


# ------------------------------------------------------------------------------------ samplers

class _EpochBatchSampler(Sampler):
    """Bookkeeping shared by the training samplers: ``total`` batches per epoch split over DDP
    replicas (``per_rank`` each), reseeded by :meth:`set_epoch`."""

    def __init__(self, batch_size: int, seed: int, num_replicas: int, rank: int, total: int):
        self.batch_size, self.seed = batch_size, seed
        self.num_replicas, self.rank = num_replicas, rank
        self.per_rank = max(1, total // num_replicas)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.per_rank


class BalancedBatchSampler(_EpochBatchSampler):
    """Batches with half reals and half fakes (by source label), seeded per epoch.

    Each epoch draws ``ceil(len(labels) / batch_size)`` batches: both classes are shuffled and
    cycled (the smaller class repeats). With ``num_replicas > 1`` (DDP) every rank builds the same
    batch list and takes every ``num_replicas``-th batch, so ranks see disjoint batches.
    """

    def __init__(self, labels: Sequence[int], batch_size: int, seed: int = 0, num_replicas: int = 1, rank: int = 0,
                 num_batches: int | None = None):
        labels = np.asarray(labels)
        if batch_size < 2:
            raise ValueError(f"batch_size: a balanced batch needs at least 2, got {batch_size}")
        self.real = np.flatnonzero(labels == 0)
        self.fake = np.flatnonzero(labels == 1)
        if not len(self.real) or not len(self.fake):
            raise ValueError(f"BalancedBatchSampler needs both classes (n_real={len(self.real)}, n_fake={len(self.fake)})")
        super().__init__(batch_size, seed, num_replicas, rank, num_batches or math.ceil(len(labels) / batch_size))

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch, 7])
        n_batches = self.per_rank * self.num_replicas
        n_fake = self.batch_size // 2
        n_real = self.batch_size - n_fake

        def stream(idx: np.ndarray, n: int) -> np.ndarray:
            reps = math.ceil(n / len(idx))
            return np.concatenate([rng.permutation(idx) for _ in range(reps)])[:n]

        reals = stream(self.real, n_batches * n_real).reshape(n_batches, n_real)
        fakes = stream(self.fake, n_batches * n_fake).reshape(n_batches, n_fake)
        batches = np.concatenate([reals, fakes], axis=1)
        for b in range(self.rank, n_batches, self.num_replicas):
            yield batches[b].tolist()


class PairedBatchSampler(_EpochBatchSampler):
    """Batches of whole pairs: each fake next to its own real, seeded per epoch.

    ``pairs``: (P, 2) ``[real_index, fake_index]`` (:func:`pair_indices`). A batch holds
    ``batch_size // 2`` pairs, reals first then their fakes in the same order, so the only
    difference between the two halves is the forgery (as SBI and Face X-ray train). Each epoch
    draws ``num_batches`` (default ``ceil(2P / batch_size)``) batches, cycling through a fresh
    permutation of the pairs; with ``num_replicas > 1`` (DDP) rank r takes every
    ``num_replicas``-th batch.
    """

    def __init__(self, pairs, batch_size: int, seed: int = 0, num_replicas: int = 1, rank: int = 0,
                 num_batches: int | None = None):
        self.pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
        if batch_size < 2 or batch_size % 2:
            raise ValueError(f"batch_size: a paired batch needs an even size >= 2, got {batch_size}")
        if not len(self.pairs):
            raise ValueError("paired batches: no (real, fake) pairs; the training data has no fake whose own real "
                             "is present (a `synth generate` output has them; for other data use pairing "
                             "'independent', `--pairing independent`)")
        super().__init__(batch_size, seed, num_replicas, rank,
                         num_batches or math.ceil(2 * len(self.pairs) / batch_size))

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch, 11])
        k = self.batch_size // 2
        n_batches = self.per_rank * self.num_replicas
        reps = math.ceil(n_batches * k / len(self.pairs))
        order = np.concatenate([rng.permutation(len(self.pairs)) for _ in range(reps)])[:n_batches * k]
        chosen = self.pairs[order].reshape(n_batches, k, 2)
        for b in range(self.rank, n_batches, self.num_replicas):
            yield chosen[b, :, 0].tolist() + chosen[b, :, 1].tolist()


def size_grouped_batches(sizes: Sequence[tuple[int, int] | None], batch_size: int) -> list[list[int]]:
    """Batches of indices whose images share the same (H, W) (unreadable ones batched alone), order kept within a size."""
    by_size: dict = {}
    for k, hw in enumerate(sizes):
        by_size.setdefault(hw if hw is not None else ("bad", k), []).append(k)
    batches = []
    for idx in by_size.values():
        batches.extend(idx[i:i + batch_size] for i in range(0, len(idx), batch_size))
    return batches


# ------------------------------------------------------------------------------- toy dataset

def write_toy_synth_dir(out: str | Path, n: int = 16, size: int = 64, seed: int = 0, swap_fraction: float = 0.3,
                        n_identities: int | None = None, start: int = 0) -> Path:
    """Write a tiny dataset in the ``synth generate`` output format (for smoke tests and demos).

    Reals are smooth random textures with fine grain; each fake replaces a square (its mask) with a
    brighter, blurred copy, so the forgery is visible both in brightness and in missing
    high-frequency energy. Plans carry the contract's choice fields (pairing, region, blend, ...),
    so choice keys and reweighting work on it. Sample indices are ``start .. start + n - 1``.
    """
    out = Path(out)
    rng = np.random.default_rng(seed)
    n_identities = n_identities or max(2, n)
    lines = []
    for i in range(start, start + n):
        r = np.random.default_rng([seed, i])
        target = int(r.integers(n_identities))
        swap = r.random() < swap_fraction
        source = int((target + 1 + r.integers(n_identities - 1)) % n_identities) if swap else target
        base = cv2.GaussianBlur(r.normal(128, 60, (size, size, 3)).astype(np.float32), (0, 0), size / 10)
        real = np.clip(base + r.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        s = int(r.integers(size // 4, size // 2))
        y0, x0 = r.integers(0, size - s, size=2)
        mask = np.zeros((size, size), np.uint8)
        mask[y0:y0 + s, x0:x0 + s] = 255
        blend = str(r.choice(["alpha", "poisson"]))
        region = str(r.choice(["full", "inner"]))
        forged = np.clip(cv2.GaussianBlur(real, (0, 0), 1.5).astype(np.float32) + 40, 0, 255).astype(np.uint8)
        fake = np.where(mask[..., None] > 0, forged, real)
        shard, ident = f"{i // 10000:03d}", f"{i:06d}"
        rel = {k: f"{k}/{shard}/{ident}.png" for k in ("real", "fake", "mask")}
        for k, arr in (("real", real), ("fake", fake), ("mask", mask)):
            (out / rel[k]).parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(out / rel[k]), arr[..., ::-1] if arr.ndim == 3 else arr)
        plan = {"index": i, "seed": int(rng.integers(2 ** 31)), "recipe": "toy", "pairing": "swap" if swap else "self",
                "target": f"id{target:03d}.png", "source": f"id{source:03d}.png", "size": size,
                "source_degrade": [], "color": None, "mask": {"region": region, "params": {}, "occlusion": "none"},
                "blend": {"op": blend, "params": {}}, "post": []}
        lines.append({"i": i, "id": ident, "label": 1, **rel, "target_id": plan["target"], "source_id": plan["source"],
                      "status": "ok", "plan": plan})
    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return out


def write_toy_eval_dir(out: str | Path, n: int = 12, size: int = 64, seed: int = 99,
                       generators: tuple[str, str] = ("sbi", "dfl_swap")) -> Path:
    """A toy evaluation set in the ``manifest.csv`` format (path,label,mask,generator,identity):
    the reals and fakes of :func:`write_toy_synth_dir`, fakes alternating between two generators."""
    d = write_toy_synth_dir(out, n=n, size=size, seed=seed, n_identities=n)
    rows = [json.loads(line) for line in (d / "manifest.jsonl").read_text().splitlines()]
    (d / "manifest.jsonl").unlink()
    with (d / "manifest.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "mask", "generator", "identity"])
        for k, r in enumerate(rows):
            w.writerow([r["real"], 0, "", "real", r["target_id"]])
            w.writerow([r["fake"], 1, r["mask"], generators[0] if k % 2 else generators[1], r["target_id"]])
    return d
