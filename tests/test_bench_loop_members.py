"""benchmarks/bench_loop_members.py rebuilds a round from some of its CNN members exactly as the loop builds it."""
import pytest


@pytest.fixture(scope="module")
def bench(load_script):
    return load_script("benchmarks/bench_loop_members.py")


@pytest.fixture(scope="module")
def runs(tiny_fused_run, tmp_path_factory):
    """The same tiny round trained with one CNN and with two (statistics model on, one round)."""
    root = tmp_path_factory.mktemp("loop-members")
    return root, tiny_fused_run(root / "one")["rounds"][0], tiny_fused_run(root / "two", cnn_members=2)["rounds"][0]


def _as_recorded(bench, record):
    return bench._recorded({"rounds": [record]}, 1)


def test_both_members_reproduce_the_round_as_the_loop_recorded_it(bench, runs):
    root, _, two = runs
    got = bench.score_members(root / "two", 1, [1, 2])
    want = _as_recorded(bench, two)
    for key in ("cnn_val", "fused_val", "max_dev", "eval"):
        assert got[key] == pytest.approx(want[key], abs=1e-12), key
    assert got["quality"] == pytest.approx(want["quality"], abs=1e-12)
    assert got["member_val"] == pytest.approx([m["val_auc"] for m in two["cnn_members"]], abs=1e-12)


def test_member_one_alone_is_the_one_cnn_run(bench, runs):
    """Member 1 of a two-CNN run is the one-CNN run's CNN, so the rebuilt round is that run's round 1."""
    root, one, _ = runs
    got = bench.score_members(root / "two", 1, [1])
    want = _as_recorded(bench, one)
    for key in ("cnn_val", "fused_val", "max_dev", "eval"):
        assert got[key] == pytest.approx(want[key], abs=1e-12), key
    assert got["quality"] == pytest.approx(want["quality"], abs=1e-12)
    assert {k for k in got if k.startswith("eval_")} == {k for k in want if k.startswith("eval_")}


def test_bad_runs_rounds_and_members_are_refused_by_name(bench, runs, tmp_path, capsys):
    root, _, _ = runs
    with pytest.raises(ValueError, match="has CNN members 1..2"):
        bench.score_members(root / "two", 1, [3])
    cases = [([str(tmp_path), "--members", "1"], "no state.json"),
             ([str(root / "two"), "--round", "2", "--members", "1"], "holds rounds 1..1"),
             ([str(root / "one"), "--members", "1,2"], "has CNN members 1..1"),
             ([str(root / "two"), "--members", "a"], "expected comma-separated member numbers")]
    for argv, message in cases:
        with pytest.raises(SystemExit) as exc:
            bench.main(argv)
        assert exc.value.code == 2
        assert message in capsys.readouterr().err
