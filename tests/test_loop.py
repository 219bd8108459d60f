import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from detector import predict as P
from detector.checkpoint import load_checkpoint
from detector.cli import main
from detector.condition import condition_holds, parse_condition
from detector.data import FaceDataset, identity_split, read_dataset, write_toy_synth_dir
from detector.loop import rebased_state, rounds_table, run_loop
from detector.models import create_model
from detector.reweight import miss_rate_weights
from detector.train import TrainSettings, rescale_batch, resolve_workers, train_round

torch.set_num_threads(1)

TINY = {"backbone": "test_resnet", "embed_dim": 16, "decoder_dim": 8, "head_hidden": 16}
FAST = dict(model_name="freq_attention", model_kwargs=TINY, patch=32, batch_size=8, workers=0, epochs_per_round=1,
            regen_n=8, weight_min_count=2, lr=3e-3, statistics_n=0)


# ------------------------------------------------------------------------------------ condition

def test_parse_condition_valid():
    assert parse_condition("auc>0.8") == [("auc", ">", 0.8)]
    assert parse_condition(" AUC >= 0.9  and eer<0.2 AND tpr@fpr0.01>0.5 and auc[dfl_swap]>.7 ") == [
        ("auc", ">=", 0.9), ("eer", "<", 0.2), ("tpr@fpr0.01", ">", 0.5), ("auc[dfl_swap]", ">", 0.7)]
    assert parse_condition("ap>=0.9 and tpr@fpr0.1>0.3") == [("ap", ">=", 0.9), ("tpr@fpr0.1", ">", 0.3)]


@pytest.mark.parametrize("text, token", [
    ("auc>0.8 and acc>0.5", "'acc'"),
    ("auc>0.8 and", "'auc>0.8 and'"),
    ("auc=0.8", "'auc=0.8'"),
    ("auc>high", "'high'"),
    ("auc>0.8 or ap>0.9", "'auc>0.8 or ap>0.9'"),
    ("eer>0.1", "'eer>0.1'"),
    ("auc<0.9", "'auc<0.9'"),
    ("", "empty"),
])
def test_parse_condition_errors_name_the_bad_token(text, token):
    with pytest.raises(ValueError) as e:
        parse_condition(text)
    assert token in str(e.value)


def test_condition_holds():
    m = {"auc": 0.85, "ap": 0.9, "eer": 0.2, "tpr@fpr0.1": 0.5, "per_generator": {"sbi": {"auc": 0.95}, "x": {"auc": 0.6}}}
    assert condition_holds(parse_condition("auc>0.8 and eer<=0.2"), m)
    assert not condition_holds(parse_condition("auc>0.8 and eer<0.2"), m)
    assert condition_holds(parse_condition("auc[sbi]>0.9"), m)
    assert not condition_holds(parse_condition("auc>0.8 and auc[x]>0.7"), m)
    assert not condition_holds(parse_condition("auc>0.5"), {"auc": math.nan})
    with pytest.raises(ValueError, match="no generator 'dfl_swap'"):
        condition_holds(parse_condition("auc[dfl_swap]>0.5"), m)


# ---------------------------------------------------------------------------------- reweighting

def test_miss_rate_weights_formula():
    keys = [["blend=alpha", "pairing=self"]] * 4 + [["blend=poisson", "pairing=self"]] * 4 + [["blend=rare"]]
    scores = [0.9, 0.9, 0.9, 0.9, 0.1, 0.1, 0.1, 0.9, 0.9]  # poisson fakes mostly missed
    rec = miss_rate_weights(keys, scores, threshold=0.5, eps=0.05, clip=(0.5, 3.0), min_count=2)
    mean = 3 / 9
    assert rec["overall_miss"] == pytest.approx(mean)
    assert rec["keys"]["blend=poisson"] == {"n": 4, "missed": 3, "miss": 0.75,
                                            "weight": pytest.approx((0.75 + 0.05) / (mean + 0.05))}
    assert rec["weights"]["blend=alpha"] == 0.5  # (0 + .05) / (.333 + .05) = 0.13, clipped to 0.5
    assert rec["weights"]["pairing=self"] == pytest.approx((3 / 8 + 0.05) / (mean + 0.05))
    assert rec["weights"]["blend=rare"] == 1.0  # n=1 < min_count
    assert "clip" in rec["formula"]
    assert miss_rate_weights(keys, scores, threshold=math.nan)["weights"] == {}


# ------------------------------------------------------------------------------------ loop e2e

class FakeGenerate:
    """Stands in for synth.generate.generate: writes a toy synth directory, records calls."""

    def __init__(self, fail_first=False):
        self.calls, self.fail_first = [], fail_first

    def __call__(self, out, n, recipe, size, seed, workers, weights, progress, **source):
        self.calls.append({"out": out, "n": n, "recipe": recipe, "seed": seed, "weights": weights, **source})
        if self.fail_first and len(self.calls) == 1:
            raise KeyboardInterrupt
        write_toy_synth_dir(out, n=n, size=size, seed=seed)


def _check_round_artefacts(rdir):
    model, meta = load_checkpoint(rdir / "checkpoint.pt")  # torch.load(weights_only=True) inside
    assert meta["model_name"] == "freq_attention" and "eval" in meta["extra"]
    # the loop's own default for freq_attention (a head on the patch relations only) under the run's kwargs
    assert torch.load(rdir / "checkpoint.pt", weights_only=True)["model_kwargs"] == {"head_pooled": False, **TINY}
    assert model.head_pooled is False
    for name in ("roc.png", "loss.png"):
        assert (rdir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    w = json.loads((rdir / "weights.json").read_text())
    assert {"formula", "threshold", "overall_miss", "keys", "weights"} <= set(w)
    assert not (rdir / "last.pt").exists()
    assert len((rdir / "eval_scores.csv").read_text().splitlines()) == 25


def test_loop_two_rounds_with_regeneration_and_artefacts(toy_dirs, tmp_path):
    data, ev = toy_dirs
    gen = FakeGenerate()
    run = tmp_path / "run"
    summary = run_loop([data], ev, run, condition="auc>1", max_rounds=2, index="/faces/index", seed=5,
                       generate_fn=gen, progress=False, log=lambda m: None, **FAST)
    assert summary["status"] == "max_rounds" and not summary["condition_met"]
    assert len(gen.calls) == 1
    call = gen.calls[0]
    assert call["out"] == str(run / "pool" / "round-02") and call["seed"] == 5 + 2 and call["index"] == "/faces/index"
    w1 = json.loads((run / "round-01" / "weights.json").read_text())
    assert call["weights"] == w1["weights"] and call["weights"]  # round-1 miss rates drive regeneration
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in lines] == [1, 2]
    assert lines[1]["pool"] == [str(data), str(run / "pool" / "round-02")]
    assert lines[1]["n_train"] + lines[1]["n_val"] + lines[1]["n_dropped"] == 48 + 16
    assert set(lines[0]["eval"]["per_generator"]) == {"gen_a", "gen_b"}
    assert all(r["precision"] in ("fp32", "bf16") for r in lines)  # what the round trained in
    for r in (1, 2):
        _check_round_artefacts(run / f"round-{r:02d}")
    assert (run / "rounds.png").is_file() and "| 2 |" in (run / "summary.md").read_text()
    assert "gen_a AUC" in summary["table"]
    # the validation identities never reach training, in any round
    state = json.loads((run / "state.json").read_text())
    val_ids = set(state["val_identities"])
    assert val_ids and state["status"] == "max_rounds"

    # resuming a finished run does no work and reports the same result
    again = run_loop([data], ev, run, resume=True, condition="auc>1", max_rounds=2, index="/faces/index", seed=5,
                     generate_fn=gen, progress=False, log=lambda m: None, **FAST)
    assert again["status"] == "max_rounds" and len(gen.calls) == 1 and len(again["rounds"]) == 2
    # a conflicting resume is refused, naming the key
    with pytest.raises(ValueError, match="patch=64"):
        run_loop([data], ev, run, resume=True, **{**FAST, "patch": 64}, index="/faces/index", seed=5)
    with pytest.raises(ValueError, match="already holds a run"):
        run_loop([data], ev, run, index="/faces/index", **FAST)


