import inspect

import cv2
import numpy as np
import pytest
from skimage import data

from synth import degrade as D
from synth.params import Op


@pytest.fixture(scope="module")
def face():
    return cv2.resize(data.astronaut(), (128, 128), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def synthetic():
    """Smooth gradients + a few edges + mild texture (deterministic)."""
    yy, xx = np.mgrid[0:192, 0:256].astype(np.float32)
    img = np.stack([xx, yy * 1.3, 128 + 60 * np.sin(xx / 7) * np.cos(yy / 5)], axis=-1)
    img[60:120, 80:180] = (230, 40, 60)
    img += np.random.default_rng(3).normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def grey(value, shape=(128, 128)):
    return np.full(shape + (3,), value, np.uint8)


def run(op: Op, image, seed=0, **overrides):
    kw = {name: p.default for name, p in op.params.items()}
    kw.update(overrides)
    if op.random:
        kw["rng"] = np.random.default_rng(seed)
    return op.fn(image, **kw)


# ------------------------------------------------------------------ registry / generic

def test_ops_registry_is_complete_and_consistent():
    names = [op.name for op in D.OPS]
    assert len(names) == len(set(names))
    assert set(names) == {"gaussian_blur", "mean_blur", "dual_blur", "bokeh_blur", "tilt_shift_blur",
                          "motion_blur", "jpeg", "jpeg_ratio", "downup", "gaussian_noise",
                          "poisson_noise", "salt_pepper", "guided_smooth"}
    for op in D.OPS:
        assert op.stage in {"blur", "compression", "resample", "noise"}
        assert op.random == (op.stage == "noise")
        sig = inspect.signature(op.fn)
        assert ("rng" in sig.parameters) == op.random
        for name, param in op.params.items():
            assert name in sig.parameters, (op.name, name)
            param.check(param.default, f"{op.name}.{name}")  # default lies in its domain
            fn_default = sig.parameters[name].default
            if fn_default is not inspect.Parameter.empty:
                assert fn_default == param.default, (op.name, name)
        # every parameter of the function (other than image/rng) is registered
        assert set(sig.parameters) - {"image", "rng"} == set(op.params), op.name


@pytest.mark.parametrize("op", D.OPS, ids=lambda op: op.name)
def test_every_op_runs_with_defaults_and_is_deterministic(op, face):
    out = run(op, face, seed=7)
    assert out.dtype == np.uint8 and out.shape == face.shape
    np.testing.assert_array_equal(out, run(op, face, seed=7))
    assert not np.shares_memory(out, face)
    # odd sizes work too
    odd = face[:37, :53]
    assert run(op, odd).shape == odd.shape


@pytest.mark.parametrize("op", [op for op in D.OPS if op.random], ids=lambda op: op.name)
def test_random_ops_depend_on_seed(op, face):
    assert not np.array_equal(run(op, face, seed=1), run(op, face, seed=2))


@pytest.mark.parametrize("op", D.OPS, ids=lambda op: op.name)
def test_bad_images_raise(op, face):
    with pytest.raises(ValueError, match="image"):
        run(op, face.astype(np.float32))
    with pytest.raises(ValueError, match="image"):
        run(op, face[..., 0])


@pytest.mark.parametrize("call, name", [
    (lambda im: D.gaussian_blur(im, ksize=4), "ksize"),
    (lambda im: D.gaussian_blur(im, ksize=True), "ksize"),
    (lambda im: D.gaussian_blur(im, sigma=-1), "sigma"),
    (lambda im: D.mean_blur(im, ksize=13), "ksize"),
    (lambda im: D.dual_blur(im, iterations=0), "iterations"),
    (lambda im: D.dual_blur(im, offset=0), "offset"),
    (lambda im: D.bokeh_blur(im, radius=0), "radius"),
    (lambda im: D.motion_blur(im, length=2.5), "length"),
    (lambda im: D.tilt_shift_blur(im, band_center=1.5), "band_center"),
    (lambda im: D.tilt_shift_blur(im, max_sigma=-1), "max_sigma"),
    (lambda im: D.jpeg(im, quality=0), "quality"),
    (lambda im: D.jpeg(im, quality=101), "quality"),
    (lambda im: D.jpeg(im, quality=50.0), "quality"),
    (lambda im: D.jpeg_ratio(im, ratio=0), "ratio"),
    (lambda im: D.jpeg_ratio(im, ratio=1.5), "ratio"),
    (lambda im: D.downup(im, scale=0), "scale"),
    (lambda im: D.downup(im, scale=1.2), "scale"),
    (lambda im: D.downup(im, interpolation="bicubic"), "interpolation"),
    (lambda im: D.guided_smooth(im, radius=0), "radius"),
    (lambda im: D.guided_smooth(im, radius=2.5), "radius"),
    (lambda im: D.guided_smooth(im, radius=True), "radius"),
    (lambda im: D.guided_smooth(im, strength=0), "strength"),
    (lambda im: D.guided_smooth(im, strength=float("nan")), "strength"),
    (lambda im: D.gaussian_noise(im, np.random.default_rng(0), sigma=-2), "sigma"),
    (lambda im: D.gaussian_noise(im, 0), "rng"),
    (lambda im: D.poisson_noise(im, np.random.default_rng(0), peak=0), "peak"),
    (lambda im: D.salt_pepper(im, np.random.default_rng(0), amount=1.5), "amount"),
    (lambda im: D.salt_pepper(im, np.random.default_rng(0), salt_ratio=-0.1), "salt_ratio"),
])
def test_bad_parameters_name_the_argument(call, name, face):
    with pytest.raises(ValueError, match=name):
        call(face)


# ------------------------------------------------------------------ blurs vs references

@pytest.mark.parametrize("ksize", D.KSIZES)
def test_gaussian_blur_matches_opencv(face, ksize):
    np.testing.assert_array_equal(D.gaussian_blur(face, ksize), cv2.GaussianBlur(face, (ksize, ksize), 0))
    np.testing.assert_array_equal(D.gaussian_blur(face, ksize, 2.0), cv2.GaussianBlur(face, (ksize, ksize), 2.0))


@pytest.mark.parametrize("ksize", D.KSIZES)
def test_mean_blur_matches_opencv_box(face, ksize):
    np.testing.assert_array_equal(D.mean_blur(face, ksize), cv2.blur(face, (ksize, ksize)))


@pytest.mark.parametrize("length", [3, 7, 9])
def test_motion_blur_axis_aligned_is_a_box(face, length):
    # horizontal = box (length x 1), vertical = box (1 x length); float path rounds once
    for angle, ksize in ((0, (length, 1)), (90, (1, length)), (180, (length, 1))):
        ref = cv2.blur(face, ksize).astype(int)
        assert np.abs(D.motion_blur(face, length, angle).astype(int) - ref).max() <= 1


def test_motion_kernel_properties():
    for length, angle in ((7, 0), (9, 30), (8, 45), (15, 123.4)):
        k = D.motion_kernel(length, angle)
        assert k.shape[0] == k.shape[1] and k.shape[0] % 2 == 1
        assert k.sum() == pytest.approx(1.0, abs=1e-5)
        # symmetric under 180 degree rotation (centred line)
        np.testing.assert_allclose(k, k[::-1, ::-1], atol=1e-6)
    k = D.motion_kernel(8, 0)
    np.testing.assert_allclose(k[4], np.array([0.5, 1, 1, 1, 1, 1, 1, 1, 0.5]) / 8, atol=1e-7)
    # 45 degrees: weight lies along the anti-diagonal (y up = counter-clockwise on screen)
    k = D.motion_kernel(9, 45)
    anti = np.fliplr(k).diagonal().sum()
    assert anti > 0.5 and k.diagonal().sum() < 0.2
    # applying the kernel equals the direct filter2D reference
    face = cv2.resize(data.astronaut(), (64, 64))
    ref = cv2.filter2D(face.astype(np.float32), -1, D.motion_kernel(11, 30))
    assert np.abs(D.motion_blur(face, 11, 30).astype(float) - ref).max() <= 0.5 + 1e-4


def test_bokeh_of_an_impulse_is_a_disc():
    radius = 4.0
    img = np.zeros((41, 41, 3), np.uint8)
    img[20, 20] = 255
    out = D.bokeh_blur(img, radius)[..., 0].astype(float)
    yy, xx = np.mgrid[-20:21, -20:21]
    dist = np.hypot(yy, xx)
    inner = out[dist <= radius - 1]
    assert inner.min() > 0 and inner.max() == inner.min()  # flat top
    assert np.all(out[dist > radius + 0.5] == 0)  # nothing outside the disc
    assert np.count_nonzero(out) == pytest.approx(np.pi * radius ** 2, rel=0.25)
    # equals the (symmetric) kernel scaled by the impulse
    np.testing.assert_allclose(out[16:25, 16:25], np.rint(255 * D.disc_kernel(radius)), atol=0)
    np.testing.assert_array_equal(out, out.T)  # isotropic


def test_disc_kernel_normalised_and_round():
    for r in (1.0, 2.5, 6.0):
        k = D.disc_kernel(r)
        assert k.sum() == pytest.approx(1.0, abs=1e-5)
        np.testing.assert_allclose(k, k.T)
        np.testing.assert_allclose(k, k[::-1])


def test_dual_blur_smooths_and_preserves_mean(face):
    out = D.dual_blur(face, iterations=2, offset=1.0).astype(float)
    # the dual filter is a normalised averaging: flat images stay flat
    np.testing.assert_array_equal(D.dual_blur(grey(77)), grey(77))
    assert abs(out.mean() - face.mean()) < 1.5
    lap = lambda im: np.abs(cv2.Laplacian(im.astype(np.float32), cv2.CV_32F)).mean()  # noqa: E731
    assert lap(out) < 0.4 * lap(face)
    # more iterations blur more
    more = D.dual_blur(face, iterations=3)
    assert lap(more) < lap(out)


def test_dual_blur_first_pass_with_offset_one_is_box_downsample(face):
    x = face.astype(np.float32)
    down = D._dual_down(x, 1.0)
    ref = x.reshape(64, 2, 64, 2, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(down, ref, atol=1e-3)


def _bilinear(img, y, x):
    """Reference bilinear sampling with clamp-to-edge (what a GPU texture fetch does)."""
    h, w = img.shape[:2]
    y = np.clip(y, 0, h - 1)
    x = np.clip(x, 0, w - 1)
    y0, x0 = np.floor(y).astype(int), np.floor(x).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    fy, fx = (y - y0)[..., None], (x - x0)[..., None]
    return ((1 - fy) * ((1 - fx) * img[y0, x0] + fx * img[y0, x1])
            + fy * ((1 - fx) * img[y1, x0] + fx * img[y1, x1]))


@pytest.mark.parametrize("offset", [1.0, 1.7, 2.5])
def test_dual_passes_match_shader_sampling(offset):
    src = np.random.default_rng(0).uniform(0, 255, (16, 20, 3))
    f32 = src.astype(np.float32)
    d = 0.5 * offset
    # downsample: output (i, j) centred at source (2i + 0.5, 2j + 0.5) in pixel-centre units
    yy, xx = np.mgrid[0:8, 0:10].astype(float)
    cy, cx = 2 * yy + 0.5, 2 * xx + 0.5
    ref = 4 * _bilinear(src, cy, cx)
    for sy in (-1, 1):
        for sx in (-1, 1):
            ref += _bilinear(src, cy + sy * d, cx + sx * d)
    np.testing.assert_allclose(D._dual_down(f32, offset), ref / 8, atol=1e-3)
    # upsample: output (m, n) centred at source (m / 2 - 0.25, n / 2 - 0.25)
    yy, xx = np.mgrid[0:32, 0:40].astype(float)
    cy, cx = yy / 2 - 0.25, xx / 2 - 0.25
    ref = np.zeros((32, 40, 3))
    for (ty, tx), wt in D._UP_TAPS:
        ref += wt * _bilinear(src, cy + ty * d, cx + tx * d)
    np.testing.assert_allclose(D._dual_up(f32, offset), ref / 12, atol=1e-3)


def test_tilt_shift_band_sharp_far_blurred(face):
    big = cv2.resize(data.astronaut(), (256, 256), interpolation=cv2.INTER_AREA)
    out = D.tilt_shift_blur(big, band_center=0.5, band_width=0.2, max_sigma=4.0)
    band = slice(128 - 20, 128 + 20)
    np.testing.assert_array_equal(out[band], big[band])  # inside the band: untouched
    far = slice(0, 20)
    blurred = cv2.GaussianBlur(big, (0, 0), 4.0)
    err_far_vs_blur = np.abs(out[far].astype(float) - blurred[far]).mean()
    err_far_vs_input = np.abs(out[far].astype(float) - big[far]).mean()
    assert err_far_vs_blur < 0.35 * err_far_vs_input
    # blur grows with distance: high-frequency energy falls monotonically by row bands
    lap = np.abs(cv2.Laplacian(out.astype(np.float32), cv2.CV_32F)).mean(axis=(1, 2))
    energy = [lap[a:a + 20].mean() for a in (108, 80, 50, 20, 0)]
    assert all(a > b for a, b in zip(energy, energy[1:]))


def test_tilt_shift_vertical_band(face):
    out = D.tilt_shift_blur(face, band_center=0.25, band_width=0.2, max_sigma=3.0, angle=90)
    np.testing.assert_array_equal(out[:, 22:42], face[:, 22:42])  # band around x = 32
    assert np.abs(out[:, 100:].astype(int) - face[:, 100:]).mean() > 2


# ------------------------------------------------------------------ compression

def test_jpeg_matches_opencv_roundtrip(face):
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(face, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 30])
    ref = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(D.jpeg(face, 30), ref)
    err = [np.abs(D.jpeg(face, q).astype(float) - face).mean() for q in (10, 50, 95)]
    assert err[0] > err[1] > err[2]


def _ratio(image, q):
    return cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, q])[1].size / image.size


