"""Paired training batches (each fake next to its own real) and the global-quality check."""
import numpy as np
import pytest
import torch

from detector.data import (
    FaceDataset,
    PairedBatchSampler,
    Sample,
    pair_ids,
    pair_indices,
    read_manifest_csv,
    read_synth_dir,
    write_toy_eval_dir,
    write_toy_synth_dir,
)
from detector.quality import QUALITY_OPS, paired_auc, quality_check

NORM = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}


def test_pair_indices_match_each_fake_to_its_own_real(tmp_path):
    a = read_synth_dir(write_toy_synth_dir(tmp_path / "a", n=5, size=64, seed=1))
    b = read_synth_dir(write_toy_synth_dir(tmp_path / "b", n=4, size=64, seed=2))  # same indices, other run
    samples = a + b
    pairs = pair_indices(samples)
    assert len(pairs) == 9
    for r, f in pairs:
        real, fake = samples[r], samples[f]
        assert (real.label, fake.label) == (0, 1)
        assert real.meta["i"] == fake.meta["i"] and real.meta["dataset"] == fake.meta["dataset"]
        assert real.path.replace("/real/", "/fake/") == fake.path
    ids = pair_ids(samples)
    assert all(ids[r] == ids[f] for r, f in pairs)
    assert len(set(ids.tolist())) == 9  # runs a and b share indices 0..3 but not ids


def test_unpaired_samples_get_their_own_ids_and_no_pairs(tmp_path):
    ev = read_manifest_csv(write_toy_eval_dir(tmp_path / "ev", n=4, size=64))
    assert len(pair_indices(ev)) == 0
    assert len(set(pair_ids(ev).tolist())) == len(ev)
    # a fake whose real was dropped (e.g. by the identity split) is left out
    syn = read_synth_dir(write_toy_synth_dir(tmp_path / "s", n=3, size=64))
    assert pair_indices([s for s in syn if not (s.label == 0 and s.meta["i"] == 1)]).tolist() == [[0, 1], [3, 4]]


def test_paired_batches_hold_whole_pairs_reals_first():
    pairs = np.array([[2 * k, 2 * k + 1] for k in range(10)])
    sampler = PairedBatchSampler(pairs, batch_size=6, seed=3)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 4  # ceil(20 / 6)
    for b in batches:
        reals, fakes = b[:3], b[3:]
        assert [r + 1 for r in reals] == fakes
    seen = [r for b in batches for r in b[:3]]
    assert len(set(seen[:10])) == 10  # the first pass is a permutation of all pairs
    assert batches == list(PairedBatchSampler(pairs, batch_size=6, seed=3))
    sampler.set_epoch(1)
    assert list(sampler) != batches
    # DDP: ranks take disjoint batches of the same list
    r0 = list(PairedBatchSampler(pairs, 4, seed=3, num_replicas=2, rank=0))
    r1 = list(PairedBatchSampler(pairs, 4, seed=3, num_replicas=2, rank=1))
    assert len(r0) == len(r1) == 2 and not set(map(tuple, r0)) & set(map(tuple, r1))


@pytest.mark.parametrize("kwargs, match", [({"batch_size": 5}, "even size"), ({"batch_size": 0}, "even size"),
                                           ({"pairs": np.zeros((0, 2))}, "no \\(real, fake\\) pairs.*--pairing independent")])
def test_paired_sampler_errors(kwargs, match):
    args = {"pairs": np.array([[0, 1]]), "batch_size": 4} | kwargs
    with pytest.raises(ValueError, match=match):
        PairedBatchSampler(**args)


def test_paired_augmentation_is_identical_for_a_fake_and_its_real(tmp_path):
    samples = read_synth_dir(write_toy_synth_dir(tmp_path / "t", n=8, size=128, seed=4))
    pairs = pair_indices(samples)

    def outside_equal(paired):
        ds = FaceDataset(samples, "full", augment=True, norm=NORM, seed=7, paired_augment=paired, p_affine=0.5)
        same = []
        for r, f in pairs:
            real, fake = ds[int(r)], ds[int(f)]
            # the fake's mask travels with the same geometry: far outside it the two images match
            far = torch.nn.functional.max_pool2d(fake["mask"][None], 33, stride=1, padding=16)[0, 0] == 0
            assert far.sum() > 500
            same.append(bool(torch.allclose(real["image"][:, far], fake["image"][:, far], atol=1e-5)))
        return same

    assert all(outside_equal(True))
    assert not all(outside_equal(False))