def test_loop_refuses_unpaired_data_before_writing_state(toy_dirs, tmp_path):
    _, ev = toy_dirs  # a manifest.csv set: reals and fakes, but no fake next to its own real
    run = tmp_path / "run"
    with pytest.raises(ValueError, match=r"no \(real, fake\) pair.*--pairing independent"):
        run_loop([ev], ev, run, max_rounds=1, progress=False, log=lambda m: None, **FAST)
    assert not (run / "state.json").exists()  # the same --out stays usable
    summary = run_loop([ev], ev, run, max_rounds=1, pairing="independent", progress=False, log=lambda m: None,
                       **FAST)
    assert len(summary["rounds"]) == 1


def test_loop_full_mode_at_another_size_resizes_every_face(toy_dirs, tmp_path):
    # mode full trains at native resolution only if --size matches the pool's synth size; otherwise
    # training, validation and evaluation all see faces at --size, and the checkpoint records it
    data, ev = toy_dirs
    logs = []
    run_loop([data], ev, tmp_path / "run", condition="auc>1", max_rounds=1, index="/faces/index", regen_size=64,
             generate_fn=FakeGenerate(), progress=False, log=logs.append, **{**FAST, "mode": "full", "size": 32})
    assert any("mode full with size 32 but the pool's faces are 64 px" in m for m in logs)
    model, meta = load_checkpoint(tmp_path / "run" / "round-01" / "checkpoint.pt")
    assert meta["extra"]["size"] == 32
    assert P.Predictor(model, size=None).size == 256  # a bare model has no record: the default
    predictor = P.Predictor(tmp_path / "run" / "round-01" / "checkpoint.pt")
    assert predictor.size == 32
    logs.clear()
    run_loop([data], ev, tmp_path / "run2", condition="auc>1", max_rounds=1, index="/faces/index", regen_size=64,
             generate_fn=FakeGenerate(), progress=False, log=logs.append, **{**FAST, "mode": "full", "size": 64})
    assert not any("mode full with size" in m for m in logs)


def test_loop_lr_decay_lowers_each_round_peak(toy_dirs, tmp_path):
    data, ev = toy_dirs
    run = tmp_path / "run"
    # two steps per epoch in both rounds: the same schedule, only its peak differs
    run_loop([data], ev, run, condition="auc>1", max_rounds=2, index="/faces/index", lr_decay=0.5,
             max_steps_per_epoch=2, generate_fn=FakeGenerate(), progress=False, log=lambda m: None, **FAST)

    def first_lr(r):
        lines = (run / f"round-{r:02d}" / "train_log.jsonl").read_text().splitlines()
        return next(json.loads(x)["lr"] for x in lines if json.loads(x)["kind"] == "step")

    assert first_lr(2) == pytest.approx(0.5 * first_lr(1), rel=1e-6)
    with pytest.raises(ValueError, match="lr_decay in"):
        run_loop([data], ev, tmp_path / "bad", index="/faces/index", lr_decay=0.0, **FAST)
    for bad in ({"amplify": 0.5}, {"amplify_until": 0.0}, {"amplify_until": 1.5}):
        with pytest.raises(ValueError, match="amplify"):
            run_loop([data], ev, tmp_path / "bad", index="/faces/index", **{**FAST, **bad})


def test_loop_resumes_after_interrupted_regeneration(toy_dirs, tmp_path):
    data, ev = toy_dirs
    gen = FakeGenerate(fail_first=True)
    run = tmp_path / "run"
    kw = dict(condition="auc>1", max_rounds=2, index="/faces/index", progress=False, log=lambda m: None, **FAST)
    with pytest.raises(KeyboardInterrupt):
        run_loop([data], ev, run, generate_fn=gen, **kw)
    state = json.loads((run / "state.json").read_text())
    assert len(state["rounds"]) == 1 and state["pending_regen"]["dir"].endswith("round-02")
    log1 = (run / "round-01" / "train_log.jsonl").read_text()
    summary = run_loop([data], ev, run, resume=True, generate_fn=gen, **kw)
    assert len(gen.calls) == 2 and gen.calls[0] == gen.calls[1]  # same regeneration retried
    assert [r["round"] for r in summary["rounds"]] == [1, 2]
    assert (run / "round-01" / "train_log.jsonl").read_text() == log1  # round 1 not retrained
    # --max-rounds raised on a finished run: continues with round 3 from round 2's weights
    summary = run_loop([data], ev, run, resume=True, generate_fn=gen, **{**kw, "max_rounds": 3})
    assert len(summary["rounds"]) == 3 and gen.calls[-1]["out"].endswith("round-03")
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3


def test_loop_stores_absolute_paths_and_resumes_from_elsewhere_after_its_folder_moved(toy_dirs, tmp_path, monkeypatch):
    import os
    import shutil

    data, ev = toy_dirs
    start, elsewhere = tmp_path / "start", tmp_path / "elsewhere"
    start.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(start)
    gen = FakeGenerate(fail_first=True)
    kw = dict(condition="auc>1", max_rounds=2, index="/faces/index", progress=False, log=lambda m: None, **FAST)
    with pytest.raises(KeyboardInterrupt):  # interrupted in the regeneration after round 1
        run_loop([os.path.relpath(data)], os.path.relpath(ev), "runs/r1", generate_fn=gen, **kw)
    state = json.loads((start / "runs" / "r1" / "state.json").read_text())
    assert state["config"]["data_dirs"] == [str(data)] and state["config"]["eval_dir"] == str(ev)
    assert state["config"]["out_dir"] == str(start / "runs" / "r1")
    assert state["pending_regen"]["dir"] == str(start / "runs" / "r1" / "pool" / "round-02")
    # the run folder moved, resumed from another directory: its own pool and round 1 follow it
    moved = tmp_path / "moved"
    shutil.move(start / "runs" / "r1", moved)
    monkeypatch.chdir(elsewhere)
    summary = run_loop([data], ev, moved, resume=True, generate_fn=gen, **kw)
    assert [r["round"] for r in summary["rounds"]] == [1, 2] and gen.calls[-1]["out"] == str(moved / "pool" / "round-02")
    state = json.loads((moved / "state.json").read_text())
    assert state["pool"] == [str(data), str(moved / "pool" / "round-02")] and state["config"]["out_dir"] == str(moved)
    assert [r["checkpoint"] for r in state["rounds"]] == [str(moved / f"round-0{r}" / "checkpoint.pt") for r in (1, 2)]
    assert not (tmp_path / "runs").exists() and not (elsewhere / "pool").exists()  # nothing written outside the run


