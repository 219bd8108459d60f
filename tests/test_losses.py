import math

import pytest
import torch

from detector.losses import DetectorLoss, patch_ratios, similarity_target
from detector.models import create_model


def _left_half_mask(b=1, size=50):
    # 5x5 grid of 10x10 patches; columns 0-1 fully forged, column 2 half forged, 3-4 real.
    m = torch.zeros(b, 1, size, size)
    m[..., : size // 2] = 1.0
    return m


def test_similarity_target_all_real_is_ones():
    s = similarity_target(torch.zeros(3, 1, 40, 60))
    assert s.shape == (3, 25, 25)
    assert torch.equal(s, torch.ones(3, 25, 25))
    assert torch.equal(similarity_target(torch.zeros(1, 1, 40, 40), mode="abs"), torch.ones(1, 25, 25))


def test_similarity_target_left_half_both_modes():
    m = _left_half_mask()
    col_ratio = torch.tensor([1.0, 1.0, 0.5, 0.0, 0.0])
    p = col_ratio.repeat(5)  # row-major patches: patch r*5+c has ratio col_ratio[c]
    assert torch.allclose(patch_ratios(m)[0], p)
    d = p.unsqueeze(1) - p.unsqueeze(0)
    sq = similarity_target(m, mode="squared")[0]
    ab = similarity_target(m, mode="abs")[0]
    assert torch.allclose(sq, 1 - d**2) and torch.allclose(ab, 1 - d.abs())
    # Hand-checked entries: forged vs real 0, forged vs half 0.75 (squared) / 0.5 (abs).
    assert sq[0, 4] == 0 and ab[0, 4] == 0
    assert sq[0, 2] == 0.75 and ab[0, 2] == 0.5
    assert sq[0, 1] == 1 and sq[3, 4] == 1 and sq[0, 5] == 1
    assert torch.equal(sq, sq.T)


def test_similarity_target_bad_input():
    with pytest.raises(ValueError, match="mode"):
        similarity_target(torch.zeros(1, 1, 8, 8), mode="cube")
    with pytest.raises(ValueError, match=r"mask: expected a float tensor \(B, 1, H, W\)"):
        similarity_target(torch.zeros(1, 8, 8))


def _fake_out(b=2, hw=50, logit=0.0, sim=None, mask_logit=0.0):
    return {
        "logit": torch.full((b,), float(logit)),
        "mask": torch.full((b, 1, hw, hw), float(mask_logit)),
        "sim": torch.ones(b, 25, 25) if sim is None else sim,
    }


def test_detector_loss_values_by_hand():
    loss = DetectorLoss(lambda_sim=10.0, lambda_mask=1.0)
    mask = torch.cat([torch.zeros(1, 1, 50, 50), _left_half_mask()])
    total, parts = loss(_fake_out(), torch.tensor([0.0, 1.0]), mask)
    assert parts["cls"] == pytest.approx(math.log(2))
    assert parts["mask"] == pytest.approx(math.log(2), rel=1e-6)  # logit 0 -> BCE log 2 for any target
    # sim predicted all ones: real sample error 0, fake sample Frobenius norm of (1 - s).
    s = similarity_target(_left_half_mask())[0]
    expected_sim = 0.5 * (0.0 + torch.linalg.norm(1 - s).item())
    assert parts["sim"] == pytest.approx(expected_sim, rel=1e-5)
    assert parts["total"] == pytest.approx(math.log(2) + 10 * expected_sim + math.log(2), rel=1e-5)
    assert float(total) == pytest.approx(parts["total"])


def test_detector_loss_mse_reduction_and_abs_mode():
    mask = _left_half_mask(2)
    s = similarity_target(mask, mode="abs")
    _, parts = DetectorLoss(sim_mode="abs", sim_reduction="mse")(_fake_out(), torch.ones(2), mask)
    assert parts["sim"] == pytest.approx(((1 - s) ** 2).mean().item(), rel=1e-5)


def test_detector_loss_skips_missing_terms_and_invalid_masks():
    loss = DetectorLoss()
    out = {"logit": torch.zeros(2), "mask": None, "sim": None}
    total, parts = loss(out, torch.ones(2), torch.zeros(2, 1, 8, 8))
    assert parts["sim"] == 0.0 and parts["mask"] == 0.0 and parts["total"] == pytest.approx(math.log(2))
    _, parts = loss(_fake_out(), torch.ones(2), None)
    assert parts["sim"] == 0.0 and parts["mask"] == 0.0
    # Only the valid sample (all-real mask, perfect sim) counts; the other's bad mask is ignored.
    mask = torch.cat([torch.zeros(1, 1, 50, 50), _left_half_mask()])
    _, parts = loss(_fake_out(), torch.ones(2), mask, mask_valid=torch.tensor([True, False]))
    assert parts["sim"] == pytest.approx(0.0, abs=1e-5)
    _, parts = loss(_fake_out(), torch.ones(2), mask, mask_valid=torch.tensor([False, False]))
    assert parts["sim"] == 0.0 and parts["mask"] == 0.0


def test_detector_loss_resizes_mask_to_output():
    loss = DetectorLoss(lambda_sim=0.0)
    mask = torch.zeros(1, 1, 100, 100)
    _, parts = loss(_fake_out(b=1, hw=50, mask_logit=-20.0), torch.zeros(1), mask)
    assert parts["mask"] == pytest.approx(0.0, abs=1e-6)


def test_detector_loss_shape_errors():
    with pytest.raises(ValueError, match="label"):
        DetectorLoss()(_fake_out(), torch.ones(3))
    with pytest.raises(ValueError, match="mask_valid"):
        DetectorLoss()(_fake_out(), torch.ones(2), _left_half_mask(2), mask_valid=torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="sim_reduction"):
        DetectorLoss(sim_reduction="l1")


def test_sim_gradient_finite_at_perfect_prediction():
    sim = torch.ones(1, 25, 25, requires_grad=True)
    total, _ = DetectorLoss()(_fake_out(b=1, sim=sim), torch.zeros(1), torch.zeros(1, 1, 50, 50))
    total.backward()
    assert torch.isfinite(sim.grad).all()


def test_loss_decreases_on_tiny_overfit_batch():
    torch.manual_seed(0)
    model = create_model("freq_attention", backbone="mobilenetv3_small_050", embed_dim=32, decoder_dim=16,
                         head_hidden=32)
    # 160 px: the stride-32 map is 5x5, one cell per relation patch, so s can be fitted exactly.
    x = torch.randn(4, 3, 160, 160) * 0.2
    mask = torch.zeros(4, 1, 160, 160)
    mask[2:, :, 32:96, 64:128] = 1.0
    x[2:] += mask[2:] * torch.randn(2, 3, 160, 160)  # fakes: a noisy rectangle
    label = torch.tensor([0.0, 0.0, 1.0, 1.0])
    loss = DetectorLoss()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    history = []
    for _ in range(15):
        opt.zero_grad()
        total, parts = loss(model(x), label, mask)
        total.backward()
        opt.step()
        history.append(parts)
    first, last = history[0], history[-1]
    assert last["total"] < 0.25 * first["total"]
    assert last["sim"] < 0.25 * first["sim"]
    assert last["mask"] < first["mask"]
    assert min(h["cls"] for h in history[-5:]) < first["cls"]


def test_boundary_target_on_a_synthetic_soft_mask():
    from detector.losses import boundary_target

    ramp = torch.linspace(0, 1, 5).view(1, 1, 1, 5)  # 0, .25, .5, .75, 1 across a feathered edge
    assert torch.allclose(boundary_target(ramp).flatten(), torch.tensor([0.0, 0.75, 1.0, 0.75, 0.0]))


def test_boundary_term_is_off_by_default_and_rewards_a_matching_soft_edge():
    from detector.losses import DetectorLoss

    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 2:6, 2:6] = 1.0
    mask[..., 2:6, 2] = 0.5  # a half-blended column: the boundary
    label = torch.ones(1)
    logit_of = lambda m: torch.logit(m.clamp(1e-4, 1 - 1e-4))  # noqa: E731
    good = {"logit": torch.zeros(1), "mask": logit_of(mask), "sim": None}
    hard = {"logit": torch.zeros(1), "mask": logit_of((mask > 0.4).float()), "sim": None}
    _, parts = DetectorLoss()(good, label, mask)
    assert parts["boundary"] == 0.0
    lb = DetectorLoss(lambda_boundary=1.0)
    assert lb(good, label, mask)[1]["boundary"] < lb(hard, label, mask)[1]["boundary"]
    with pytest.raises(ValueError, match="lambda_boundary"):
        DetectorLoss(lambda_boundary=-1)
