"""The detector that ships with the package: it loads without running code from the file, and
`detector predict` / `detector eval` / `Predictor()` use it when no checkpoint is given."""
import json

import numpy as np
import torch

from detector.checkpoint import default_checkpoint, load_checkpoint


def test_shipped_checkpoint_loads_with_weights_only():
    path = default_checkpoint()
    raw = torch.load(path, weights_only=True)  # no pickled code
    assert raw["model_name"] == "score_fusion"
    assert [m["name"] for m in raw["model_kwargs"]["members"]] == ["freq_attention", "stats_conv"]
    assert path.stat().st_size < 8 * 2 ** 20  # a few MB in the package
    model, meta = load_checkpoint(path)
    extra = meta["extra"]
    assert extra["size"] == 256 and extra["round"] >= 1 and 0.0 <= extra["val_fused"]["auc"] <= 1.0
    # how it was made, for users: the commands and the commit whose defaults trained it
    assert {"faces", "pool", "train", "note"} <= set(extra["provenance"]) and "detector train" in extra["provenance"]["train"]
    assert torch.allclose(model.logit_weight, torch.tensor(extra["val_fused"]["fusion_weights"]), atol=1e-4)


def test_predictor_without_a_checkpoint_scores_the_astronaut(astro):
    from detector.predict import Predictor

    predictor = Predictor()
    assert predictor.size == 256
    result = predictor.predict_image(astro)
    assert result["status"] == "ok" and result["faces"] == 1 and 0.0 <= result["prob"] <= 1.0
    assert result["masks"][0].shape == (256, 256)  # the CNN member's forgery mask
    assert predictor.predict_image(astro)["prob"] == result["prob"]  # deterministic


def test_cli_predict_and_eval_default_to_the_shipped_checkpoint(astro, tmp_path, capsys, toy_dirs):
    import cv2

    from detector.cli import main

    photo = tmp_path / "astronaut.png"
    cv2.imwrite(str(photo), cv2.cvtColor(astro, cv2.COLOR_RGB2BGR))
    code = main(["predict", str(photo), "--json"])
    assert code in (0, 1)  # 0: scored real, 1: scored fake; 2 would be an error
    (record,) = json.loads(capsys.readouterr().out)
    assert 0.0 <= record["prob"] <= 1.0 and record["verdict"] in ("real", "fake")
    assert code == (1 if record["verdict"] == "fake" else 0)
    out = tmp_path / "m.json"
    assert main(["eval", "--data", str(toy_dirs[1]), "--out", str(out), "--workers", "0", "--no-progress"]) == 0
    metrics = json.loads(out.read_text())
    assert metrics["ckpt"] == str(default_checkpoint()) and np.isfinite(metrics["auc"])
