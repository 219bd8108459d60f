import numpy as np
import pytest
import pywt
import scipy.fft
import torch

from detector.frequency import (
    DCTHighPass,
    SRMConv,
    dct2,
    dct_highpass,
    dct_matrix,
    highpass_mask,
    idct2,
    iswd,
    swd,
    to_luminance,
)


def _checkerboard(h, w):
    i = torch.arange(h).unsqueeze(1)
    j = torch.arange(w).unsqueeze(0)
    return ((-1.0) ** (i + j)).to(torch.float64)


def test_dct_matrix_orthonormal_and_matches_scipy():
    d = dct_matrix(16, torch.float64)
    assert torch.allclose(d @ d.T, torch.eye(16, dtype=torch.float64), atol=1e-12)
    x = torch.randn(2, 3, 12, 20, dtype=torch.float64)
    ref = scipy.fft.dctn(x.numpy(), type=2, axes=(-2, -1), norm="ortho")
    np.testing.assert_allclose(dct2(x).numpy(), ref, atol=1e-10)


def test_dct_matrix_is_cached_per_size_dtype():
    assert dct_matrix(8) is dct_matrix(8)
    assert dct_matrix(8, torch.float64) is not dct_matrix(8)
    with pytest.raises(ValueError, match="n:"):
        dct_matrix(0)


@pytest.mark.parametrize("shape", [(1, 1, 8, 8), (2, 3, 16, 24), (1, 2, 31, 7)])
def test_dct_roundtrip(shape):
    x = torch.randn(*shape, dtype=torch.float64)
    assert torch.allclose(idct2(dct2(x)), x, atol=1e-10)


def test_highpass_mask_rule_square_and_rectangular():
    m = highpass_mask(10, 10, alpha=0.33)
    u, v = np.meshgrid(np.arange(10), np.arange(10), indexing="ij")
    np.testing.assert_array_equal(m.numpy(), (u + v >= 0.33 * 10).astype(np.float32))
    r = highpass_mask(8, 16, alpha=0.5)
    u, v = np.meshgrid(np.arange(8), np.arange(16), indexing="ij")
    np.testing.assert_array_equal(r.numpy(), (u / 8 + v / 16 >= 0.5).astype(np.float32))
    with pytest.raises(ValueError, match="alpha"):
        highpass_mask(4, 4, alpha=-0.1)


def test_highpass_removes_constant_and_smooth_gradient():
    h, w = 64, 48
    const = torch.full((1, 3, h, w), 5.0, dtype=torch.float64)
    assert dct_highpass(const).abs().max() < 1e-10
    # Smooth cosine ramp (lowest non-DC frequencies) + linear ramp along the other axis.
    y = torch.linspace(0, 1, h, dtype=torch.float64).unsqueeze(1)
    x = torch.linspace(0, 1, w, dtype=torch.float64).unsqueeze(0)
    smooth = (torch.cos(np.pi * y) + 0.5 * x + 0.2 * torch.cos(2 * np.pi * x)).expand(h, w)
    out = dct_highpass(smooth[None, None], alpha=0.33)
    # A linear ramp has small odd-frequency DCT tails; what is left is < 1% of its range.
    assert out.abs().max() < 0.01 * (smooth.max() - smooth.min())


def test_highpass_keeps_checkerboard():
    cb = _checkerboard(32, 40)[None, None].repeat(1, 3, 1, 1)
    out = dct_highpass(cb, alpha=0.33)
    # (-1)^i is not one DCT-II basis vector; its small low-frequency leak sits at the borders.
    assert (out - cb).norm() / cb.norm() < 0.01
    assert (out - cb).abs().max() < 0.06
    assert torch.allclose(out[..., 4:-4, 4:-4], cb[..., 4:-4, 4:-4], atol=0.02)


@pytest.mark.parametrize("alpha", [0.0, 0.33, 0.5, 1.2])
def test_highpass_matches_full_dct_definition(alpha):
    x = torch.randn(2, 3, 20, 28, dtype=torch.float64)
    ref = idct2(dct2(x) * highpass_mask(20, 28, alpha, torch.float64))
    assert torch.allclose(dct_highpass(x, alpha), ref, atol=1e-10)
    assert torch.allclose(DCTHighPass(alpha)(x), ref, atol=1e-10)


