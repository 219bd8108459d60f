"""The generation job: sample indices ``[0, n)`` -> plan -> render -> files + manifest.

:func:`generate` wires the parts, each in its own module:

* :mod:`synth.worker`: the task a worker runs on a chunk of consecutive sample indices (plan,
  render and write each sample; return its manifest lines);
* :mod:`synth.backends`: where those tasks run (``"joblib"``: loky worker processes on this
  machine; ``"serial"``: in-process, for tests and debugging; ``"dask"``: a ``distributed``
  scheduler at ``scheduler``, OUT and the index reachable from its workers under the same paths);
* :mod:`synth.scheduler`: tasks in a bounded window, finished chunks back in sample-index
  order, Ctrl-C;
* :mod:`synth.runstate`: ``run.json`` (the run's identity), the ``.lock``, the checks on OUT,
  ``report.json``;
* :mod:`synth.weights`: the choice-key weights.

The parent appends each chunk's manifest lines in sample-index order, after the chunk's files
are on disk (local backends: the parent's ``syncfs``, so workers never wait for the disk; dask:
each worker's). The manifest is therefore always a prefix of the finished run, which is what
makes the job resumable: a rerun skips the recorded prefix, re-makes the rest (overwriting any
files a crash left behind), and ends with a manifest byte-identical to an uninterrupted run.
Manifest lines hold only deterministic content (no timings, no absolute paths); timings go to
``report.json``.

A sample that cannot be made from its input (unreadable source, degenerate mask, no plan
visible enough for the recipe's ``min_visible``, ...) is recorded as ``"status": "skipped"``
with the reason and never stops the run.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from pathlib import Path
from typing import Mapping

import numpy as np

from synth import writer
from synth.backends import BACKENDS, NO_SPACE_ERRNOS, is_no_space
from synth.facestore import FaceStore
from synth.index import build_index, load_index
from synth.io import write_json_atomic
from synth.pool import FacePool
from synth.recipe import Recipe, load_recipe
from synth.runstate import (
    build_report,
    check_not_inside_src,
    check_out,
    check_run_json,
    exclusive,
    forget_refused_run,
    manifest_size,
    run_definition,
)
from synth.scheduler import StopFlag, run_in_order, sigint_handler
from synth.weights import normalise_weights, read_weights
from synth.worker import SKIP_ERRORS, Chunk, ChunkResult, make_chunk

log = logging.getLogger(__name__)

__all__ = ["generate", "read_weights", "Interrupted", "NO_SPACE_ERRNOS", "SKIP_ERRORS", "BACKENDS", "DEFAULT_SOURCE",
           "FACE_STORE_MIN_USES", "MIN_SIZE", "MAX_SIZE"]

#: Range of the output side in pixels (a face crop is resized to it; beyond MAX_SIZE every
#: sample would cost seconds and hundreds of MB).
MIN_SIZE, MAX_SIZE = 32, 4096

#: Embedded default source: scikit-image's astronaut (public domain), one face.
DEFAULT_SOURCE = "skimage:astronaut"

#: ``face_store="auto"`` uses the run-wide face store when every face is drawn at least this
#: many times (n >= this x pool size): storing a face costs about as much CPU as deriving it
#: twice, so the store only saves work when each face is drawn a few times.
FACE_STORE_MIN_USES = 3


class Interrupted(KeyboardInterrupt):
    """Raised by :func:`generate` after SIGINT once the manifest is consistent."""


def _default_source(out: Path) -> Path:
    """Write the embedded default face (once) under OUT/default-src and return that directory."""
    src = out / "default-src"
    path = src / "astronaut.png"
    if not path.exists():
        from skimage import data

        from synth.io import write_png_atomic

        src.mkdir(parents=True, exist_ok=True)
        write_png_atomic(path, data.astronaut())
    return src


def _resolve_index(out: Path, src, index, workers: int, progress: bool) -> tuple[Path, str | None]:
    """Return (index directory, source description) for the run, building the index if needed."""
    if index is not None:
        return Path(index), None
    source_dir = Path(src) if src is not None else _default_source(out)
    build_index(source_dir, out / "index", workers=workers, progress=progress)
    return out / "index", (str(Path(src).resolve()) if src is not None else DEFAULT_SOURCE)


def _check_pairing(recipe: Recipe, weights, pool: FacePool, index_path: Path) -> None:
    pairing = dict(recipe.spec.get("pairing", {"self": 1}))
    self_weight = float(pairing.get("self", 0)) * float((weights or {}).get("pairing=self", 1.0))
    if len(pool) < 2 and self_weight <= 0:
        raise ValueError(f"recipe {recipe.name!r} makes face swaps only, which need at least 2 usable faces, "
                         f"but index {index_path} has {len(pool)}; index more faces (--src DIR) "
                         f"or use a recipe with self-blends")


def _face_store(out: Path, index_hash: str) -> FaceStore:
    """The run's shared store of per-face work: ``OUT/cache/faces-INDEXHASH``."""
    return FaceStore(out / "cache" / f"faces-{index_hash}")


