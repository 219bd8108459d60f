"""Replay samples of a generation run from their manifest lines alone (``synth replay``).

Manifest lines are data: a line is used only when its ``id`` is the run's own id of its ``i``,
its image paths lie inside the run and its plan draws on faces of the index, so replay reads
only the run and the index's source folder and writes only ``dest``. Any other line is
refused with a ``ValueError`` naming ``manifest.jsonl:LINE``.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from synth.index import load_index
from synth.pool import FacePool
from synth.render import FaceCache, check_plan, render
from synth.writer import iter_manifest, record_files, record_index


def _manifest_lines(manifest: Path, wanted: set[int]) -> dict[int, tuple[str, dict]]:
    """``{i: ("manifest:line", record)}`` of samples ``wanted``; every line's ``i`` and ``id`` are checked."""
    found = {}
    for lineno, rec in iter_manifest(manifest):
        where = f"{manifest}:{lineno}"
        if record_index(rec, where) in wanted:
            found[rec["i"]] = (where, rec)
    return found


def _check_line(out: Path, where: str, rec: dict, pool: FacePool) -> dict[str, Path]:
    """Refuse a manifest line that cannot be replayed; return the paths of its stored images."""
    if rec.get("status") != "ok":
        raise ValueError(f"{where}: sample {rec['id']} was skipped during generation: {rec.get('reason')}")
    files = record_files(out, rec, where)
    plan = rec.get("plan")
    if not isinstance(plan, dict):
        raise ValueError(f"{where}: sample {rec['id']} has no 'plan' object to render")
    try:
        check_plan(plan)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    keys = [plan.get("target")] + ([plan.get("source")] if plan.get("pairing") == "swap" else [])
    for key in keys:
        if key not in pool:
            raise ValueError(f"{where}: the plan's face {key!r} is not in the index ({pool.root})")
    return files


def _read_stored(path: Path, where: str) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError(f"{where}: {path} is not a readable image")
    return img if img.ndim == 2 else np.ascontiguousarray(img[..., ::-1])  # BGR -> RGB


def _sample_index(value) -> int:
    """Sample index of an id (``"000123"``) or index (``123``); ``ValueError`` naming the value."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 0:
        return int(value)
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    raise ValueError(f"id {str(value)[:40]!r}: expected a sample id (e.g. 000123) or index (e.g. 123)")


def _run_index(path: Path) -> Path:
    """The index a run was made from, as recorded in its ``run.json`` (``ValueError`` naming the file)."""
    try:
        run = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: corrupt ({e})") from None
    index = run.get("index") if isinstance(run, dict) else None
    if not isinstance(index, str) or not index:
        raise ValueError(f"{path}: no 'index' (the path of the run's index); pass --index to name it")
    return Path(index)


def replay(out: str | Path, ids, dest: str | Path | None = None, index: str | Path | None = None) -> dict:
    """Re-render samples ``ids`` (ids like ``"000123"`` or ints) of run ``out`` into ``dest``.

    Returns ``{"<id> real|fake|mask": path, "<id> identical": bool}``: whether each replayed
    image is byte-identical (as pixels) to the stored one.  Unknown ids, and manifest lines
    that are not the run's own (see the module docstring), raise ``ValueError``.
    """
    out = Path(out)
    if not (out / "run.json").is_file():
        raise ValueError(f"{out}: not a generation output directory (no run.json)")
    index_path = Path(index) if index else _run_index(out / "run.json")
    if not index_path.is_absolute() and not index_path.exists():
        index_path = out / index_path
    wanted = {_sample_index(i) for i in ids}
    manifest = out / "manifest.jsonl"
    lines = _manifest_lines(manifest, wanted)
    missing = sorted(wanted - set(lines))
    if missing:
        raise ValueError(f"{manifest}: no sample(s) {missing}")
    cache = FaceCache(load_index(index_path))
    stored = {}  # every line is checked before anything is written
    for i, (where, rec) in lines.items():
        files = _check_line(out, where, rec, cache.pool)
        stored[i] = {kind: _read_stored(path, where) for kind, path in files.items()}
    dest = Path(dest) if dest else out / "replay"
    dest.mkdir(parents=True, exist_ok=True)
    result = {}
    for i, (where, rec) in sorted(lines.items()):
        images = dict(zip(("real", "fake", "mask"), render(rec["plan"], cache)))
        same = True
        for kind, img in images.items():
            path = dest / f"{rec['id']}_{kind}.png"
            cv2.imwrite(str(path), img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
            same &= bool(np.array_equal(stored[i][kind], img))
            result[f"{rec['id']} {kind}"] = str(path)
        result[f"{rec['id']} identical"] = same
    return result
