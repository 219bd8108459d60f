"""Training losses for the detectors: label BCE + patch-similarity + mask BCE.

``DetectorLoss`` follows "Local Relation Learning for Face Forgery Detection"
(Chen et al., AAAI 2021): ``L = L_cls + lambda_sim * L_sim + lambda_mask * L_mask`` with
``L_sim = ||s - s_hat||_2`` (Frobenius norm of the grid^2 x grid^2 difference per sample,
averaged over the batch), where ``s`` comes from the ground-truth mask
(:func:`similarity_target`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

SIM_MODES = {
    # paper: s_ij = 1 - (p_i - p_j)^2
    "squared": lambda d: 1.0 - d * d,
    # patent: s_ij = 1 - |p_i - p_j|
    "abs": lambda d: 1.0 - d.abs(),
}

SIM_REDUCTIONS = {
    # Frobenius norm per sample (the paper's ||s - s_hat||_2); eps keeps the gradient finite at 0.
    "fro": lambda diff: torch.sqrt(diff.pow(2).sum(dim=(1, 2)) + 1e-12),
    # Mean squared error per sample (scale-free in the grid size).
    "mse": lambda diff: diff.pow(2).mean(dim=(1, 2)),
}


def _check_mask(mask: torch.Tensor, name: str = "mask") -> torch.Tensor:
    if not isinstance(mask, torch.Tensor) or mask.ndim != 4 or mask.shape[1] != 1:
        shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"{name}: expected a float tensor (B, 1, H, W), got {shape}")
    if not mask.is_floating_point():
        raise ValueError(f"{name}: expected a float tensor in [0, 1], got dtype {mask.dtype}")
    return mask


def patch_ratios(mask: torch.Tensor, grid: int = 5) -> torch.Tensor:
    """Forged fraction of each patch: (B, 1, H, W) in [0, 1] -> (B, grid*grid), row-major patches.

    Adaptive average pooling, the same patch layout as
    :func:`detector.models.blocks.patch_similarity`.
    """
    _check_mask(mask)
    return F.adaptive_avg_pool2d(mask, grid).flatten(1)


def similarity_target(mask: torch.Tensor, grid: int = 5, mode: str = "squared") -> torch.Tensor:
    """Ground-truth patch similarity (B, grid^2, grid^2) in [0, 1] from a forgery mask.

    mask: float (B, 1, H, W) in [0, 1] (1 = forged). With p_i the forged fraction of patch i,
    ``s_ij = 1 - (p_i - p_j)^2`` (``mode="squared"``, paper) or ``1 - |p_i - p_j|``
    (``mode="abs"``, patent). A real image (all-zero mask) gives all ones.
    """
    if mode not in SIM_MODES:
        raise ValueError(f"mode: expected one of {sorted(SIM_MODES)}, got {mode!r}")
    p = patch_ratios(mask, grid)
    return SIM_MODES[mode](p.unsqueeze(2) - p.unsqueeze(1))


def boundary_target(mask: torch.Tensor) -> torch.Tensor:
    """Face X-ray's blending boundary ``B = 4 M (1 - M)`` of a soft mask (any shape, values in [0, 1]):
    1 where the mask is exactly half-blended, 0 on pure source or pure target pixels."""
    return 4.0 * mask * (1.0 - mask)


def _masked_mean(values: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor | None:
    """Mean of per-sample ``values`` over valid samples; None when no sample is valid."""
    if valid is None:
        return values.mean()
    if not bool(valid.any()):
        return None
    return values[valid].mean()


class DetectorLoss:
    """``L = BCE(logit, label) + lambda_sim * L_sim + lambda_mask * BCE(mask_logits, mask)
    [+ lambda_boundary * BCE(B(sigmoid(mask_logits)), B(mask))]`` with ``B`` :func:`boundary_target`.

    ``__call__(out, label, mask=None, mask_valid=None) -> (total, parts)``:

    - ``out``: a model's output dict (``logit`` (B,), ``mask`` (B,1,h,w) logits or None,
      ``sim`` (B,g^2,g^2) or None).
    - ``label``: (B,) float, 1 = fake.
    - ``mask``: (B, 1, H, W) float in [0, 1] ground truth (zeros for real images) or None;
      resized (area averaging / bilinear) to the output size when it differs.
    - ``mask_valid``: optional (B,) bool; samples marked False (e.g. fakes whose forged
      region is unknown) are left out of the mask and similarity terms.

    Terms whose model output or target is missing are skipped. ``sim_reduction="fro"``
    (default) is the paper's per-sample Frobenius norm; ``"mse"`` the mean squared error.
    ``parts`` holds floats: ``cls``, ``sim``, ``mask`` (0.0 when skipped) and ``total``.
    """

    def __init__(self, lambda_sim: float = 10.0, lambda_mask: float = 1.0, sim_mode: str = "squared",
                 sim_reduction: str = "fro", lambda_boundary: float = 0.0):
        if sim_mode not in SIM_MODES:
            raise ValueError(f"sim_mode: expected one of {sorted(SIM_MODES)}, got {sim_mode!r}")
        if sim_reduction not in SIM_REDUCTIONS:
            raise ValueError(f"sim_reduction: expected one of {sorted(SIM_REDUCTIONS)}, got {sim_reduction!r}")
        self.lambda_sim = float(lambda_sim)
        self.lambda_mask = float(lambda_mask)
        self.lambda_boundary = float(lambda_boundary)
        for name in ("lambda_sim", "lambda_mask", "lambda_boundary"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name}: expected a number >= 0, got {getattr(self, name)}")
        self.sim_mode = sim_mode
        self.sim_reduction = sim_reduction

    def __call__(self, out: dict, label: torch.Tensor, mask: torch.Tensor | None = None,
                 mask_valid: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        logit = out["logit"]
        if label.shape != logit.shape:
            raise ValueError(f"label: expected shape {tuple(logit.shape)} like out['logit'], got {tuple(label.shape)}")
        total = F.binary_cross_entropy_with_logits(logit, label.to(logit.dtype))
        parts = {"cls": float(total.detach()), "sim": 0.0, "mask": 0.0, "boundary": 0.0}
        if mask is None:
            parts["total"] = float(total.detach())
            return total, parts
        _check_mask(mask)
        if mask.shape[0] != logit.shape[0]:
            raise ValueError(f"mask: batch size {mask.shape[0]} does not match out['logit'] {logit.shape[0]}")
        if mask_valid is not None:
            mask_valid = mask_valid.to(device=logit.device, dtype=torch.bool)
            if mask_valid.shape != logit.shape:
                raise ValueError(f"mask_valid: expected shape {tuple(logit.shape)}, got {tuple(mask_valid.shape)}")
        mask = mask.to(logit.dtype)

        sim = out.get("sim")
        if sim is not None and self.lambda_sim:
            grid = int(round(sim.shape[-1] ** 0.5))
            target = similarity_target(mask, grid, self.sim_mode)
            term = _masked_mean(SIM_REDUCTIONS[self.sim_reduction](sim - target), mask_valid)
            if term is not None:
                total = total + self.lambda_sim * term
                parts["sim"] = float(term.detach())

        mask_logits = out.get("mask")
        if mask_logits is not None and self.lambda_mask:
            target = mask
            if target.shape[-2:] != mask_logits.shape[-2:]:
                target = _resize_mask(target, mask_logits.shape[-2:])
            per_px = F.binary_cross_entropy_with_logits(mask_logits, target, reduction="none")
            term = _masked_mean(per_px.mean(dim=(1, 2, 3)), mask_valid)
            if term is not None:
                total = total + self.lambda_mask * term
                parts["mask"] = float(term.detach())
            if self.lambda_boundary:
                # Face X-ray's blending boundary, read off the predicted soft mask the same way
                pred = boundary_target(torch.sigmoid(mask_logits)).clamp(1e-6, 1 - 1e-6)
                per_px = F.binary_cross_entropy(pred, boundary_target(target), reduction="none")
                term = _masked_mean(per_px.mean(dim=(1, 2, 3)), mask_valid)
                if term is not None:
                    total = total + self.lambda_boundary * term
                    parts["boundary"] = float(term.detach())
        parts["total"] = float(total.detach())
        return total, parts


def _resize_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    # Area averaging when shrinking keeps forged fractions; bilinear when enlarging.
    if size[0] <= mask.shape[-2] and size[1] <= mask.shape[-1]:
        return F.adaptive_avg_pool2d(mask, size)
    return F.interpolate(mask, size=size, mode="bilinear", align_corners=False).clamp(0.0, 1.0)