def test_cli_resumes_a_run_started_with_a_relative_out_by_its_absolute_path(toy_dirs, tmp_path, monkeypatch, capsys):
    data, ev = toy_dirs
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--data", str(data), "--eval", str(ev), "--out", "run", "--model", "freq_attention",
                 "--model-kwargs", json.dumps(TINY), "--patch", "32", "--batch-size", "8", "--workers", "0",
                 "--epochs-per-round", "1", "--statistics-n", "0", "--augment-until", "auc>1", "--max-rounds", "1",
                 "--no-progress"]) == 1
    monkeypatch.chdir(data)
    assert main(["train", "--out", str(tmp_path / "run"), "--resume", "--no-progress"]) == 1  # finished, not refused
    assert "already finished" in capsys.readouterr().out


def test_rebased_state_reads_relative_paths_of_older_runs_from_where_they_started(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    old = {"config": {"data_dirs": ["pool-a"], "eval_dir": "../ev", "out_dir": "runs/r1", "src": None,
                      "index": "/faces/index", "statistics_extra_index": None},
           "pool": ["pool-a", "runs/r1/pool/round-02"], "pending_regen": {"dir": "runs/r1/pool/round-03"},
           "rounds": [{"round": 1, "pool": ["pool-a"], "checkpoint": "runs/r1/round-01/checkpoint.pt"}]}
    # started in /proj with --out runs/r1, resumed as /proj/runs/r1 from anywhere
    new = rebased_state(old, "/proj/runs/r1")
    assert new["config"] == {"data_dirs": ["/proj/pool-a"], "eval_dir": "/ev", "out_dir": "/proj/runs/r1", "src": None,
                             "index": "/faces/index", "statistics_extra_index": None}
    assert new["pool"] == ["/proj/pool-a", "/proj/runs/r1/pool/round-02"]
    assert new["pending_regen"]["dir"] == "/proj/runs/r1/pool/round-03"
    assert new["rounds"][0]["checkpoint"] == "/proj/runs/r1/round-01/checkpoint.pt"
    assert old["pool"][1] == "runs/r1/pool/round-02"  # a copy: the stored state is not changed
    # moved to a folder that does not end with the stored --out: relative paths from here, the run's own follow it
    moved = rebased_state(old, "/else/r9")
    assert moved["pool"] == [str(tmp_path / "pool-a"), "/else/r9/pool/round-02"]


def test_loop_met_run_resumed_with_a_stricter_condition_continues(toy_dirs, tmp_path):
    data, ev = toy_dirs
    gen = FakeGenerate()
    run = tmp_path / "run"
    kw = dict(max_rounds=2, index="/faces/index", progress=False, log=lambda m: None, **FAST)
    first = run_loop([data], ev, run, condition="auc>=0", generate_fn=gen, **kw)
    assert first["status"] == "condition_met" and len(first["rounds"]) == 1 and not gen.calls
    # the same condition: nothing to do
    again = run_loop([data], ev, run, resume=True, condition="auc>=0", generate_fn=gen, **kw)
    assert len(again["rounds"]) == 1 and not gen.calls
    # a condition round 1 does not meet: round 2 from round 1's weights, as an uninterrupted run would
    more = run_loop([data], ev, run, resume=True, condition="auc>1", generate_fn=gen, **kw)
    assert more["status"] == "max_rounds" and [r["round"] for r in more["rounds"]] == [1, 2]
    assert len(gen.calls) == 1 and gen.calls[0]["out"].endswith("round-02")


@pytest.mark.parametrize("statistics_model, twins, fusion, mirror", [("stats_conv", 1.0, "learnt", True),
                                                                      ("patch_stats", 0.0, "equal", False),
                                                                      ("patch_stats_extended", 0.0, "learnt", False)])
def test_loop_fits_the_statistics_model_once_and_ends_each_round_on_the_fusion(toy_dirs, tmp_path, astro, astro_lm,
                                                                               statistics_model, twins, fusion, mirror):
    from synth.pool import FacePool

    data, ev = toy_dirs
    faces = FacePool.from_arrays({"a": astro, "b": astro.copy()}, {"a": astro_lm, "b": astro_lm})
    gen = FakeGenerate()
    run = tmp_path / "run"
    lines = []
    kw = dict(condition="auc>1", index="/faces/index", regen_size=64, progress=False, statistics_faces=faces,
              **{**FAST, "statistics_n": 6, "statistics_steps": 20, "statistics_model": statistics_model,
                 "statistics_twins": twins, "fusion": fusion, "mirror": mirror})
    run_loop([data], ev, run, generate_fn=gen, log=lines.append, max_rounds=1, **kw)
    stats_path = run / "statistics" / f"{statistics_model}.pt"
    stats, stats_meta = load_checkpoint(stats_path)
    report = json.loads((run / "statistics" / "report.json").read_text())
    n_pairs = 12 if twins else 6  # with twins 1, every item adds its globally processed pair
    assert report["n_items"] == 6 and report["n_faces"] == 2 * n_pairs and report["n_faces_source"] == 2
    assert report["model"] == statistics_model and report["twins"] == twins
    assert stats_meta["extra"]["statistics"] == report
    ck = torch.load(run / "round-01" / "checkpoint.pt", weights_only=True)
    assert ck["model_name"] == "score_fusion"
    assert [m["name"] for m in ck["model_kwargs"]["members"]] == ["freq_attention", statistics_model]
    assert ck["model_kwargs"].get("mirror", False) is mirror
    fused, meta = load_checkpoint(run / "round-01" / "checkpoint.pt")
    # the statistics member is the fitted model; the fusion's scale was set (not the defaults 0 and 1)
    assert all(torch.equal(a, b) for a, b in zip(fused.members[1].state_dict().values(), stats.state_dict().values()))
    assert not torch.equal(fused.logit_std, torch.ones(2))
    assert 0.0 <= meta["extra"]["val_fused"]["auc"] <= 1.0 and "statistics_auc" in meta["extra"]["val_fused"]
    # the weights are recorded and stored: equal, or learnt on the validation split (non-negative, sum 1)
    weights = meta["extra"]["val_fused"]["fusion_weights"]
    assert torch.allclose(fused.logit_weight, torch.tensor(weights), atol=1e-4)
    assert min(weights) >= 0 and sum(weights) == pytest.approx(1.0, abs=1e-3)
    if fusion == "equal":
        assert weights == [0.5, 0.5]
    assert any("fused with the statistics model" in m for m in lines)
    # eval and predict read the fusion like any checkpoint (mask from the CNN)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = fused(x)
        assert torch.allclose(fused(torch.flip(x, dims=(-1,)))["logit"], out["logit"], atol=1e-5) is mirror
    assert out["logit"].shape == (2,) and out["mask"] is not None

    # more rounds: training continues on the fusion's CNN, the statistics model is not fitted again
    stamp = stats_path.stat().st_mtime_ns
    summary = run_loop([data], ev, run, resume=True, generate_fn=gen, log=lines.append, max_rounds=2, **kw)
    assert [r["round"] for r in summary["rounds"]] == [1, 2] and stats_path.stat().st_mtime_ns == stamp
    assert "fused val AUC" in summary["table"]
    second, _ = load_checkpoint(run / "round-02" / "checkpoint.pt")
    assert all(torch.equal(a, b) for a, b in zip(second.members[1].state_dict().values(), stats.state_dict().values()))
    flat = lambda m: torch.cat([p.flatten() for p in m.parameters()])  # noqa: E731
    assert not torch.equal(flat(second.members[0]), flat(fused.members[0]))  # round 2 trained the CNN on


def _params(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_loop_cnn_members_train_apart_and_the_round_ends_on_their_mean(toy_dirs, tmp_path, astro, astro_lm):
    """cnn_members 2: member 1 is what a one-CNN run trains, member 2 its own CNN; the round's CNN is their mean logit,
    fused with the statistics model; resuming continues both."""
    from synth.pool import FacePool

    data, ev = toy_dirs
    faces = FacePool.from_arrays({"a": astro, "b": astro.copy()}, {"a": astro_lm, "b": astro_lm})
    kw = dict(condition="auc>1", index="/faces/index", regen_size=64, progress=False, statistics_faces=faces,
              generate_fn=FakeGenerate(), **{**FAST, "statistics_n": 6, "statistics_steps": 20})
    run_loop([data], ev, tmp_path / "one", log=lambda m: None, max_rounds=1, **kw)
    lines = []
    run = tmp_path / "two"
    summary = run_loop([data], ev, run, log=lines.append, max_rounds=1, cnn_members=2, **kw)
    one, _ = load_checkpoint(tmp_path / "one" / "round-01" / "checkpoint.pt")
    fused, meta = load_checkpoint(run / "round-01" / "checkpoint.pt")
    ensemble = fused.members[0]
    assert meta["model_name"] == "score_fusion" and ensemble.model_name == "score_fusion"
    assert [m.model_name for m in ensemble.members] == ["freq_attention"] * 2
    # member 1 trained exactly as the run with one CNN did; member 2 from other weights and draws
    assert torch.equal(_params(ensemble.members[0]), _params(one.members[0]))
    assert not torch.equal(_params(ensemble.members[1]), _params(ensemble.members[0]))
    member2, _ = load_checkpoint(run / "round-01" / "cnn-2" / "checkpoint.pt")  # its own best weights
    assert torch.equal(_params(member2), _params(ensemble.members[1]))
    assert not (run / "round-01" / "last.pt").exists() and not (run / "round-01" / "cnn-2" / "last.pt").exists()
    assert (run / "round-01" / "cnn-2" / "loss.png").read_bytes()[:4] == b"\x89PNG"
    # the ensemble's logit is the plain mean of its members' (unit scale, equal weights)
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        mean = (ensemble.members[0](x)["logit"] + ensemble.members[1](x)["logit"]) / 2
        assert torch.allclose(ensemble(x)["logit"], mean, atol=1e-5)
    record = summary["rounds"][0]
    assert [set(m) for m in record["cnn_members"]] == [{"best_epoch", "val_auc"}] * 2
    assert 0.0 <= record["val"]["auc"] <= 1.0 and any("the mean of 2 CNNs" in m for m in lines)
    assert any(m.startswith("CNN 2/2: epoch 1/1") for m in lines)
    assert any(m.startswith("round 1: best epochs 1/1 (val AUC") for m in lines)  # each member's best epoch
    # a resumed run trains both members on
    summary = run_loop([data], ev, run, resume=True, log=lambda m: None, max_rounds=2, cnn_members=2, **kw)
    second, _ = load_checkpoint(run / "round-02" / "checkpoint.pt")
    for k in range(2):
        assert not torch.equal(_params(second.members[0].members[k]), _params(ensemble.members[k]))
    assert len(summary["rounds"][1]["cnn_members"]) == 2


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "2"])
def test_loop_refuses_a_bad_cnn_members_before_any_work(toy_dirs, tmp_path, value):
    data, ev = toy_dirs
    with pytest.raises(ValueError, match="cnn_members: expected an int >= 1"):
        run_loop([data], ev, tmp_path / "run", index="/faces/index", **{**FAST, "cnn_members": value})
    assert not (tmp_path / "run").exists()


