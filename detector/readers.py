"""Datasets on disk as lists of :class:`Sample` (no torch): readers, identity-disjoint split, pairing.

Readers:

* ``read_synth_dir(OUT)``: output of ``synth generate`` (``manifest.jsonl``); every ok line gives a
  real (the target face, label 0) and a fake (label 1, with pixel mask). It, :class:`Sample` and the
  identity split live in :mod:`synth.samples` (``synth export`` splits runs too) and are re-exported here.
* ``read_manifest_csv(DIR)``: ``manifest.csv`` with columns ``path,label[,mask,generator,identity,video]``
  (paths relative to the csv), e.g. an evaluation set.
* ``read_folders(DIR)``: ``DIR/real/**`` and ``DIR/fake/**`` images (optional ``DIR/mask/<same rel path>``).
* ``read_deepfakebench_json(FILE.json)``: a dataset JSON of DeepfakeBench (``preprocessing/rearrange.py``:
  FF++, Celeb-DF, DFDC, ... or ``synth export --format deepfakebench``); every frame a sample, its
  video in ``meta["video"]`` (video-level metrics).
* ``read_dataset(path)`` picks the reader from what is on disk.

:func:`identity_split` splits samples so that no identity is on both sides (identities linked by a
swap are grouped as the connected components of the identity graph); :func:`pair_indices` finds each
synth fake's own real. The torch side (Dataset, collate, samplers, augmentation) is :mod:`detector.data`.
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import cv2
import numpy as np

from synth.io import IMAGE_EXTENSIONS
from synth.io import read_image as synth_read_image
from synth.samples import Sample, group_identities, identity_split, read_synth_dir, split_by_identities  # noqa: F401

# ----------------------------------------------------------------------------------------- readers

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
