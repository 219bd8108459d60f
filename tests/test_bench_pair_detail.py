"""benchmarks/bench_pair_detail.py: the pair-level fine-detail cue of a synth run."""
import numpy as np
import pytest

from detector.data import write_toy_synth_dir


@pytest.fixture(scope="module")
def bench(load_script):
    return load_script("benchmarks/bench_pair_detail.py")


def test_log_ratios_are_zero_for_equal_pairs_and_signed_by_the_richer_side(bench):
    import cv2

    real = (np.random.default_rng(0).random((48, 48)) * 200 + 20).astype(np.uint8)
    mask = np.zeros((48, 48), bool)
    mask[12:36, 12:36] = True
    assert bench.pair_log_ratios(real, real, mask) == (0.0, 0.0)
    soft = real.copy()
    soft[mask] = cv2.GaussianBlur(real, (0, 0), 1.5)[mask]
    inside, whole = bench.pair_log_ratios(real, soft, mask)
    assert inside < whole < 0  # the softened fake is poorer, most of all inside the mask
    assert bench.pair_log_ratios(soft, real, mask) == pytest.approx((-inside, -whole))


def test_a_toy_run_whose_fakes_are_blurred_inside_reads_as_poorer_in_every_subset(bench, tmp_path, capsys):
    run = write_toy_synth_dir(tmp_path / "toy", n=12, size=64, seed=3)
    out = tmp_path / "detail.md"
    assert bench.main(["--run", str(run), "--out", str(out)]) == 0
    text = out.read_text()
    assert "12 pairs measured, 0 skipped" in text
    rows = [line.split("|") for line in text.splitlines() if line.startswith("| ") and "subset" not in line]
    names = [r[1].strip() for r in rows]
    assert names[0] == "all" and "pairing self" in names and "source_degrade none" in names
    for r in rows:
        assert float(r[3]) == 0.0 and float(r[4]) < 0  # no fake is richer inside its mask
    assert text.strip() in capsys.readouterr().out


def test_a_folder_without_a_manifest_is_refused_naming_the_file(bench, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        bench.main(["--run", str(tmp_path)])
    assert exc.value.code == 2 and str(tmp_path / "manifest.jsonl") in capsys.readouterr().err


def test_a_bad_manifest_line_is_skipped_and_counted_and_a_missing_out_folder_refused(bench, tmp_path, capsys):
    run = write_toy_synth_dir(tmp_path / "toy", n=4, size=64, seed=3)
    with open(run / "manifest.jsonl", "a") as f:
        f.write("{not json\n")
    assert bench.main(["--run", str(run)]) == 0
    assert "4 pairs measured, 1 skipped" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        bench.main(["--run", str(run), "--out", str(tmp_path / "nope" / "t.md")])
    assert exc.value.code == 2 and str(tmp_path / "nope") in capsys.readouterr().err
