"""Execution backends of the generation job: where its tasks run.

Every backend implements :class:`Backend`; :data:`BACKENDS` maps a name to a context manager
factory ``(workers, scheduler) -> backend`` that owns the backend's resources for one run:

``"serial"``
    In this process, each task at submission (tests, debugging).
``"joblib"``
    A private loky process pool (joblib's) of ``workers`` processes on this machine.
``"dask"``
    A ``distributed`` scheduler at ``scheduler``; OUT and the index must be reachable from
    its workers under the same paths.
"""
from __future__ import annotations

import contextlib
import errno
import signal
from concurrent.futures import FIRST_COMPLETED, Future
from concurrent.futures import wait as futures_wait
from typing import Any, Callable, Iterable, Protocol

__all__ = ["Backend", "BACKENDS", "NO_SPACE_ERRNOS", "is_no_space", "SerialBackend", "LokyBackend", "DaskBackend"]

#: ``errno`` values that mean the output file system is full (ENOSPC) or the user's quota is.
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def is_no_space(exc: BaseException) -> bool:
    """Whether ``exc`` says the output file system (or quota) is full."""
    return isinstance(exc, OSError) and exc.errno in NO_SPACE_ERRNOS


class Backend(Protocol):
    """What the scheduler (:func:`synth.scheduler.run_in_order`) needs of a backend."""

    #: Tasks it runs at once.
    slots: int
    #: Its tasks write through this machine's kernel, so one ``syncfs`` here flushes them.
    local: bool

    def submit(self, fn: Callable, arg: Any) -> Any:
        """Start ``fn(arg)``; return a future (``.result()``, ``.done()``)."""

    def wait_any(self, futures: list, timeout: float) -> Iterable:
        """The futures of ``futures`` that are done, waiting up to ``timeout`` s for one."""

    def cancel_pending(self, futures: list) -> list:
        """Cancel the futures not started yet; return the ones cancelled."""

    def abort(self, futures: list) -> None:
        """Drop ``futures``, running or not (the run is being abandoned)."""


class SerialBackend:
    """Runs each task at submission, in this process."""

    slots = 1
    local = True  # writes to this machine's file systems: the parent can flush them

    def submit(self, fn, arg) -> Future:
        fut: Future = Future()
        try:
            fut.set_result(fn(arg))  # a bug raises here, directly, with its traceback
        except OSError as exc:
            if not is_no_space(exc):
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


class LokyBackend:
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


class DaskBackend:
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
    yield SerialBackend()


@contextlib.contextmanager
def _joblib(workers, scheduler):
    backend = LokyBackend(workers)
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
        yield DaskBackend(client)


#: backend name -> context manager factory ``(workers, scheduler) -> backend``.
BACKENDS: dict[str, Callable] = {"serial": _serial, "joblib": _joblib, "dask": _dask}
