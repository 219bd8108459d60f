"""The index job: landmarks, face box and status for every image under a directory.

Layout of an index directory ``OUT``::

    OUT/meta.json            {"format": "synth-index", "version": 1, "root": <abs src dir>, ...}
    OUT/part-00000.npz       one per chunk: records (JSON text) + landmarks (n, 468, 2) float32
    OUT/part-00001.npz ...

Every chunk of files is written as one part, atomically (temporary file, fsync, rename),
as soon as it is done, so a killed run loses at most the chunks in flight and a rerun only
processes files that no part holds yet, or whose size / modification time changed (the
newer record wins when loading). A file that cannot even be stat'ed (a dangling or
self-looping symbolic link) is recorded as unreadable once and skipped on every rerun while
it stays that way.

Which files: every regular file under the source directory (recursively, sorted; hidden
files and directories and the index directory itself are skipped). Files whose extension
is in :data:`synth.io.IMAGE_EXTENSIONS` get a record; other files are not images and are
only counted and listed in the summary (``non_image``), not recorded.

Record (one per image file, plain JSON): ``relpath`` (POSIX, relative to the root),
``status`` (``"ok"``, ``"no_face"`` or ``"unreadable"``), ``reason`` (why it is not ok, else
None), ``width``/``height`` (None if unreadable), ``box`` [x0, y0, x1, y1] (None unless ok),
``n_faces``, ``padded`` (face found only after padding), ``size`` (bytes) and ``mtime_ns``.
"""
from __future__ import annotations

import io
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .face import N_LANDMARKS, get_detector
from .io import IMAGE_EXTENSIONS, ImageReadError, read_image, write_bytes_atomic

log = logging.getLogger(__name__)

__all__ = ["build_index", "load_index", "Index", "scan_files", "STATUSES"]

FORMAT, VERSION = "synth-index", 1
STATUSES = ("ok", "no_face", "unreadable")
_PART_GLOB = "part-*.npz"


def scan_files(src_dir, skip: Path | None = None) -> tuple[list[str], list[str]]:
    """Sorted POSIX relpaths under ``src_dir``: (image files, other files).

    Hidden entries (name starting with ".") and the directory ``skip`` are left out.
    """
    root = Path(src_dir)
    skip = skip.resolve() if skip is not None else None
    images, others = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        dirnames[:] = sorted(n for n in dirnames if not n.startswith(".")
                             and (skip is None or (d / n).resolve() != skip))
        for name in filenames:
            if name.startswith("."):
                continue
            rel = (d / name).relative_to(root).as_posix()
            (images if Path(name).suffix.lower() in IMAGE_EXTENSIONS else others).append(rel)
    return sorted(images), sorted(others)


def _process_one(root: Path, rel: str) -> tuple[dict, np.ndarray]:
    path = root / rel
    rec = {"relpath": rel, "status": "unreadable", "reason": None, "width": None, "height": None,
           "box": None, "n_faces": 0, "padded": False, "size": None, "mtime_ns": None}
    lm = np.full((N_LANDMARKS, 2), np.nan, np.float32)
    try:
        st = path.stat()
    except OSError as err:  # vanished or unreadable since the scan, a dangling or looping symlink
        link = "broken symbolic link: " if path.is_symlink() else ""
        rec["reason"] = f"{link}cannot stat file ({err.strerror or err})"
        return rec, lm
    rec.update(size=st.st_size, mtime_ns=st.st_mtime_ns)
    try:
        img = read_image(path)
    except ImageReadError as err:
        rec["reason"] = err.reason
        return rec, lm
    rec["height"], rec["width"] = int(img.shape[0]), int(img.shape[1])
    face = get_detector().detect(img)
    if face is None:
        rec.update(status="no_face", reason="no face detected")
        return rec, lm
    rec.update(status="ok", box=[round(v, 3) for v in face.box], n_faces=face.n_faces, padded=face.padded)
    return rec, face.landmarks


