"""Atomic file writes for run state and checkpoints.

The content goes to a uniquely named temporary file in the target's folder, created like ``open``
does (mode 0666 less the umask: a checkpoint is as readable as any other file the user writes), then
renamed over the target with ``os.replace``: a reader never sees a half-written file, and a crash
leaves the previous version (the temporary file is removed on any error).
"""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import IO, Any, Callable


def atomic_write(path: str | os.PathLike, write: Callable[[IO], Any], binary: bool = False) -> Path:
    """Call ``write(file)`` on a temporary file opened in ``"wb"`` (``binary``) or ``"w"`` mode next to
    ``path``, then rename it to ``path``. The parent folder must exist. Returns the path."""
    path = Path(path)
    tmp = str(path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb" if binary else "w") as fh:
            write(fh)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_json_atomic(path: str | os.PathLike, obj) -> Path:
    """``obj`` as JSON (indent 1) written atomically to ``path``."""
    return atomic_write(path, lambda fh: json.dump(obj, fh, indent=1))
