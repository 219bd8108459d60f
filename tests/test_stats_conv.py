"""The stats_conv model: statistic maps, its fit with the mask head, its place in fit_statistics_online."""
import numpy as np
import pytest
import torch

from detector.checkpoint import load_checkpoint, save_checkpoint
from detector.fit_statistics import fit_stats_conv
from detector.metrics import binary_metrics
from detector.models import create_model
from detector.statistics import EXTENDED_STATISTICS, STATISTICS, patch_statistics, statistic_maps

C = len(STATISTICS)


def test_statistic_maps_are_patch_statistics_as_maps():
    x = torch.rand(2, 3, 64, 64)
    maps = statistic_maps(x, grid=8)
    assert maps.shape == (2, C, 8, 8) and maps.dtype == torch.float32
    assert torch.equal(maps.flatten(1), patch_statistics(x, grid=8))
    # row-major cells: a brighter top-left quadrant is the top-left quarter of the L map
    x = torch.full((1, 3, 64, 64), 0.3)
    x[..., :32, :32] = 0.6
    lum = statistic_maps(x, grid=4)[0, 0]
    assert (lum[:2, :2] > 0.1).all() and torch.all(lum[2:] == 0) and torch.all(lum[:, 2:] == 0)


def test_stats_conv_outputs_and_argument_checks():
    m = create_model("stats_conv", grid=8, widths=(4, 8, 8)).eval()
    x = torch.randn(3, 3, 64, 48)
    with torch.no_grad():
        out = m(x)
    assert out["logit"].shape == (3,) and out["mask"].shape == (3, 1, 64, 48) and out["sim"] is None
    assert m.n_features == C * 64
    with torch.no_grad():
        assert torch.allclose(m.classify(m.features(x)), out["logit"])
    for kwargs, match in (({"grid": 6}, "multiple of 4"), ({"grid": 1}, "grid"), ({"widths": (4, 8)}, "widths"),
                          ({"dropout": 1.0}, "dropout")):
        with pytest.raises(ValueError, match=match):
            create_model("stats_conv", **kwargs)


def test_stats_conv_fine_reads_a_32_grid_with_a_stem_and_a_mask_at_its_resolution():
    m = create_model("stats_conv_fine").eval()
    assert (m.grid, m.n_features) == (32, C * 32 * 32) and m.model_kwargs == {}
    x = torch.rand(2, 3, 96, 80)
    with torch.no_grad():
        out = m(x)
        logit, mask = m.classify_maps(m.features(x))
    assert out["logit"].shape == (2,) and out["mask"].shape == (2, 1, 96, 80) and mask.shape == (2, 32, 32)
    assert torch.allclose(logit, out["logit"])
    # the stem halves the grid once more: the grid must survive three poolings
    for kwargs, match in (({"grid": 20}, "multiple of 8"), ({"stem": -1}, "stem"), ({"stem": 1.5}, "stem"),
                          ({"stem": True}, "stem")):
        with pytest.raises(ValueError, match=match):
            create_model("stats_conv_fine", **kwargs)


def test_stats_conv_extended_reads_the_13_statistics_and_fits_on_them():
    m = create_model("stats_conv_extended", grid=8, widths=(4, 8, 8)).eval()
    x = torch.rand(2, 3, 64, 64)
    assert m.extended and m.n_features == len(EXTENDED_STATISTICS) * 64 and len(m.feature_mean) == 13
    with torch.no_grad():
        f = m.features(x)
        out = m(x)
        plain = create_model("stats_conv", grid=8, widths=(4, 8, 8)).features(x)
    # the first nine maps are the plain model's: the extended statistics are appended, not mixed in
    torch.testing.assert_close(f[:, :C * 64], plain)
    assert torch.allclose(m.classify(f), out["logit"])
    # a trace only in an extended map (the noise floor) is learnt; nine maps per face are refused
    rng = np.random.default_rng(0)
    n = 200
    pairs = rng.normal(size=(n, 2, 13, 8, 8)).astype(np.float32)
    masks = np.zeros((n, 8, 8), np.float32)
    for i in range(n):
        r, c = rng.integers(0, 6, 2)
        masks[i, r:r + 3, c:c + 3] = 1
    pairs[:, 1, EXTENDED_STATISTICS.index("noise")] += 1.5 * masks
    features = pairs.reshape(2 * n, -1)
    losses = fit_stats_conv(m, features, masks, steps=200, batch_pairs=32, seed=0)
    assert losses[-1] < losses[0]
    with torch.no_grad():
        scores = m.classify(torch.from_numpy(features)).numpy()
    assert binary_metrics(np.tile([0, 1], n), scores)["auc"] > 0.9
    with pytest.raises(ValueError, match=r"features: expected \(2M, 832\)"):
        fit_stats_conv(m, pairs[:, :, :C].reshape(2 * n, -1), masks, steps=1)


