"""Replay samples of a generation run from their manifest lines alone (``synth replay``)."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from synth.index import load_index
from synth.render import FaceCache, render


def _manifest_lines(out: Path, wanted: set[int]) -> dict[int, dict]:
    found = {}
    with open(out / "manifest.jsonl") as f:
        for line in f:
            if not line.endswith("\n"):
                break  # partial last line of an interrupted run
            rec = json.loads(line)
            if rec["i"] in wanted:
                found[rec["i"]] = rec
    return found


def replay(out: str | Path, ids, dest: str | Path | None = None, index: str | Path | None = None) -> dict:
    """Re-render samples ``ids`` (ids like ``"000123"`` or ints) of run ``out`` into ``dest``.

    Returns ``{"<id> real|fake|mask": path, "<id> identical": bool}``: whether each replayed
    image is byte-identical (as pixels) to the stored one.  Unknown ids raise ``ValueError``.
    """
    out = Path(out)
    if not (out / "run.json").is_file():
        raise ValueError(f"{out}: not a generation output directory (no run.json)")
    run = json.loads((out / "run.json").read_text())
    index_path = Path(index) if index else Path(run["index"])
    if not index_path.is_absolute() and not index_path.exists():
        index_path = out / index_path
    wanted = {int(str(i).lstrip("0") or 0) for i in ids}
    lines = _manifest_lines(out, wanted)
    missing = sorted(wanted - set(lines))
    if missing:
        raise ValueError(f"{out / 'manifest.jsonl'}: no sample(s) {missing}")
    dest = Path(dest) if dest else out / "replay"
    dest.mkdir(parents=True, exist_ok=True)
    cache = FaceCache(load_index(index_path))
    result = {}
    for i, rec in sorted(lines.items()):
        if rec.get("status") != "ok":
            raise ValueError(f"sample {rec['id']} was skipped during generation: {rec.get('reason')}")
        images = dict(zip(("real", "fake", "mask"), render(rec["plan"], cache)))
        same = True
        for kind, img in images.items():
            path = dest / f"{rec['id']}_{kind}.png"
            cv2.imwrite(str(path), img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
            stored = cv2.imread(str(out / rec[kind]), cv2.IMREAD_UNCHANGED)
            stored = stored if stored.ndim == 2 else cv2.cvtColor(stored, cv2.COLOR_BGR2RGB)
            same &= bool(np.array_equal(stored, img))
            result[f"{rec['id']} {kind}"] = str(path)
        result[f"{rec['id']} identical"] = same
    return result
