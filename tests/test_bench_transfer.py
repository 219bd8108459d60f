"""benchmarks/bench_transfer.py reads a run as the documented command even after a resume changed its condition."""
import pytest


@pytest.fixture(scope="module")
def bench(load_script):
    return load_script("benchmarks/bench_transfer.py")


def _rounds(aucs, conditions):
    return [{"round": i + 1, "eval": {"auc": a}, "condition": c, "condition_met": False}
            for i, (a, c) in enumerate(zip(aucs, conditions))]


def test_end_is_the_first_round_meeting_the_condition_the_run_started_with(bench):
    # round 1 ran with auc>0.8; the run was resumed with auc>1 to reach round 3
    rounds = _rounds([0.69, 0.815, 0.856], ["auc>0.8", "auc>1", "auc>1"])
    end, met = bench.documented_end(rounds)
    assert end["round"] == 2 and met == [False, True, True]
    end, met = bench.documented_end(rounds, "auc>0.85")
    assert end["round"] == 3 and met == [False, False, True]


def test_end_is_the_last_round_when_the_condition_never_holds(bench):
    end, met = bench.documented_end(_rounds([0.6, 0.7], ["auc>0.8", "auc>0.8"]))
    assert end["round"] == 2 and met == [False, False]


def test_a_bad_condition_is_refused_naming_the_option(bench, capsys):
    with pytest.raises(SystemExit) as exc:
        bench.main(["--runs", "x", "--eval", "y", "--condition", "auc>>"])
    assert exc.value.code == 2 and "--condition" in capsys.readouterr().err


def test_a_run_directory_without_metrics_is_refused_naming_the_file(bench, capsys, tmp_path):
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "metrics.jsonl").write_text("")
    with pytest.raises(SystemExit) as exc:
        bench.main(["--runs", str(tmp_path / "ok"), str(tmp_path / "typo"), "--eval", "y"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and str(tmp_path / "typo" / "metrics.jsonl") in err and "ok/metrics" not in err
