"""benchmarks/bench_members.py scores a group of runs as the mean of their logits and refuses bad runs by name."""
import numpy as np
import pytest

from detector.quality import QUALITY_OPS
from synth.samples import Sample


@pytest.fixture(scope="module")
def bench(load_script):
    return load_script("benchmarks/bench_members.py")


def _samples(labels, generators):
    return [Sample(path=f"/x/{k}.png", label=y, meta={"generator": g}) for k, (y, g) in enumerate(zip(labels, generators))]


def _member(val, eval_, quality_shift):
    base = np.linspace(-1.0, 1.0, 6)
    out = {"val": np.asarray(val, float), "eval": np.asarray(eval_, float), "quality_base": base}
    out.update({f"quality_{op}": base + quality_shift for op in QUALITY_OPS})
    return out


def test_a_group_is_scored_on_the_mean_of_its_logits(bench):
    sets = {"val": _samples([0, 0, 1, 1], ["real"] * 2 + ["a"] * 2),
            "eval": _samples([0, 0, 1, 1], ["real", "real", "sbi", "swap"]), "quality": [None] * 6}
    # each member ranks one fake below a real; their mean logit ranks both fakes above both reals
    a = _member([0.0, 1.0, 3.0, 0.5], [0.0, 1.0, 3.0, 0.5], 0.0)
    b = _member([1.0, 0.0, 0.5, 3.0], [1.0, 0.0, 0.5, 3.0], 10.0)
    alone = bench.group_metrics([a], sets)
    both = bench.group_metrics([a, b], sets)
    assert alone["val"] == pytest.approx(0.75) and both["val"] == pytest.approx(1.0)
    assert both["eval"] == pytest.approx(1.0)
    assert alone["eval_sbi"] == pytest.approx(1.0) and alone["eval_swap"] == pytest.approx(0.5)
    # member a does not move under the global ops (AUC 0.5 vs as is); the mean is shifted by +5: every op 1.0
    assert alone["max_dev"] == pytest.approx(0.0, abs=0.1) and both["max_dev"] == pytest.approx(0.5)
    assert "heldout" not in both


def test_the_quality_reals_are_shuffled_validation_reals(bench):
    pool = [Sample(path=f"/x/{k}.png", label=k % 2, group=(f"id{k // 2}",)) for k in range(6000)]
    sets = bench.bench_sets(pool, 3, None, None)
    val = {s.path for s in sets["val"]}
    assert set(sets) == {"val", "quality"} and 500 < len(val) < 700
    assert len(sets["quality"]) == 256 and all(s.label == 0 and s.path in val for s in sets["quality"])
    assert [s.path for s in sets["quality"]] != sorted(s.path for s in sets["quality"])
    assert [s.path for s in bench.bench_sets(pool, 4, None, None)["quality"]] != [s.path for s in sets["quality"]]


def test_a_run_without_a_checkpoint_is_refused_naming_the_file(bench, capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        bench.main(["--data", "d", "--seed", "0", "--runs", str(tmp_path / "typo"), "--cache", str(tmp_path / "c")])
    assert exc.value.code == 2 and str(tmp_path / "typo" / "best.pt") in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_a_group_of_unknown_runs_is_refused(bench, capsys, tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "best.pt").write_bytes(b"")
    with pytest.raises(SystemExit) as exc:
        bench.main(["--data", "d", "--seed", "0", "--runs", str(tmp_path / "r"), "--group", f"{tmp_path / 'r'},other",
                    "--cache", str(tmp_path / "c")])
    assert exc.value.code == 2 and "other" in capsys.readouterr().err
