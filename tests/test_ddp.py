"""train_round under torch DDP: 2 processes on loopback (gloo), tiny model, toy data (< 60 s)."""
import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

from detector.checkpoint import load_checkpoint
from detector.data import write_toy_synth_dir

SCRIPT = textwrap.dedent("""
    import json, os, sys
    import torch
    from torch.optim.optimizer import register_optimizer_step_post_hook
    torch.set_num_threads(1)
    from detector.data import FaceDataset, identity_split, read_dataset
    from detector.models import create_model
    from detector.train import TrainSettings, train_round

    data, out, marks = sys.argv[1:4]
    rank = int(os.environ["RANK"])
    torch.manual_seed(rank)  # different inits: DDP must broadcast rank 0's weights
    train, val = identity_split(read_dataset(data), 0.2, seed=0)
    step_sums = []  # parameter checksum after every optimiser step: equal across ranks iff gradients are synced
    register_optimizer_step_post_hook(
        lambda opt, args, kwargs: step_sums.append(sum(float(p.detach().double().sum())
                                                       for g in opt.param_groups for p in g["params"])))
    model = create_model("freq_attention", backbone="test_resnet", embed_dim=16, decoder_dim=8, head_hidden=16)
    res = train_round(model, FaceDataset(train, "patch", patch=32, augment=True, norm=model.input_norm),
                      FaceDataset(val, "full", norm=model.input_norm), out,
                      TrainSettings(epochs=2, lr=3e-3, batch_size=8, workers=0, progress=False))
    flat = torch.cat([p.detach().flatten() for p in model.parameters()]).double()
    with open(os.path.join(marks, f"rank{rank}.json"), "w") as fh:
        json.dump({"world": res["world_size"], "best_epoch": res["best_epoch"], "sum": float(flat.sum()),
                   "sq": float((flat ** 2).sum()), "history": len(res["history"]),
                   "step_sums": step_sums}, fh)
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_train_round_ddp_two_processes(tmp_path):
    data = write_toy_synth_dir(tmp_path / "data", n=24, size=64)
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    out, marks = tmp_path / "round", tmp_path / "marks"
    marks.mkdir()
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), str(script), str(data), str(out), str(marks)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (json.loads((marks / f"rank{k}.json").read_text()) for k in (0, 1))
    assert r0["world"] == r1["world"] == 2
    assert r0["best_epoch"] == r1["best_epoch"] and r0["history"] == r1["history"] == 2
    assert r0["sum"] == pytest.approx(r1["sum"], rel=1e-9) and r0["sq"] == pytest.approx(r1["sq"], rel=1e-9)
    assert len(r0["step_sums"]) == len(r1["step_sums"]) >= 2
    assert r0["step_sums"] == pytest.approx(r1["step_sums"], rel=1e-6)  # weights stay in sync while training
    # only rank 0 wrote: one log, each step logged once; each rank ran half of the balanced batches
    recs = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    steps = [r for r in recs if r["kind"] == "step"]
    n_train_batches = len(steps) // 2  # per epoch, rank 0
    assert [r["kind"] for r in recs].count("epoch") == 2 and n_train_batches >= 1
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "last.pt", "train_log.jsonl"]
    model, meta = load_checkpoint(out / "best.pt")
    assert meta["extra"]["epoch"] == r0["best_epoch"]
