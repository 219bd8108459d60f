import numpy as np
import pytest
from skimage import data

from synth import _rowsort
from synth import color as C


def _hard_rows(rng):
    """Rows with ties, both zeros, infinities, subnormals and the float32 extremes."""
    special = np.array([0.0, -0.0, np.inf, -np.inf, 1e-45, -1e-45, 1.1754942e-38, -1.1754942e-38,
                        np.finfo(np.float32).max, np.finfo(np.float32).min, 1.0, -1.0], np.float32)
    rows = [rng.standard_normal(4096).astype(np.float32) * 300,
            rng.integers(-3, 4, 4096).astype(np.float32),  # mostly ties, with +0 and -0 below
            rng.choice(special, 4096),
            (rng.standard_normal(4096) * 1e-40).astype(np.float32)]  # subnormals
    rows[1][rng.random(4096) < 0.2] = -0.0
    return np.stack(rows)


def test_radix_sort_rows_equals_numpy_sort():
    rng = np.random.default_rng(0)
    a = _hard_rows(rng)
    got, want = _rowsort.radix_sort_rows(a), np.sort(a, axis=1)
    assert got.dtype == np.float32 and got.shape == a.shape
    np.testing.assert_array_equal(got, want)  # equal values (+0 == -0)
    # the only freedom, the order of equal zeros, is fixed: every -0.0 before every +0.0
    zeros = got[1][got[1] == 0]
    assert not np.any(np.diff(np.signbit(zeros).astype(int)) > 0)
    assert np.signbit(zeros).sum() > 0 and (~np.signbit(zeros)).sum() > 0


def test_radix_sort_rows_any_strides_input_untouched():
    rng = np.random.default_rng(1)
    base = rng.standard_normal((5, 100, 3)).astype(np.float32)
    view = base[1].T  # (3, 100), not contiguous, as idt_transfer passes its projections
    before = view.copy()
    np.testing.assert_array_equal(_rowsort.radix_sort_rows(view), np.sort(before, axis=1))
    np.testing.assert_array_equal(view, before)
    # one row, one element
    np.testing.assert_array_equal(_rowsort.radix_sort_rows(np.float32([[2.0]])), [[2.0]])


@pytest.mark.parametrize("bad", [np.zeros((2, 3)), np.zeros(3, np.float32), np.zeros((1, 2, 3), np.float32)])
def test_radix_sort_rows_refuses_other_inputs(bad):
    with pytest.raises(ValueError, match="2-D float32"):
        _rowsort.radix_sort_rows(bad)


def test_sort_rows_dispatch_equals_numpy():
    a = _hard_rows(np.random.default_rng(2))
    np.testing.assert_array_equal(_rowsort.sort_rows(a), np.sort(a, axis=1))


def test_idt_pixels_do_not_depend_on_the_sort_path(monkeypatch):
    """Replay must be byte-identical on every CPU: the radix path (CPUs without AVX-512) and
    numpy's sort (with it) give the same IDT output, black and white pixels included (their
    projections produce both zeros)."""
    face = data.astronaut()[::2, ::2].copy()
    face[:40] = 0
    face[-30:, :50] = 255
    ref = data.coffee()[::3, ::3]
    mask = np.zeros(face.shape[:2], np.uint8)
    mask[60:200, 40:220] = 255
    outs = {}
    for name, fn in (("numpy", lambda x: np.sort(x, axis=1)), ("radix", _rowsort.radix_sort_rows)):
        monkeypatch.setattr(C, "sort_rows", fn)
        outs[name] = [C.idt_transfer(face, ref, m, m2, rng=np.random.default_rng(seed))
                      for seed in range(3) for m, m2 in ((None, None), (mask, None))]
    for a, b in zip(outs["numpy"], outs["radix"]):
        np.testing.assert_array_equal(a, b)