class _Sharpness(torch.nn.Module):
    """Logit = minus the mean absolute Laplacian: softer images score as more fake."""

    input_norm = NORM

    def forward(self, x):
        lap = torch.tensor([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=x.dtype).expand(3, 1, 3, 3)
        hf = torch.nn.functional.conv2d(x, lap, groups=3).abs().mean(dim=(1, 2, 3))
        return {"logit": -hf}


class _Constant(torch.nn.Module):
    input_norm = NORM

    def forward(self, x):
        return {"logit": torch.zeros(x.shape[0])}


def test_quality_check_catches_a_sharpness_detector_and_passes_a_blind_one(tmp_path):
    samples = read_synth_dir(write_toy_synth_dir(tmp_path / "q", n=12, size=64, seed=5))
    res = quality_check(_Sharpness(), samples)
    assert res["n"] == 12
    assert res["auc"]["blur"] == 1.0 and res["auc"]["downup"] == 1.0  # every blurred copy "more fake"
    assert res["auc"]["sharpen"] == 0.0
    assert res["max_dev"] == 0.5
    blind = quality_check(_Constant(), samples, ops=("blur", "jpeg50"))
    assert blind["auc"] == {"blur": 0.5, "jpeg50": 0.5} and blind["max_dev"] == 0.0


def test_quality_check_errors():
    with pytest.raises(ValueError, match="unknown \\['gamma'\\]"):
        quality_check(_Constant(), [Sample("x.png", 0)], ops=("gamma",))
    with pytest.raises(ValueError, match="no real samples"):
        quality_check(_Constant(), [Sample("x.png", 1)])


def test_quality_ops_keep_shape_and_dtype_and_change_the_image():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    for name, op in QUALITY_OPS.items():
        out = op(img)
        assert out.shape == img.shape and out.dtype == np.uint8, name
        assert np.abs(out.astype(int) - img).mean() > 1, name


def test_paired_auc_reference():
    assert paired_auc([0, 1], [2, 3]) == 1.0
    assert paired_auc([0, 2], [1, 3]) == 0.75
    assert paired_auc([1, 1], [1, 1]) == 0.5


def test_amplify_pairs_scales_only_the_fakes_difference_and_stays_valid():
    from detector.train import amplify_pairs

    rng = np.random.default_rng(0)
    real = torch.from_numpy(rng.uniform(0.2, 0.8, (3, 3, 8, 8)).astype(np.float32))
    fake = real.clone()
    fake[:, :, 2:6, 2:6] += 0.05  # the forgery: a small brightening inside a square
    fake[2, 0, 0, 0] = 0.9  # a large change near the top of the range
    batch = torch.cat([real, fake])
    lo, hi = torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1)
    out = amplify_pairs(batch, torch.tensor([1.0, 3.0, 3.0]), lo, hi)
    assert torch.equal(out[:3], real)  # reals untouched
    assert torch.equal(out[3], fake[0])  # factor 1 is a no-op
    diff = out[4] - real[1]
    assert torch.allclose(diff[:, 2:6, 2:6], torch.full((3, 4, 4), 0.15), atol=1e-6)
    diff[:, 2:6, 2:6] = 0
    assert torch.count_nonzero(diff) == 0  # nothing changes where the fake equals its real
    assert out[5, 0, 0, 0] == 1.0 and out.max() <= 1.0 and out.min() >= 0.0  # clamped to valid pixels
    assert torch.equal(batch[3:], fake)  # the input batch is not modified


def test_amplify_factor_decays_linearly_to_one():
    from detector.train import amplify_factor

    assert [amplify_factor(4.0, s, 100, 0.5) for s in (0, 25, 50, 99)] == [4.0, 2.5, 1.0, 1.0]
    assert amplify_factor(4.0, 50, 100, 1.0) == 2.5
    assert amplify_factor(1.0, 0, 100, 1.0) == 1.0


