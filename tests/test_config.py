"""detector train --config: YAML training settings (detector/config.py), their precedence, validation,
the record in the run directory, and --resume with them."""
import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
import yaml

import detector.loop as loop_mod
from detector.cli import main
from detector.config import CONFIG_YAML, ConfigError, field_defaults, field_types, read_config, write_run_config
from detector.data import write_toy_synth_dir
from detector.settings import LoopConfig

torch.set_num_threads(1)

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "train.yaml"
TINY = {"backbone": "test_resnet", "embed_dim": 16, "decoder_dim": 8, "head_hidden": 16}


@pytest.fixture
def captured(monkeypatch):
    """run_loop replaced by a recorder: the resolved LoopConfig of a `detector train` call, no training."""
    calls = []

    def fake_run_loop(data_dirs, eval_dir, out_dir, *, resume=False, progress=True, sources=None, **settings):
        calls.append({"cfg": LoopConfig(data_dirs=list(data_dirs), eval_dir=eval_dir, out_dir=str(out_dir),
                                        **settings), "resume": resume, "sources": sources})
        return {"condition_met": True}

    monkeypatch.setattr(loop_mod, "run_loop", fake_run_loop)
    return calls


def _write(path, text):
    path.write_text(text)
    return path


def _fast_yaml(data, ev, **extra):
    """A config file for a tiny, fast run (the settings tests/test_loop.py trains with)."""
    cfg = {"data": [str(data)], "eval": str(ev), "model": "freq_attention", "model_kwargs": TINY, "patch": 32,
           "batch-size": 8, "workers": 0, "epochs_per_round": 1, "augment-until": "auc>1", "max_rounds": 1,
           "max_steps_per_epoch": 3, "quality_reals": 4, "size": 64, "regen_n": 8, "statistics_n": 0, **extra}
    return yaml.safe_dump(cfg, sort_keys=False)


# ------------------------------------------------------------------------------------ precedence

def test_yaml_config_gives_the_same_loopconfig_as_the_equivalent_flags(toy_dirs, tmp_path, captured):
    data, ev = toy_dirs
    cfg = _write(tmp_path / "run.yaml", f"""
data: {data}                      # one directory for a list
eval_dir: {ev}
model: freq_attention
model_kwargs: {{backbone: test_resnet, embed_dim: 16}}
loss_kwargs: {{lambda_sim: 2}}
augment-until: auc>0.9 and eer<0.3
max_rounds: 2
lr: 3e-4                           # YAML 1.1 would read this as a string
lr_decay: 1                        # an integer for a float
batch_scale: [0.75, 1]
weight_clip: [0.5, 2.0]
batch-size: 8
index: /faces/index
regen_size: null
amplify: 2
weight_min_count: 3
""")
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "a")]) == 0
    assert main(["train", "--data", str(data), "--eval", str(ev), "--out", str(tmp_path / "a"), "--model",
                 "freq_attention", "--model-kwargs", '{"backbone": "test_resnet", "embed_dim": 16}',
                 "--loss-kwargs", '{"lambda_sim": 2}', "--augment-until", "auc>0.9 and eer<0.3", "--max-rounds", "2",
                 "--lr", "0.0003", "--lr-decay", "1", "--batch-scale", "0.75,1", "--weight-clip", "0.5,2",
                 "--batch-size", "8", "--index", "/faces/index", "--amplify", "2", "--weight-min-count", "3"]) == 0
    from_file, from_flags = captured[0]["cfg"], captured[1]["cfg"]
    assert from_file == from_flags
    assert from_file.lr == 3e-4 and from_file.lr_decay == 1.0 and isinstance(from_file.lr_decay, float)
    assert from_file.batch_scale == (0.75, 1.0) and from_file.weight_clip == (0.5, 2.0)
    assert from_file.data_dirs == [str(data)] and from_file.amplify == 2.0
    assert captured[0]["sources"]["lr"] == str(cfg) and captured[1]["sources"]["lr"] == "--lr"
    assert "seed" not in captured[0]["sources"]  # a default


def test_flags_override_the_file(toy_dirs, tmp_path, captured):
    data, ev = toy_dirs
    cfg = _write(tmp_path / "run.yaml", _fast_yaml(data, ev, lr=0.01, src="/faces", seed=3,
                                                   model_kwargs={"embed_dim": 16}))
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "r"), "--lr", "0.002", "--index", "/idx",
                 "--backbone", "test_resnet", "--amplify", "1.5"]) == 0
    got, sources = captured[0]["cfg"], captured[0]["sources"]
    assert (got.lr, got.seed, got.amplify) == (0.002, 3, 1.5)
    assert (got.index, got.src) == ("/idx", None)  # --index replaces the file's face source
    assert got.model_kwargs == {"embed_dim": 16, "backbone": "test_resnet"}  # --backbone adds to the file's
    assert sources["lr"] == "--lr" and sources["seed"] == str(cfg) and sources["src"] == "--index"
    # the file over the defaults, the flags over the file: a file value that a flag fixes is no error
    cfg2 = _write(tmp_path / "odd.yaml", _fast_yaml(data, ev, **{"batch-size": 7}))
    assert main(["train", "--config", str(cfg2), "--out", str(tmp_path / "r"), "--pairing", "independent"]) == 0
    assert captured[1]["cfg"].batch_size == 7


