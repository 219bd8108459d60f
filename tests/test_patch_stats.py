"""Relational patch statistics, the patch_stats model, its fit, and score fusion."""
import math

import cv2
import numpy as np
import pytest
import torch

from detector.checkpoint import load_checkpoint, save_checkpoint
from detector.fit_statistics import calibrate_fusion, extract_statistics, fit_patch_stats
from detector.metrics import binary_metrics
from detector.models import create_model
from detector.readers import read_dataset
from detector.statistics import EXTENDED_STATISTICS, STATISTICS, patch_statistics, statistic_maps, statistic_names


def _reference(img: np.ndarray, grid: int = 8) -> np.ndarray:
    """The same statistics written independently with OpenCV (uint8 RGB in)."""
    x = img.astype(np.float32) / 255.0
    lab = cv2.cvtColor(x, cv2.COLOR_RGB2LAB)
    g = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)
    blur = [cv2.GaussianBlur(g, (2 * math.ceil(3 * s) + 1,) * 2, s) for s in (1.0, 2.0, 4.0)]
    bands = [np.abs(g - blur[0]), np.abs(blur[0] - blur[1]), np.abs(blur[1] - blur[2])]
    lap = np.abs(cv2.Laplacian(g, cv2.CV_32F))
    grad = np.hypot(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1))

    def cells(m):
        return cv2.resize(m, (grid, grid), interpolation=cv2.INTER_AREA)

    out = [cells(lab[..., 0] / 100), cells(lab[..., 1] / 50), cells(lab[..., 2] / 50)]
    logs = [np.log(cells(m) + 1e-4) for m in bands + [lap, grad]]
    out = [c - np.median(c) for c in out + logs + [logs[0] - logs[1]]]
    return np.stack(out).ravel()


def _tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255.0


def test_patch_statistics_match_an_opencv_reference(astro):
    img = cv2.resize(astro, (256, 256), interpolation=cv2.INTER_AREA)
    got = patch_statistics(_tensor(img))[0].numpy()
    assert got.shape == (len(STATISTICS) * 64,) and got.dtype == np.float32
    ref = _reference(img)
    # per statistic: the colour cells agree to 1e-2 of their scale, the log energies to 0.02
    assert np.abs(got - ref).reshape(len(STATISTICS), -1).max(1).max() < 0.02
    assert np.corrcoef(got, ref)[0, 1] > 0.9999


def test_a_uniform_image_has_all_statistics_zero():
    f = patch_statistics(torch.full((2, 3, 64, 64), 0.4), grid=4)
    assert f.shape == (2, 9 * 16)
    assert torch.all(f.abs() < 1e-4)  # float rounding of the blurs only


def test_a_blurred_region_is_softer_than_the_rest_and_a_global_blur_is_not(astro):
    img = cv2.resize(astro, (256, 256), interpolation=cv2.INTER_AREA)
    local = img.copy()
    local[96:160, 96:160] = cv2.GaussianBlur(img, (0, 0), 2.0)[96:160, 96:160]
    hf = STATISTICS.index("hf")
    cell = 3 * 8 + 3  # row 3, column 3 of 8: inside the blurred block

    def hf_cells(im):
        return patch_statistics(_tensor(im))[0].view(len(STATISTICS), 64)[hf]

    base, after = hf_cells(img), hf_cells(local)
    assert after[cell] < base[cell] - 1.0  # the blurred cells lose high-frequency energy against the median
    glob = hf_cells(cv2.GaussianBlur(img, (0, 0), 2.0))
    # blurring everything moves the median cell too: the relative features change far less
    assert (glob - base).abs().mean() < (after - base).abs().max() / 2


