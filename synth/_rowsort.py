"""Row-wise ascending sort of float32 arrays whose speed does not hinge on AVX-512.

numpy 1.x sorts float32 with vectorised kernels only on CPUs with AVX-512 (AVX512_SKX);
elsewhere it falls back to a scalar introsort, many times slower (BENCHMARKS.md), which made the IDT colour
transfer the most expensive op of a sample on such machines.  ``sort_rows`` keeps numpy's
sort where it is vectorised and otherwise uses an LSD radix sort built from numpy's
16-bit radix ``argsort`` (two passes over the bit pattern of each value).

Both paths return the same values: the ascending order of a multiset of finite or infinite
floats is unique, so the choice of path cannot change a sample's pixels.  The one freedom
is the relative order of ``-0.0`` and ``+0.0``, which compare equal; the radix path puts
``-0.0`` first.  NaN is not supported (it is never sorted here).
"""
from __future__ import annotations

import numpy as np

__all__ = ["sort_rows", "radix_sort_rows", "numpy_sort_is_vectorised"]


def numpy_sort_is_vectorised() -> bool:
    """True when ``np.sort`` of float32 runs a SIMD kernel on this CPU.

    numpy >= 2 ships AVX2 and AVX-512 sort kernels; numpy 1.26 only AVX-512 (reported as the
    runtime feature ``AVX512_SKX``, which honours ``NPY_DISABLE_CPU_FEATURES``).
    """
    if int(np.__version__.split(".")[0]) >= 2:
        return True
    from numpy.core._multiarray_umath import __cpu_features__
    return bool(__cpu_features__.get("AVX512_SKX", False))


_SIGN = np.uint32(0x80000000)


def radix_sort_rows(a: np.ndarray) -> np.ndarray:
    """Sort each row of a 2-D float32 array ascending with a two-pass 16-bit radix sort.

    Parameters
    ----------
    a : numpy.ndarray, float32 (R, N)
        Any strides; no NaN.  Not modified.

    Returns
    -------
    out : numpy.ndarray, float32 (R, N), C-contiguous
        The values of each row in ascending order, equal element for element to
        ``np.sort(a, axis=1)`` (``-0.0`` is placed before ``+0.0``).
    """
    if a.dtype != np.float32 or a.ndim != 2:
        raise ValueError(f"a: expected a 2-D float32 array, got {a.dtype} with shape {a.shape}")
    # order-preserving map of the IEEE bit pattern to unsigned keys: negatives are inverted
    # (larger magnitude -> smaller key), positives get the sign bit set
    k = np.ascontiguousarray(a).view(np.uint32)
    k = k ^ ((k.view(np.int32) >> 31).view(np.uint32) | _SIGN)
    order = np.argsort(k.astype(np.uint16), axis=1, kind="stable")  # low half (radix)
    k = np.take_along_axis(k, order, axis=1)
    order = np.argsort((k >> 16).astype(np.uint16), axis=1, kind="stable")  # high half
    k = np.take_along_axis(k, order, axis=1)
    k ^= ((k.view(np.int32) >> 31) ^ -1).view(np.uint32) | _SIGN
    return k.view(np.float32)


_VECTORISED = numpy_sort_is_vectorised()


def sort_rows(a: np.ndarray) -> np.ndarray:
    """``np.sort(a, axis=1)`` for 2-D float32 ``a`` (no NaN), by the faster exact path on this CPU.

    Parameters
    ----------
    a : numpy.ndarray, float32 (R, N)

    Returns
    -------
    out : numpy.ndarray, float32 (R, N)
        Each row ascending; the same values on every CPU (see the module docstring).
    """
    return np.sort(a, axis=1) if _VECTORISED else radix_sort_rows(a)