def test_loop_adds_the_extra_faces_to_the_statistics_fit_only(toy_dirs, tmp_path, astro, astro_lm, monkeypatch):
    """statistics_extra_index / _n: more pairs from faces of the user's photo domain, in the statistics fit only."""
    import synth.index
    from synth.pool import FacePool

    data, ev = toy_dirs
    faces = FacePool.from_arrays({"a": astro, "b": astro.copy()}, {"a": astro_lm, "b": astro_lm})
    studio = FacePool.from_arrays({"s1": astro.copy(), "s2": astro.copy(), "s3": astro.copy()},
                                  {"s1": astro_lm, "s2": astro_lm, "s3": astro_lm})
    opened = []
    monkeypatch.setattr(synth.index, "load_index", lambda path: opened.append(path) or studio)
    lines = []
    kw = dict(condition="auc>1", index="/faces/index", regen_size=64, progress=False, statistics_faces=faces,
              **{**FAST, "statistics_n": 6, "statistics_steps": 5, "statistics_model": "patch_stats",
                 "statistics_twins": 0.0, "statistics_extra_index": "/studio/index", "statistics_extra_n": 4})
    run_loop([data], ev, tmp_path / "run", generate_fn=FakeGenerate(), log=lines.append, max_rounds=1, **kw)
    report = json.loads((tmp_path / "run" / "statistics" / "report.json").read_text())
    assert opened and set(opened) == {"/studio/index"}
    assert report["n_items"] == 10 and report["n_items_extra"] == [4] and report["n_faces"] == 20
    assert report["n_faces_source"] == 2 and report["n_faces_extra"] == [3] and report["extra_index"] == "/studio/index"
    assert any("and 4 from 3 faces of /studio/index" in m for m in lines)


