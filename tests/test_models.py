import pytest
import torch

from detector.checkpoint import load_checkpoint, save_checkpoint
from detector.models import create_model, list_models, logits_of
from detector.models.backbones import create_backbone, list_backbones
from detector.models.blocks import bilinear_pool, patch_similarity

# Small configurations of every registered model, so the tests stay fast on one core.
TINY = {
    "freq_attention": {"backbone": "mobilenetv3_small_050", "embed_dim": 32, "decoder_dim": 16, "head_hidden": 32},
    "timm_classifier": {"backbone": "mobilenetv3_small_050"},
    "wavelet_dual_branch": {"width": 8, "bilinear_dim": 8, "decoder_dim": 8},
    "patch_stats": {"grid": 4, "hidden": 16},
    "patch_stats_extended": {"grid": 4, "hidden": 16},
    "stats_conv": {"grid": 8, "widths": [4, 8, 8]},
    "stats_conv_fine": {"grid": 8, "widths": [4, 8, 8], "stem": 4},
    "stats_conv_extended": {"grid": 8, "widths": [4, 8, 8]},
    "score_fusion": {"members": [{"name": "wavelet_dual_branch", "kwargs": {"width": 8, "bilinear_dim": 8, "decoder_dim": 8}},
                                 {"name": "patch_stats", "kwargs": {"grid": 4, "hidden": 16}}]},
}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_every_registered_model_has_a_tiny_config():
    assert sorted(TINY) == list_models()


@pytest.mark.parametrize("name", sorted(TINY))
@pytest.mark.parametrize("hw", [(64, 64), (128, 128), (64, 96)])
def test_output_contract(name, hw):
    model = create_model(name, **TINY[name]).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, *hw))
    assert set(out) == {"logit", "mask", "sim"}
    assert out["logit"].shape == (2,) and out["logit"].dtype == torch.float32
    if out["mask"] is not None:
        assert out["mask"].shape == (2, 1, *hw)
    if out["sim"] is not None:
        assert out["sim"].shape == (2, 25, 25)
        assert out["sim"].min() >= 0 and out["sim"].max() <= 1
    expected_none = {"timm_classifier": {"mask", "sim"}, "wavelet_dual_branch": {"sim"}, "freq_attention": set(),
                     "patch_stats": {"mask", "sim"}, "patch_stats_extended": {"mask", "sim"}, "stats_conv": {"sim"},
                     "stats_conv_fine": {"sim"}, "stats_conv_extended": {"sim"}, "score_fusion": {"sim"}}
    assert {k for k, v in out.items() if v is None} == expected_none[name]


@pytest.mark.parametrize("name,kwargs", [(n, TINY[n]) for n in sorted(TINY)] +
                         [("score_fusion", {**TINY["score_fusion"], "mirror": True})])
