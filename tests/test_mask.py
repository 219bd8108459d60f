import json

import cv2
import numpy as np
import pytest

from synth.face import LEFT_EYE, LIPS, NOSE, RIGHT_EYE, crop_face, face_size
from synth.mask import (
    DEFAULT_RANGES,
    IDENTITY_PARAMS,
    REGIONS,
    build_mask,
    polygon_mask,
    region_polygons,
    region_size,
    sample_mask_params,
    subtract_occlusion,
)

SHAPE = (256, 256)


@pytest.fixture(scope="module")
def lm(astro, astro_lm):
    _, lm_c, _ = crop_face(astro, astro_lm, scale=1.5, size=256)
    return lm_c


def _disc(r):
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def test_polygon_mask_values_and_area():
    m = polygon_mask((50, 60), [np.array([[10, 10], [30, 10], [30, 20], [10, 20]], float)])
    assert m.dtype == np.uint8 and m.shape == (50, 60)
    assert set(np.unique(m)) == {0, 255}
    assert (m[10:21, 10:31] == 255).all() and (m > 0).sum() == 21 * 11
    assert polygon_mask((5, 5), []).sum() == 0
    with pytest.raises(ValueError, match=r"polygons\[0\]"):
        polygon_mask((5, 5), [np.zeros((3, 3))])
    with pytest.raises(ValueError, match="shape"):
        polygon_mask((0, 5), [])


def test_polygon_mask_is_the_union_of_overlapping_polygons():
    a = np.array([[2, 2], [12, 2], [12, 12], [2, 12]], float)
    m = polygon_mask((20, 20), [a, a + 4])
    assert m[8, 8] == 255  # the overlap: one even-odd fill of both would leave it 0
    assert (m > 0).sum() == 2 * 11 * 11 - 7 * 7


def test_eye_masks_at_large_scale_are_the_union_of_both_eyes(lm):
    """Scaled up, the two eye polygons overlap on the nose bridge; the mask must still cover it."""
    params = dict(IDENTITY_PARAMS, scale=3.0)
    m = build_mask(SHAPE, lm, "eyes", params)
    each = [polygon_mask(SHAPE, [p]) for p in _scaled_eyes(lm, 3.0)]
    assert (each[0] & each[1]).any(), "the test needs overlapping eye polygons"
    np.testing.assert_array_equal(m, np.maximum(each[0], each[1]))


def _scaled_eyes(lm, factor):
    out = []
    for p in region_polygons(lm, "eyes"):
        c = p.astype(np.float64).mean(axis=0)
        out.append(c + (p - c) * factor)
    return out


@pytest.mark.parametrize("region", sorted(REGIONS))
def test_region_masks(lm, region):
    m = build_mask(SHAPE, lm, region)
    assert m.dtype == np.uint8 and m.shape == SHAPE
    assert set(np.unique(m)) == {0, 255}
    assert (m > 0).sum() > 200
    np.testing.assert_array_equal(m, polygon_mask(SHAPE, region_polygons(lm, region)))


def test_region_geometry(lm):
    area = {r: (build_mask(SHAPE, lm, r) > 0) for r in REGIONS}
    full = area["full"]
    for r in ("inner", "lower", "nose", "mouth"):
        assert (area[r] & ~full).sum() <= 0.02 * area[r].sum(), r
    assert full.sum() > area["inner"].sum() > area["mouth"].sum()
    # lower face: nothing above the lowest eye landmark (along the face's vertical axis,
    # perpendicular to the eye line); contains the mouth
    axis = lm[LEFT_EYE].mean(0) - lm[RIGHT_EYE].mean(0)
    down = np.array([-axis[1], axis[0]]) / np.linalg.norm(axis)
    down = down if down[1] > 0 else -down
    eye_bottom = (lm[np.concatenate([LEFT_EYE, RIGHT_EYE])] @ down).max()
    ys, xs = np.nonzero(area["lower"])
    assert (np.stack([xs, ys], 1) @ down).min() >= eye_bottom - 1.5
    assert area["lower"].sum() > 0.4 * full.sum()
    cx, cy = np.rint(lm[LIPS].mean(0)).astype(int)
    assert area["lower"][cy, cx] and area["mouth"][cy, cx] and area["inner"][cy, cx]
    # two eyes: two blobs containing the eye centres
    n, _ = cv2.connectedComponents(area["eyes"].astype(np.uint8))
    assert n == 3
    for idx in (LEFT_EYE, RIGHT_EYE):
        x, y = np.rint(lm[idx].mean(0)).astype(int)
        assert area["eyes"][y, x]
    x, y = np.rint(lm[NOSE].mean(0)).astype(int)
    assert area["nose"][y, x]