@pytest.mark.parametrize("which", ["astronaut", "synthetic"])
@pytest.mark.parametrize("target", [0.02, 0.05, 0.1])
def test_jpeg_ratio_hits_target(which, target, synthetic):
    image = data.astronaut() if which == "astronaut" else synthetic
    q, achieved = D.jpeg_quality_for_ratio(image, target)
    assert achieved == pytest.approx(_ratio(image, q))
    # stated tolerance: within 10% of the target ...
    assert achieved == pytest.approx(target, rel=0.10)
    # ... and no neighbouring quality is closer
    for nq in (q - 1, q + 1):
        if 1 <= nq <= 100:
            assert abs(achieved - target) <= abs(_ratio(image, nq) - target)
    np.testing.assert_array_equal(D.jpeg_ratio(image, target), D.jpeg(image, q))


def test_jpeg_ratio_out_of_reach_clamps(synthetic):
    assert D.jpeg_quality_for_ratio(synthetic, 0.005)[0] == 1  # below quality 1's size
    assert D.jpeg_quality_for_ratio(synthetic, 1.0)[0] == 100


# ------------------------------------------------------------------ resampling

@pytest.mark.parametrize("interp", list(D.INTERPOLATIONS))
def test_downup_shape_and_loss(face, interp):
    out = D.downup(face, 0.4, interp)
    assert out.shape == face.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - face).mean() > 2
    small = cv2.resize(face, (51, 51), interpolation=D.INTERPOLATIONS[interp])
    np.testing.assert_array_equal(out, cv2.resize(small, (128, 128), interpolation=D.INTERPOLATIONS[interp]))