def test_logits_of_equals_the_forward_logit_bit_for_bit(name, kwargs):
    # scoring goes through logits_of; a model's logit-only path must not change a single score
    model = create_model(name, **kwargs).eval()
    x = torch.randn(3, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(logits_of(model, x), model(x)["logit"])


def test_logit_only_paths_exist_where_the_other_outputs_cost_time():
    # freq_attention skips its mask decoder, a fusion its members' extra outputs
    fusion = create_model("score_fusion", members=[{"name": "freq_attention", "kwargs": TINY["freq_attention"]},
                                                   {"name": "stats_conv", "kwargs": TINY["stats_conv"]}], mirror=True).eval()
    calls = []
    fusion.members[0].decoder.register_forward_hook(lambda *a: calls.append(1))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        fast = logits_of(fusion, x)
        assert not calls
        assert torch.equal(fast, fusion(x)["logit"]) and calls


def test_create_model_records_name_kwargs_and_input_norm():
    model = create_model("timm_classifier", **TINY["timm_classifier"])
    assert model.model_name == "timm_classifier"
    assert model.model_kwargs == TINY["timm_classifier"]
    assert model.input_norm == {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    assert create_model("freq_attention", **TINY["freq_attention"]).input_norm["std"] == [0.229, 0.224, 0.225]


def test_create_model_unknown_name_lists_known_models():
    with pytest.raises(ValueError, match="unknown model 'nope'.*freq_attention.*timm_classifier"):
        create_model("nope")


def test_freq_attention_bad_kwargs():
    with pytest.raises(ValueError, match="freq_input"):
        create_model("freq_attention", freq_input="fft", backbone="mobilenetv3_small_050")
    with pytest.raises(ValueError, match="fusion_depths"):
        create_model("freq_attention", fusion_depths=(3, 2), backbone="mobilenetv3_small_050")


@pytest.mark.parametrize("freq_input", [None, "dct", "srm", "dct+srm"])
def test_freq_attention_freq_inputs(freq_input):
    kw = {} if freq_input is None else {"freq_input": freq_input}
    model = create_model("freq_attention", **kw, **TINY["freq_attention"]).eval()
    # default: SRM residuals (measured best on the synth validation split, BENCHMARKS.md)
    assert model.freq_input.out_channels == {None: 9, "dct": 3, "srm": 9, "dct+srm": 12}[freq_input]
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert out["mask"].shape == (1, 1, 64, 64)


def test_attention_maps_in_unit_interval():
    model = create_model("freq_attention", **TINY["freq_attention"]).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 128, 128), return_attention=True)
    maps = model.attention_maps
    assert len(maps) == 3 and len(out["attention"]) == 3
    for m, stride in zip(maps, (4, 8, 16)):  # default fusion depths 1, 2, 3
        assert m.shape == (2, 2, 128 // stride, 128 // stride)
        assert m.min() >= 0 and m.max() <= 1
    assert not maps[0].requires_grad


def test_sim_is_symmetric_with_unit_diagonal():
    model = create_model("freq_attention", **TINY["freq_attention"]).eval()
    with torch.no_grad():
        sim = model(torch.randn(2, 3, 64, 64))["sim"]
    assert torch.allclose(sim, sim.transpose(1, 2), atol=1e-6)
    assert torch.allclose(torch.diagonal(sim, dim1=1, dim2=2), torch.ones(2, 25), atol=1e-5)


def _first_conv(module):
    return next(m for m in module.modules() if isinstance(m, torch.nn.Conv2d))


def test_gradients_reach_both_streams():
    model = create_model("freq_attention", backbone="resnet10t", embed_dim=32, decoder_dim=16, head_hidden=32)
    model.train()
    out = model(torch.randn(2, 3, 64, 64))
    out["logit"].sum().backward()
    for stream in (model.rgb, model.freq):
        grad = _first_conv(stream).weight.grad
        assert grad is not None and grad.abs().sum() > 0


def test_patch_similarity_hand_made():
    feat = torch.ones(1, 4, 10, 10)
    assert torch.allclose(patch_similarity(feat, 5), torch.ones(1, 25, 25))
    feat[:, :, :, :4] = -1.0  # left two patch columns point the opposite way
    s = patch_similarity(feat, 5)[0]
    left = [r * 5 + c for r in range(5) for c in range(2)]
    right = [r * 5 + c for r in range(5) for c in range(2, 5)]
    assert torch.allclose(s[left][:, right], torch.zeros(10, 15), atol=1e-6)
    assert torch.allclose(s[left][:, left], torch.ones(10, 10), atol=1e-6)


def test_bilinear_pool_normalised_and_checks_sizes():
    z = bilinear_pool(torch.randn(3, 4, 5, 5), torch.randn(3, 6, 5, 5))
    assert z.shape == (3, 24)
    assert torch.allclose(z.norm(dim=1), torch.ones(3), atol=1e-5)
    with pytest.raises(ValueError, match="spatial sizes"):
        bilinear_pool(torch.randn(1, 2, 4, 4), torch.randn(1, 2, 5, 5))


@pytest.mark.parametrize("name", sorted(TINY))
def test_checkpoint_roundtrip_identical_outputs(name, tmp_path):
    model = create_model(name, **TINY[name])
    # A few train-mode forwards move the BN running stats away from their defaults.
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(2, 3, 64, 64))
    model.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
    path = save_checkpoint(tmp_path / "sub" / "model.pt", model, extra={"round": 3, "auc": 0.91})
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # no temporary file left
    loaded, meta = load_checkpoint(path)
    assert not loaded.training
    assert meta["model_name"] == name and meta["extra"] == {"round": 3, "auc": 0.91}
    assert meta["input_norm"] == model.input_norm and loaded.input_norm == model.input_norm
    assert loaded.model_kwargs == meta["model_kwargs"]
    with torch.no_grad():
        out = loaded(x)
    for k, v in ref.items():
        if v is None:
            assert out[k] is None
        else:
            assert torch.equal(out[k], v), k


def test_checkpoint_errors(tmp_path):
    bad = tmp_path / "notes.pt"
    bad.write_text("this is not a checkpoint")
    with pytest.raises(ValueError, match="notes.pt"):
        load_checkpoint(bad)
    other = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(2)}, other)
    with pytest.raises(ValueError, match="weights.pt: not a detector checkpoint"):
        load_checkpoint(other)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")
    model = create_model("wavelet_dual_branch", **TINY["wavelet_dual_branch"])
    with pytest.raises(ValueError, match="extra"):
        save_checkpoint(tmp_path / "m.pt", model, extra={"bad": object()})
    with pytest.raises(ValueError, match="create_model"):
        save_checkpoint(tmp_path / "m.pt", torch.nn.Linear(2, 2))