def _chunk_size(remaining: int, slots: int) -> int:
    # Small enough that every worker gets several chunks and Ctrl-C drains quickly (about
    # 2 chunks per worker are in flight), large enough that task overhead stays negligible.
    return max(1, min(64, math.ceil(remaining / (4 * slots))))


def generate(out, n: int, recipe: str | Recipe = "mixed", src=None, index=None, size: int = 256, seed: int = 0,
             workers: int = 2, weights: Mapping[str, float] | None = None, backend: str = "joblib",
             scheduler: str | None = None, progress: bool = True, face_store: str = "auto",
             force: bool = False) -> dict:
    """Generate samples ``[0, n)`` of ``recipe`` into ``out``; resume if ``out`` holds part of this run.

    Faces come from ``index`` (a ``synth index`` directory), or ``src`` (a directory of
    images, indexed into ``out/index`` first, resumably), or, with neither, the embedded
    default face (scikit-image's astronaut: a single face, so self-blends only).
    ``weights`` multiplies the recipe's choice probabilities by choice key
    (:func:`synth.recipe.choice_keys`). ``backend``: ``"joblib"`` (``workers`` processes),
    ``"serial"`` or ``"dask"`` (``scheduler`` address). ``face_store``: ``"on"`` derives each
    face's crop, occlusion map and PNG once for all workers (:mod:`synth.facestore`, in
    ``out/cache/`` until the run is complete), ``"off"`` once per worker cache, ``"auto"``
    (default) turns it on when faces recur at least :data:`FACE_STORE_MIN_USES` times
    (n >= that x pool size); outputs are the same either way.

    Writes ``out/real|fake|mask/SSS/IIIIII.png``, ``out/manifest.jsonl``, ``out/run.json`` and
    ``out/report.json`` and returns the report dict. Raises ``ValueError`` when ``out`` holds a
    different run (naming the differing key), holds files but is not a run (no ``run.json``;
    ``force=True`` generates into it all the same, overwriting files of the same names) or an
    argument is invalid (also: ``out`` inside ``src``), and :class:`Interrupted` after SIGINT (the manifest stays consistent;
    rerun to continue). A refused call leaves no ``.lock`` or ``run.json`` behind.
    ``progress`` shows progress bars; the summary line ("generated ...", "nothing to do") is
    logged at INFO (logger ``synth.generate``), the first SIGINT's notice at WARNING.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend: unknown {backend!r}; known: {', '.join(BACKENDS)}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n: expected an integer >= 0, got {n!r}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"size: expected an integer in [{MIN_SIZE}, {MAX_SIZE}], got {size!r}")
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ValueError(f"workers: expected an integer >= 1, got {workers!r}")
    if face_store not in ("auto", "on", "off"):
        raise ValueError(f"face_store: expected 'auto', 'on' or 'off', got {face_store!r}")
    if index is not None and src is not None:
        raise ValueError("give either src (a directory of faces, indexed into OUT/index) or index, not both")
    n, size, seed, workers = int(n), int(size), int(seed), int(workers)
    weights = normalise_weights(weights)
    rec = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    out = Path(out)
    check_not_inside_src(out, src)
    check_out(out, force)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        with exclusive(out):
            new_run = not (out / "run.json").exists()
            size_before = manifest_size(out)
            try:
                return _generate_locked(out, n, rec, src, index, size, seed, workers, weights, backend, scheduler,
                                        progress, face_store)
            except (ValueError, FileNotFoundError):  # refused: no run.json left to claim OUT
                if new_run:
                    forget_refused_run(out, size_before)
                raise
    finally:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()


def _generate_locked(out: Path, n: int, rec: Recipe, src, index, size: int, seed: int, workers: int,
                     weights, backend: str, scheduler, progress: bool, face_store: str) -> dict:
    t0 = time.perf_counter()
    index_path, source = _resolve_index(out, src, index, workers, progress)
    faces = load_index(index_path)
    pool = FacePool.from_index(faces)
    # files the index left out (no face, unreadable): in the report beside the skipped samples
    index_skipped = [{"file": r["relpath"], "status": r["status"], "reason": r["reason"]}
                     for r in faces.records if r["status"] != "ok"]
    _check_pairing(rec, weights, pool, index_path)
    try:  # inside OUT: store it relative, so OUT can be moved as a whole
        index_str = index_path.resolve().relative_to(out.resolve()).as_posix()
    except ValueError:
        index_str = str(index_path.resolve())
    definition = run_definition(rec, seed, size, n, index_str, pool, source, weights)
    check_run_json(out, json.loads(json.dumps(definition)))
    t_gen = time.perf_counter()

    manifest_path = out / "manifest.jsonl"
    state = writer.scan_manifest(manifest_path)
    if state.next_i > n:
        raise ValueError(f"{manifest_path}: holds {state.next_i} samples but n={n}")
    report_path = out / "report.json"
    if state.next_i == n and report_path.exists():
        log.info("%s: all %d samples done; nothing to do", out, n)
        return json.loads(report_path.read_text())

    first = state.next_i
    resolved_index = str(index_path.resolve())
    abs_out = str(out.resolve())
    stop = StopFlag()
    bar = None
    if progress and first < n:
        from tqdm import tqdm

        bar = tqdm(total=n, initial=first, unit="sample", desc="generate", smoothing=0.05)

    # Faces recur in a run longer than the pool: derive each once for all workers (the store
    # lives in OUT, which every backend's workers reach, and goes when the run is complete).
    use_store = face_store == "on" or (face_store == "auto" and n >= FACE_STORE_MIN_USES * len(pool))
    store = _face_store(out, definition["index_hash"]) if use_store else None
    no_space = None  # the OSError that stopped the run when the disk (or quota) is full
    try:
        with open(manifest_path, "ab") as manifest, sigint_handler(stop), BACKENDS[backend](workers, scheduler) as be:
            _generate_chunks(out, be, manifest, rec, definition, resolved_index, abs_out, store, seed, size, weights,
                             first, n, state, bar, stop)
    except OSError as exc:  # a worker's write, the parent's flush or manifest append
        if not is_no_space(exc):
            raise
        no_space = exc
    if bar is not None:
        bar.close()

    now = time.perf_counter()
    wall, gen_wall = now - t0, now - t_gen
    made = state.next_i - first
    report = build_report(state, definition, index_skipped, made, wall, gen_wall, backend, workers)
    if no_space is not None:
        with contextlib.suppress(OSError):  # the disk may have no room for the report either
            write_json_atomic(report_path, {**report, "stopped": f"no space left on device ({no_space})"})
        where = f" writing {no_space.filename}" if no_space.filename else ""
        raise OSError(no_space.errno, f"no space left on device{where}: {state.next_i} of {n} samples done and "
                                      f"kept; free some space and rerun the same command to continue") from no_space
    write_json_atomic(report_path, report)
    if not report["complete"]:
        raise Interrupted(f"interrupted: {state.next_i} done, rerun the same command to continue")
    writer.sweep_tmp(out)
    if store is not None:
        store.remove()
    log.info("generated %d samples in %.1f s (%s/s); %d total: %d ok, %d skipped%s", made, gen_wall,
             report["rate_per_s"], n, state.n_ok, state.n_skipped,
             f" {report['skip_reasons']}" if state.n_skipped else "")
    return report


def _generate_chunks(out: Path, be, manifest, rec: Recipe, definition: dict, resolved_index: str, abs_out: str,
                     store: FaceStore | None, seed: int, size: int, weights, first: int, n: int,
                     state: writer.ManifestState, bar, stop: StopFlag) -> None:
    """Make samples ``[first, n)`` on backend ``be``, appending their lines to ``manifest`` in order
    and counting them in ``state``."""
    csize = _chunk_size(n - first, be.slots)
    # Local workers leave the flush to this (otherwise idle) process: one syncfs per batch
    # of finished chunks instead of one blocking each worker per chunk.
    chunks = (Chunk(abs_out, resolved_index, definition["index_hash"], rec, seed, size, weights,
                    s, min(s + csize, n), store=str(store.root.resolve()) if store else None,
                    sync=not be.local)
              for s in range(first, n, csize))

    def on_result(results: list[ChunkResult]) -> None:
        if be.local:
            writer.sync_outputs(out)  # the lines below name files that are now on disk
        writer.append_lines(manifest, [line for result in results for line in result.lines])
        for result in results:
            for record in result.skipped:
                state.n_skipped += 1
                state.skipped.append({k: record[k] for k in ("i", "file", "reason")})
                state.reasons[record["reason_kind"]] = state.reasons.get(record["reason_kind"], 0) + 1
            state.n_ok += (result.stop - result.start) - len(result.skipped)
            state.next_i = result.stop
            if bar is not None:
                bar.update(result.stop - result.start)

    run_in_order(be, make_chunk, chunks, first, on_result, stop)