def test_downup_scale_one_is_identity(face):
    np.testing.assert_array_equal(D.downup(face, 1.0), face)


# ------------------------------------------------------------------ noise statistics

def test_gaussian_noise_statistics():
    img = grey(128, (256, 256))
    out = D.gaussian_noise(img, np.random.default_rng(0), mean=3.0, sigma=10.0)
    diff = out.astype(float) - img
    assert diff.mean() == pytest.approx(3.0, abs=0.1)
    assert diff.std() == pytest.approx(np.sqrt(10.0 ** 2 + 1 / 12), rel=0.02)  # + rounding
    # channels independent
    c = np.corrcoef(diff.reshape(-1, 3).T)
    assert np.abs(c[np.triu_indices(3, 1)]).max() < 0.02
    # saturates instead of wrapping
    assert D.gaussian_noise(grey(250), np.random.default_rng(0), sigma=30).min() > 100


def test_standard_normal_table_is_normal():
    z = D._standard_normal(np.random.default_rng(1), (400_000,)).astype(np.float64)
    assert z.mean() == pytest.approx(0, abs=0.01)
    assert z.std() == pytest.approx(1, abs=0.01)
    assert np.mean(np.abs(z) > 1.96) == pytest.approx(0.05, abs=0.003)


@pytest.mark.parametrize("peak", [255.0, 1000.0])
def test_poisson_variance_scales_with_intensity(peak):
    rng = np.random.default_rng(0)
    var = {}
    for v in (50, 200):
        out = D.poisson_noise(grey(v, (256, 256)), rng, peak=peak).astype(float)
        assert out.mean() == pytest.approx(v, abs=0.2)
        var[v] = out.var()
        assert var[v] == pytest.approx(255 * v / peak + 1 / 12, rel=0.06)
    assert var[200] / var[50] == pytest.approx(4.0, rel=0.1)


