"""The state of a generate run in its OUT directory: identity, lock, resume, report.

* identity: ``OUT/run.json`` holds the arguments that define the output
  (:func:`run_definition`, :func:`check_run_json`); a rerun with different ones is refused, a
  rerun with the same ones continues after the manifest's recorded prefix.
* lock: ``OUT/.lock`` keeps a second generate process off the same OUT (:func:`exclusive`).
* OUT checks: not inside the source folder, not a non-run folder unless forced
  (:func:`check_not_inside_src`, :func:`check_out`), and a refused call leaves OUT as it found
  it (:func:`manifest_size`, :func:`forget_refused_run`).
* report: the content of ``OUT/report.json`` (:func:`build_report`).
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
from importlib import metadata
from pathlib import Path

import numpy as np

from synth import writer
from synth.io import write_json_atomic
from synth.pool import FacePool

__all__ = ["run_definition", "index_hash", "check_run_json", "check_not_inside_src", "check_out", "manifest_size",
           "forget_refused_run", "exclusive", "versions", "build_report"]

#: Keys of run.json that define the output; the others are informational.
_DEFINING = ("recipe", "recipe_hash", "seed", "size", "n", "index_hash", "weights")

#: Keys of run.json repeated at the end of report.json, in this order.
_REPORTED = ("recipe", "recipe_hash", "seed", "size", "index", "index_hash", "src", "weights")

#: What a run puts in OUT before its run.json (a first run interrupted while indexing leaves
#: them): an OUT holding nothing else is taken as empty.
_PRE_RUN_FILES, _PRE_RUN_DIRS = frozenset({".lock"}), frozenset({"index", "default-src"})


def index_hash(pool: FacePool) -> str:
    """Identity of the faces a run draws from: keys and landmarks (not file paths or times)."""
    h = hashlib.sha256()
    h.update(json.dumps(list(pool.keys)).encode())
    h.update(np.ascontiguousarray(pool.landmarks, np.float32).tobytes())
    return h.hexdigest()[:16]


def run_definition(recipe, seed: int, size: int, n: int, index: str, pool: FacePool, src: str | None,
                   weights: dict | None) -> dict:
    """The content of ``OUT/run.json`` for a run of ``recipe`` drawing from ``pool`` (the index
    at ``index``, built from ``src``)."""
    return {"recipe": recipe.name, "recipe_hash": recipe.hash, "recipe_path": recipe.path, "seed": seed,
            "size": size, "n": n, "index": index, "index_hash": index_hash(pool), "src": src, "weights": weights}


def check_run_json(out: Path, definition: dict) -> None:
    """Write OUT/run.json, or refuse if it defines a different run."""
    path = out / "run.json"
    if not path.exists():
        write_json_atomic(path, definition)
        return
    try:
        previous = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: corrupt ({e}); remove it only if OUT holds no samples") from None
    for key in _DEFINING:
        if previous.get(key) != definition.get(key):
            raise ValueError(f"{out} holds a different run: {key} was {previous.get(key)!r}, now "
                             f"{definition.get(key)!r} (see {path}); use another --out or the same arguments")


def check_not_inside_src(out: Path, src) -> None:
    """Refuse an OUT inside (or equal to) the source folder ``src``: a rerun would index the
    run's own PNGs as faces (and then refuse the changed index)."""
    if src is None:
        return
    src_dir, out_dir = Path(os.path.realpath(src)), Path(os.path.realpath(out))
    if out_dir.is_relative_to(src_dir):
        where = "is" if out_dir == src_dir else "lies inside"
        raise ValueError(f"--out {out} {where} --src {src}: the run's own images would be indexed as faces; "
                         f"use an --out outside the source folder")


def check_out(out: Path, force: bool) -> None:
    """Refuse an OUT that is not a directory, or holds files but is not a run (no run.json),
    unless ``force``: generating there would overwrite files of the same names."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a directory")
    if force or not out.exists() or (out / "run.json").exists():
        return
    found = sorted(e.name for e in os.scandir(out)
                   if not (e.name in _PRE_RUN_FILES or (e.name in _PRE_RUN_DIRS and e.is_dir())))
    if found:
        shown = ", ".join(found[:5]) + (f", ... ({len(found)} entries)" if len(found) > 5 else "")
        raise ValueError(f"--out {out}: not empty and not a generate run (no run.json); it holds {shown}. "
                         f"Use a new or empty folder, or --force to generate into it (files with the "
                         f"run's names are overwritten)")


def manifest_size(out: Path) -> int | None:
    """Size of OUT/manifest.jsonl in bytes (None: absent)."""
    try:
        return (out / "manifest.jsonl").stat().st_size
    except FileNotFoundError:
        return None


def forget_refused_run(out: Path, size_before: int | None) -> None:
    """After a refusal, remove the run.json (and empty manifest) this call wrote, unless it made
    samples (the manifest grew past ``size_before``): OUT is left as the refused call found it."""
    manifest = out / "manifest.jsonl"
    size = manifest_size(out)
    if size is not None and size > (size_before or 0):
        return
    (out / "run.json").unlink(missing_ok=True)
    if size_before is None:
        manifest.unlink(missing_ok=True)


@contextlib.contextmanager
def exclusive(out: Path):
    """Refuse a second generate process on the same OUT (two writers would corrupt the manifest).

    OUT/.lock exists while a generate holds it: it is removed, still locked, on the way out,
    and a process that locked a file that is no longer OUT/.lock (it raced with that
    removal) does not go on.
    """
    path = out / ".lock"
    with open(path, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            current = os.stat(path).st_ino
        except (BlockingIOError, FileNotFoundError):
            current = None
        if current != os.fstat(f.fileno()).st_ino:
            raise ValueError(f"{out} is being written by another generate process")
        try:
            yield
        finally:
            path.unlink(missing_ok=True)


def versions() -> dict:
    """Versions of what decides the pixels: Python, numpy, OpenCV, MediaPipe, synth."""
    def version(dist):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    import cv2

    from synth import __version__

    return {"python": platform.python_version(), "numpy": np.__version__, "cv2": cv2.__version__,
            "mediapipe": version("mediapipe"), "synth": __version__}


def build_report(state: writer.ManifestState, definition: dict, index_skipped: list[dict], made: int,
                 wall: float, gen_wall: float, backend: str, workers: int) -> dict:
    """The content of ``OUT/report.json``: the manifest's counts (``state``), the files the index
    left out (``index_skipped``), this call's timings (``made`` samples, ``wall`` s in all,
    ``gen_wall`` s generating), and the run's identity (``definition``, see :func:`run_definition`)."""
    n = definition["n"]
    return {
        "n_requested": n, "n_done": state.next_i, "complete": state.next_i == n, "n_ok": state.n_ok,
        "n_skipped": state.n_skipped, "skip_reasons": dict(sorted(state.reasons.items())),
        "skipped": state.skipped,
        "n_index_skipped": len(index_skipped),
        "index_skip_reasons": {k: sum(r["status"] == k for r in index_skipped)
                               for k in sorted({r["status"] for r in index_skipped})},
        "index_skipped": index_skipped, "n_made_this_run": made, "wall_s": round(wall, 3),
        "rate_per_s": round(made / gen_wall, 3) if made else None,
        "backend": backend, "workers": workers if backend == "joblib" else None,
        "versions": versions(), **{k: definition[k] for k in _REPORTED},
    }