def _process_chunk(root: str, part_id: int, relpaths: list[str]) -> tuple[int, list[dict], np.ndarray]:
    """Worker: process a chunk of files (one per-process detector)."""
    root_p = Path(root)
    recs, lms = [], []
    for rel in relpaths:
        rec, lm = _process_one(root_p, rel)
        recs.append(rec)
        lms.append(lm)
    return part_id, recs, np.stack(lms) if lms else np.empty((0, N_LANDMARKS, 2), np.float32)


def _is_current(root: Path, rel: str, record: dict | None) -> bool:
    """Whether ``record`` (None: not indexed yet) still describes the file ``rel``: same size and
    modification time, or, for a file that could not be stat'ed when indexed (a dangling or
    self-looping symbolic link, say), one that still cannot be: it stays unreadable, once."""
    if record is None:
        return False
    try:
        st = (root / rel).stat()
    except OSError:
        return record["size"] is None and record["mtime_ns"] is None
    return record["size"] == st.st_size and record["mtime_ns"] == st.st_mtime_ns


def _write_part(out: Path, part_id: int, records: list[dict], landmarks: np.ndarray) -> Path:
    buf = io.BytesIO()
    np.savez(buf, records=np.array(json.dumps(records)), landmarks=landmarks.astype(np.float32))
    path = out / f"part-{part_id:05d}.npz"
    write_bytes_atomic(path, buf.getvalue(), fsync=True)
    return path


def _read_parts(out: Path) -> tuple[list[dict], np.ndarray]:
    """All records of all parts, sorted by relpath (a later part's record of a relpath wins)."""
    all_recs, all_lms = [], []
    for part in sorted(out.glob(_PART_GLOB)):
        with np.load(part, allow_pickle=False) as z:
            recs = json.loads(str(z["records"]))
            lms = z["landmarks"]
        if len(recs) != len(lms):
            raise ValueError(f"{part}: {len(recs)} records but {len(lms)} landmark sets (corrupt part)")
        all_recs += recs
        all_lms.append(lms)
    latest = {r["relpath"]: i for i, r in enumerate(all_recs)}  # later index overwrites
    order = [latest[k] for k in sorted(latest)]
    lms = np.concatenate(all_lms)[order] if all_lms else np.empty((0, N_LANDMARKS, 2), np.float32)
    return [all_recs[i] for i in order], lms


def _read_meta(out: Path) -> dict:
    path = out / "meta.json"
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{out}: not an index directory (no meta.json)") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: corrupt ({err})") from None
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise ValueError(f"{path}: not a {FORMAT} v{VERSION} index (format={meta.get('format')!r}, version={meta.get('version')!r})")
    return meta