@pytest.mark.parametrize("extra, message", [
    ({"statistics_extra_index": "/studio/index"}, "statistics_extra_index, statistics_extra_n: give both"),
    ({"statistics_extra_n": 5}, "statistics_extra_index, statistics_extra_n: give both"),
    ({"statistics_extra_index": "/studio/index", "statistics_extra_n": -1}, "statistics_extra_n: expected >= 0"),
    ({"statistics_extra_index": "/studio/index", "statistics_extra_n": 5, "statistics_n": 0},
     "statistics_n 0 turns off"),
])
def test_loop_refuses_half_an_extra_face_source_before_any_work(toy_dirs, tmp_path, extra, message):
    data, ev = toy_dirs
    with pytest.raises(ValueError, match=message):
        run_loop([data], ev, tmp_path / "run", max_rounds=1, progress=False, log=lambda m: None,
                 **{**FAST, "statistics_n": 6, **extra})
    assert not (tmp_path / "run").exists()


def test_loop_refuses_a_missing_extra_index_before_any_work(toy_dirs, tmp_path, astro, astro_lm):
    from synth.pool import FacePool

    data, ev = toy_dirs
    faces = FacePool.from_arrays({"a": astro}, {"a": astro_lm})
    missing = tmp_path / "no-such.index"
    with pytest.raises(ValueError, match=f"{missing}: not an index directory"):
        run_loop([data], ev, tmp_path / "run", max_rounds=1, progress=False, log=lambda m: None, statistics_faces=faces,
                 **{**FAST, "statistics_n": 6, "statistics_extra_index": str(missing), "statistics_extra_n": 5})
    assert not (tmp_path / "run").exists()


def test_loop_refuses_a_mirror_that_is_not_a_bool_before_any_work(toy_dirs, tmp_path):
    data, ev = toy_dirs
    with pytest.raises(ValueError, match="mirror: expected true or false, got 'yes'"):
        run_loop([data], ev, tmp_path / "run", max_rounds=1, progress=False, log=lambda m: None,
                 **{**FAST, "mirror": "yes"})
    assert not (tmp_path / "run").exists()


def test_loop_statistics_need_faces(toy_dirs, tmp_path):
    data, ev = toy_dirs
    with pytest.raises(ValueError, match="--statistics-n 0"):
        run_loop([data], ev, tmp_path / "run", max_rounds=1, progress=False, log=lambda m: None,
                 **{**FAST, "statistics_n": 10})
    assert not (tmp_path / "run").exists()  # refused before anything is written


def _round_inputs(data):
    """A tiny model and its train (patch, augmented) / validation (full) datasets from toy data."""
    train, val = identity_split(read_dataset(data), 0.2, seed=0)
    model = create_model("freq_attention", **TINY)
    return (model, FaceDataset(train, "patch", patch=32, augment=True, norm=model.input_norm),
            FaceDataset(val, "full", norm=model.input_norm), val)


@pytest.mark.parametrize("name, value, message", [
    ("epochs", 0, "epochs: expected >= 1, got 0"),
    ("lr", 0.0, "lr: expected > 0, got 0.0"),
    ("lr", math.nan, "lr: expected > 0, got nan"),
    ("batch_size", 1, "batch_size: expected >= 2"),
    ("batch_size", 7, "batch_size: expected an even size for paired batches, got 7"),
    ("workers", -1, "workers: expected 'auto' or an int >= 0, got -1"),
    ("workers", "two", "workers: expected 'auto' or an int >= 0, got 'two'"),
    ("workers", 1.5, "workers: expected 'auto' or an int >= 0, got 1.5"),
    ("weight_decay", -0.1, "weight_decay: expected >= 0"),
    ("seed", -1, "seed: expected >= 0, got -1"),
    ("val_batch_size", 0, "val_batch_size: expected >= 1, got 0"),
    ("max_steps_per_epoch", -1, "max_steps_per_epoch: expected None or >= 0"),
    ("grad_clip", -1.0, "grad_clip: expected >= 0"),
    ("paired", False, r"twins: quality twins need paired batches \(paired=True\)"),
    ("twins", 5, r"twins, twin_weight: expected 0 <= twins <= 4 and twin_weight >= 0, got 5, 1.0"),
    ("twin_weight", -1.0, "twins, twin_weight: expected"),
    ("twin_loss", "mse", r"twin_loss: expected one of \['kl', 'logit'\], got 'mse'"),
    ("ema", 1.0, r"ema: expected a decay in \[0, 1\), got 1.0"),
    ("batch_scale", (0.5, 1.5), "batch_scale: expected"),
    ("batch_scale", "x", "batch_scale: expected"),
    ("precision", "fp16", "precision: expected one of"),
    ("amplify", 0.5, "amplify: expected >= 1"),
    ("amplify_until", 0.0, r"amplify_until: expected in \(0, 1\], got 0.0"),
    ("amplify_until", 1.5, "amplify_until: expected"),
])
def test_train_settings_reject_a_bad_value_naming_the_field(name, value, message):
    base = TrainSettings(epochs=1, batch_size=8, paired=True, twins=1, batch_scale=[0.5, 1])
    assert base.batch_scale == (0.5, 1.0) and isinstance(base.batch_scale, tuple)  # stored normalised
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(base, **{name: value})  # replace() builds a new instance: checked again
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(base, name, value)
    # 0 steps per epoch = a full pass, as with --max-steps-per-epoch 0
    assert dataclasses.replace(base, max_steps_per_epoch=0).max_steps_per_epoch == 0


def test_auto_workers_load_in_process_on_a_cpu_and_in_processes_on_a_gpu():
    assert TrainSettings(epochs=1).workers == "auto"
    assert resolve_workers("auto", "cpu") == 0
    assert resolve_workers("auto", "cuda") == resolve_workers("auto", "cuda:1") == 2
    assert resolve_workers(3, "cpu") == 3 and resolve_workers(0, "cuda") == 0
    with pytest.raises(ValueError, match="workers: expected 'auto' or an int >= 0, got True"):
        resolve_workers(True, "cpu")


def test_train_round_learns_the_same_with_and_without_loader_processes(toy_dirs, tmp_path):
    # "auto" loads in this process on a CPU and in 2 processes on a GPU: what a round learns must not
    # depend on where its batches were made (each item is drawn from its own seed, not the process's)
    results = []
    for workers in (0, 2):
        _, tds, vds, _ = _round_inputs(toy_dirs[0])
        torch.manual_seed(0)
        model = create_model("freq_attention", **TINY)
        settings = TrainSettings(epochs=1, lr=3e-3, batch_size=8, workers=workers, progress=False,
                                 max_steps_per_epoch=3, batch_scale=(0.5, 1.0))
        res = train_round(model, tds, vds, tmp_path / f"w{workers}", settings, log=lambda m: None)
        results.append((res["val_scores"], {k: v.clone() for k, v in model.state_dict().items()}))
    (scores0, weights0), (scores2, weights2) = results
    np.testing.assert_array_equal(scores0, scores2)
    for k in weights0:
        assert torch.equal(weights0[k], weights2[k]), k