def test_sample_params_json_and_ranges(lm):
    rng = np.random.default_rng(0)
    size = face_size(lm)
    for _ in range(50):
        p = sample_mask_params(rng, lm)
        assert set(p) == set(IDENTITY_PARAMS)
        assert json.loads(json.dumps(p)) == p
        assert 0 <= p["jitter_px"] <= 0.03 * size + 1e-3
        assert 0.85 <= p["scale"] <= 1.15
        assert 0 <= p["warp_px"] <= 0.02 * size + 1e-3
        assert abs(p["morph_px"]) <= round(0.02 * size)
        assert 0 <= p["feather"] <= 8
        assert isinstance(p["jitter_seed"], int) and isinstance(p["morph_px"], int)
    # same seed -> same params; face size given as a number
    assert sample_mask_params(np.random.default_rng(5), lm) == sample_mask_params(np.random.default_rng(5), size)


def test_sample_params_custom_ranges_and_region_size(lm):
    rng = np.random.default_rng(1)
    p = sample_mask_params(rng, 100.0, scale=1.0, feather=(2, 3), jitter=0.1)
    assert p["scale"] == 1.0 and 2 <= p["feather"] <= 3 and p["jitter_px"] == pytest.approx(10.0)
    eyes = sample_mask_params(np.random.default_rng(2), lm, region="eyes", jitter=0.1)
    face = sample_mask_params(np.random.default_rng(2), lm, jitter=0.1)
    assert eyes["jitter_px"] == pytest.approx(0.1 * region_size(lm, "eyes"), abs=1e-3)
    assert eyes["jitter_px"] < face["jitter_px"] / 2
    with pytest.raises(ValueError, match="unknown mask range"):
        sample_mask_params(rng, lm, blur=(0, 1))
    with pytest.raises(ValueError, match="scale"):
        sample_mask_params(rng, lm, scale=(1.2, 1.1))
    with pytest.raises(ValueError, match="feather"):
        sample_mask_params(rng, lm, feather="big")
    with pytest.raises(ValueError, match="rng"):
        sample_mask_params(0, lm)
    with pytest.raises(ValueError, match="face size"):
        sample_mask_params(rng, -3.0)


def test_build_mask_deterministic(lm):
    rng = np.random.default_rng(3)
    for region in REGIONS:
        p = sample_mask_params(rng, lm, region=region)
        a = build_mask(SHAPE, lm, region, p)
        b = build_mask(SHAPE, lm, region, json.loads(json.dumps(p)))
        assert a.tobytes() == b.tobytes()
    p1 = sample_mask_params(np.random.default_rng(10), lm, feather=0)
    p2 = {**p1, "jitter_seed": p1["jitter_seed"] + 1}
    assert (build_mask(SHAPE, lm, "full", p1) != build_mask(SHAPE, lm, "full", p2)).any()


def test_jitter_bounded(lm):
    """Every deformed mask lies between the hull eroded and dilated by the largest
    displacement its params allow."""
    rng = np.random.default_rng(4)
    for region in ("full", "inner", "mouth"):
        base = build_mask(SHAPE, lm, region)
        polys = region_polygons(lm, region)
        rho = max(float(np.linalg.norm(q - q.mean(0), axis=1).max()) for q in polys)
        areas = []
        for _ in range(25):
            p = sample_mask_params(rng, lm, region=region, feather=0)
            m = build_mask(SHAPE, lm, region, p)
            assert set(np.unique(m)) <= {0, 255}
            shift = abs(p["scale"] - 1) * rho + 2 * np.sqrt(2) * p["jitter_px"] + np.sqrt(2) * p["warp_px"]
            r = int(np.ceil(shift + abs(p["morph_px"]))) + 2
            assert not (m & ~cv2.dilate(base, _disc(r))).any()
            assert not (cv2.erode(base, _disc(r)) & ~m).any()
            areas.append((m > 0).sum() / (base > 0).sum())
        # area stays within what scale 0.85-1.15 plus a few percent of jitter allow
        assert 0.5 < min(areas) and max(areas) < 1.6


def test_feather_softens_edges(lm):
    p = {**IDENTITY_PARAMS, "feather": 5.0}
    m = build_mask(SHAPE, lm, "full", p)
    hard = build_mask(SHAPE, lm, "full")
    assert len(np.unique(m)) > 50
    # deep inside and far outside unchanged
    assert (m[cv2.erode(hard, _disc(16)) > 0] == 255).all()
    assert (m[cv2.dilate(hard, _disc(16)) == 0] == 0).all()