def test_quality_twins_share_one_op_per_pair_and_replay():
    from detector.train import quality_twins

    rng = np.random.default_rng(0)
    real = torch.from_numpy(rng.random((3, 3, 48, 48), dtype=np.float32))
    batch = torch.cat([real, real])  # each "fake" equal to its real: a pair's twins must match too
    mean, std = np.full(3, 0.5, np.float32), np.full(3, 0.25, np.float32)
    batch = (batch - 0.5) / 0.25
    twins, source = quality_twins(batch, 2, np.random.default_rng(7), mean, std)
    assert twins.shape == (4, 3, 48, 48) and source.tolist() == [0, 1, 3, 4]
    assert torch.equal(twins[:2], twins[2:])  # real and fake of a pair: the same operation
    assert (twins - batch[source]).abs().mean() > 0.01  # processed
    again, _ = quality_twins(batch, 2, np.random.default_rng(7), mean, std)
    assert torch.equal(twins, again)
    with pytest.raises(ValueError, match="twins: expected 0 <= twins <= 3"):
        quality_twins(batch, 4, np.random.default_rng(7), mean, std)


def test_global_ops_draw_every_kind_within_range_and_reject_unknown_names():
    from detector.quality import TWIN_RANGES, apply_global_op, draw_global_op

    rng = np.random.default_rng(1)
    drawn = [draw_global_op(rng) for _ in range(200)]
    assert {name for name, _ in drawn} == set(TWIN_RANGES)
    assert all(TWIN_RANGES[n][0] <= v <= TWIN_RANGES[n][1] for n, v in drawn)
    im = (np.random.default_rng(2).random((40, 40, 3)) * 255).astype(np.uint8)
    for name, (lo, hi) in TWIN_RANGES.items():
        out = apply_global_op(im, name, (lo + hi) / 2)
        assert out.shape == im.shape and out.dtype == np.uint8 and not np.array_equal(out, im)
    with pytest.raises(ValueError, match="global op: unknown 'gamma'"):
        apply_global_op(im, "gamma", 1.0)


def test_twin_consistency_is_zero_for_equal_scores_and_moves_only_the_twin():
    from detector.train import twin_consistency

    src = torch.tensor([2.0, -1.0, 0.3], requires_grad=True)
    assert float(twin_consistency(src.detach().clone(), src)) == pytest.approx(0.0, abs=1e-6)
    twin = torch.tensor([0.0, 1.0, 0.3], requires_grad=True)
    loss = twin_consistency(twin, src)
    assert float(loss.detach()) > 0.1
    loss.backward()
    assert src.grad is None and twin.grad.abs().sum() > 0


def test_twin_logit_gap_is_the_mean_squared_logit_shift_and_moves_only_the_twin():
    from detector.train import TWIN_LOSSES, twin_logit_gap

    src = torch.tensor([2.0, -1.0, 0.3], requires_grad=True)
    twin = torch.tensor([2.5, -1.0, -0.7], requires_grad=True)
    loss = twin_logit_gap(twin, src)
    assert float(loss.detach()) == pytest.approx((0.25 + 0.0 + 1.0) / 3)
    loss.backward()
    assert src.grad is None
    assert torch.allclose(twin.grad, torch.tensor([1.0, 0.0, -2.0]) / 3)  # 2 (twin - src) / n
    # near p = 0.5 the KL term pulls ~8x less for the same logit shift; the logit term does not shrink there
    a, b = torch.tensor([0.0]), torch.tensor([0.2])
    assert float(TWIN_LOSSES["logit"](b, a)) / float(TWIN_LOSSES["kl"](b, a)) == pytest.approx(8.0, rel=0.02)


def _detail_energy(x):
    from detector.train import _gaussian_blur

    d = x - _gaussian_blur(x)
    return (d * d).mean((1, 2, 3))