# ------------------------------------------------------------------------------------ validation

@pytest.mark.parametrize("text, key, problem", [
    ("lrr: 0.1\n", "lrr", "did you mean 'lr'"),
    ("out_dir: runs/x\n", "out_dir", "--out"),
    ("lr: 0.1\nlr: 0.2\n", "lr", "given twice"),
    ("batch_size: 8\nbatch-size: 8\n", "batch_size", "both set"),
    ("lr: fast\n", "lr", "expected a number, got str 'fast'"),
    ("lr: .nan\n", "lr", "expected a number"),
    ("batch_size: 8.5\n", "batch_size", "expected an integer"),
    ("seed: true\n", "seed", "expected an integer"),
    ("regen_size: [1]\n", "regen_size", "expected an integer or null"),
    ("batch_scale: [0.5]\n", "batch_scale", "expected a list of 2 numbers or null"),
    ("weight_clip: 0.5\n", "weight_clip", "expected a list of 2 numbers"),
    ("data_dirs: [a, 3]\n", "data_dirs", "expected a list of strings"),
    ("model_kwargs: [a]\n", "model_kwargs", "expected a mapping"),
    ("model_kwargs: {when: 2024-01-01}\n", "model_kwargs", "expected a mapping"),  # a date is no JSON
    ("eval_dir: 2024\n", "eval_dir", "expected a string"),
    ("max_rounds: 0\n", "max_rounds", "expected >= 1"),
    ("lr_decay: 1.5\n", "lr_decay", "lr_decay in (0, 1]"),
    ("batch_scale: [1, 0.5]\n", "batch_scale", "0 < lo <= hi <= 1"),
    ("weight_clip: [2, 3]\n", "weight_clip", "0 < lo <= 1 <= hi"),
    ("pairing: sideways\n", "pairing", "expected one of"),
    ("fusion: max\n", "fusion", "expected one of ['equal', 'learnt'], got 'max'"),
    ("batch_size: 7\n", "batch_size", "even size"),
    ("amplify: 0.5\n", "amplify", "expected >= 1"),
    ("quality_reals: -1\n", "quality_reals", "expected >= 0"),
    ("condition: acc>0.8\n", "condition", "unknown metric"),
    ("index: /a\nsrc: /b\n", "index, src", "not both"),
])
def test_bad_config_is_a_usage_error_naming_the_file_and_key(toy_dirs, tmp_path, capsys, captured, text, key, problem):
    data, ev = toy_dirs
    given = ("" if "data_dirs" in text else f"data: {data}\n") + ("" if "eval_dir" in text else f"eval: {ev}\n")
    cfg = _write(tmp_path / "bad.yaml", given + text)
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert f"{cfg}: {key}" in err and problem in err, err
    assert len(err.splitlines()) == 1 and not captured and not (tmp_path / "r").exists()


@pytest.mark.parametrize("text, problem", [
    ("- lr\n- 0.1\n", "top level must be a mapping of settings, got list"),
    ("lr: [unclosed\n", "not valid YAML"),
    ("a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
     "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n", "alias bomb"),
    ("a: &a [1, *a]\n", "recursive"),
    ("? [a, b]\n: 1\n", "a key must be a setting name"),
])
def test_unsafe_or_malformed_yaml_is_refused(tmp_path, text, problem):
    cfg = _write(tmp_path / "bad.yaml", text)
    with pytest.raises(ConfigError, match=problem) as e:
        read_config(cfg)
    assert str(e.value).startswith(f"{cfg}: ") and len(str(e.value)) < 400
    with pytest.raises(ConfigError, match="config file not found"):
        read_config(tmp_path / "missing.yaml")
    assert read_config(_write(tmp_path / "empty.yaml", "# nothing set\n")) == {}


def test_a_bad_flag_is_not_blamed_on_the_file(toy_dirs, tmp_path, capsys, captured):
    data, ev = toy_dirs
    cfg = _write(tmp_path / "run.yaml", _fast_yaml(data, ev))
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "r"), "--max-rounds", "0"]) == 2
    err = capsys.readouterr().err
    assert "max_rounds: expected >= 1" in err and str(cfg) not in err
    with pytest.raises(SystemExit):  # a generic option is type-checked like the file
        main(["train", "--config", str(cfg), "--out", str(tmp_path / "r"), "--amplify", "strong"])
    assert "--amplify" in capsys.readouterr().err and not captured