def test_highpass_grayscale_and_module_match_function():
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    g = dct_highpass(x, grayscale=True)
    assert g.shape == (2, 1, 32, 32)
    assert torch.allclose(g, dct_highpass(to_luminance(x)))
    mod = DCTHighPass(alpha=0.33)
    assert torch.allclose(mod(x), dct_highpass(x))
    assert mod.low_mask.shape == (11, 11)  # ceil(0.33 * 32): only low coefficients are computed
    assert torch.allclose(mod(x[..., :16, :24]), dct_highpass(x[..., :16, :24]))  # mask rebuilt per size
    assert list(mod.parameters()) == [] and mod.state_dict() == {}
    assert DCTHighPass(grayscale=True)(x).shape == (2, 1, 32, 32)


def test_bad_input_raises_named_error():
    with pytest.raises(ValueError, match="x: expected shape"):
        dct2(torch.zeros(4, 4))
    with pytest.raises(ValueError, match="floating"):
        dct_highpass(torch.zeros(1, 1, 4, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="3 channels"):
        dct_highpass(torch.zeros(1, 2, 4, 4), grayscale=True)


@pytest.mark.parametrize("levels", [1, 3])
def test_swd_shapes_and_perfect_reconstruction(levels):
    x = torch.randn(2, 3, 24, 40, dtype=torch.float64)
    c = swd(x, levels)
    assert c.shape == (2, 3 * (3 * levels + 1), 24, 40)
    assert torch.allclose(iswd(c, levels), x, atol=1e-12)


def test_swd_reconstruction_when_dilation_exceeds_size():
    x = torch.randn(1, 2, 4, 6, dtype=torch.float64)
    assert torch.allclose(iswd(swd(x, 4), 4), x, atol=1e-12)


def test_swd_matches_pywavelets_haar_swt2():
    # pywt.swt2 uses orthonormal filters (1/sqrt2 per axis): level-j bands are 2**j times ours.
    x = torch.randn(1, 1, 32, 32, dtype=torch.float64)
    levels = 3
    ours = swd(x, levels)[0].numpy()
    ref = pywt.swt2(x[0, 0].numpy(), "haar", level=levels, trim_approx=False)  # coarsest first
    for j in range(1, levels + 1):
        c_a, (c_h, c_v, c_d) = ref[levels - j]
        f = 2.0 ** j
        np.testing.assert_allclose(f * ours[3 * (j - 1) + 0], c_v, atol=1e-10)  # LH: high along W
        np.testing.assert_allclose(f * ours[3 * (j - 1) + 1], c_h, atol=1e-10)  # HL: high along H
        np.testing.assert_allclose(f * ours[3 * (j - 1) + 2], c_d, atol=1e-10)
    np.testing.assert_allclose(2.0 ** levels * ours[-1], ref[0][0], atol=1e-10)


def test_swd_channel_layout_constant_input():
    # A constant image has no detail: every detail band is 0, the final LL equals the input.
    x = torch.full((1, 2, 8, 8), 3.0)
    c = swd(x, 2)
    assert torch.allclose(c[:, :12], torch.zeros(1, 12, 8, 8))
    assert torch.allclose(c[:, 12:], x)


def test_swd_rejects_bad_levels():
    with pytest.raises(ValueError, match="levels"):
        swd(torch.zeros(1, 1, 8, 8), 0)
    with pytest.raises(ValueError, match="multiple"):
        iswd(torch.zeros(1, 5, 8, 8), 3)


def test_srm_fixed_kernels():
    srm = SRMConv(3)
    assert list(srm.parameters()) == []
    x = torch.randn(1, 3, 16, 16)
    y = srm(x)
    assert y.shape == (1, 9, 16, 16)
    # All kernels are high-pass: zero response to a constant away from the zero-padded border.
    const = srm(torch.full((1, 3, 16, 16), 2.0))
    assert const[..., 2:-2, 2:-2].abs().max() < 1e-6
    # Channel 3*c + k is kernel k on input channel c: the KH row kernel [1, -2, 1] / 2.
    ramp = torch.zeros(1, 3, 9, 9)
    ramp[0, 1] = torch.arange(9.0).pow(2).unsqueeze(0)  # x^2 along W: second difference = 2
    assert torch.allclose(srm(ramp)[0, 5, 2:-2, 2:-2], torch.ones(5, 5))
    assert torch.allclose(srm(ramp)[0, :3], torch.zeros(3, 9, 9))
