import json

import cv2
import numpy as np
import pytest
import torch

from detector.data import (
    BalancedBatchSampler,
    FaceDataset,
    Sample,
    collate,
    full_view,
    group_identities,
    identity_split,
    read_dataset,
    read_folders,
    read_manifest_csv,
    read_synth_dir,
    size_grouped_batches,
    split_by_identities,
    write_toy_synth_dir,
)

NORM = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}


def _unnorm(x: torch.Tensor) -> np.ndarray:
    return (x.numpy() * 0.25 + 0.5) * 255.0


def _write(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), arr[..., ::-1] if arr.ndim == 3 else arr)


# ------------------------------------------------------------------------------------- readers

def test_read_synth_dir_pairs_and_groups(tmp_path):
    out = write_toy_synth_dir(tmp_path / "toy", n=6, size=64, swap_fraction=0.5, seed=1)
    with (out / "manifest.jsonl").open("a") as fh:
        fh.write(json.dumps({"i": 6, "id": "000006", "status": "skipped", "reason": "no face", "plan": None}) + "\n")
    samples = read_synth_dir(out)
    assert len(samples) == 12  # skipped line ignored
    lines = [json.loads(text) for text in (out / "manifest.jsonl").read_text().splitlines()][:6]
    for line, real, fake in zip(lines, samples[0::2], samples[1::2]):
        assert (real.label, fake.label) == (0, 1)
        assert real.path == str(out / line["real"]) and fake.mask_path == str(out / line["mask"])
        assert real.group == (line["target_id"],)
        assert set(fake.group) == {line["target_id"], line["source_id"]}
        assert f"pairing={line['plan']['pairing']}" in fake.meta["keys"]
        assert f"blend={line['plan']['blend']['op']}" in fake.meta["keys"]


def test_read_manifest_csv(tmp_path):
    (tmp_path / "manifest.csv").write_text(
        "path,label,mask,generator,identity,video\n"
        "real/a.png,0,,real,001,v1\nfake/a.png,1,mask/a.png,sbi,001,v2\nfake/b.png,1,,dfl_swap,,\n")
    s = read_manifest_csv(tmp_path)
    assert [x.label for x in s] == [0, 1, 1]
    assert s[0].mask_path is None and s[1].mask_path == str(tmp_path / "mask/a.png")
    assert s[1].meta == {"generator": "sbi", "dataset": str(tmp_path), "video": "v2"}
    assert s[2].group == ("fake/b.png",)  # no identity, no video -> the path
    assert read_dataset(tmp_path) == s


@pytest.mark.parametrize("text, expected", [
    ("file,label\nx.png,0\n", "missing column 'path'"),
    ("path,label\nx.png,2\n", "manifest.csv:2: label must be 0 or 1"),
])
def test_read_manifest_csv_errors_name_file_and_problem(tmp_path, text, expected):
    (tmp_path / "manifest.csv").write_text(text)
    with pytest.raises(ValueError, match=expected):
        read_manifest_csv(tmp_path)


def test_read_folders_and_layout_detection(tmp_path):
    img = np.zeros((40, 40, 3), np.uint8)
    _write(tmp_path / "real/x/1.png", img)
    _write(tmp_path / "fake/2.jpg", img)
    _write(tmp_path / "fake/3.png", img)
    _write(tmp_path / "mask/3.png", img[..., 0])
    s = read_folders(tmp_path)
    assert [(x.label, x.mask_path is not None) for x in s] == [(0, False), (1, False), (1, True)]
    assert read_dataset(tmp_path) == s
    with pytest.raises(ValueError, match=r"empty.*unknown dataset layout; expected manifest.jsonl"):
        (tmp_path / "empty").mkdir()
        read_dataset(tmp_path / "empty")
    with pytest.raises(ValueError, match="does not exist"):
        read_dataset(tmp_path / "nope")


# --------------------------------------------------------------------------------------- split

def _swap_samples(pairs):
    """One real per target and one fake per (target, source) pair."""
    out = []
    for t, s in pairs:
        out.append(Sample(f"r_{t}_{s}", 0, None, (t,)))
        out.append(Sample(f"f_{t}_{s}", 1, None, (t, s)))
    return out


