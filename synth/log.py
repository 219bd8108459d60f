"""Logging: the library logs through :mod:`logging` (one logger per module, ``synth.*`` and
``detector.*``) and never prints; the command lines configure it (:func:`cli_logging`).

MediaPipe's native code (TensorFlow Lite, absl) writes lines such as ``INFO: Created
TensorFlow Lite XNNPACK delegate for CPU.`` and ``W0000 ... inference_feedback_manager.cc]``
straight to file descriptor 2, below Python, in every process that builds a graph (joblib and
dask workers included).  :func:`native_stderr_to_log` catches descriptor 2 around the calls
that write them and passes each line to a logger: known noise at DEBUG (shown with ``-v``),
anything else at WARNING, so a real error is not lost.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import sys
import tempfile
from typing import Iterator

#: Lines of MediaPipe's native start-up chatter: TFLite's INFO lines, absl's pre-init notice and
#: absl/glog-format lines of levels I (info) and W (warning), e.g. ``W0000 00:00:17.3 25330 x.cc:114] ...``.
NATIVE_NOISE = re.compile(r"INFO: |WARNING: All log messages before absl::InitializeLog\(\)|[IW]\d{4} ")
#: Loggers the command lines configure.
PACKAGE_LOGGERS = ("synth", "detector")
#: ``-q`` / default / ``-v`` -> level of the package loggers.
VERBOSITY_LEVELS = {-1: logging.WARNING, 0: logging.INFO, 1: logging.DEBUG}


@contextlib.contextmanager
def mediapipe_output_to_log(logger: logging.Logger) -> Iterator[None]:
    """Build MediaPipe objects inside this block: its C++ INFO logging is switched off
    (``GLOG_minloglevel`` 2 unless the user set it; read when its native library loads) and its
    remaining native start-up lines go to ``logger`` (:func:`native_stderr_to_log`)."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    with native_stderr_to_log(logger):
        yield


@contextlib.contextmanager
def native_stderr_to_log(logger: logging.Logger) -> Iterator[None]:
    """Catch what is written to file descriptor 2 (native code included) inside the block and
    log it line by line after it: lines matching :data:`NATIVE_NOISE` at DEBUG, others at WARNING.

    Parameters
    ----------
    logger : logging.Logger
        Receives the lines.

    Notes
    -----
    Descriptor 2 is process-wide: output of other threads in the block is caught too (and
    logged, not lost).  Without a descriptor 2 (closed) the block runs uncaught.
    """
    with contextlib.suppress(AttributeError, ValueError, OSError):  # no stderr, or one without a file
        sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(AttributeError, ValueError, OSError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            for line in sink.read().decode("utf-8", errors="replace").splitlines():
                if line.strip():
                    logger.log(logging.DEBUG if NATIVE_NOISE.match(line) else logging.WARNING, "%s", line)


class _ConsoleHandler(logging.Handler):
    """INFO records to ``sys.stdout`` (a command's progress and summaries, where they always
    went), everything else to ``sys.stderr``; the streams are looked up per record, so a
    replaced ``sys.stdout`` (tests, notebooks) is honoured."""

    def emit(self, record: logging.LogRecord) -> None:
        stream = sys.stdout if record.levelno == logging.INFO else sys.stderr
        try:
            stream.write(self.format(record) + "\n")
            stream.flush()
        except (OSError, ValueError, UnicodeError):  # closed or broken stream
            self.handleError(record)


@contextlib.contextmanager
def cli_logging(verbosity: int) -> Iterator[None]:
    """Console logging for one command-line run: the package loggers at the level of
    ``verbosity`` (``-1`` = ``-q``: warnings and errors only; ``0``: also progress and
    summaries; ``1`` = ``-v``: also debug lines, MediaPipe's native chatter included),
    printed as bare messages (``-v``: with level and logger name).  Restored on exit, so
    calling a ``main()`` from Python leaves the logging configuration as it was.

    Parameters
    ----------
    verbosity : int
        ``-1``, ``0`` or ``1`` (values outside are clipped).
    """
    level = VERBOSITY_LEVELS[max(-1, min(1, int(verbosity)))]
    handler = _ConsoleHandler(level)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s" if level == logging.DEBUG
                                           else "%(message)s"))
    loggers = [logging.getLogger(name) for name in PACKAGE_LOGGERS]
    before = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(level)
        lg.addHandler(handler)
    try:
        yield
    finally:
        for lg, old in zip(loggers, before):
            lg.removeHandler(handler)
            lg.setLevel(old)


def add_verbosity_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the mutually exclusive ``-v/--verbose`` and ``-q/--quiet`` options to ``parser``
    (read back with :func:`verbosity`); returns ``parser``."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-v", "--verbose", action="store_true",
                       help="also debug lines (MediaPipe's native start-up lines included)")
    group.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only, no progress bars")
    return parser


def verbosity(args: argparse.Namespace) -> int:
    """``-1`` with ``--quiet``, ``1`` with ``--verbose``, else ``0`` (see :func:`cli_logging`)."""
    return -1 if getattr(args, "quiet", False) else int(bool(getattr(args, "verbose", False)))