def test_example_config_lists_every_setting_at_its_default():
    cfg = read_config(EXAMPLE)
    assert set(cfg) == set(field_types())  # every LoopConfig field but out_dir, nothing else
    defaults = field_defaults()
    assert {k: cfg[k] for k in defaults} == defaults, "examples/train.yaml is out of date with LoopConfig"


# ------------------------------------------------------------------------------------ the run directory

def test_run_records_the_resolved_config_and_resumes_with_it(toy_dirs, tmp_path, capsys, monkeypatch):
    data, ev = toy_dirs
    cfg = _write(tmp_path / "run.yaml", _fast_yaml(data, ev, seed=4, index="/faces/index"))
    run = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--out", str(run), "--lr", "0.002", "--no-progress"]) == 1
    capsys.readouterr()
    state = json.loads((run / "state.json").read_text())
    recorded = read_config(run / CONFIG_YAML)  # config.yaml is itself a valid config file
    assert recorded == _as_read(state["config"])
    assert recorded["lr"] == 0.002 and recorded["seed"] == 4 and recorded["patch"] == 32
    text = (run / CONFIG_YAML).read_text()
    assert f"seed: 4  # from {cfg}" in text and "lr: 0.002  # from --lr" in text and "ema: 0.0  # default" in text
    assert "out_dir" not in text and state["config_sources"]["seed"] == str(cfg)

    # --resume with the same file is fine (nothing left to do); a changed setting that a resumed run
    # may not change is refused naming the file and the key; one that it may change is taken
    assert main(["train", "--config", str(cfg), "--out", str(run), "--resume", "--no-progress"]) == 1
    capsys.readouterr()
    bad = _write(tmp_path / "bad.yaml", _fast_yaml(data, ev, seed=4, index="/faces/index", patch=64))
    assert main(["train", "--config", str(bad), "--out", str(run), "--resume", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:" in err and "patch=64" in err and "patch=32" in err
    assert main(["train", "--out", str(run), "--resume", "--patch", "64", "--no-progress"]) == 2
    assert "patch=64" in capsys.readouterr().err

    # a second round on resume (the stored config, max_rounds raised in a file): config.yaml follows
    def fake_generate(out, n, recipe, size, seed, workers, weights, progress, **source):
        write_toy_synth_dir(out, n=n, size=size, seed=seed)

    monkeypatch.setattr(loop_mod, "_default_generate", fake_generate)
    more = _write(tmp_path / "more.yaml", "max_rounds: 2\nregen_n: 16\n")
    assert main(["train", "--config", str(more), "--out", str(run), "--resume", "--no-progress"]) == 2
    assert "regen_n=16" in capsys.readouterr().err  # regen_n is fixed for the run: refused, naming it
    _write(more, "max_rounds: 2\nworkers: 0\n")
    assert main(["train", "--config", str(more), "--out", str(run), "--resume", "--no-progress"]) == 1
    state = json.loads((run / "state.json").read_text())
    assert len(state["rounds"]) == 2 and state["config"]["max_rounds"] == 2
    text = (run / CONFIG_YAML).read_text()
    assert f"max_rounds: 2  # from {more}" in text and f"seed: 4  # from {cfg}" in text


def _as_read(config: dict) -> dict:
    """A stored (JSON) LoopConfig dict as read_config returns it: out_dir left out, tuples as tuples."""
    out = {k: v for k, v in config.items() if k != "out_dir"}
    for k in ("batch_scale", "weight_clip"):
        out[k] = tuple(out[k]) if out[k] is not None else None
    return out


def test_write_run_config_round_trips_every_field(tmp_path):
    cfg = LoopConfig(data_dirs=["a", "b c"], eval_dir="e: f", out_dir="o", model_kwargs={"nested": {"x": [1, 2]}},
                     lr=1e-5, batch_scale=None, condition="auc>0.8 and eer<0.2")
    stored = json.loads(json.dumps(asdict(cfg)))
    write_run_config(tmp_path, stored, {"lr": "--lr"})
    back = read_config(tmp_path / CONFIG_YAML)
    assert LoopConfig(out_dir="o", **back) == cfg
    text = (tmp_path / CONFIG_YAML).read_text()
    assert "lr: 1.0e-05  # from --lr" in text and "ema: 0.0  # default" in text
    assert "model_kwargs:\n  nested:" in text and "# model_kwargs" not in text  # not the default, no source
    write_run_config(tmp_path, stored, {"lr": "--lr", "model_kwargs": "run.yaml"})
    assert "# model_kwargs: from run.yaml\nmodel_kwargs:\n" in (tmp_path / CONFIG_YAML).read_text()
    write_run_config(tmp_path, stored)  # no sources (the Python API): no annotations
    assert "# default" not in (tmp_path / CONFIG_YAML).read_text()