def _extended_reference(img: np.ndarray, grid: int = 8) -> np.ndarray:
    """The four extended statistics written independently with OpenCV (uint8 RGB in)."""
    x = img.astype(np.float32) / 255.0
    lab = cv2.cvtColor(x, cv2.COLOR_RGB2LAB)
    g = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)

    def detail(c):
        return np.abs(c - cv2.GaussianBlur(c, (7, 7), 1.0))

    def cells(m):
        return cv2.resize(m, (grid, grid), interpolation=cv2.INTER_AREA)

    hf = detail(g)
    blocks = cv2.resize(hf, (hf.shape[1] // 8, hf.shape[0] // 8), interpolation=cv2.INTER_AREA)
    k = blocks.shape[0] // grid
    floor = blocks.reshape(grid, k, grid, k).min(axis=(1, 3))
    logs = [np.log(cells(detail(lab[..., 1] / 50)) + 1e-4), np.log(cells(detail(lab[..., 2] / 50)) + 1e-4),
            np.log(floor + 1e-4)]
    logs.append(logs[2] - np.log(cells(hf) + 1e-4))
    return np.stack([c - np.median(c) for c in logs]).ravel()


def test_extended_statistics_add_four_channels_that_match_an_opencv_reference(astro):
    img = cv2.resize(astro, (256, 256), interpolation=cv2.INTER_AREA)
    base, ext = statistic_maps(_tensor(img)), statistic_maps(_tensor(img), extended=True)
    assert statistic_names() == STATISTICS and statistic_names(True) == EXTENDED_STATISTICS
    assert ext.shape == (1, len(EXTENDED_STATISTICS), 8, 8) and len(EXTENDED_STATISTICS) == 13
    assert torch.equal(ext[:, :9], base)  # the nine are unchanged: a model on them reads the same features
    got, ref = ext[0, 9:].flatten().numpy(), _extended_reference(img)
    assert np.abs(got - ref).max() < 0.05 and np.corrcoef(got, ref)[0, 1] > 0.999


def test_noise_in_a_region_raises_its_noise_floor_there_only(astro):
    img = cv2.resize(astro, (256, 256), interpolation=cv2.INTER_AREA)
    r = np.random.default_rng(0)
    noisy = np.clip(img + r.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
    local = img.copy()
    local[64:128, 64:128] = noisy[64:128, 64:128]
    noise, a_detail = EXTENDED_STATISTICS.index("noise"), EXTENDED_STATISTICS.index("a_detail")
    cells = [2 * 8 + 2, 2 * 8 + 3, 3 * 8 + 2, 3 * 8 + 3]  # inside the noisy block

    def maps(im):
        return statistic_maps(_tensor(im), extended=True)[0].view(13, 64)

    base, after = maps(img), maps(local)
    rise = after[noise, cells] - base[noise, cells]
    assert rise.min() > 0.25 and rise.mean() > 0.8  # the block's floor rises against the median
    assert (after[a_detail, cells] - base[a_detail, cells]).min() > 0.3  # RGB noise is chroma noise too
    outside = torch.ones(64, dtype=torch.bool)
    outside[cells] = False
    assert (after[noise, outside] - base[noise, outside]).abs().mean() < rise.mean() / 4  # the change stays local


def test_extended_statistics_model_round_trips_through_a_checkpoint(tmp_path):
    m = create_model("patch_stats_extended", grid=4, hidden=8).eval()
    assert m.extended and m.n_features == 13 * 16 and create_model("patch_stats").n_features == 9 * 64
    with pytest.raises(ValueError, match="extended"):
        create_model("patch_stats", extended=1)
    x = torch.rand(2, 3, 64, 64)
    save_checkpoint(tmp_path / "x.pt", m)
    again, _ = load_checkpoint(tmp_path / "x.pt")
    with torch.no_grad():
        assert again.extended and torch.equal(m(x)["logit"], again(x)["logit"])


@pytest.mark.parametrize("bad, match", [(torch.zeros(1, 1, 32, 32), "B, 3, H, W"), (torch.zeros(3, 32, 32), "B, 3, H, W"),
                                        (torch.zeros(1, 3, 32, 32, dtype=torch.uint8), "float"),
                                        (torch.zeros(1, 3, 8, 8), "2 \\* grid")])
def test_patch_statistics_reject_bad_input(bad, match):
    with pytest.raises(ValueError, match=match):
        patch_statistics(bad)


def test_patch_stats_model_validates_and_gives_the_output_contract():
    with pytest.raises(ValueError, match="grid"):
        create_model("patch_stats", grid=1)
    with pytest.raises(ValueError, match="dropout"):
        create_model("patch_stats", dropout=1.0)
    m = create_model("patch_stats", grid=4, hidden=8).eval()
    out = m(torch.randn(2, 3, 64, 64))
    assert out["logit"].shape == (2,) and out["mask"] is None and out["sim"] is None


def _toy_features(n=400, seed=0):
    r = np.random.default_rng(seed)
    labels = r.integers(0, 2, n)
    x = r.normal(0, 1, (n, 9 * 16)).astype(np.float32)
    x[:, :4] += 1.5 * labels[:, None]  # four informative features among noise (Bayes AUC 0.98)
    return x, labels


def test_fit_learns_a_separable_problem_and_replays_exactly():
    x, y = _toy_features()
    a, b = create_model("patch_stats", grid=4, hidden=16), create_model("patch_stats", grid=4, hidden=16)
    b.load_state_dict(a.state_dict())
    losses = fit_patch_stats(a, x, y, steps=300, batch_size=64, seed=3)
    fit_patch_stats(b, x, y, steps=300, batch_size=64, seed=3)
    assert len(losses) == 3 and losses[-1] < losses[0]
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    xt, yt = _toy_features(seed=1)
    with torch.no_grad():
        scores = a.classify(torch.from_numpy(xt)).numpy()
    assert binary_metrics(yt, scores)["auc"] > 0.85
    assert not a.training


def test_fit_rejects_one_class_and_wrong_shapes():
    x, y = _toy_features()
    m = create_model("patch_stats", grid=4, hidden=8)
    with pytest.raises(ValueError, match="both reals"):
        fit_patch_stats(m, x, np.zeros_like(y), steps=1)
    with pytest.raises(ValueError, match="expected"):
        fit_patch_stats(m, x[:, :10], y, steps=1)


def _fusion():
    return create_model("score_fusion", members=[{"name": "patch_stats", "kwargs": {"grid": 4, "hidden": 8}},
                                                 {"name": "patch_stats", "kwargs": {"grid": 2, "hidden": 4}}])


def test_fusion_is_the_mean_of_standardised_member_logits():
    torch.manual_seed(0)
    f = _fusion().eval()
    f.logit_mean.copy_(torch.tensor([0.5, -1.0]))
    f.logit_std.copy_(torch.tensor([2.0, 0.5]))
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        a, b = (m(x)["logit"] for m in f.members)
        expected = ((a - 0.5) / 2.0 + (b + 1.0) / 0.5) / 2
        assert torch.allclose(f(x)["logit"], expected, atol=1e-6)


def test_fusion_takes_mask_and_sim_from_the_member_that_gives_them():
    f = create_model("score_fusion", members=[{"name": "patch_stats", "kwargs": {"grid": 4, "hidden": 8}},
                                              {"name": "freq_attention", "kwargs": {"head_pooled": False}}]).eval()
    out = f(torch.randn(1, 3, 64, 64))
    assert out["mask"].shape == (1, 1, 64, 64) and out["sim"].shape == (1, 25, 25)


def test_mirrored_fusion_averages_both_views_and_ignores_a_mirroring_of_its_input():
    torch.manual_seed(0)
    members = [{"name": "patch_stats", "kwargs": {"grid": 4, "hidden": 8}},
               {"name": "freq_attention", "kwargs": {"head_pooled": False}}]
    plain = create_model("score_fusion", members=members).eval()
    plain.logit_mean.copy_(torch.tensor([0.5, -1.0]))
    plain.logit_std.copy_(torch.tensor([2.0, 0.5]))
    mirrored = create_model("score_fusion", members=members, mirror=True).eval()
    mirrored.load_state_dict(plain.state_dict())
    assert mirrored.model_kwargs["mirror"] is True
    x = torch.randn(2, 3, 64, 64)
    flip = torch.flip(x, dims=(-1,))
    with torch.no_grad():
        a, b, out = plain(x), plain(flip), mirrored(x)
        assert not torch.allclose(a["logit"], b["logit"], atol=1e-4)  # the members are not mirror-symmetric
        assert torch.allclose(out["logit"], (a["logit"] + b["logit"]) / 2, atol=1e-5)
        assert torch.allclose(out["mask"], (a["mask"] + torch.flip(b["mask"], dims=(-1,))) / 2, atol=1e-5)
        assert torch.equal(out["sim"], a["sim"])
        assert torch.allclose(mirrored(flip)["logit"], out["logit"], atol=1e-5)


def test_fusion_rejects_a_mirror_that_is_not_a_bool():
    with pytest.raises(ValueError, match="mirror: expected True or False"):
        create_model("score_fusion", members=[{"name": "patch_stats"}, {"name": "patch_stats"}], mirror="yes")


def test_fusion_rejects_bad_members():
    with pytest.raises(ValueError, match="at least two"):
        create_model("score_fusion", members=[{"name": "patch_stats"}])
    with pytest.raises(ValueError, match="members\\[1\\]"):
        create_model("score_fusion", members=[{"name": "patch_stats"}, {"kwargs": {}}])
    with pytest.raises(ValueError, match="unknown model"):
        create_model("score_fusion", members=[{"name": "patch_stats"}, {"name": "nope"}])


def test_fusion_builds_members_without_downloading():
    f = create_model("score_fusion", members=[{"name": "patch_stats", "kwargs": {"grid": 4, "hidden": 8}},
                                              {"name": "timm_classifier", "kwargs": {"pretrained": True}}])
    assert f.model_kwargs["members"][1]["kwargs"]["pretrained"] is True  # recorded as given, built without weights


def test_calibrated_fusion_round_trips_through_a_checkpoint(toy_dirs, tmp_path):
    train_dir, eval_dir = toy_dirs
    samples = read_dataset(train_dir)
    f = _fusion()
    stats = f.members[0]
    feats = extract_statistics(stats, samples)
    assert feats.shape == (len(samples), 9 * 16) and np.isfinite(feats).all()
    fit_patch_stats(stats, feats, np.array([s.label for s in samples]), steps=50, batch_size=16)
    logits = calibrate_fusion(f, samples)
    assert logits.shape == (len(samples), 2)
    assert np.allclose(f.logit_mean.numpy(), logits.mean(0), atol=1e-4)
    assert np.allclose(f.logit_std.numpy(), logits.std(0), rtol=1e-4)
    path = save_checkpoint(tmp_path / "fused.pt", f.eval())
    g, meta = load_checkpoint(path)
    assert meta["model_name"] == "score_fusion"
    assert g.mirror is False  # fusions saved before the option existed score one view, as they were used
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(f(x)["logit"], g(x)["logit"])


def test_detector_fuse_writes_a_checkpoint_eval_can_use(toy_dirs, tmp_path, capsys):
    from detector.cli import main

    train_dir, eval_dir = toy_dirs
    cnn = create_model("timm_classifier")
    ckpt = save_checkpoint(tmp_path / "cnn.pt", cnn, {"size": 64})
    out = tmp_path / "fused" / "fused.pt"
    code = main(["fuse", "--ckpt", str(ckpt), "--data", str(train_dir), "--out", str(out), "--steps", "50",
                 "--calibration", "3", "--val-fraction", "0.3", "--workers", "0", "--no-progress"])
    assert code == 0
    text = capsys.readouterr().out
    assert "statistics model: fitted on" in text and "fused" in text and str(out) in text
    assert sorted(p.name for p in out.parent.iterdir()) == ["fused.pt"]
    model, meta = load_checkpoint(out)
    assert meta["model_name"] == "score_fusion" and meta["extra"]["size"] == 64
    assert meta["extra"]["fused_from"] == str(ckpt)
    assert model.mirror is True  # as detector train's fusions
    assert main(["eval", "--ckpt", str(out), "--data", str(eval_dir), "--workers", "0", "--no-progress"]) == 0
    one_view = tmp_path / "one-view.pt"
    assert main(["fuse", "--ckpt", str(ckpt), "--data", str(train_dir), "--out", str(one_view), "--steps", "50",
                 "--calibration", "3", "--val-fraction", "0.3", "--workers", "0", "--no-progress", "--mirror", "false"]) == 0
    assert load_checkpoint(one_view)[0].mirror is False


@pytest.mark.parametrize("extra, message", [(["--out", "x.pth"], "--out: expected a .pt"),
                                            (["--out", "x.pt", "--val-fraction", "1"], "--val-fraction"),
                                            (["--out", "x.pt", "--steps", "0"], "--steps"),
                                            (["--out", "x.pt", "--mirror", "maybe"], "--mirror: expected true or false")])
def test_detector_fuse_rejects_bad_options(toy_dirs, tmp_path, capsys, monkeypatch, extra, message):
    from detector.cli import main

    monkeypatch.chdir(tmp_path)
    ckpt = save_checkpoint(tmp_path / "cnn.pt", create_model("timm_classifier"))
    assert main(["fuse", "--ckpt", str(ckpt), "--data", str(toy_dirs[0]), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()


# ------------------------------------------------------------------ statistics of fakes rendered in memory

@pytest.fixture(scope="module")
def two_faces(astro, astro_lm):
    """A pool of two faces (the astronaut under two names), enough for self-blends and swaps."""
    from synth.pool import FacePool

    return FacePool.from_arrays({"a": astro, "b": astro.copy()}, {"a": astro_lm, "b": astro_lm})


def test_online_statistics_are_those_of_the_rendered_real_and_fake(two_faces):
    from detector.fit_statistics import online_statistics
    from synth import OnlineFakes

    fakes = OnlineFakes(two_faces, recipe="mixed", size=64, seed=3, length=3)
    features, labels, skipped = online_statistics(fakes, batch_size=2)
    assert features.shape == (6, 576) and features.dtype == np.float32 and skipped == 0
    assert labels.tolist() == [0, 1, 0, 1, 0, 1]
    for i in range(3):
        item = fakes[i]
        pair = torch.from_numpy(np.stack([item["real"], item["fake"]])).permute(0, 3, 1, 2).float() / 255
        np.testing.assert_allclose(features[2 * i: 2 * i + 2], patch_statistics(pair).numpy(), atol=1e-6)
    assert not np.allclose(features[0], features[1])  # the fake is not its real


def test_online_statistics_extended_add_the_four_statistics_per_face(two_faces):
    from detector.fit_statistics import online_statistics
    from synth import OnlineFakes

    fakes = OnlineFakes(two_faces, recipe="mixed", size=64, seed=3, length=2)
    base, _, _ = online_statistics(fakes, batch_size=2)
    ext, labels, _ = online_statistics(fakes, batch_size=2, extended=True)
    assert ext.shape == (4, 13 * 64) and labels.tolist() == [0, 1, 0, 1]
    np.testing.assert_array_equal(ext[:, :576], base)


def test_online_statistics_skip_and_count_items_without_a_usable_fake(two_faces):
    from detector.fit_statistics import online_statistics
    from synth import OnlineFakes
    from synth.render import DegenerateSample

    class SecondFails:
        def __init__(self):
            self.fakes = OnlineFakes(two_faces, recipe="mixed", size=64, seed=3, length=3)

        def __len__(self):
            return 3

        def __getitem__(self, i):
            if i == 1:
                raise DegenerateSample("no usable fake")
            return self.fakes[i]

    features, labels, skipped = online_statistics(SecondFails(), batch_size=2)
    full, _, _ = online_statistics(SecondFails().fakes, batch_size=2)
    assert skipped == 1 and labels.tolist() == [0, 1, 0, 1]
    np.testing.assert_array_equal(features, full[[0, 1, 4, 5]])


def test_fit_statistics_online_fits_and_reports(two_faces):
    from detector.fit_statistics import fit_statistics_online

    model, report = fit_statistics_online(two_faces, 4, size=64, seed=1, steps=20)
    assert not model.training and model.feature_std.min() > 0
    assert report["n_items"] == 4 and report["n_faces"] == 8 and report["n_skipped"] == 0
    assert {"fit_loss_first", "fit_loss_last", "features_s", "fit_s"} <= set(report)
    again, _ = fit_statistics_online(two_faces, 4, size=64, seed=1, steps=20)
    x = torch.randn(3, 576)
    with torch.no_grad():
        assert torch.equal(model.classify(x), again.classify(x))  # replays exactly
    with pytest.raises(ValueError, match="n: expected a positive int"):
        fit_statistics_online(two_faces, 0)


def test_fit_statistics_online_adds_extra_sources(two_faces, astro, astro_lm, monkeypatch):
    """Extra face sources add their own pairs (seed + k + 1) after the main source's, which stay as without them."""
    from detector import fit_statistics as F
    from synth import OnlineFakes
    from synth.pool import FacePool

    seen = []

    def capture(model, features, labels, masks, steps, seed, progress):
        seen.append((features, labels, masks))
        return [0.7, 0.6]

    monkeypatch.setitem(F.STATISTICS_FITS, "patch_stats", (capture, 5))
    other = FacePool.from_arrays({"c": astro.copy()}, {"c": astro_lm})  # one face: self-blends only
    _, report = F.fit_statistics_online(two_faces, 4, size=64, seed=1, extra=[(other, 3)])
    _, alone = F.fit_statistics_online(two_faces, 4, size=64, seed=1)
    assert report["n_items"] == 7 and report["n_items_extra"] == [3] and report["n_faces"] == 14
    assert alone["n_items"] == 4 and alone["n_items_extra"] == [] and alone["n_faces"] == 8
    main, _, _, main_masks = F.online_statistics(OnlineFakes(two_faces, recipe="mixed", size=64, seed=1, length=4),
                                                 with_masks=True, seed=1)
    added, _, _, _ = F.online_statistics(OnlineFakes(other, recipe="mixed", size=64, seed=2, length=3),
                                         with_masks=True, seed=2)
    (with_extra, labels, masks), (without, _, _) = seen
    np.testing.assert_array_equal(without, main)  # no extra source: the fit sees what it always saw
    np.testing.assert_array_equal(with_extra, np.concatenate([main, added]))
    assert labels.tolist() == [0, 1] * 7 and len(masks) == 7
    np.testing.assert_array_equal(masks[:4], main_masks)
    with pytest.raises(ValueError, match=r"extra\[0\]: expected a positive int count, got 0"):
        F.fit_statistics_online(two_faces, 4, size=64, extra=[(other, 0)])


def test_set_fusion_scale_uses_finite_rows_and_returns_fused_logits():
    from detector.fit_statistics import set_fusion_scale

    f = create_model("score_fusion", members=[{"name": "patch_stats"}, {"name": "patch_stats"}])
    logits = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0], [np.nan, 0.0]])
    fused = set_fusion_scale(f, logits)
    np.testing.assert_allclose(f.logit_mean.numpy(), [2.0, 3.0])
    np.testing.assert_allclose(f.logit_std.numpy(), [np.std([0, 2, 4])] * 2, rtol=1e-6)
    np.testing.assert_allclose(fused[:3], [-1.2247449, 0.0, 1.2247449], rtol=1e-6)
    assert np.isnan(fused[3])
    with pytest.raises(ValueError, match=r"logits: expected \(N, 2\)"):
        set_fusion_scale(f, np.zeros((4, 3)))


def test_fusion_weights_scale_each_member_and_old_checkpoints_load_as_equal_weights(tmp_path):
    from detector.checkpoint import load_checkpoint, save_checkpoint
    from detector.fit_statistics import fused_logits

    torch.manual_seed(0)
    f = _fusion().eval()
    f.logit_mean.copy_(torch.tensor([0.5, -1.0]))
    f.logit_std.copy_(torch.tensor([2.0, 0.5]))
    f.logit_weight.copy_(torch.tensor([0.8, 0.2]))
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        a, b = (m(x)["logit"] for m in f.members)
        expected = 0.8 * (a - 0.5) / 2.0 + 0.2 * (b + 1.0) / 0.5
        assert torch.allclose(f(x)["logit"], expected, atol=1e-6)
        np.testing.assert_allclose(fused_logits(f, torch.stack([a, b], 1).numpy()), expected.numpy(), atol=1e-5)
    # a fusion saved before the weights existed (no logit_weight in its state) loads as the mean it was
    path = tmp_path / "old.pt"
    save_checkpoint(path, f)
    ck = torch.load(path, weights_only=True)
    del ck["state_dict"]["logit_weight"]
    torch.save(ck, path)
    old, _ = load_checkpoint(path)
    assert torch.equal(old.logit_weight, torch.tensor([0.5, 0.5]))
    assert torch.equal(old.logit_mean, f.logit_mean)


def test_set_fusion_weights_follows_the_informative_member_and_never_inverts_one():
    from detector.fit_statistics import fused_logits, set_fusion_scale, set_fusion_weights

    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 400)
    informative = 2.0 * labels + rng.standard_normal(800)
    noise = rng.standard_normal(800)
    f = create_model("score_fusion", members=[{"name": "patch_stats"}, {"name": "patch_stats"}])
    logits = np.c_[noise, informative]
    set_fusion_scale(f, logits)
    w = set_fusion_weights(f, logits, labels)
    assert w.sum() == pytest.approx(1.0) and w[1] > 0.85 and w[0] >= 0
    np.testing.assert_allclose(f.logit_weight.numpy(), w, rtol=1e-6)
    # a member scoring against its label gets weight 0, not a negative one
    logits = np.c_[-informative, informative + rng.standard_normal(800)]
    set_fusion_scale(f, logits)
    assert set_fusion_weights(f, logits, labels)[0] == 0.0
    z = (logits - logits.mean(0)) / logits.std(0)
    np.testing.assert_allclose(fused_logits(f, logits), z[:, 1], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="only one class"):
        set_fusion_weights(f, logits, np.zeros(800, int))
    with pytest.raises(ValueError, match=r"logits, labels: expected \(N, 2\) and \(N,\)"):
        set_fusion_weights(f, logits[:, :1], labels)
