"""The generation job's scheduler: tasks on a backend in a bounded window, results in order,
and what Ctrl-C does to that.

:func:`run_in_order` submits chunks of consecutive sample indices to a
:class:`synth.backends.Backend` and hands back finished chunks in sample-index order, so the
caller can append their manifest lines as a prefix of the run. :class:`StopFlag` counts
SIGINTs (installed by :func:`sigint_handler`): the first stops submitting and lets the chunks
in flight finish, the second drops them.
"""
from __future__ import annotations

import contextlib
import logging
import signal
import threading
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterator

from synth.backends import is_no_space

log = logging.getLogger(__name__)

__all__ = ["StopFlag", "sigint_handler", "run_in_order"]


class StopFlag:
    """SIGINT count: 1 = stop submitting and drain what is in flight, 2 = drop it."""

    def __init__(self):
        self.level = 0

    def __call__(self, signum, frame):
        self.level += 1
        if self.level == 1:
            log.warning("\ninterrupt: finishing the chunks in flight (Ctrl-C again to drop them)")


@contextlib.contextmanager
def sigint_handler(flag: StopFlag):
    """``flag`` handles SIGINT inside the block (in the main thread; elsewhere nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    previous = signal.signal(signal.SIGINT, flag)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def run_in_order(backend, fn: Callable, chunks: Iterator, first: int, on_result: Callable[[list], None],
                 stop: StopFlag) -> None:
    """Run ``fn(chunk)`` for each of ``chunks`` on ``backend``; call ``on_result`` with each run of
    finished chunks that continues the previous one, in sample-index order.

    A chunk has ``start`` (the first chunk's is ``first``), its result ``stop`` (the next chunk's
    ``start``). At most ``window`` chunks are in flight or waiting for an earlier one, so memory
    stays bounded whatever ``n`` is. A no-space ``OSError`` of a chunk is raised after the
    chunks finished before it are handed on.
    """
    window = 2 * backend.slots
    in_flight: dict[Any, int] = {}
    done: dict[int, Any] = {}
    next_start = first
    exhausted = draining = False
    try:
        while True:
            while not exhausted and stop.level == 0 and len(in_flight) + len(done) < window:
                chunk = next(chunks, None)
                if chunk is None:
                    exhausted = True
                    break
                in_flight[backend.submit(fn, chunk)] = chunk.start
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
                    if not is_no_space(exc):
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