def test_version1_checkpoint_keeps_its_dct_frequency_input(tmp_path):
    # v1 checkpoints were saved when freq_input defaulted to "dct" and did not record it
    model = create_model("freq_attention", freq_input="dct", **TINY["freq_attention"]).eval()
    model.model_kwargs.pop("freq_input")
    path = save_checkpoint(tmp_path / "v1.pt", model)
    payload = torch.load(path, weights_only=True)
    torch.save({**payload, "version": 1}, path)
    loaded, meta = load_checkpoint(path)
    assert loaded.freq_input.out_channels == 3 and meta["model_kwargs"]["freq_input"] == "dct"
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x)["logit"], model(x)["logit"])
    # a current checkpoint without the argument means the current default
    current = create_model("freq_attention", **TINY["freq_attention"]).eval()
    assert load_checkpoint(save_checkpoint(tmp_path / "v2.pt", current))[0].freq_input.out_channels == 9


def test_checkpoint_reload_never_downloads(tmp_path):
    # A model recorded as pretrained=True is rebuilt with pretrained=False: weights come from the file.
    model = create_model("timm_classifier", **TINY["timm_classifier"]).eval()
    model.model_kwargs["pretrained"] = True  # as if it had been built from downloaded weights
    path = save_checkpoint(tmp_path / "m.pt", model)
    loaded, meta = load_checkpoint(path)  # would fail here (no network) if it tried to download
    assert meta["model_kwargs"]["pretrained"] is True
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x)["logit"], model(x)["logit"])


@pytest.mark.parametrize("name", ["freq_attention", "timm_classifier"])
def test_default_backbone_builds_offline(name):
    model = create_model(name).eval()  # pretrained=False by default: nothing is downloaded
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64))["logit"].shape == (1,)


# ----------------------------------------------------------------------------- own backbones

@pytest.mark.parametrize("name", list_backbones())
def test_plain_backbones_follow_the_features_only_contract(name):
    net = create_backbone(name, in_chans=9, out_indices=(1, 2, 3)).eval()
    with torch.no_grad():
        feats = net(torch.randn(2, 9, 64, 96))
    assert net.feature_info.reduction() == [4, 8, 16]
    assert [f.shape[1] for f in feats] == net.feature_info.channels()
    assert [tuple(f.shape[-2:]) for f in feats] == [(16, 24), (8, 12), (4, 6)]
    assert len(net.stages) == 4  # stops at the deepest index asked for


def test_create_backbone_falls_through_to_timm_and_rejects_pretrained_own():
    net = create_backbone("mobilenetv3_small_050", out_indices=(2, 3))
    assert net.feature_info.reduction() == [8, 16]
    with pytest.raises(ValueError, match="no pretrained weights"):
        create_backbone("plainnet", pretrained=True)
    with pytest.raises(ValueError, match="backbone: unknown 'nope'"):
        create_backbone("nope")
    with pytest.raises(ValueError, match="out_indices"):
        create_backbone("plainnet", out_indices=(5,))


@pytest.mark.parametrize("name, kw", [("freq_attention", {"backbone": "plainnet", "fusion_depths": (1, 2, 3)}),
                                      ("timm_classifier", {"backbone": "plainnet"})])
def test_models_on_the_plain_backbone(name, kw):
    model = create_model(name, **kw).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 96, 64))
    assert out["logit"].shape == (2,)
    if name == "freq_attention":
        assert out["mask"].shape == (2, 1, 96, 64) and out["sim"].shape == (2, 25, 25)


def test_frequency_input_stays_float32_under_bf16_autocast():
    # the high-pass residuals of a grey level or two would be rounded away in bfloat16
    from detector.models.freq_attention import FrequencyInput

    fi = FrequencyInput("srm")
    x = torch.rand(1, 3, 32, 32) * 4 - 2
    ref = fi(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fi(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref)


def test_frequency_input_image_norm_ignores_the_photo_s_overall_high_frequency_level():
    from detector.models.freq_attention import FrequencyInput

    x = torch.rand(2, 3, 48, 40) * 2 - 1
    plain, normed = FrequencyInput("srm"), FrequencyInput("srm", norm="image")
    out = normed(x)
    rms = out.square().mean(dim=(2, 3)).sqrt()
    torch.testing.assert_close(rms, torch.ones_like(rms), atol=1e-3, rtol=0)
    # the SRM filters sum to zero: a contrast change about the mean scales every residual alike,
    # which the raw stream sees and the normalised one does not
    stretched = 0.3 * (x - x.mean()) + x.mean()
    assert not torch.allclose(plain(stretched), plain(x), atol=1e-3)
    torch.testing.assert_close(normed(stretched), out, atol=5e-3, rtol=0)  # zero padding: borders differ a little
    # a local change stays visible
    local = x.clone()
    local[:, :, 10:20, 10:20] = 0.3 * local[:, :, 10:20, 10:20]
    assert (normed(local) - out).abs()[:, :, 12:18, 12:18].mean() > 0.1
    with pytest.raises(ValueError, match=r"freq_norm: expected one of \['none', 'image'\], got 'rms'"):
        FrequencyInput("srm", norm="rms")
    with pytest.raises(ValueError, match="freq_norm"):
        create_model("freq_attention", backbone="test_resnet", freq_norm="x")
