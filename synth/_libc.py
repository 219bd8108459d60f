"""The C library calls of generation workers: ``libc_function`` (e.g. ``syncfs``) and glibc
malloc thresholds for workers started with fixed ones (dask's).

dask's nanny starts every worker with ``MALLOC_TRIM_THRESHOLD_=65536`` (to hand memory back
to the OS). Setting any malloc threshold also turns off glibc's *dynamic* mmap threshold, so
every array over 128 KB (a 256² RGB image is 192 KB) is mmapped, page-faulted in and unmapped
again on each use: a worker then spends most of its CPU in the kernel (page faults, mmap and
munmap) rather than on the images, which is why its workers get the dynamic thresholds back
(:func:`restore_dynamic_thresholds`).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

__all__ = ["libc_function", "restore_dynamic_thresholds"]

_M_TRIM_THRESHOLD = -1  # <malloc.h>
_M_MMAP_THRESHOLD = -3
# what glibc's dynamic mode reaches after freeing large blocks on 64-bit: mmap only above
# 32 MB (DEFAULT_MMAP_THRESHOLD_MAX), trim the heap top only above twice that
_MMAP_THRESHOLD = 32 * 1024 * 1024
_TRIM_THRESHOLD = 2 * _MMAP_THRESHOLD


@functools.cache
def libc_function(name: str):
    """The C library's function ``name`` (errno kept for ``ctypes.get_errno``), or None when
    there is no such library or function (not Linux, not glibc)."""
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True), name)
    except (OSError, AttributeError):
        return None


def restore_dynamic_thresholds(environ=os.environ) -> bool:
    """If ``MALLOC_TRIM_THRESHOLD_`` is set (and ``MALLOC_MMAP_THRESHOLD_`` is not), give this
    process the mmap and trim thresholds glibc's dynamic mode would settle on.

    A worker holds a few hundred MB at most, so keeping 64 MB of freed heap is cheap next to
    faulting in every image buffer again. Returns True if the thresholds were changed; False
    when the variable is absent, the user fixed the mmap threshold, or libc has no ``mallopt``
    (not glibc).
    """
    if "MALLOC_TRIM_THRESHOLD_" not in environ or "MALLOC_MMAP_THRESHOLD_" in environ:
        return False
    mallopt = libc_function("mallopt")
    if mallopt is None:
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