def _toy_pairs(n=400, g=8, seed=0, amp=1.5):
    """Pairs of noise maps; each fake adds ``amp`` to the hf map inside a random 3x3 block of cells (its mask)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2, C, g, g)).astype(np.float32)
    masks = np.zeros((n, g, g), np.float32)
    for i in range(n):
        r, c = rng.integers(0, g - 2, 2)
        masks[i, r:r + 3, c:c + 3] = 1
    x[:, 1, STATISTICS.index("hf")] += amp * masks
    return x.reshape(2 * n, -1), masks


# with a stem block the 8 x 8 toy grid is pooled down to 1 x 1, so its trace is made stronger
@pytest.mark.parametrize("stem, amp", [(0, 1.5), (4, 3.0)])
def test_fit_stats_conv_learns_label_and_mask_and_replays_exactly(stem, amp):
    x, masks = _toy_pairs(amp=amp)
    torch.manual_seed(0)
    a = create_model("stats_conv", grid=8, widths=(8, 8, 8), stem=stem)
    b = create_model("stats_conv", grid=8, widths=(8, 8, 8), stem=stem)
    b.load_state_dict(a.state_dict())
    losses = fit_stats_conv(a, x, masks, steps=300, batch_pairs=16, seed=5)
    fit_stats_conv(b, x, masks, steps=300, batch_pairs=16, seed=5)
    assert len(losses) == 3 and losses[-1] < losses[0] and not a.training
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    xt, mt = _toy_pairs(seed=1, amp=amp)
    with torch.no_grad():
        logit, mask = a.classify_maps(torch.from_numpy(xt))
    y = np.tile([0, 1], len(mt))
    assert binary_metrics(y, logit.numpy())["auc"] > 0.9
    # the mask head points at the pasted cells: they outrank the fakes' other cells
    assert binary_metrics(mt.ravel(), mask[1::2].numpy().ravel())["auc"] > 0.8


def test_fit_stats_conv_rejects_bad_shapes():
    x, masks = _toy_pairs(n=10)
    m = create_model("stats_conv", grid=8, widths=(4, 4, 4))
    with pytest.raises(ValueError, match="features: expected"):
        fit_stats_conv(m, x[:-1], masks, steps=1)
    with pytest.raises(ValueError, match="masks: expected"):
        fit_stats_conv(m, x, masks[:5], steps=1)
    with pytest.raises(ValueError, match="steps"):
        fit_stats_conv(m, x, masks, steps=0)


def test_stats_conv_checkpoint_round_trip(tmp_path):
    x, masks = _toy_pairs(n=20)
    m = create_model("stats_conv", grid=8, widths=(4, 4, 4))
    fit_stats_conv(m, x, masks, steps=5, batch_pairs=4)
    save_checkpoint(tmp_path / "s.pt", m)
    raw = torch.load(tmp_path / "s.pt", weights_only=True)
    assert raw["model_name"] == "stats_conv"
    again = load_checkpoint(tmp_path / "s.pt")[0].eval()
    img = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(m(img)["logit"], again(img)["logit"])


@pytest.fixture(scope="module")
def two_faces(astro, astro_lm):
    from synth.pool import FacePool

    return FacePool.from_arrays({"a": astro, "b": astro.copy()}, {"a": astro_lm, "b": astro_lm})


def test_online_statistics_with_masks_pool_the_rendered_mask(two_faces):
    from detector.fit_statistics import online_statistics
    from synth import OnlineFakes

    fakes = OnlineFakes(two_faces, recipe="mixed", size=64, seed=3, length=2)
    features, labels, skipped, masks = online_statistics(fakes, grid=16, batch_size=2, with_masks=True)
    assert features.shape == (4, C * 256) and masks.shape == (2, 16, 16) and masks.dtype == np.float32
    for i in range(2):
        share = fakes[i]["mask"].reshape(16, 4, 16, 4).mean((1, 3)) / 255.0
        np.testing.assert_allclose(masks[i], share, atol=1e-6)
    plain, _, _ = online_statistics(fakes, grid=16, batch_size=2)
    np.testing.assert_array_equal(plain, features)


def test_fit_statistics_online_fits_either_model(two_faces, monkeypatch):
    from detector import fit_statistics
    from detector.fit_statistics import fit_statistics_online

    model, report = fit_statistics_online(two_faces, 4, model="stats_conv", size=64, seed=1, steps=3)
    assert model.model_name == "stats_conv" and not model.training
    assert report["model"] == "stats_conv" and report["steps"] == 3 and report["n_faces"] == 8
    model, report = fit_statistics_online(two_faces, 4, model="stats_conv_fine", size=64, seed=1, steps=3)
    assert model.model_name == "stats_conv_fine" and model.grid == 32 and report["n_faces"] == 8
    model, report = fit_statistics_online(two_faces, 4, model="stats_conv_extended", size=64, seed=1, steps=3)
    assert model.model_name == "stats_conv_extended" and model.extended and report["n_faces"] == 8
    fit, _ = fit_statistics.STATISTICS_FITS["patch_stats"]
    monkeypatch.setitem(fit_statistics.STATISTICS_FITS, "patch_stats", (fit, 2))  # the default: the model's own
    model, report = fit_statistics_online(two_faces, 4, size=64, seed=1)
    assert model.model_name == "patch_stats" and report["model"] == "patch_stats" and report["steps"] == 2
    with pytest.raises(ValueError, match="model: expected one of"):
        fit_statistics_online(two_faces, 4, model="nope")


def test_online_statistics_twins_add_globally_processed_pairs_that_replay(two_faces):
    from detector.fit_statistics import online_statistics
    from detector.quality import apply_global_op, draw_global_op
    from synth import OnlineFakes

    fakes = OnlineFakes(two_faces, recipe="mixed", size=64, seed=3, length=4)
    features, labels, _, masks = online_statistics(fakes, grid=8, with_masks=True, twins=1.0, seed=9)
    assert features.shape == (16, C * 64) and masks.shape == (8, 8, 8) and labels.tolist() == [0, 1] * 8
    item = fakes[1]
    rng = np.random.default_rng((9, 7, 1))
    rng.random()
    name, value = draw_global_op(rng)
    twin = np.stack([apply_global_op(item["real"], name, value), apply_global_op(item["fake"], name, value)])
    expect = patch_statistics(torch.from_numpy(twin).permute(0, 3, 1, 2).float() / 255.0, grid=8).numpy()
    np.testing.assert_allclose(features[6:8], expect, atol=1e-6)  # item 1's twin follows its own pair
    np.testing.assert_array_equal(masks[2], masks[3])
    again = online_statistics(fakes, grid=8, with_masks=True, twins=1.0, seed=9)
    np.testing.assert_array_equal(again[0], features)
    none, _, _ = online_statistics(fakes, grid=8, twins=0.0)
    assert len(none) == 8
    with pytest.raises(ValueError, match="twins"):
        online_statistics(fakes, twins=1.5)
