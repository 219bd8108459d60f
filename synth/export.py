"""Export a ``synth generate`` run to the dataset layouts of detector research (``synth export``).

Two formats, both made of links to the run's own files (no image is copied) plus, for
DeepfakeBench, one JSON; nothing is written outside ``OUT``, which must be new or empty:

``deepfakebench``
    The layout DeepfakeBench's ``preprocessing/rearrange.py`` writes, so a run is one more dataset
    for its detectors (``OUT`` is their ``dataset_json_folder``; add the two label names to their
    ``label_dict``)::

        OUT/NAME.json
            {NAME: {NAME_real: {"train": {ID: {"label": "NAME_real", "frames": [P]}, ...},
                                "val": {...}, "test": {...}},
                    NAME_fake: {"train": {ID: {"label": "NAME_fake", "frames": [P], "masks": [M]}, ...},
                                "val": {...}, "test": {...}}}}
        OUT/NAME_real/frames/000/000123.png  -> RUN/real/000/000123.png
        OUT/NAME_fake/frames/000/000123.png  -> RUN/fake/000/000123.png
        OUT/NAME_fake/masks/000/000123.png   -> RUN/mask/000/000123.png

    Each sample is a one-frame "video" ``ID`` (the sample id). A frame's mask path is its frame
    path with ``frames`` replaced by ``masks``, which is how DeepfakeBench's loader finds masks, and
    frame names are integers, which its loader sorts by. ``val`` and ``test`` hold the same
    identity-disjoint held-out part, as DeepfakeBench's own Celeb-DF and DFDCP JSONs do. Paths in
    the JSON are relative to ``OUT`` (``detector eval`` resolves them so), or start with
    ``path_prefix`` where DeepfakeBench should find them (e.g. ``./datasets/rgb/NAME``).

``imagefolder``
    A torchvision ``ImageFolder`` tree per split, ``OUT/train/{real,fake}/ID.png`` and
    ``OUT/val/{real,fake}/ID.png`` (ImageFolder numbers classes alphabetically: fake 0, real 1).

Both split the run by identity with :func:`synth.samples.identity_split`, the split the training
loop uses: no face (target or source of a swap) is on both sides; a swap whose two faces land on
different sides is left out (counted). Failed (skipped) samples of the run are not exported.
"""
from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import warnings
from pathlib import Path

from synth.io import write_json_atomic
from synth.samples import identity_split, read_synth_dir
from synth.writer import SHARD_SIZE, sample_id, scan_manifest

log = logging.getLogger(__name__)

FORMATS = ("deepfakebench", "imagefolder")
LINKS = ("symlink", "hard")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")

__all__ = ["FORMATS", "LINKS", "export_run"]


def _check_out(out: Path) -> bool:
    """Refuse an ``out`` that exists and is not an empty folder; True if it exists (empty)."""
    if not out.exists() and not out.is_symlink():
        return False
    if not out.is_dir():
        raise ValueError(f"OUT {out}: exists and is not a folder")
    entries = sorted(os.listdir(out))
    if entries:
        shown = ", ".join(entries[:5]) + (f", ... ({len(entries)} entries)" if len(entries) > 5 else "")
        raise ValueError(f"OUT {out}: not empty (holds {shown}); export into a new or empty folder")
    return True


def _check_files(run: Path, samples) -> None:
    """Every image (and fake mask) of ``samples`` is a file inside the run, so no link leads out of it."""
    root = Path(os.path.realpath(run))
    for s in samples:
        for what, p in (("image", s.path), ("mask", s.mask_path)):
            if p is None:
                continue
            if not Path(os.path.realpath(p)).is_relative_to(root):
                raise ValueError(f"{run / 'manifest.jsonl'}: sample {sample_id(s.meta['i'])}: {what} {p} lies "
                                 f"outside the run")
            if not os.path.isfile(p):
                raise ValueError(f"{run / 'manifest.jsonl'}: sample {sample_id(s.meta['i'])}: {what} {p} not found")


def _split(samples, val_fraction: float, seed: int):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train, val = identity_split(samples, val_fraction=val_fraction, seed=seed)
    for w in caught:
        log.warning("%s", w.message)
    return train, val


class _Linker:
    """Creates ``dst -> src`` links under ``out`` (symbolic to the absolute source, or hard)."""

    def __init__(self, out: Path, kind: str):
        self.out, self.kind, self.made = out, kind, set()

    def __call__(self, src: str, rel: str) -> None:
        dst = self.out / rel
        if dst.parent not in self.made:
            dst.parent.mkdir(parents=True, exist_ok=True)
            self.made.add(dst.parent)
        if self.kind == "symlink":
            os.symlink(os.path.abspath(src), dst)
            return
        try:
            os.link(src, dst)
        except OSError as e:
            if e.errno != errno.EXDEV:
                raise
            raise ValueError(f"OUT {self.out}: hard links need OUT on the file system of the run ({src}); "
                             f"use link 'symlink'") from None


def _rel(group: str, what: str, i: int, suffix: str) -> str:
    return f"{group}/{what}/{i // SHARD_SIZE:03d}/{sample_id(i)}{suffix}"


