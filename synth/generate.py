"""The generation job: sample indices ``[0, n)`` -> plan -> render -> files + manifest.

Work is cut into chunks of consecutive sample indices. A worker process plans, renders
and writes every sample of its chunk (faces are loaded and cropped once per process, see
:func:`_worker_state`, or once per run through the face store of :mod:`synth.facestore`
when faces recur often) and returns the chunk's manifest lines; the parent appends them in
sample-index order, after the chunk's files are on disk (local backends: the parent's
``syncfs``, so workers never wait for the disk; dask: each worker's). The manifest is therefore always
a prefix of the finished run, which is what makes the job resumable: a rerun skips the
recorded prefix, re-makes the rest (overwriting any files a crash left behind), and ends
with a manifest byte-identical to an uninterrupted run. Manifest lines hold only
deterministic content (no timings, no absolute paths); timings go to ``report.json``.

A sample that cannot be made from its input (unreadable source, degenerate mask, no plan
visible enough for the recipe's ``min_visible``, ...) is recorded as ``"status": "skipped"``
with the reason and never stops the run.

Backends (``backend=``): ``"joblib"`` (loky worker processes on this machine), ``"serial"``
(in-process; tests, debugging) and ``"dask"`` (a ``distributed`` scheduler at ``scheduler``;
OUT and the index must be reachable from the workers under the same paths).
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import math
import os
import platform
import signal
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future
from concurrent.futures import wait as futures_wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from synth import writer
from synth._libc import restore_dynamic_thresholds
from synth.facestore import FaceStore
from synth.index import build_index, load_index
from synth.io import ImageReadError
from synth.pool import FacePool
from synth.recipe import CHOICE_KINDS, Recipe, load_recipe, weight_keys
from synth.render import DegenerateSample, FaceCache
from synth.visibility import plan_and_render

log = logging.getLogger(__name__)

__all__ = ["generate", "read_weights", "Interrupted", "NO_SPACE_ERRNOS", "SKIP_ERRORS", "BACKENDS", "DEFAULT_SOURCE",
           "FACE_STORE_MIN_USES", "MIN_SIZE", "MAX_SIZE"]

#: Range of the output side in pixels (a face crop is resized to it; beyond MAX_SIZE every
#: sample would cost seconds and hundreds of MB).
MIN_SIZE, MAX_SIZE = 32, 4096

#: Exceptions that mean "this sample's input is bad": recorded as skipped, the run goes on.
#: ``ImageReadError`` (a source unreadable at generation time) and the ``DegenerateSample``
#: raised by render (and its ``InvisibleFake`` subclass: no plan of the sample passed the
#: recipe's ``min_visible``) are both ``ValueError`` subclasses; ops raise ``ValueError`` on
#: inputs they cannot handle. Anything else is a bug and stops the run.
SKIP_ERRORS: tuple[type[BaseException], ...] = (ImageReadError, DegenerateSample, ValueError)

#: Embedded default source: scikit-image's astronaut (public domain), one face.
DEFAULT_SOURCE = "skimage:astronaut"

#: Keys of run.json that define the output; the others are informational.
_DEFINING = ("recipe", "recipe_hash", "seed", "size", "n", "index_hash", "weights")

#: What a run puts in OUT before its run.json (a first run interrupted while indexing leaves
#: them): an OUT holding nothing else is taken as empty.
_PRE_RUN_FILES, _PRE_RUN_DIRS = frozenset({".lock"}), frozenset({"index", "default-src"})

#: ``face_store="auto"`` uses the run-wide face store when every face is drawn at least this
#: many times (n >= this x pool size). Measured on the 2-core VM (BENCHMARKS.md): storing a
#: face costs about as much CPU as deriving it twice, a stored face saves ~3 ms per sample.
FACE_STORE_MIN_USES = 3

#: Faces kept decoded and cropped per worker process: about 0.5 MB each at 256 px with the
#: occlusion map. Large pools get few hits anyway (each face is a target once per pass),
#: small pools (up to this size) are cached whole.
_FACE_CACHE_ITEMS = 128


class Interrupted(KeyboardInterrupt):
    """Raised by :func:`generate` after SIGINT once the manifest is consistent."""


#: ``errno`` values that mean the output file system is full (ENOSPC) or the user's quota is.
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def _is_no_space(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in NO_SPACE_ERRNOS


# ------------------------------------------------------------------------- worker side

@dataclass(frozen=True)
class _Chunk:
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
class _ChunkResult:
    start: int
    stop: int
    lines: list[str]
    skipped: list[dict]  # {"i", "file", "reason", "reason_kind"}


# Deliberate per-process cache: (index path, index hash, store) -> (pool, face cache), built
# on first use in each worker process so the pool is loaded once per process.
_WORKER_STATE: dict[tuple[str, str, str | None], tuple[FacePool, FaceCache]] = {}
_WORKER_LOCK = threading.Lock()  # dask workers may run several threads


def _worker_state(index_path: str, index_hash: str = "", store: str | None = None) -> tuple[FacePool, FaceCache]:
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


def _make_chunk(chunk: _Chunk) -> _ChunkResult:
    """Worker task: plan, render and write samples ``[chunk.start, chunk.stop)``."""
    pool, faces = _worker_state(chunk.index_path, chunk.index_hash, chunk.store)
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
        # no target_degrade or post-process: the real is the untouched crop, encoded once per run
        encoded = ({"real": faces.crop_png(plan["target"], plan["size"], plan["crop_scale"])}
                   if faces.store is not None and not plan["post"] and not plan.get("target_degrade") else None)
        rel = writer.write_sample(chunk.out, i, real, fake, mask, fsync=False, encoded=encoded)
        record = {"i": i, "id": sid, "label": 1, **rel, "target_id": plan["target"],
                  "source_id": plan["source"], "status": "ok", "plan": plan}
        lines.append(writer.dumps_line(record))
    if chunk.sync:
        writer.sync_outputs(chunk.out)  # the parent appends these lines only after this
    return _ChunkResult(chunk.start, chunk.stop, lines, skipped)


# ---------------------------------------------------------------------------- backends
# A backend is a context manager yielding an object with ``slots`` (tasks it runs at once),
# ``local`` (its tasks write through this machine's kernel, so one syncfs here flushes them),
# submit(fn, arg) -> future, wait_any(futures, timeout) -> done futures,
# cancel_pending(futures) -> the ones it could cancel (not started), abort(futures).

class _SerialBackend:
    """Runs each task at submission, in this process."""

    slots = 1
    local = True  # writes to this machine's file systems: the parent can flush them

    def submit(self, fn, arg) -> Future:
        fut: Future = Future()
        try:
            fut.set_result(fn(arg))  # a bug raises here, directly, with its traceback
        except OSError as exc:
            if not _is_no_space(exc):
                raise
            fut.set_exception(exc)  # as from a worker: the chunks before it are still recorded
        return fut

    def wait_any(self, futures, timeout):
        return [f for f in futures if f.done()]

    def cancel_pending(self, futures) -> list:
        return []

    def abort(self, futures) -> None:
        pass


def _ignore_sigint() -> None:
    # Ctrl-C reaches the whole process group; only the parent decides what to do with it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class _LokyBackend:
    """A private loky process pool (joblib's; robust to worker crashes) for one run.

    Private rather than loky's reusable executor: that one is shared with joblib.Parallel,
    which expects its own subclass there and breaks if we installed a plain one.
    """

    def __init__(self, workers: int):
        from joblib.externals.loky import ProcessPoolExecutor

        self.slots = workers
        self.local = True
        threads = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
        self.executor = ProcessPoolExecutor(max_workers=workers, initializer=_ignore_sigint, env=threads)

    def submit(self, fn, arg):
        return self.executor.submit(fn, arg)

    def wait_any(self, futures, timeout):
        return futures_wait(futures, timeout=timeout, return_when=FIRST_COMPLETED).done

    def cancel_pending(self, futures) -> list:
        return [f for f in futures if f.cancel()]  # only succeeds for tasks not yet started

    def abort(self, futures) -> None:
        self.cancel_pending(futures)
        self.executor.shutdown(wait=False, kill_workers=True)


class _DaskBackend:
    """A ``distributed`` cluster; tasks are submitted in a bounded window like the others."""

    def __init__(self, client):
        self.client = client
        self.slots = max(1, sum(client.nthreads().values()))
        self.local = False  # workers may be other machines: each flushes its own writes

    def submit(self, fn, arg):
        return self.client.submit(fn, arg, pure=False)

    def wait_any(self, futures, timeout):
        from distributed import wait

        try:
            return wait(list(futures), timeout=timeout, return_when="FIRST_COMPLETED").done
        except TimeoutError:
            return []

    def cancel_pending(self, futures) -> list:
        return []  # dask does not tell queued from running tasks: let them all finish

    def abort(self, futures) -> None:
        self.client.cancel(list(futures))


@contextlib.contextmanager
def _serial(workers, scheduler):
    yield _SerialBackend()


@contextlib.contextmanager
def _joblib(workers, scheduler):
    backend = _LokyBackend(workers)
    try:
        yield backend
    finally:
        backend.executor.shutdown(wait=True)  # no-op after abort(), which killed the workers


@contextlib.contextmanager
def _dask(workers, scheduler):
    if not scheduler:
        raise ValueError("backend 'dask' needs scheduler=ADDRESS (e.g. tcp://host:8786)")
    from distributed import Client

    with Client(scheduler) as client:
        yield _DaskBackend(client)


#: backend name -> context manager factory ``(workers, scheduler) -> backend``.
BACKENDS: dict[str, Callable] = {"serial": _serial, "joblib": _joblib, "dask": _dask}


# ------------------------------------------------------------------------- parent side

class _StopFlag:
    """SIGINT count: 1 = stop submitting and drain what is in flight, 2 = drop it."""

    def __init__(self):
        self.level = 0

    def __call__(self, signum, frame):
        self.level += 1
        if self.level == 1:
            log.warning("\ninterrupt: finishing the chunks in flight (Ctrl-C again to drop them)")


@contextlib.contextmanager
def _sigint_handler(flag: _StopFlag):
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    previous = signal.signal(signal.SIGINT, flag)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _run_chunks(backend, chunks: Iterator[_Chunk], first: int, on_result: Callable[[list[_ChunkResult]], None],
                stop: _StopFlag) -> None:
    """Run ``chunks`` on ``backend``; call ``on_result`` with each run of finished chunks
    that continues the previous one, in sample-index order.

    At most ``window`` chunks are in flight or waiting for an earlier one, so memory stays
    bounded whatever ``n`` is.
    """
    window = 2 * backend.slots
    in_flight: dict[Any, int] = {}
    done: dict[int, _ChunkResult] = {}
    next_start = first
    exhausted = draining = False
    try:
        while True:
            while not exhausted and stop.level == 0 and len(in_flight) + len(done) < window:
                chunk = next(chunks, None)
                if chunk is None:
                    exhausted = True
                    break
                in_flight[backend.submit(_make_chunk, chunk)] = chunk.start
            if not in_flight:
                return
            if stop.level == 1 and not draining:
                draining = True  # first Ctrl-C: only the chunks already running finish
                for fut in backend.cancel_pending(list(in_flight)):
                    del in_flight[fut]
                if not in_flight:
                    return
            finished = backend.wait_any(list(in_flight), timeout=0.5)
            if stop.level >= 2:
                return
            no_space = None
            for fut in finished:
                try:
                    result = fut.result()
                except BrokenProcessPool:
                    if stop.level:  # a worker caught Ctrl-C before it could ignore it
                        return
                    raise
                except OSError as exc:
                    if not _is_no_space(exc):
                        raise
                    no_space = exc  # record the chunks finished before it, then stop
                    del in_flight[fut]
                    continue
                done[in_flight.pop(fut)] = result
            ready = []
            while next_start in done:
                ready.append(done.pop(next_start))
                next_start = ready[-1].stop
            if ready:
                on_result(ready)
            if no_space is not None:
                raise no_space
    finally:
        if in_flight:
            backend.abort(list(in_flight))


def _index_hash(pool: FacePool) -> str:
    """Identity of the faces a run draws from: keys and landmarks (not file paths or times)."""
    h = hashlib.sha256()
    h.update(json.dumps(list(pool.keys)).encode())
    h.update(np.ascontiguousarray(pool.landmarks, np.float32).tobytes())
    return h.hexdigest()[:16]


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


def _check_run_json(out: Path, definition: dict) -> None:
    """Write OUT/run.json, or refuse if it defines a different run."""
    path = out / "run.json"
    if not path.exists():
        writer.write_json_atomic(path, definition)
        return
    try:
        previous = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: corrupt ({e}); remove it only if OUT holds no samples") from None
    for key in _DEFINING:
        if previous.get(key) != definition.get(key):
            raise ValueError(f"{out} holds a different run: {key} was {previous.get(key)!r}, now "
                             f"{definition.get(key)!r} (see {path}); use another --out or the same arguments")


def _check_not_inside_src(out: Path, src) -> None:
    """Refuse an OUT inside (or equal to) the source folder ``src``: a rerun would index the
    run's own PNGs as faces (and then refuse the changed index)."""
    if src is None:
        return
    src_dir, out_dir = Path(os.path.realpath(src)), Path(os.path.realpath(out))
    if out_dir.is_relative_to(src_dir):
        where = "is" if out_dir == src_dir else "lies inside"
        raise ValueError(f"--out {out} {where} --src {src}: the run's own images would be indexed as faces; "
                         f"use an --out outside the source folder")


def _check_out(out: Path, force: bool) -> None:
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


def _manifest_size(out: Path) -> int | None:
    """Size of OUT/manifest.jsonl in bytes (None: absent)."""
    try:
        return (out / "manifest.jsonl").stat().st_size
    except FileNotFoundError:
        return None


def _forget_refused_run(out: Path, manifest_size: int | None) -> None:
    """After a refusal, remove the run.json (and empty manifest) this call wrote, unless it made
    samples (the manifest grew): OUT is left as the refused call found it."""
    manifest = out / "manifest.jsonl"
    size = _manifest_size(out)
    if size is not None and size > (manifest_size or 0):
        return
    (out / "run.json").unlink(missing_ok=True)
    if manifest_size is None:
        manifest.unlink(missing_ok=True)


@contextlib.contextmanager
def _exclusive(out: Path):
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


def _versions() -> dict:
    def version(dist):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    import cv2

    from synth import __version__

    return {"python": platform.python_version(), "numpy": np.__version__, "cv2": cv2.__version__,
            "mediapipe": version("mediapipe"), "synth": __version__}


def _normalise_weights(weights) -> dict | None:
    if weights is None:
        return None
    if not isinstance(weights, Mapping):
        raise ValueError(f"weights: expected a mapping of choice key -> multiplier, got {type(weights).__name__}")
    out = {}
    for key, value in sorted(weights.items()):
        kind = key.partition("=")[0] if isinstance(key, str) and "=" in key else None
        if kind not in CHOICE_KINDS:
            raise ValueError(f"weights: unknown key {key!r}; expected KIND=VALUE with KIND one of {', '.join(CHOICE_KINDS)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"weights[{key!r}]: expected a finite number >= 0, got {value!r}")
        out[str(key)] = float(value)
    return out


def read_weights(path, recipe: str | Recipe) -> dict:
    """The choice-key multipliers in the JSON file ``path`` (``{"blend=poisson": 2, ...}``), checked
    against ``recipe``: every key must be a choice the recipe can make (:func:`synth.recipe.weight_keys`)
    and every value a finite number >= 0. ``ValueError`` naming the file otherwise."""
    path = Path(path)
    try:
        weights = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"--weights {path}: no such file") from None
    except OSError as e:
        raise ValueError(f"--weights {path}: cannot read ({e.strerror or e})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"--weights {path}: not valid JSON ({e})") from None
    if not isinstance(weights, dict):
        raise ValueError(f"--weights {path}: expected a JSON object of choice key -> multiplier, "
                         f"got {type(weights).__name__}")
    rec = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    known = weight_keys(rec)
    for key in sorted(weights):
        if key not in known:
            kind = key.partition("=")[0]
            same = sorted(k for k in known if k.partition("=")[0] == kind)
            hint = (f"its {kind} choices: {', '.join(same)}" if same else
                    f"keys are KIND=VALUE with KIND one of {', '.join(CHOICE_KINDS)}")
            raise ValueError(f"--weights {path}: {key[:60]!r} is not a choice of recipe {rec.name!r}; {hint}")
    try:
        return _normalise_weights(weights)
    except ValueError as e:
        raise ValueError(f"--weights {path}: {e}") from None


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
    weights = _normalise_weights(weights)
    rec = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    out = Path(out)
    _check_not_inside_src(out, src)
    _check_out(out, force)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        with _exclusive(out):
            new_run = not (out / "run.json").exists()
            manifest_size = _manifest_size(out)
            try:
                return _generate_locked(out, n, rec, src, index, size, seed, workers, weights, backend, scheduler,
                                        progress, face_store)
            except (ValueError, FileNotFoundError):  # refused: no run.json left to claim OUT
                if new_run:
                    _forget_refused_run(out, manifest_size)
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
    definition = {"recipe": rec.name, "recipe_hash": rec.hash, "recipe_path": rec.path, "seed": seed, "size": size,
                  "n": n, "index": index_str, "index_hash": _index_hash(pool), "src": source, "weights": weights}
    _check_run_json(out, json.loads(json.dumps(definition)))
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
    stop = _StopFlag()
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
        with open(manifest_path, "ab") as manifest, _sigint_handler(stop), BACKENDS[backend](workers, scheduler) as be:
            _generate_chunks(out, be, manifest, rec, definition, resolved_index, abs_out, store, seed, size, weights,
                             first, n, state, bar, stop)
    except OSError as exc:  # a worker's write, the parent's flush or manifest append
        if not _is_no_space(exc):
            raise
        no_space = exc
    if bar is not None:
        bar.close()

    now = time.perf_counter()
    wall, gen_wall = now - t0, now - t_gen
    made = state.next_i - first
    complete = state.next_i == n
    report = {
        "n_requested": n, "n_done": state.next_i, "complete": complete, "n_ok": state.n_ok,
        "n_skipped": state.n_skipped, "skip_reasons": dict(sorted(state.reasons.items())),
        "skipped": state.skipped,
        "n_index_skipped": len(index_skipped),
        "index_skip_reasons": {k: sum(r["status"] == k for r in index_skipped)
                               for k in sorted({r["status"] for r in index_skipped})},
        "index_skipped": index_skipped, "n_made_this_run": made, "wall_s": round(wall, 3),
        "rate_per_s": round(made / gen_wall, 3) if made else None,
        "backend": backend, "workers": workers if backend == "joblib" else None,
        "versions": _versions(), "recipe": rec.name, "recipe_hash": rec.hash, "seed": seed, "size": size,
        "index": index_str, "index_hash": definition["index_hash"], "src": source, "weights": weights,
    }
    if no_space is not None:
        with contextlib.suppress(OSError):  # the disk may have no room for the report either
            writer.write_json_atomic(report_path, {**report, "stopped": f"no space left on device ({no_space})"})
        where = f" writing {no_space.filename}" if no_space.filename else ""
        raise OSError(no_space.errno, f"no space left on device{where}: {state.next_i} of {n} samples done and "
                                      f"kept; free some space and rerun the same command to continue") from no_space
    writer.write_json_atomic(report_path, report)
    if not complete:
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
                     state: writer.ManifestState, bar, stop: _StopFlag) -> None:
    """Make samples ``[first, n)`` on backend ``be``, appending their lines to ``manifest`` in order
    and counting them in ``state``."""
    csize = _chunk_size(n - first, be.slots)
    # Local workers leave the flush to this (otherwise idle) process: one syncfs per batch
    # of finished chunks instead of one blocking each worker per chunk.
    chunks = (_Chunk(abs_out, resolved_index, definition["index_hash"], rec, seed, size, weights,
                     s, min(s + csize, n), store=str(store.root.resolve()) if store else None,
                     sync=not be.local)
              for s in range(first, n, csize))

    def on_result(results: list[_ChunkResult]) -> None:
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

    _run_chunks(be, chunks, first, on_result, stop)