def _assert_disjoint(train, val):
    assert not group_identities(train) & group_identities(val)


def test_identity_split_disjoint_with_swap_links():
    rng = np.random.default_rng(0)
    pairs = [(f"id{k}", f"id{k}") for k in range(300)]
    # swap pairs link identities into small chains: id0-id1-id2, id10-id11, ...
    pairs += [(f"id{k}", f"id{k + 1}") for k in range(0, 300, 10)] + [(f"id{k + 1}", f"id{k + 2}") for k in range(0, 300, 10)]
    rng.shuffle(pairs)
    samples = _swap_samples(pairs)
    train, val = identity_split(samples, 0.1, seed=3)
    assert len(train) + len(val) == len(samples)
    _assert_disjoint(train, val)
    assert 0.08 <= len(val) / len(samples) <= 0.12
    assert {s.label for s in val} == {0, 1}
    # linked identities travel together
    vid = group_identities(val)
    for k in range(0, 300, 10):
        trio = {f"id{k}", f"id{k + 1}", f"id{k + 2}"}
        assert trio <= vid or not trio & vid
    again = identity_split(samples, 0.1, seed=3)
    assert again == (train, val)
    assert identity_split(samples, 0.1, seed=4)[1] != val


def test_identity_split_giant_component_drops_straddlers():
    # a ring: every identity linked to the next -> one component holding everything
    pairs = [(f"id{k}", f"id{(k + 1) % 200}") for k in range(200)]
    samples = _swap_samples(pairs)
    with pytest.warns(UserWarning, match="dropped"):
        train, val = identity_split(samples, 0.2, seed=0)
    _assert_disjoint(train, val)
    assert val and train and len(train) + len(val) < len(samples)


def test_split_by_identities():
    samples = _swap_samples([("a", "a"), ("a", "b"), ("c", "c")])
    train, val, dropped = split_by_identities(samples, {"a"})
    assert [s.path for s in val] == ["r_a_a", "f_a_a", "r_a_b"]
    assert [s.path for s in train] == ["r_c_c", "f_c_c"] and dropped == 1


# ------------------------------------------------------------------------------------- dataset

def _bright_square_dataset(tmp_path, size=96, n=4):
    """Fakes whose forged square is bright (220) on a dark textured background (~30)."""
    samples = []
    for k in range(n):
        r = np.random.default_rng(k)
        img = r.integers(20, 40, (size, size, 3)).astype(np.uint8)
        mask = np.zeros((size, size), np.uint8)
        y, x = r.integers(10, size - 50, size=2)
        mask[y:y + 40, x:x + 40] = 255
        img[mask > 0] = 220
        _write(tmp_path / f"fake/{k}.png", img)
        _write(tmp_path / f"mask/{k}.png", mask)
        samples.append(Sample(str(tmp_path / f"fake/{k}.png"), 1, str(tmp_path / f"mask/{k}.png"), (str(k),)))
    return samples


