"""The generation job's worker side: the task that makes one chunk of samples.

A worker process plans, renders and writes every sample of its chunk (:func:`make_chunk`;
faces are loaded and cropped once per process, see :func:`worker_state`, or once per run
through the face store of :mod:`synth.facestore` when faces recur often) and returns the
chunk's manifest lines. A sample that cannot be made from its input is a ``"skipped"`` line
(:data:`SKIP_ERRORS`), not an error.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from synth import writer
from synth._libc import restore_dynamic_thresholds
from synth.facestore import FaceStore
from synth.index import load_index
from synth.io import ImageReadError
from synth.pool import FacePool
from synth.recipe import Recipe
from synth.render import DegenerateSample, FaceCache, real_is_crop
from synth.visibility import plan_and_render

__all__ = ["Chunk", "ChunkResult", "SKIP_ERRORS", "make_chunk", "worker_state", "prefetch_swap_partners"]

#: Exceptions that mean "this sample's input is bad": recorded as skipped, the run goes on.
#: ``ImageReadError`` (a source unreadable at generation time) and the ``DegenerateSample``
#: raised by render (and its ``InvisibleFake`` subclass: no plan of the sample passed the
#: recipe's ``min_visible``) are both ``ValueError`` subclasses; ops raise ``ValueError`` on
#: inputs they cannot handle. Anything else is a bug and stops the run.
SKIP_ERRORS: tuple[type[BaseException], ...] = (ImageReadError, DegenerateSample, ValueError)

#: Faces kept decoded and cropped per worker process: about 0.5 MB each at 256 px with the
#: occlusion map. Large pools get few hits anyway (each face is a target once per pass),
#: small pools (up to this size) are cached whole.
_FACE_CACHE_ITEMS = 128


@dataclass(frozen=True)
class Chunk:
    """Everything a worker needs to make samples ``[start, stop)``."""

    out: str
    index_path: str
    index_hash: str
    recipe: Recipe
    seed: int
    size: int
    weights: Mapping[str, float] | None
    start: int
    stop: int
    store: str | None = None  # FaceStore root shared by the run's workers (None: per-process cache only)
    sync: bool = True  # flush the chunk's files before returning (False: the parent does it)


@dataclass(frozen=True)
class ChunkResult:
    start: int
    stop: int
    lines: list[str]
    skipped: list[dict]  # {"i", "file", "reason", "reason_kind"}


# Deliberate per-process cache: (index path, index hash, store) -> (pool, face cache), built
# on first use in each worker process so the pool is loaded once per process.
_WORKER_STATE: dict[tuple[str, str, str | None], tuple[FacePool, FaceCache]] = {}
_WORKER_LOCK = threading.Lock()  # dask workers may run several threads


def worker_state(index_path: str, index_hash: str = "", store: str | None = None) -> tuple[FacePool, FaceCache]:
    """This process's (pool, face cache) for the index at ``index_path``, built on first use."""
    key = (index_path, index_hash, store)  # the hash: an index rebuilt in place is a new one
    with _WORKER_LOCK:
        state = _WORKER_STATE.get(key)
        if state is None:
            import cv2

            cv2.setNumThreads(1)  # one worker per core already; OpenCV threads only contend
            restore_dynamic_thresholds()  # undo dask's fixed malloc thresholds (see synth/_libc.py)
            _WORKER_STATE.clear()  # a process serves one run at a time
            pool = FacePool.from_index(load_index(index_path))
            faces = FaceCache(pool, max_items=_FACE_CACHE_ITEMS, store=FaceStore(store) if store else None)
            state = _WORKER_STATE[key] = (pool, faces)
        return state


def _relative_message(exc: BaseException, root: str) -> str:
    """Exception text without the source root, so manifest lines hold no absolute paths."""
    msg = str(exc)
    prefix = root.rstrip("/") + "/"
    return msg.replace(prefix, "") if root else msg


def prefetch_swap_partners(pool, recipe, indices, seed: int) -> None:
    """Find the swap partners of the targets of samples ``indices`` in one batched query
    (same result as one query per swap, ~5x less work; self-paired targets cost a little extra)."""
    if "swap" in recipe.spec["pairing"] and len(pool) > 1:
        pool.prefetch_neighbours({pool.target_for(i, seed) for i in indices}, recipe.spec["swap"]["k_nearest"])


def make_chunk(chunk: Chunk) -> ChunkResult:
    """Worker task: plan, render and write samples ``[chunk.start, chunk.stop)``."""
    pool, faces = worker_state(chunk.index_path, chunk.index_hash, chunk.store)
    prefetch_swap_partners(pool, chunk.recipe, range(chunk.start, chunk.stop), chunk.seed)
    lines, skipped = [], []
    for i in range(chunk.start, chunk.stop):
        sid = writer.sample_id(i)
        try:
            plan, real, fake, mask = plan_and_render(chunk.recipe, pool, faces, i, chunk.seed, chunk.size,
                                                     chunk.weights)
        except SKIP_ERRORS as exc:
            plan = getattr(exc, "plan", None)
            if plan is None:  # planning failed, not the sample's input: a bug
                raise
            bad = getattr(exc, "path", None)
            file = _relative_message(Path(bad), pool.root) if bad else plan["target"]
            record = {"i": i, "id": sid, "status": "skipped", "reason_kind": type(exc).__name__,
                      "reason": _relative_message(exc, pool.root), "file": file,
                      "target_id": plan["target"], "source_id": plan["source"], "plan": plan}
            skipped.append({k: record[k] for k in ("i", "file", "reason", "reason_kind")})
            lines.append(writer.dumps_line(record))
            continue
        # the real is the untouched crop: its PNG is encoded once per run in the face store
        encoded = ({"real": faces.crop_png(plan["target"], plan["size"], plan["crop_scale"])}
                   if faces.store is not None and real_is_crop(plan) else None)
        rel = writer.write_sample(chunk.out, i, real, fake, mask, fsync=False, encoded=encoded)
        record = {"i": i, "id": sid, "label": 1, **rel, "target_id": plan["target"],
                  "source_id": plan["source"], "status": "ok", "plan": plan}
        lines.append(writer.dumps_line(record))
    if chunk.sync:
        writer.sync_outputs(chunk.out)  # the parent appends these lines only after this
    return ChunkResult(chunk.start, chunk.stop, lines, skipped)