def test_train_round_resumes_from_last_state(toy_dirs, tmp_path):
    model, tds, vds, val = _round_inputs(toy_dirs[0])
    settings = TrainSettings(epochs=2, lr=3e-3, batch_size=8, workers=0, progress=False)
    res = train_round(model, tds, vds, tmp_path, settings, log=lambda m: None)
    assert res["history"][res["best_epoch"]]["val_auc"] == max(h["val_auc"] for h in res["history"])
    assert res["val_scores"].shape == (len(val),)
    msgs = []
    res2 = train_round(create_model("freq_attention", **TINY), tds, vds, tmp_path, settings, log=msgs.append)
    assert any("resuming" in m for m in msgs) and res2["best_epoch"] == res["best_epoch"]
    assert np.array_equal(res2["val_scores"], res["val_scores"])
    with pytest.raises(ValueError, match="epochs=2"):
        train_round(model, tds, vds, tmp_path, TrainSettings(epochs=3, batch_size=8, workers=0, progress=False),
                    log=msgs.append)


def test_train_round_does_not_depend_on_the_global_random_state(toy_dirs, tmp_path):
    # the head's dropout draws from torch's global generator: whatever ran before in the process (e.g.
    # fitting the statistics model, or not) must not change what a round with the same seed learns
    model, tds, vds, _ = _round_inputs(toy_dirs[0])
    start = {k: v.clone() for k, v in model.state_dict().items()}
    settings = TrainSettings(epochs=1, lr=3e-3, batch_size=8, workers=0, progress=False, max_steps_per_epoch=3)
    weights = []
    for k, before in enumerate((1, 2)):
        model.load_state_dict(start)
        torch.manual_seed(before)
        train_round(model, tds, vds, tmp_path / str(k), settings, log=lambda m: None)
        weights.append({n: v.clone() for n, v in model.state_dict().items()})
    assert all(torch.equal(weights[0][n], weights[1][n]) for n in weights[0])
    assert any(not torch.equal(weights[0][n], start[n]) for n in start if start[n].is_floating_point())


def test_train_round_validates_and_keeps_the_ema_weights(toy_dirs, tmp_path):
    model, tds, vds, _ = _round_inputs(toy_dirs[0])
    train_round(model, tds, vds, tmp_path, TrainSettings(epochs=1, lr=3e-3, batch_size=8, workers=0, progress=False,
                                                         max_steps_per_epoch=3, ema=0.5), log=lambda m: None)
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    best = torch.load(tmp_path / "best.pt", weights_only=True)["state_dict"]
    assert last["ema"]["n"] == 3
    assert all(torch.equal(last["ema"]["shadow"][k], v) for k, v in best.items())  # kept = the average
    assert any(not torch.equal(last["model"][k], v) for k, v in best.items() if v.is_floating_point())
    assert all(torch.equal(model.state_dict()[k], v) for k, v in best.items())  # the model ends with it
    with pytest.raises(ValueError, match="ema"):
        TrainSettings(epochs=1, batch_size=8, workers=0, progress=False, ema=1.0)


def test_rescale_batch_draws_multiples_of_32_and_keeps_masks_in_range():
    rng = np.random.default_rng(0)
    image = torch.rand(2, 3, 128, 128)
    mask = torch.zeros(2, 1, 128, 128)
    mask[:, :, 32:96, 32:96] = 1.0
    sides = set()
    for _ in range(40):
        x, m = rescale_batch(image, mask, (0.5, 1.0), rng)
        sides.add(x.shape[-1])
        assert x.shape[:2] == (2, 3) and m.shape == (2, 1, x.shape[-1], x.shape[-1]) and x.shape[-2] == x.shape[-1]
        assert 0.0 <= float(m.min()) and float(m.max()) <= 1.0
        assert float(m.mean()) == pytest.approx(0.25, abs=0.02)  # the forged share survives resampling
    assert sides == {64, 96, 128}
    x, m = rescale_batch(image, mask, (0.1, 0.2), rng)  # no multiple of 32 in [12.8, 25.6]: unchanged
    assert x is image and m is mask


def test_train_round_batch_scale_trains_at_several_sides_and_validates_at_one(toy_dirs, tmp_path):
    train, val = identity_split(read_dataset(toy_dirs[0]), 0.2, seed=0)
    model = create_model("freq_attention", **TINY)
    tds = FaceDataset(train, "full", augment=True, norm=model.input_norm, full_size=64)
    vds = FaceDataset(val, "full", norm=model.input_norm)
    seen = []
    hook = model.rgb.register_forward_pre_hook(  # the RGB stream sees every input, scored or trained
        lambda mod, args: seen.append((mod.training, args[0].shape[-1])))
    train_round(model, tds, vds, tmp_path, TrainSettings(epochs=1, lr=3e-3, batch_size=8, workers=0, progress=False,
                                                         max_steps_per_epoch=12, batch_scale=(0.5, 1.0)),
                log=lambda m: None)
    hook.remove()
    assert {s for t, s in seen if t} == {32, 64}
    assert {s for t, s in seen if not t} == {64}
    with pytest.raises(ValueError, match="batch_scale"):
        TrainSettings(epochs=1, batch_size=8, workers=0, progress=False, batch_scale=(0.0, 1.0))
    with pytest.raises(ValueError, match="batch_scale"):
        run_loop([toy_dirs[0]], toy_dirs[1], tmp_path / "y", index="/faces/index", **{**FAST, "batch_scale": (1.0, 0.5)})
    with pytest.raises(SystemExit):
        main(["train", "--data", str(toy_dirs[0]), "--eval", str(toy_dirs[1]), "--out", str(tmp_path / "r"),
              "--batch-scale", "1,0.5"])


@pytest.mark.parametrize("bad", ["2,3", "0.5", "a,b", "0,1"])
def test_cli_weight_clip_must_bracket_one(bad, toy_dirs, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["train", "--data", str(toy_dirs[0]), "--eval", str(toy_dirs[1]), "--out", str(tmp_path / "r"),
              "--weight-clip", bad])
    assert "--weight-clip" in capsys.readouterr().err


# -------------------------------------------------------------------------------------------- CLI