@pytest.mark.parametrize("mode", ["patch", "resize"])
def test_augmentation_keeps_mask_on_forged_pixels(tmp_path, mode):
    samples = _bright_square_dataset(tmp_path)
    ds = FaceDataset(samples, mode=mode, patch=64, size=64, augment=True, norm=NORM, p_affine=1.0,
                     boundary_fraction=1.0)
    checked = 0
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            it = ds[i]
            img = _unnorm(it["image"]).mean(0)
            m = it["mask"][0].numpy()
            assert it["image"].shape == (3, 64, 64) and m.shape == (64, 64)
            # 2 px away from the edge: global blur / resampling augmentations may soften the edge itself
            inside = cv2.erode((m > 0.9).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
            outside = cv2.erode((m < 0.1).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
            if inside.sum() > 20:
                assert (img[inside] > 120).mean() > 0.95
                checked += 1
            assert (img[outside] < 120).mean() > 0.95
            assert it["label"].item() == float(m.mean() > ds.fake_threshold)
    assert checked >= 6


def test_augmentation_is_reproducible_per_epoch_and_index(tmp_path):
    ds = FaceDataset(_bright_square_dataset(tmp_path), mode="patch", patch=64, augment=True, seed=5)
    a = ds[1]["image"]
    assert torch.equal(a, ds[1]["image"])
    ds2 = FaceDataset(ds.samples, mode="patch", patch=64, augment=True, seed=5)
    assert torch.equal(a, ds2[1]["image"])
    ds.set_epoch(1)
    assert not torch.equal(a, ds[1]["image"])


def test_patch_boundary_crops_straddle_the_mask(tmp_path):
    ds = FaceDataset(_bright_square_dataset(tmp_path, size=160), mode="patch", patch=32, boundary_fraction=1.0)
    means = [ds[i]["mask"].mean().item() for i in range(len(ds))]
    assert all(0.0 < m < 1.0 for m in means)


def test_patch_interior_crops_are_forged(tmp_path):
    ds = FaceDataset(_bright_square_dataset(tmp_path, size=160), mode="patch", patch=32, boundary_fraction=0.0)
    for epoch in range(3):
        ds.set_epoch(epoch)
        assert all(ds[i]["label"].item() == 1 and ds[i]["mask"].mean().item() > 0.25 for i in range(len(ds)))


def test_real_crops_are_label_zero_with_valid_empty_mask(tmp_path):
    img = np.full((64, 64, 3), 200, np.uint8)
    _write(tmp_path / "r.png", img)
    it = FaceDataset([Sample(str(tmp_path / "r.png"), 0)], mode="patch", patch=32, augment=True)[0]
    assert it["label"].item() == 0 and it["mask"].sum().item() == 0 and it["mask_valid"].item() == 1
    it = FaceDataset([Sample(str(tmp_path / "r.png"), 1)], mode="patch", patch=32)[0]
    assert it["label"].item() == 1 and it["mask_valid"].item() == 0  # fake without a mask


def test_full_view_multiple_of_32_native_pixels():
    img = np.arange(100 * 90 * 3, dtype=np.uint32).reshape(100, 90, 3).astype(np.uint8)
    v, m = full_view(img, np.zeros((100, 90), np.float32))
    assert v.shape == (96, 64, 3) and m.shape == (96, 64)
    assert np.array_equal(v, img[2:98, 13:77])  # centre crop, no resampling
    small, _ = full_view(img[:40, :50], np.zeros((40, 50), np.float32))
    assert small.shape == (64, 64, 3)


def test_unreadable_images_are_skipped_and_counted(tmp_path):
    good = _bright_square_dataset(tmp_path, n=1)
    (tmp_path / "bad.png").write_bytes(b"not a png")
    ds = FaceDataset(good + [Sample(str(tmp_path / "bad.png"), 0), Sample(str(tmp_path / "missing.png"), 0)], mode="full")
    batch = collate([ds[i] for i in range(3)])
    assert batch["skipped"] == 2 and batch["image"].shape[0] == 1 and batch["index"].tolist() == [0]
    assert ds.native_sizes()[1:] == [None, None]


def test_balanced_batches():
    labels = [0] * 30 + [1] * 7
    sampler = BalancedBatchSampler(labels, batch_size=8, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 5
    for b in batches:
        assert sum(labels[i] for i in b) == 4 and len(b) == 8
    reals = [i for b in batches for i in b if labels[i] == 0]
    assert len(set(reals)) == 20  # reals drawn without replacement within an epoch
    assert list(sampler) == batches
    sampler.set_epoch(1)
    assert list(sampler) != batches
    r0 = list(BalancedBatchSampler(labels, 8, seed=0, num_replicas=2, rank=0))
    r1 = list(BalancedBatchSampler(labels, 8, seed=0, num_replicas=2, rank=1))
    assert len(r0) == len(r1) == 2 and r0 == batches[0:4:2] and r1 == batches[1:4:2]
    with pytest.raises(ValueError, match="both classes"):
        BalancedBatchSampler([0, 0], 2)


def test_size_grouped_batches():
    sizes = [(64, 64), (96, 64), (64, 64), None, (64, 64)]
    assert size_grouped_batches(sizes, 2) == [[0, 2], [4], [1], [3]]


def test_eval_set_reads_if_present():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "eval" / "xgen-webmorph"
    if not (root / "manifest.csv").is_file():
        pytest.skip("shared eval data not present")
    s = read_dataset(root)
    assert len(s) == 612 and {x.meta["generator"] for x in s} == {"real", "sbi", "dfl_swap"}
    assert all(x.mask_path for x in s if x.label == 1)


def test_collate_rejects_a_batch_of_mixed_sizes_with_a_hint():
    def item(h, w):
        return {"image": torch.zeros(3, h, w), "label": torch.tensor(1.0), "mask": torch.zeros(1, h, w),
                "mask_valid": torch.tensor(1.0), "index": 0}
    assert collate([item(64, 64), None, item(64, 64)])["image"].shape == (2, 3, 64, 64)
    with pytest.raises(ValueError, match="mode 'patch'"):
        collate([item(64, 64), item(96, 64)])


def test_full_mode_with_full_size_keeps_native_faces_and_resizes_others(tmp_path):
    rng = np.random.default_rng(0)
    samples = []
    for n, side in enumerate((64, 96)):
        p = tmp_path / f"r{n}.png"
        cv2.imwrite(str(p), rng.integers(0, 256, (side, side, 3), dtype=np.uint8))
        samples.append(Sample(path=str(p), label=0, mask_path=None, group=(f"id{n}",), meta={}))
    native = FaceDataset(samples, mode="full", full_size=64)
    a, b = native[0]["image"], native[1]["image"]
    assert a.shape == b.shape == (3, 64, 64)
    raw = cv2.imread(samples[0].path)[..., ::-1].astype(np.float32) / 255.0
    np.testing.assert_allclose(a.numpy() * native.std + native.mean, raw.transpose(2, 0, 1), atol=1e-5)  # untouched
    assert FaceDataset(samples, mode="full")[1]["image"].shape == (3, 96, 96)  # eval: native
    with pytest.raises(ValueError, match="full_size"):
        FaceDataset(samples, mode="full", full_size=50)


def test_scores_with_worker_processes_equal_in_process_scores(tmp_path):
    """Workers start from a forkserver (a forked child can hang in OpenCV), so the dataset, including a
    global op of the quality check, must pickle; the scores must not depend on the worker count."""
    from detector.data import read_dataset, write_toy_synth_dir
    from detector.models import create_model
    from detector.quality import QUALITY_OPS
    from detector.train import score_dataset

    write_toy_synth_dir(tmp_path, n=6, size=64)
    torch.manual_seed(0)
    model = create_model("freq_attention", backbone="plainnet", embed_dim=16, decoder_dim=8, head_hidden=16)
    ds = FaceDataset(read_dataset(tmp_path), "full", norm=model.input_norm, global_op=QUALITY_OPS["blur"])
    in_process, skipped0 = score_dataset(model, ds, batch_size=4, workers=0)
    in_workers, skipped2 = score_dataset(model, ds, batch_size=4, workers=2)
    assert skipped0 == skipped2 == 0
    np.testing.assert_allclose(in_workers, in_process, rtol=1e-5, atol=1e-6)


def test_read_synth_dir_ignores_a_half_written_last_line(tmp_path):
    """An interrupted run can leave a last line without its newline; the reader keeps the complete
    lines, as synth's own manifest reader does, instead of refusing the whole pool."""
    from detector.data import read_synth_dir, write_toy_synth_dir

    write_toy_synth_dir(tmp_path, n=4, size=32)
    whole = read_synth_dir(tmp_path)
    with open(tmp_path / "manifest.jsonl", "a") as f:
        f.write('{"i": 4, "status": "ok", "real": "real/0')
    assert [s.path for s in read_synth_dir(tmp_path)] == [s.path for s in whole]


def test_photometric_ops_are_drawn_independently():
    # albumentations' set_random_seed hands each transform of a Compose a copy of one stream, so
    # their "apply?" draws coincide; the dataset seeds a single shared stream instead
    import albumentations as A

    from detector.data import _photometric, _seed_pipeline

    pipe = A.Compose(_photometric().transforms, save_applied_params=True)
    img = np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    combos = set()
    for seed in range(300):
        _seed_pipeline(pipe, np.random.default_rng(seed))
        applied = {name for name, _ in pipe(image=img)["applied_transforms"]}
        combos.add(("ImageCompression" in applied, bool(applied & {"GaussianBlur", "Sharpen", "Downscale"})))
    assert combos == {(False, False), (False, True), (True, False), (True, True)}