def build_index(src_dir, out, workers: int = 2, progress: bool = True, chunk_size: int = 256) -> dict:
    """Index every image under ``src_dir`` into the directory ``out`` (created); resumable.

    workers: processes (joblib/loky, one detector each); ``workers=1`` runs in this process.
    chunk_size: files per part (the unit of durability); with several workers and few files,
    smaller chunks are used so that all workers get work.
    Returns (and logs at INFO, logger ``synth.index``) a summary dict: ``total`` image files, ``processed``
    now, ``reused`` from earlier runs, counts per status, ``non_image`` count and a sample of
    names, ``removed`` (recorded files that no longer exist: still in the index), ``seconds``.
    """
    src = Path(src_dir)
    if not src.is_dir():
        raise ValueError(f"src_dir {src}: not a directory")
    if int(workers) < 1:
        raise ValueError(f"workers: expected >= 1, got {workers}")
    if int(chunk_size) < 1:
        raise ValueError(f"chunk_size: expected >= 1, got {chunk_size}")
    out = Path(out)
    root = src.resolve()
    out.mkdir(parents=True, exist_ok=True)
    meta_path = out / "meta.json"
    if meta_path.exists():
        meta = _read_meta(out)
        if Path(meta["root"]) != root:
            raise ValueError(f"{out}: index of {meta['root']}, not of {root}; use another --out")
    else:
        meta = {"format": FORMAT, "version": VERSION, "root": str(root), "n_landmarks": N_LANDMARKS,
                "landmarks": "mediapipe face mesh, pixel coordinates, pixel centres at integers",
                "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
        write_bytes_atomic(meta_path, json.dumps(meta, indent=1).encode(), fsync=True)

    t0 = time.perf_counter()
    images, others = scan_files(root, skip=out)
    done, _ = _read_parts(out)
    done_by = {r["relpath"]: r for r in done}
    todo = [rel for rel in images if not _is_current(root, rel, done_by.get(rel))]
    existing = [int(p.stem.split("-")[1]) for p in out.glob(_PART_GLOB)]
    next_id = max(existing, default=-1) + 1
    workers = int(workers)
    csize = int(chunk_size)
    if workers > 1 and todo:  # few files: smaller chunks so that every worker gets some
        csize = max(1, min(csize, math.ceil(len(todo) / (4 * workers))))
    chunks = [(next_id + k, todo[i:i + csize]) for k, i in enumerate(range(0, len(todo), csize))]

    bar = None
    if progress and todo:
        from tqdm import tqdm
        bar = tqdm(total=len(todo), unit="img", desc="index", smoothing=0.1)
    if workers == 1 or len(chunks) <= 1:
        results = (_process_chunk(str(root), pid, rels) for pid, rels in chunks)
    else:
        from joblib import Parallel, delayed
        results = Parallel(n_jobs=min(workers, len(chunks)), backend="loky", return_as="generator_unordered")(
            delayed(_process_chunk)(str(root), pid, rels) for pid, rels in chunks)
    for pid, recs, lms in results:
        _write_part(out, pid, recs, lms)
        if bar is not None:
            bar.update(len(recs))
    if bar is not None:
        bar.close()

    records, _ = _read_parts(out)
    present = set(images)
    counts = {s: 0 for s in STATUSES}
    for r in records:
        if r["relpath"] in present:
            counts[r["status"]] += 1
    summary = {"root": str(root), "index": str(out), "total": len(images), "processed": len(todo),
               "reused": len(images) - len(todo), **counts, "non_image": len(others),
               "non_image_examples": others[:20], "removed": sum(r["relpath"] not in present for r in records),
               "seconds": round(time.perf_counter() - t0, 3)}
    log.info("index %s: %d images (%d processed, %d reused): %d ok, %d no_face, %d unreadable; "
             "%d non-image files skipped; %s s", out, summary["total"], summary["processed"], summary["reused"],
             counts["ok"], counts["no_face"], counts["unreadable"], summary["non_image"], summary["seconds"])
    return summary


@dataclass
class Index:
    """A loaded index (see :func:`load_index`).

    root: source directory; records: list of record dicts sorted by relpath; ok: bool (N,);
    paths: absolute paths (list of str: building 10k Path objects costs 0.3 s);
    landmarks: float32 (N, 468, 2), NaN unless ok;
    boxes: float32 (N, 4) (x0, y0, x1, y1), NaN unless ok; meta: the meta.json dict.
    """

    root: Path
    records: list
    ok: np.ndarray
    paths: list
    landmarks: np.ndarray
    boxes: np.ndarray
    meta: dict = field(default_factory=dict)
    _pos: dict | None = field(default=None, init=False, repr=False)

    def __len__(self) -> int:
        return len(self.records)

    def ok_indices(self) -> np.ndarray:
        """Indices (int64) of the records with status ``"ok"``."""
        return np.flatnonzero(self.ok)

    def find(self, relpath: str) -> int:
        """Position of ``relpath`` in the index; ``KeyError`` if absent."""
        if self._pos is None:
            self._pos = {r["relpath"]: i for i, r in enumerate(self.records)}
        return self._pos[relpath]


def load_index(out) -> Index:
    """Load the index directory ``out`` written by :func:`build_index`."""
    out = Path(out)
    meta = _read_meta(out)
    records, lms = _read_parts(out)
    root = Path(meta["root"])
    ok = np.array([r["status"] == "ok" for r in records], dtype=bool)
    boxes = np.full((len(records), 4), np.nan, np.float32)
    for i, r in enumerate(records):
        if r["box"] is not None:
            boxes[i] = r["box"]
    prefix = str(root) + os.sep
    return Index(root=root, records=records, ok=ok, paths=[prefix + r["relpath"] for r in records],
                 landmarks=lms.astype(np.float32, copy=False), boxes=boxes, meta=meta)