def test_cli_train_eval_and_exit_codes(toy_dirs, tmp_path, capsys):
    data, ev = toy_dirs
    run = tmp_path / "run"
    base = ["train", "--data", str(data), "--eval", str(ev), "--out", str(run), "--model", "freq_attention",
            "--model-kwargs", json.dumps(TINY), "--patch", "32", "--batch-size", "8", "--workers", "0",
            "--epochs-per-round", "1", "--statistics-n", "0", "--no-progress"]
    assert main(base + ["--augment-until", "auc>1", "--max-rounds", "1"]) == 1  # condition not met
    assert "condition not met" in capsys.readouterr().out
    assert main(["train", "--out", str(run), "--resume", "--no-progress"]) == 1  # finished: nothing to do
    # more rounds need faces to regenerate from: usage error naming the options
    assert main(["train", "--out", str(run), "--resume", "--max-rounds", "2", "--no-progress"]) == 2
    assert "--index" in capsys.readouterr().err

    out = tmp_path / "m.json"
    assert main(["eval", "--ckpt", str(run / "round-01" / "checkpoint.pt"), "--data", str(ev), "--out", str(out),
                 "--workers", "0", "--no-progress"]) == 0
    metrics = json.loads(out.read_text())
    assert metrics["n"] == 24 and set(metrics["per_generator"]) == {"gen_a", "gen_b"}
    assert (tmp_path / "m_roc.png").is_file() and "gen_a" in capsys.readouterr().out
    # --size resizes every face (a multiple of 32); a bad one is a usage error naming it
    assert main(["eval", "--ckpt", str(run / "round-01" / "checkpoint.pt"), "--data", str(ev), "--size", "32",
                 "--workers", "0", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["eval", "--ckpt", str(run / "round-01" / "checkpoint.pt"), "--data", str(ev), "--size", "50",
                 "--workers", "0", "--no-progress"]) == 2
    assert "size" in capsys.readouterr().err

    for cmd in (base[:-1] + ["--out", str(tmp_path / "r3"), "--workers", "two"],
                ["eval", "--ckpt", str(run / "round-01" / "checkpoint.pt"), "--data", str(ev), "--workers", "-1"]):
        with pytest.raises(SystemExit) as exit_info:
            main(cmd)
        assert exit_info.value.code == 2
        assert "--workers: expected 'auto' or an int >= 0" in capsys.readouterr().err
    assert not (tmp_path / "r3").exists()

    assert main(base[:-1] + ["--out", str(tmp_path / "r2"), "--augment-until", "auc>0.8 or ap>1"]) == 2
    assert "'auc>0.8 or ap>1'" in capsys.readouterr().err
    assert main(["eval", "--ckpt", str(tmp_path / "none.pt"), "--data", str(ev)]) == 2
    assert "none.pt" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path / "nodata"), "--eval", str(ev), "--out", str(tmp_path / "r3"),
                 "--no-progress"]) == 2
    assert "nodata" in capsys.readouterr().err


def test_rounds_table_lists_generators():
    rounds = [{"round": 1, "pool": ["a"], "n_train": 10, "n_val": 2, "best_epoch": 0, "val": {"auc": 0.9},
               "eval": {"auc": 0.7, "ap": 0.8, "eer": 0.3, "per_generator": {"sbi": {"auc": 0.75}}},
               "condition_met": False, "wall_s": 12.0}]
    table = rounds_table(rounds)
    assert "sbi AUC" in table and "| 1 | 1 | 10 | 2 | 1 | 0.900 | 0.700 | 0.800 | 0.300 | 0.750 | not met | 12 |" in table


@pytest.mark.filterwarnings("ignore:identity_split")  # two faces linked by swaps: one component
def test_loop_with_real_synth_generate(toy_dirs, tmp_path):
    """Integration: the pool and the regeneration come from synth.index / synth.generate."""
    cv2 = pytest.importorskip("cv2")
    from skimage.data import astronaut

    from synth.generate import generate
    from synth.index import build_index

    _, ev = toy_dirs
    faces = tmp_path / "faces"
    faces.mkdir()
    img = astronaut()[:, :, ::-1]
    cv2.imwrite(str(faces / "a.png"), img)
    cv2.imwrite(str(faces / "b.png"), np.ascontiguousarray(img[:, ::-1]))  # a second "face" for swaps
    build_index(faces, tmp_path / "index", workers=1, progress=False)
    generate(tmp_path / "base", n=6, recipe="mixed", index=tmp_path / "index", size=64, seed=0, workers=1,
             progress=False)
    run = tmp_path / "run"
    summary = run_loop([tmp_path / "base"], ev, run, condition="auc>1", max_rounds=2, recipe="mixed",
                       progress=False, log=lambda m: None, **{**FAST, "regen_n": 4, "gen_workers": 1})
    pool2 = run / "pool" / "round-02"
    assert len(summary["rounds"]) == 2 and summary["rounds"][1]["pool"][-1] == str(pool2)
    report = json.loads((pool2 / "report.json").read_text())
    assert report["n_requested"] == 4 and report["seed"] == 2 and report["size"] == 64  # size taken from base run.json
    assert report["index"] == str((tmp_path / "index").resolve())  # face source found in base/run.json
    assert report["weights"] == (summary["rounds"][0]["weights"] or None)


def _training_inputs(train, val, out, **settings) -> list:
    """The batches a tiny freq_attention model is fed while training one paired round on ``train``."""
    torch.manual_seed(0)
    model = create_model("freq_attention", **TINY)
    tds = FaceDataset(train, "full", augment=False, norm=model.input_norm, full_size=64, paired_augment=True)
    vds = FaceDataset(val, "full", norm=model.input_norm, full_size=64)
    seen = []
    hook = model.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach().clone()) if mod.training else None)
    train_round(model, tds, vds, out, TrainSettings(epochs=1, lr=3e-3, batch_size=8, workers=0, progress=False,
                                                    paired=True, **settings), log=lambda m: None)
    hook.remove()
    return seen


def test_train_round_amplify_strengthens_the_fakes_only(toy_dirs, tmp_path):
    # the model's inputs: with amplify the first step's fakes differ from their own reals by more,
    # and the reals are the same as without it
    train, val = identity_split(read_dataset(toy_dirs[0]), 0.2, seed=0)

    def first_input(amplify):
        return _training_inputs(train, val, tmp_path / f"a{amplify}", max_steps_per_epoch=4, amplify=amplify,
                                amplify_until=1.0)[0]

    plain, amped = first_input(1.0), first_input(4.0)
    assert torch.equal(plain[:4], amped[:4])  # reals untouched
    gap_plain = (plain[4:] - plain[:4]).abs().mean()
    gap_amped = (amped[4:] - amped[:4]).abs().mean()
    assert gap_amped > 1.5 * gap_plain  # fakes pushed away from their own reals (factor in [1, 4])


def test_train_round_detail_match_feeds_matched_pairs_and_needs_paired_batches(toy_dirs, tmp_path, monkeypatch):
    # every step's paired batch goes through match_detail_pairs with the settings' probability, and the
    # model sees its output; off, nothing is called; without paired batches the option is refused
    import detector.train as T

    train, val = identity_split(read_dataset(toy_dirs[0]), 0.2, seed=0)
    calls = []

    def spy(image, p, rng, lo, hi):
        out = real_match(image, p, rng, lo, hi) + 0.125  # a visible mark of the matched batch
        calls.append((p, image.shape[0], out.clone()))
        return out

    real_match = T.match_detail_pairs
    monkeypatch.setattr(T, "match_detail_pairs", spy)

    def inputs(p):
        return _training_inputs(train, val, tmp_path / f"d{p}", max_steps_per_epoch=2, detail_match=p)

    assert inputs(0.0) and not calls
    seen = inputs(0.75)
    assert [(p, n) for p, n, _ in calls] == [(0.75, 8), (0.75, 8)]
    assert all(torch.equal(x, out) for x, (_, _, out) in zip(seen, calls))
    with pytest.raises(ValueError, match="detail_match: matching a fake's detail to its own real needs paired"):
        TrainSettings(epochs=1, batch_size=8, workers=0, progress=False, detail_match=0.5)
    with pytest.raises(ValueError, match="detail_match: expected a probability in"):
        TrainSettings(epochs=1, batch_size=8, workers=0, progress=False, paired=True, detail_match=1.5)


