"""Output layout of a generation run: sample files, ``manifest.jsonl`` and JSON side files.

Layout (``OUT`` = the run directory)::

    OUT/real/000/000123.png   OUT/fake/000/000123.png   OUT/mask/000/000123.png
    OUT/manifest.jsonl        one JSON object per line, ascending sample index

The shard directory is ``i // 10000`` (3 digits), so no directory holds more than 10,000
files; the file stem is the sample index zero-padded to 6 digits (more for i >= 10**6).

Every file is written atomically (encode in memory, temporary file, ``os.replace``; see
:func:`synth.io.write_bytes_atomic`, PNG from :func:`synth.png.encode_png`) and flushed to disk (``fsync``, or one
:func:`sync_outputs` per chunk), and a manifest line is appended only after the files it
names are on disk, so after a crash the manifest is always a
prefix of the finished run: a resumed run re-makes the samples after that prefix and
overwrites whatever partial files they left.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from synth._libc import libc_function
from synth.io import write_bytes_atomic
from synth.png import encode_png

__all__ = ["KINDS", "SHARD_SIZE", "sample_id", "sample_paths", "encode_image", "write_sample", "sync_outputs",
           "dumps_line", "ManifestState", "scan_manifest", "iter_manifest", "record_index", "record_files",
           "append_lines", "sweep_tmp"]

#: The three images of a sample, in the order they are written.
KINDS = ("real", "fake", "mask")
#: Files per shard directory.
SHARD_SIZE = 10_000


def sample_id(i: int) -> str:
    """File stem of sample ``i``: zero-padded to 6 digits (``123 -> "000123"``)."""
    if i < 0:
        raise ValueError(f"sample index must be >= 0, got {i}")
    return f"{int(i):06d}"


def sample_paths(i: int) -> dict[str, str]:
    """Relative POSIX paths of sample ``i``'s files: ``{"real": "real/000/000123.png", ...}``."""
    shard = f"{int(i) // SHARD_SIZE:03d}"
    stem = sample_id(i)
    return {kind: f"{kind}/{shard}/{stem}.png" for kind in KINDS}


def encode_image(kind: str, image: np.ndarray) -> bytes:
    """The PNG bytes a run writes for one of a sample's images (``kind`` in :data:`KINDS`):
    masks run-length coded, photos Huffman-only (:func:`synth.png.encode_png`)."""
    return encode_png(image, strategy="rle" if kind == "mask" else "huffman")


def write_sample(out, i: int, real: np.ndarray, fake: np.ndarray, mask: np.ndarray,
                 fsync: bool = True, encoded: Mapping[str, bytes] | None = None) -> dict[str, str]:
    """Write sample ``i`` (real, fake uint8 SxSx3 RGB; mask uint8 SxS) under ``out``.

    Returns the relative paths (:func:`sample_paths`). Shard directories are created on
    demand. Each file is written atomically, so a reader never sees a half-written PNG.
    ``fsync=False`` leaves flushing to a later :func:`sync_outputs` (the job does one per chunk).
    ``encoded``: PNG bytes already made for some kinds (``{"real": ...}``; they must be
    :func:`encode_image` of that image), written as they are.
    """
    out = Path(out)
    rel = sample_paths(i)
    for kind, image in zip(KINDS, (real, fake, mask)):
        path = out / rel[kind]
        path.parent.mkdir(parents=True, exist_ok=True)
        data = encoded.get(kind) if encoded else None
        write_bytes_atomic(path, encode_image(kind, image) if data is None else data, fsync=fsync)
    return rel


_SYNCFS = libc_function("syncfs")


def sync_outputs(out) -> None:
    """Flush every file written under ``out`` to disk.

    One ``syncfs`` of the output file system per chunk instead of an ``fsync`` per file
    (3 per sample): the same guarantee for the manifest (its lines are appended only after
    this returns) at a fraction of the cost. Falls back to ``os.sync()`` without syncfs.
    """
    if _SYNCFS is None:
        os.sync()
        return
    fd = os.open(out, os.O_RDONLY)
    try:
        if _SYNCFS(fd) != 0:
            import ctypes

            err = ctypes.get_errno()
            raise OSError(err, f"syncfs({out}) failed: {os.strerror(err)}")
    finally:
        os.close(fd)


def dumps_line(record: Mapping[str, Any]) -> str:
    """One manifest line (compact JSON + newline). Deterministic for a given dict."""
    return json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n"