def test_gaussian_blur_matches_opencv_and_keeps_constants():
    import cv2

    from detector.train import _gaussian_blur

    img = np.random.default_rng(3).random((40, 36, 3)).astype(np.float32)
    ref = cv2.GaussianBlur(img, (7, 7), 1.0, borderType=cv2.BORDER_REFLECT_101)
    ours = _gaussian_blur(torch.from_numpy(img.transpose(2, 0, 1))[None])[0].numpy().transpose(1, 2, 0)
    assert np.abs(ours - ref).max() < 1e-5
    const = torch.full((1, 3, 16, 16), 0.7)
    assert torch.allclose(_gaussian_blur(const), const, atol=1e-6)


def test_detail_gain_reaches_the_target_energy_or_the_nearest_reachable():
    from detector.train import _gaussian_blur, detail_gain

    x = torch.from_numpy(np.random.default_rng(4).random((3, 3, 48, 48), dtype=np.float32))
    e0 = _detail_energy(x)
    target = e0 * torch.tensor([1.5, 0.6, 1.0])  # sharpen, blur, keep
    gain = detail_gain(x - _gaussian_blur(x), target)
    assert gain[0] > 0 and gain[1] < 0 and abs(float(gain[2])) < 1e-4
    y = x + gain.reshape(-1, 1, 1, 1) * (x - _gaussian_blur(x))
    assert torch.allclose(_detail_energy(y), target, rtol=1e-3)
    # below what any gain reaches: the gain of least detail, inside [-1, 4]
    low = detail_gain(x - _gaussian_blur(x), torch.zeros(3))
    assert bool(((low >= -1) & (low < 0)).all())
    assert float(detail_gain(x - _gaussian_blur(x), e0 * 1e4).max()) == 4.0  # clipped: heavy sharpening rings


def test_match_detail_pairs_equalises_balanced_pairs_on_one_side_and_replays():
    from detector.train import _gaussian_blur, match_detail_pairs

    rng = np.random.default_rng(5)
    real = torch.from_numpy(rng.random((6, 3, 48, 48), dtype=np.float32))
    fake = real.clone()
    fake[:, :, 12:36, 12:36] = _gaussian_blur(real)[:, :, 12:36, 12:36] * 0.5 + 0.25  # a softer pasted square
    fake[3:] = (real[3:] + 0.8 * (real[3:] - _gaussian_blur(real[3:]))).clamp(0, 1)  # three fakes sharper than their reals
    batch = torch.cat([real, fake])
    lo, hi = torch.full((1, 3, 1, 1), -10.0), torch.full((1, 3, 1, 1), 10.0)
    out = match_detail_pairs(batch, 1.0, np.random.default_rng(9), lo, hi)
    assert torch.equal(batch[6:], fake)  # the input is not modified
    energy = _detail_energy(out)
    assert torch.allclose(energy[:6], energy[6:], rtol=2e-3)
    changed = [(not torch.equal(out[k], batch[k]), not torch.equal(out[k + 6], batch[k + 6])) for k in range(6)]
    assert all(a != b for a, b in changed)  # exactly one side of each pair
    assert {a for a, _ in changed} == {True, False}  # both sides are drawn
    assert torch.equal(out, match_detail_pairs(batch, 1.0, np.random.default_rng(9), lo, hi))
    assert torch.equal(match_detail_pairs(batch, 0.0, np.random.default_rng(9), lo, hi), batch)
    # balanced: with every fake richer in detail than its real, matching would blur only fakes and
    # sharpen only reals; so only as many pairs are matched as the other group has (here none)
    one_sided = torch.cat([real[3:], fake[3:]])
    assert torch.equal(match_detail_pairs(one_sided, 1.0, np.random.default_rng(9), lo, hi), one_sided)
    mixed = torch.cat([real[2:], fake[2:]])  # one poorer fake, three richer: one pair of each matched
    moved = (match_detail_pairs(mixed, 1.0, np.random.default_rng(9), lo, hi) != mixed).flatten(1).any(1)
    assert int(moved.sum()) == 2 and bool(moved[0] or moved[4])
    clamped = match_detail_pairs(batch, 1.0, np.random.default_rng(9), torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1))
    assert float(clamped.min()) >= 0.0 and float(clamped.max()) <= 1.0