def test_feather_equals_whole_image_gaussian_filter():
    # feather_mask filters only the nonzero box grown by the kernel radius; the result
    # must equal the separable Gaussian on the whole image (replicated border), bit for bit
    from synth.mask import feather_mask

    rng = np.random.default_rng(5)
    for _ in range(60):
        m = np.zeros((int(rng.integers(5, 80)), int(rng.integers(5, 80))), np.uint8)
        y, x = int(rng.integers(0, m.shape[0])), int(rng.integers(0, m.shape[1]))
        m[max(0, y - 9):y + int(rng.integers(1, 25)), max(0, x - 4):x + int(rng.integers(1, 25))] = rng.integers(1, 256)
        sigma = float(rng.uniform(0.3, 9.0))
        k = cv2.getGaussianKernel(2 * int(np.ceil(3.0 * sigma)) + 1, sigma)
        assert np.array_equal(feather_mask(m, sigma), cv2.sepFilter2D(m, -1, k, k, borderType=cv2.BORDER_REPLICATE))
    assert not feather_mask(np.zeros((9, 9), np.uint8), 2.0).any()


def test_build_mask_errors(lm):
    with pytest.raises(ValueError, match="region"):
        build_mask(SHAPE, lm, "ears")
    with pytest.raises(ValueError, match="missing key"):
        build_mask(SHAPE, lm, "full", {"scale": 1.0})
    with pytest.raises(ValueError, match="scale"):
        build_mask(SHAPE, lm, "full", {**IDENTITY_PARAMS, "scale": -1.0})
    with pytest.raises(ValueError, match="landmarks"):
        build_mask(SHAPE, lm[:100], "full")


def test_default_ranges_documented():
    assert DEFAULT_RANGES["scale"] == (0.85, 1.15) and DEFAULT_RANGES["feather"] == (0.0, 8.0)
    assert DEFAULT_RANGES["jitter"] == (0.0, 0.03)


def test_subtract_occlusion_uint8():
    mask = np.array([[255, 255, 200, 0]], np.uint8)
    occ_u8 = np.array([[0, 255, 100, 255]], np.uint8)
    out = subtract_occlusion(mask, occ_u8)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [[255, 0, 100, 0]])
    occ_f = np.array([[0.25, 1.0, 0.0, 0.5]], np.float32)
    np.testing.assert_array_equal(subtract_occlusion(mask, occ_f), [[191, 0, 200, 0]])
    np.testing.assert_array_equal(subtract_occlusion(mask, np.array([[True, False, True, False]])), [[0, 255, 0, 0]])


def test_subtract_occlusion_float_and_bool():
    m = np.array([[1.0, 0.5, 0.2]], np.float64)
    out = subtract_occlusion(m, np.array([[0.25, 0.75, 0.0]], np.float32))
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, [[0.75, 0.0, 0.2]], atol=1e-6)
    m32 = m.astype(np.float32)
    assert subtract_occlusion(m32, np.zeros_like(m32)).dtype == np.float32
    b = subtract_occlusion(np.array([[True, True, False]]), np.array([[0.0, 0.6, 0.0]]))
    assert b.dtype == bool and b.tolist() == [[True, False, False]]


def test_subtract_occlusion_errors():
    with pytest.raises(ValueError, match="occlusion"):
        subtract_occlusion(np.zeros((4, 4), np.uint8), np.zeros((4, 5), np.uint8))
    with pytest.raises(ValueError, match="occlusion"):
        subtract_occlusion(np.zeros((4, 4), np.uint8), np.full((4, 4), 2.0))
    for bad in (np.nan, -0.1, np.inf):  # NaN fails the single min/max range check too
        occ = np.zeros((4, 4), np.float32)
        occ[1, 2] = bad
        with pytest.raises(ValueError, match="occlusion"):
            subtract_occlusion(np.zeros((4, 4), np.uint8), occ)


def test_subtract_occlusion_uint8_equals_formula_exhaustively():
    """In-place uint8 path against rint(clip(m / 255 - o, 0, 1) * 255) evaluated in float32
    (exactly) and in float64 (within the float32 rounding, 1 level) for every mask level
    and a fine grid of occlusion values."""
    m = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 1001, axis=1)
    o = np.repeat(np.linspace(0, 1, 1001, dtype=np.float32)[None], 256, axis=0)
    f32 = np.float32
    want = np.rint(np.clip(m.astype(f32) / f32(255) - o, f32(0), f32(1)) * f32(255))
    out = subtract_occlusion(m, o)
    np.testing.assert_array_equal(out, want)
    assert np.abs(out - np.rint(np.clip(m / 255.0 - o.astype(np.float64), 0, 1) * 255)).max() <= 1


@pytest.mark.parametrize("sigma", [-1.0, float("nan"), float("inf")])
def test_feather_mask_refuses_a_bad_sigma(sigma):
    from synth.mask import feather_mask

    with pytest.raises(ValueError, match="sigma: must be a finite number >= 0"):
        feather_mask(np.full((9, 9), 255, np.uint8), sigma)
    assert np.array_equal(feather_mask(np.full((9, 9), 255, np.uint8), 0.0), np.full((9, 9), 255, np.uint8))