@dataclass
class ManifestState:
    """What a manifest already holds: samples ``[0, next_i)`` are recorded."""

    next_i: int = 0
    n_ok: int = 0
    n_skipped: int = 0
    skipped: list[dict] = field(default_factory=list)  # {"i", "file", "reason"}
    reasons: dict[str, int] = field(default_factory=dict)  # reason kind -> count

    def add(self, record: Mapping[str, Any]) -> None:
        """Count one manifest record (which must be sample ``next_i``)."""
        if record.get("i") != self.next_i:
            raise ValueError(f"manifest: expected sample {self.next_i}, found {record.get('i')!r} "
                             f"(lines must be in ascending sample order without gaps)")
        self.next_i += 1
        if record.get("status") == "ok":
            self.n_ok += 1
            return
        self.n_skipped += 1
        self.skipped.append({"i": record["i"], "file": record.get("file"), "reason": record.get("reason")})
        kind = record.get("reason_kind", "unknown")
        self.reasons[kind] = self.reasons.get(kind, 0) + 1


def scan_manifest(path, truncate: bool = True) -> ManifestState:
    """Read the manifest at ``path`` (missing = empty) and count what it holds.

    A trailing line without its newline is the remnant of an interrupted append: it is cut
    off (``truncate=True``) so the next append starts on a clean line. Any other malformed
    line, or lines out of order, raise ``ValueError`` naming the file and line number.
    """
    path = Path(path)
    state = ManifestState()
    if not path.exists():
        return state
    good_bytes = 0
    for lineno, nbytes, record in _manifest_lines(path):
        try:
            state.add(record)
        except ValueError as e:
            raise ValueError(f"{path}:{lineno}: {e}") from None
        good_bytes += nbytes
    if truncate and path.stat().st_size != good_bytes:
        with open(path, "r+b") as f:
            f.truncate(good_bytes)
            f.flush()
            os.fsync(f.fileno())
    return state


def _manifest_lines(path) -> Iterator[tuple[int, int, dict]]:
    """``(line number, bytes, record)`` per complete line; a trailing line without its newline (an
    interrupted append) ends the iteration. A line that is not a JSON object raises ``ValueError``
    naming ``path:line``."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.endswith(b"\n"):
                break  # partial last line of an interrupted run
            try:
                record = json.loads(raw)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not a JSON line ({e})") from None
            except UnicodeDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not a JSON line (not UTF-8 text: {e.reason})") from None
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{lineno}: not a JSON object (found {type(record).__name__})")
            yield lineno, len(raw), record


def iter_manifest(path) -> Iterator[tuple[int, dict]]:
    """Yield ``(line number, record)`` for the complete lines of a manifest, one at a time
    (memory stays flat). A line that is not a JSON object raises ``ValueError`` naming
    ``path:line``; check the fields of a record with :func:`record_index` and :func:`record_files`."""
    for lineno, _, record in _manifest_lines(path):
        yield lineno, record


def _short(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters (a tampered field may be huge)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def record_index(record: Mapping[str, Any], where: str) -> int:
    """Sample index of a manifest ``record`` read back from disk, checked as data.

    ``i`` must be an integer >= 0 and ``id`` the run's own id for it (:func:`sample_id`), so an
    id can name no other file than the sample's. ``where`` (``"path:line"``) starts the
    ``ValueError`` raised otherwise.
    """
    i = record.get("i")
    if isinstance(i, bool) or not isinstance(i, int) or i < 0:
        raise ValueError(f"{where}: 'i' must be a sample index (an integer >= 0), got {_short(i)}")
    if record.get("id") != sample_id(i):
        raise ValueError(f"{where}: 'id' must be {sample_id(i)!r} (the id of sample {i}), got {_short(record.get('id'))}")
    return i


def record_files(out, record: Mapping[str, Any], where: str) -> dict[str, Path]:
    """Paths of the images of an ``ok`` manifest ``record`` of the run in ``out``, checked as data.

    Each of :data:`KINDS` must be a relative path that resolves (symbolic links followed)
    inside ``out``; a path that is absolute, missing or leads out of the run raises
    ``ValueError`` starting with ``where`` (``"path:line"``).
    """
    out = Path(out)
    root = Path(os.path.realpath(out))
    paths = {}
    for kind in KINDS:
        rel = record.get(kind)
        if not isinstance(rel, str) or not rel or "\0" in rel or Path(rel).is_absolute() or \
                not Path(os.path.realpath(root / rel)).is_relative_to(root):
            raise ValueError(f"{where}: {kind!r} must be a path inside the run {out}, got {_short(rel)}")
        paths[kind] = out / rel
    return paths


def append_lines(f, lines) -> None:
    """Append manifest ``lines`` (strings ending in newline) to the open binary file ``f``, durably."""
    f.write("".join(lines).encode())
    f.flush()
    os.fsync(f.fileno())


def sweep_tmp(out) -> int:
    """Delete temporary files left in the shard directories by killed writers; return how many."""
    removed = 0
    for kind in KINDS:
        base = Path(out) / kind
        if not base.is_dir():
            continue
        for shard in os.scandir(base):
            if not shard.is_dir():
                continue
            for entry in os.scandir(shard.path):
                if entry.name.startswith(".") and entry.name.endswith(".tmp"):
                    os.unlink(entry.path)
                    removed += 1
    return removed