def _deepfakebench(out: Path, name: str, parts: dict, link: _Linker, path_prefix: str) -> Path:
    prefix = path_prefix.rstrip("/") + "/" if path_prefix else ""
    groups = {0: f"{name}_real", 1: f"{name}_fake"}
    tree = {g: {} for g in groups.values()}
    for split, samples in parts.items():
        videos = {g: {} for g in groups.values()}
        for s in samples:
            group, i = groups[s.label], s.meta["i"]
            frame = _rel(group, "frames", i, Path(s.path).suffix)
            link(s.path, frame)
            record = {"label": group, "frames": [prefix + frame]}
            if s.label == 1 and s.mask_path is not None:
                mask = _rel(group, "masks", i, Path(s.mask_path).suffix)
                link(s.mask_path, mask)
                record["masks"] = [prefix + mask]
            videos[group][sample_id(i)] = record
        for group, v in videos.items():
            tree[group][split] = v
    for group in tree.values():  # the held-out part is DeepfakeBench's val and test split alike
        group["test"] = group["val"]
    return write_json_atomic(out / f"{name}.json", {name: tree})


def _imagefolder(out: Path, parts: dict, link: _Linker) -> None:
    for split, samples in parts.items():
        for cls in ("fake", "real"):  # both class folders, even when one is empty
            (out / split / cls).mkdir(parents=True, exist_ok=True)
        for s in samples:
            cls = "fake" if s.label else "real"
            link(s.path, f"{split}/{cls}/{sample_id(s.meta['i'])}{Path(s.path).suffix}")


def export_run(run: str | os.PathLike, out: str | os.PathLike, format: str, *, name: str = "faceforge",
               val_fraction: float = 0.1, seed: int = 0, link: str = "symlink", path_prefix: str = "") -> dict:
    """Export the ``synth generate`` run in ``run`` to ``out`` in ``format`` (see the module docstring).

    Parameters
    ----------
    run : the run folder (its ``manifest.jsonl`` is read with :func:`synth.samples.read_synth_dir`:
        ok samples only, a half-written last line ignored).
    out : a new or empty folder; everything is written inside it. If the export fails, what it
        wrote is removed again (and ``out`` itself if it created it).
    format : ``"deepfakebench"`` or ``"imagefolder"``.
    name : dataset name (deepfakebench): the JSON is ``out/NAME.json``, its labels ``NAME_real`` and
        ``NAME_fake``.
    val_fraction, seed : share of samples held out by identity, and the split's seed.
    link : ``"symlink"`` (absolute target) or ``"hard"`` (``out`` on the run's file system).
    path_prefix : deepfakebench: prepended to the paths in the JSON (default: relative to ``out``).

    Returns a summary: ``format, out, json`` (deepfakebench), ``n_train, n_val`` (images),
    ``n_dropped`` (swaps straddling the split), ``n_failed`` (the run's failed samples, skipped).
    Bad arguments or input raise ``ValueError`` before anything is written.
    """
    run, out = Path(run), Path(out)
    if format not in FORMATS:
        raise ValueError(f"format: expected one of {FORMATS}, got {format!r}")
    if link not in LINKS:
        raise ValueError(f"link: expected one of {LINKS}, got {link!r}")
    if not _NAME.fullmatch(name) or "frames" in name or "masks" in name:
        raise ValueError(f"name: letters, digits and _.+- (not containing 'frames' or 'masks'), got {name!r}")
    if "frames" in path_prefix:
        raise ValueError(f"path_prefix {path_prefix!r}: must not contain 'frames' (DeepfakeBench finds a mask by "
                         "replacing 'frames' with 'masks' in its frame's path)")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")
    if not run.is_dir():
        raise ValueError(f"RUN {run}: not a folder")
    existed = _check_out(out)
    samples = read_synth_dir(run)
    if not samples:
        raise ValueError(f"RUN {run}: no sample generated (no ok line in manifest.jsonl)")
    _check_files(run, samples)
    n_failed = scan_manifest(run / "manifest.jsonl", truncate=False).n_skipped
    train, val = _split(samples, val_fraction, seed)
    if not val:
        log.warning("export: the held-out split is empty (the run's faces cannot be split by identity)")
    parts = {"train": train, "val": val}
    summary = {"format": format, "out": str(out), "n_train": len(train), "n_val": len(val),
               "n_dropped": len(samples) - len(train) - len(val), "n_failed": n_failed}
    out.mkdir(parents=True, exist_ok=True)
    try:
        linker = _Linker(out, link)
        if format == "deepfakebench":
            summary["json"] = str(_deepfakebench(out, name, parts, linker, path_prefix))
            summary["labels"] = {f"{name}_real": 0, f"{name}_fake": 1}
        else:
            _imagefolder(out, parts, linker)
    except BaseException:
        _undo(out, existed)
        raise
    log.info("export: %d train and %d held-out images to %s (%s)%s", len(train), len(val), out, format,
             f"; {n_failed} failed sample(s) of the run skipped" if n_failed else "")
    return summary


def _undo(out: Path, existed: bool) -> None:
    """Remove what an interrupted export wrote (``out`` was empty or new before it)."""
    if not existed:
        shutil.rmtree(out, ignore_errors=True)
        return
    for entry in os.scandir(out):
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            os.unlink(entry.path)
