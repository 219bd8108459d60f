"""benchmarks/bench_scoring_views.py scores a round under more views; its base view is the round as the loop scored it."""
import numpy as np
import pytest


@pytest.fixture(scope="module")
def bench(load_script):
    return load_script("benchmarks/bench_scoring_views.py")


@pytest.fixture(scope="module")
def run(tiny_fused_run, tmp_path_factory):
    """A tiny one-round run with a statistics model."""
    out = tmp_path_factory.mktemp("scoring-views") / "run"
    return out, tiny_fused_run(out)["rounds"][0]


def test_the_base_view_is_the_round_as_the_loop_scored_it(bench, run, tmp_path):
    folder, record = run
    scales = [1.0, 0.5]
    fusion, sets, quality, _ = bench.score_round(folder, 1, scales, {}, tmp_path / "cache")
    row = bench.variant_row(fusion, sets, quality, scales, "base")
    assert row["val"] == pytest.approx(record["val_fused"]["auc"], abs=1e-9)
    assert row["eval"] == pytest.approx(record["eval"]["auc"], abs=1e-9)
    assert row["max_dev"] == pytest.approx(record["val_quality"]["max_dev"], abs=1e-9)
    for op, auc in record["val_quality"]["auc"].items():
        assert row[f"q-{op}"] == pytest.approx(auc, abs=1e-9), op
    # one scale is the base view; the cache is read back as written
    assert bench.variant_row(fusion, sets, quality, scales, "scales:1") == row
    again = bench.score_round(folder, 1, scales, {}, tmp_path / "cache")
    for name in sets:
        np.testing.assert_array_equal(again[1][name][1], sets[name][1])


def test_views_are_the_members_on_mirrored_and_downscaled_faces(bench, run):
    import torch
    import torch.nn.functional as F

    from detector.checkpoint import load_checkpoint
    from detector.data import FaceDataset, collate

    folder, _ = run
    fusion, _ = load_checkpoint(folder / "round-01" / "checkpoint.pt")
    fusion.eval()
    samples = bench.score_round(folder, 1, [1.0], {}, None)[1]["eval"][0][:3]
    views = bench.view_logits(list(fusion.members), samples, fusion.input_norm, 64, [1.0, 0.5])
    x = collate([FaceDataset(samples, mode="full", norm=fusion.input_norm, full_size=64)[i] for i in range(3)])["image"]
    with torch.no_grad():
        half = F.interpolate(torch.flip(x, dims=(-1,)), size=(32, 32), mode="bilinear", antialias=True, align_corners=False)
        want = fusion.members[1](half)["logit"].double().numpy()
    np.testing.assert_allclose(views[:, 1, 1, 1], want, rtol=1e-5, atol=1e-5)


def test_bad_arguments_exit_2_naming_them(bench, run, capsys):
    folder, _ = run
    for argv, message in [([str(folder), "--round", "1", "--scales", "0.75"], "including 1"),
                          ([str(folder), "--round", "1", "--extra", "val=/x"], "NAME=DIR"),
                          ([str(folder), "--round", "2"], "holds rounds 1..1"),
                          ([str(folder.parent), "--round", "1"], "no state.json"),
                          ([str(folder), "--round", "1", "--variants", "scales:1,0.6"], "must be among --scales"),
                          ([str(folder), "--round", "1", "--variants", "zoom"], "expected base, scales:A,B")]:
        with pytest.raises(SystemExit) as exc:
            bench.main(argv)
        assert exc.value.code == 2
        assert message in capsys.readouterr().err