def test_poisson_low_counts_are_exact_poisson():
    # peak 20: a value of 51 is lam = 4 photons, drawn exactly -> output in steps of 255/20
    out = D.poisson_noise(grey(51, (200, 200)), np.random.default_rng(0), peak=20.0)
    counts = np.rint(out.astype(float) / 12.75)
    np.testing.assert_allclose(counts * 12.75, out, atol=0.5)
    assert counts.mean() == pytest.approx(4.0, abs=0.05)
    assert counts.var() == pytest.approx(4.0, rel=0.05)
    assert np.mean(counts == 0) == pytest.approx(np.exp(-4.0), abs=0.005)


def test_salt_pepper_fractions():
    img = grey(128, (300, 300))
    out = D.salt_pepper(img, np.random.default_rng(0), amount=0.05, salt_ratio=0.3)
    salt = np.all(out == 255, axis=-1)
    pepper = np.all(out == 0, axis=-1)
    untouched = np.all(out == 128, axis=-1)
    assert np.all(salt | pepper | untouched)  # whole pixels, never single channels
    frac = (salt | pepper).mean()
    assert frac == pytest.approx(0.05, abs=0.003)
    assert salt.sum() / (salt | pepper).sum() == pytest.approx(0.3, abs=0.03)
    np.testing.assert_array_equal(D.salt_pepper(img, np.random.default_rng(0), amount=0.0), img)