def test_train_round_bf16_runs_the_forward_under_autocast_and_keeps_float32_weights(toy_dirs, tmp_path):
    train, val = identity_split(read_dataset(toy_dirs[0]), 0.2, seed=0)
    torch.manual_seed(0)
    model = create_model("freq_attention", **TINY)
    tds = FaceDataset(train, "full", augment=False, norm=model.input_norm, full_size=64, paired_augment=True)
    vds = FaceDataset(val, "full", norm=model.input_norm, full_size=64)
    dtypes = []
    hook = model.rgb.register_forward_hook(
        lambda mod, args, out: dtypes.append(out[-1].dtype) if mod.training else None)
    res = train_round(model, tds, vds, tmp_path,
                      TrainSettings(epochs=1, lr=3e-3, batch_size=8, workers=0, progress=False, max_steps_per_epoch=2,
                                    paired=True, precision="bf16"), log=lambda m: None)
    hook.remove()
    assert dtypes and set(dtypes) == {torch.bfloat16}  # training forward in bf16 ...
    assert all(p.dtype == torch.float32 for p in model.parameters())  # ... weights stay float32
    assert np.isfinite(res["best_val_auc"])
    with pytest.raises(ValueError, match="precision: expected one of"):
        TrainSettings(epochs=1, batch_size=8, workers=0, progress=False, precision="fp16")


def test_resolve_precision(monkeypatch):
    from detector.train import resolve_precision

    assert resolve_precision("fp32", "cpu") == "fp32" and resolve_precision("bf16", "cpu") == "bf16"
    # auto: bf16 only with native bf16 instructions, not oneDNN's emulation on plain AVX-512
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert resolve_precision("auto", "cpu") == "fp32"
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert resolve_precision("auto", "cpu") == ("bf16" if torch.backends.mkldnn.is_available() else "fp32")
    with pytest.raises(ValueError, match="precision: expected one of"):
        resolve_precision("half", "cpu")


def test_faster_precision_times_both_and_leaves_the_model_and_random_state_alone():
    from detector.losses import DetectorLoss
    from detector.train import faster_precision

    torch.manual_seed(0)
    model = create_model("freq_attention", **TINY)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.random.get_rng_state()
    choice, seconds = faster_precision(model, DetectorLoss(), 64, 4, repeats=1)
    assert set(seconds) == {"fp32", "bf16"} and all(s > 0 for s in seconds.values())
    assert choice == ("bf16" if seconds["fp32"] >= 1.25 * seconds["bf16"] else "fp32")
    assert torch.equal(torch.random.get_rng_state(), rng)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert all(p.grad is None for p in model.parameters())
    # a margin no step can meet keeps float32, one every step meets takes bf16
    assert faster_precision(model, DetectorLoss(), 64, 4, repeats=1, margin=1e9)[0] == "fp32"
    assert faster_precision(model, DetectorLoss(), 64, 4, repeats=1, margin=1e-9)[0] == "bf16"
    with pytest.raises(ValueError, match="repeats, margin"):
        faster_precision(model, DetectorLoss(), 64, 4, repeats=0)


@pytest.mark.parametrize("timed", ["fp32", "bf16"])
def test_train_round_auto_precision_on_a_cpu_follows_the_timed_step(toy_dirs, tmp_path, monkeypatch, timed):
    import detector.train as train_mod

    monkeypatch.setattr(train_mod, "resolve_precision", lambda precision, device: "bf16")  # a native-bf16 CPU
    calls = []

    def timed_step(model, loss_fn, side, batch_size, device="cpu"):
        calls.append((side, batch_size))
        return timed, {"fp32": 1.0, "bf16": 0.5 if timed == "bf16" else 2.0}

    monkeypatch.setattr(train_mod, "faster_precision", timed_step)
    train, val = identity_split(read_dataset(toy_dirs[0]), 0.2, seed=0)
    torch.manual_seed(0)
    model = create_model("freq_attention", **TINY)
    tds = FaceDataset(train, "full", augment=False, norm=model.input_norm, full_size=64, paired_augment=True)
    vds = FaceDataset(val, "full", norm=model.input_norm, full_size=64)
    dtypes, msgs = [], []
    hook = model.rgb.register_forward_hook(
        lambda mod, args, out: dtypes.append(out[-1].dtype) if mod.training else None)
    res = train_round(model, tds, vds, tmp_path,
                      TrainSettings(epochs=1, lr=3e-3, batch_size=8, workers=0, progress=False, max_steps_per_epoch=2,
                                    paired=True, precision="auto"), log=msgs.append)
    hook.remove()
    assert calls == [(64, 8)]  # timed once, at the training side and batch
    assert res["precision"] == timed
    assert set(dtypes) == {torch.bfloat16 if timed == "bf16" else torch.float32}
    assert any(m.startswith(f"precision auto: {timed}") for m in msgs)


@pytest.mark.parametrize("twin_loss", ["kl", "logit"])
def test_train_round_twins_feed_processed_pairs_and_log_the_consistency(toy_dirs, tmp_path, twin_loss):
    # with twins, every training forward holds the batch plus 2 x twins processed copies, and the
    # consistency term is logged per step; without paired batches the option is refused
    train, val = identity_split(read_dataset(toy_dirs[0]), 0.2, seed=0)
    torch.manual_seed(0)
    model = create_model("freq_attention", **TINY)
    tds = FaceDataset(train, "full", augment=False, norm=model.input_norm, full_size=64, paired_augment=True)
    vds = FaceDataset(val, "full", norm=model.input_norm, full_size=64)
    sizes = []
    hook = model.register_forward_pre_hook(lambda mod, args: sizes.append(args[0].shape[0]) if mod.training else None)
    train_round(model, tds, vds, tmp_path / "t",
                TrainSettings(epochs=1, lr=3e-3, batch_size=8, workers=0, progress=False, max_steps_per_epoch=2,
                              paired=True, twins=2, twin_weight=0.5, twin_loss=twin_loss), log=lambda m: None)
    hook.remove()
    assert sizes == [12, 12]
    steps = [json.loads(line) for line in open(tmp_path / "t" / "train_log.jsonl")]
    twin = [s["twin"] for s in steps if s["kind"] == "step"]
    assert len(twin) == 2 and all(np.isfinite(t) and t >= 0 for t in twin)
    with pytest.raises(ValueError, match="twins: quality twins need paired batches"):
        TrainSettings(epochs=1, batch_size=8, workers=0, progress=False, twins=2)
    with pytest.raises(ValueError, match="twins, twin_weight"):
        TrainSettings(epochs=1, batch_size=8, workers=0, progress=False, paired=True, twins=5)


def test_read_metrics_returns_the_round_records_and_names_a_missing_file(tmp_path):
    from detector.loop import read_metrics

    (tmp_path / "metrics.jsonl").write_text('{"round": 1}\n\n{"round": 2}\n')
    assert [m["round"] for m in read_metrics(tmp_path)] == [1, 2]
    with pytest.raises(ValueError, match=str(tmp_path / "nope" / "metrics.jsonl")):
        read_metrics(tmp_path / "nope")