# ------------------------------------------------------------------ edge-preserving smoothing

def _guided_reference(image, radius, strength):
    """He et al.'s self-guided filter per channel, windows taken one by one in float64."""
    x = image.astype(np.float64)
    h, w = x.shape[:2]
    k = 2 * radius + 1

    def box(a):
        p = np.pad(a, ((radius, radius), (radius, radius), (0, 0)), mode="reflect")  # = reflect-101
        win = np.lib.stride_tricks.sliding_window_view(p, (k, k), axis=(0, 1))
        return win.mean(axis=(-2, -1))

    mean = box(x)
    var = box(x * x) - mean ** 2
    a = var / (var + strength ** 2)
    b = mean * (1 - a)
    return box(a) * x + box(b)


@pytest.mark.parametrize("radius, strength", [(1, 3.0), (4, 10.0), (7, 25.0)])
def test_guided_smooth_matches_the_guided_filter(synthetic, radius, strength):
    out = D.guided_smooth(synthetic, radius, strength)
    ref = _guided_reference(synthetic, radius, strength)
    assert np.abs(out - ref).max() <= 0.5 + 1e-3  # rounding to uint8 only


def test_guided_smooth_removes_texture_and_keeps_edges():
    rng = np.random.default_rng(0)
    img = np.full((96, 96, 3), 90.0)
    img[:, 48:] = 170.0                                   # a step edge of 80 levels
    img = np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)   # fine texture
    out = D.guided_smooth(img, radius=4, strength=12.0).astype(np.float64)
    blur = cv2.GaussianBlur(img, (9, 9), 0).astype(np.float64)
    flat = (slice(10, 86), slice(5, 38))
    assert out[flat].std() < 0.35 * img[flat].astype(np.float64).std()   # texture gone
    # the edge stays a step: the two pixels beside it keep most of their difference,
    # where a blur that removes as much texture spreads it out
    step = (out[:, 49] - out[:, 46]).mean()
    assert step > 70 and (blur[:, 49] - blur[:, 46]).mean() < step - 20


def test_guided_smooth_is_the_same_without_avx512_or_avx2(synthetic):
    """The bytes must not depend on the CPU: the same call in a process where OpenCV may not use
    AVX-512 or AVX2 (a no-op on a CPU without them)."""
    import hashlib
    import os
    import subprocess
    import sys

    code = ("import hashlib, sys, numpy as np; from synth.degrade import guided_smooth; "
            "x = np.frombuffer(sys.stdin.buffer.read(), np.uint8).reshape(192, 256, 3); "
            "print(hashlib.sha256(b''.join(guided_smooth(x, r, s).tobytes() "
            "for r, s in ((2, 4.0), (5, 17.5), (9, 40.0)))).hexdigest())")
    env = dict(os.environ, OPENCV_CPU_DISABLE="AVX512-SKX,AVX512F,AVX512-COMMON,AVX2,FMA3")
    done = subprocess.run([sys.executable, "-c", code], input=synthetic.tobytes(), env=env,
                          capture_output=True, check=True)
    here = hashlib.sha256(b"".join(D.guided_smooth(synthetic, r, s).tobytes()
                                   for r, s in ((2, 4.0), (5, 17.5), (9, 40.0)))).hexdigest()
    assert done.stdout.decode().split()[-1] == here
