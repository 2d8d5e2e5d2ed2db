"""The loss terms of the three papers, each a pure function of tensors.

Shapes: predictions are (B, C, F, h, w) clips or (N, C, h, w) frames; a distance `d` reduces everything but
the batch dimension and returns (B,). Every distance is a per-element MEAN (pseudo-Huber per element, as
diffusers' LCM distillation script computes it; squared error per element), so a term's size does not depend
on the resolution or the frame count, and the papers' weights (lambda_1, lambda_2, phi_1, phi_2, lambda) mean
the same at tiny and at sd15. Every loss takes its paper weight and returns the weighted scalar, so the
trainer logs exactly what it sums:

    total = cd_loss(...)  [DanceLCM eq. 3/4/7, AnimateLCM eq. 10 with lambda_n]
          + aux_loss(...)  [DanceLCM eq. 5/8, lambda_2]
          + eta_loss(...) + cons_loss(...)  [CoSeC eq. 4-5, phi_1 / phi_2]
          + temporal_sdm_loss(self_dependency_matrix(...), ...)  [CoSeC eq. 6-8, lambda]
"""

from __future__ import annotations

import torch
from torch import Tensor

from animlcm.errors import AnimlcmError

DISTANCES = ("huber", "l2")


def pseudo_huber(x: Tensor, y: Tensor, c: float = 0.001) -> Tensor:
    """Pseudo-Huber distance per sample: mean over elements of sqrt((x - y)^2 + c^2) - c; returns (B,).

    Per element, as diffusers' LCM distillation script (``train_lcm_distill_sd_wds.py``, ``huber_c`` 0.001)
    does, not sqrt(||x - y||^2 + c^2) - c over the whole sample (iCT's form): that norm grows with
    sqrt(#elements), so against the per-element CoNS and temporal terms the papers' weights would mean ~7x
    less at sd15 (786k latent elements per clip) than at tiny. Per element, c stays the scale below which the
    distance is quadratic (|d| << c) and above which it is |d|. Computed in float32 at least.
    """
    diff = (x.float() - y.float()).flatten(1)
    return (torch.sqrt(diff.pow(2) + c * c) - c).mean(dim=1)


def l2(x: Tensor, y: Tensor) -> Tensor:
    """Mean squared error per sample, (B,) (the L2 option of LCM's distill script, mean over elements)."""
    return (x.float() - y.float()).flatten(1).pow(2).mean(dim=1)


def distance(x: Tensor, y: Tensor, kind: str = "huber", c: float = 0.001) -> Tensor:
    """d(x, y) per sample: `huber` (pseudo-Huber with c) or `l2` (mean squared error)."""
    if kind == "huber":
        return pseudo_huber(x, y, c)
    if kind == "l2":
        return l2(x, y)
    raise AnimlcmError(f"loss distance {kind!r} is not supported; use one of {DISTANCES}")


def _mask_like(mask: Tensor, x: Tensor) -> Tensor:
    """(B, F, h, w) / (N, h, w) bool mask -> broadcastable over x's channel axis 1, x's dtype."""
    if mask.ndim != x.ndim - 1 or mask.shape[0] != x.shape[0] or mask.shape[1:] != x.shape[2:]:
        raise AnimlcmError(
            f"motion mask shape {tuple(mask.shape)} does not match predictions {tuple(x.shape)}: "
            "expected the prediction's shape without the channel axis (B, F, h, w) at latent resolution"
        )
    return mask.unsqueeze(1).to(torch.float32)


def cd_loss(
    pred: Tensor,
    target: Tensor,
    *,
    kind: str = "huber",
    c: float = 0.001,
    mask: Tensor | None = None,
    motion_weight: float = 0.0,
    weights: Tensor | None = None,
) -> Tensor:
    """The consistency-distillation loss, a scalar (DanceLCM eq. 3-4 and eq. 7; AnimateLCM eq. 10).

    loss = mean_b lambda_b [ d(pred, target) + lambda_1 d_M(pred, target) ], where d_M is the same distance
    with everything outside the motion mask M zeroed in both arguments: d(M * pred, M * target).
    Reduction over the mask, and why: eq. 7 adds lambda_1 times the error inside M on top of the full error.
    Zeroing outside M keeps d_M in the same units as d (d_M = d when M covers everything, 0 when M is empty),
    so with both distances (means over ALL elements; a zeroed element adds 0) eq. 7 becomes exactly a
    per-element weight 1 + lambda_1 M ("increased loss weights in motion regions"). Normalising by the number
    of masked cells instead would give a one-cell mask the weight of a whole frame. The mask is bool
    (B, F, h, w) for clips, (N, h, w) for frames, broadcast over channels. `weights` (B,) are AnimateLCM's
    lambda_n (`timestep_weight`); None = 1.
    """
    per_sample = distance(pred, target, kind, c)
    if mask is not None and motion_weight != 0.0:
        m = _mask_like(mask, pred)
        per_sample = per_sample + motion_weight * distance(pred.float() * m, target.float() * m, kind, c)
    if weights is not None:
        per_sample = per_sample * weights.to(per_sample)
    return per_sample.mean()


def aux_loss(
    x0_aux: Tensor, x0_real: Tensor, *, weight: float = 0.1, kind: str = "huber", c: float = 0.001
) -> Tensor:
    """DanceLCM's GT-latent supervision lambda_2 d(x0_aux, x0) (eq. 5, weighted as in eq. 8)."""
    return weight * distance(x0_aux, x0_real, kind, c).mean()


def timestep_weight(
    n: Tensor | int, num_ddim_steps: int = 50, delta: float = 0.5, gamma: float = 2.0
) -> Tensor:
    """AnimateLCM's lambda_n = (1 - delta n / N)^gamma: more weight at small n (targets of larger steps).

    n is the level index of t_n (`TimestepPairs.index`, 0..N-1). Returns float32 of n's shape.
    """
    if not 0.0 <= delta <= 1.0:
        raise AnimlcmError(
            f"timestep weighting: delta={delta} must be in [0, 1] (1 - delta n/N must stay >= 0)"
        )
    n = torch.as_tensor(n, dtype=torch.float32)
    return (1.0 - delta * n / num_ddim_steps).clamp(min=0.0) ** gamma


def eta_loss(
    pred_i: Tensor, pred_j: Tensor, *, weight: float = 0.1, kind: str = "huber", c: float = 0.001
) -> Tensor:
    """CoSeC Equivalent Target Aggregation, phi_1 E[D(x_hat^{I_i,p}, x_hat^{I_j,p})] (eq. 4, first term).

    pred_i, pred_j: the student's predictions for the SAME pose with two references from the same video
    (intra-source); both carry gradients, so the pair is pulled together. Decreases as they get closer.
    """
    return weight * distance(pred_i, pred_j, kind, c).mean()


def cons_loss(
    pred_k: Tensor,
    pred_l: Tensor,
    *,
    weight: float = 0.02,
    margin: float = 1.0,
    kind: str = "l2",
    c: float = 0.001,
) -> Tensor:
    """CoSeC Contrastive Negative Sampling, bounded: phi_2 E[max(0, margin - D(x_hat^{I_k}, x_hat^{I_l}))].

    The paper's term is -phi_2 D (eq. 4, second term): unbounded below, so the optimum pushes predictions of
    different videos infinitely apart (latents blow up), whatever the CD loss says. A hinge keeps the paper's
    gradient direction while the pair is closer than `margin`, and stops pushing beyond (loss 0, the bound).
    Default D = `l2` (mean squared error per element): it does not grow with resolution or frame count, so one
    margin works at every size. margin = 1.0: for unit-variance latents from unrelated videos D is about 2, so
    only pairs closer than half of that (collapsing identities) are pushed. Decreases as they get farther,
    until D >= margin.
    """
    return weight * torch.relu(margin - distance(pred_k, pred_l, kind, c)).mean()


def frames_as_rows(x: Tensor) -> Tensor:
    """(B, C, F, h, w) latents -> (B, F, C*h*w): one flattened row per frame (CoSeC's Z = [v_1 .. v_f]^T)."""
    if x.ndim != 5:
        raise AnimlcmError(f"expected a (B, C, F, h, w) clip, got shape {tuple(x.shape)}")
    return x.transpose(1, 2).flatten(2)


def self_dependency_matrix(z: Tensor, eps: float = 1e-8) -> Tensor:
    """CoSeC's temporal self-dependency matrix (eq. 6): T = diag(1/d) Z Z^T diag(1/d), F x F cosines.

    z: (F, D) with one frame per row (or batched (..., F, D)); d = per-frame norms. The paper writes Z^T Z
    with frames as columns; rows here. Norms are clamped at `eps` so a zero frame gives zeros, not NaN.
    """
    z = z.float()
    unit = z / z.norm(dim=-1, keepdim=True).clamp(min=eps)
    return unit @ unit.transpose(-1, -2)


def temporal_sdm_loss(
    t_i: Tensor, t_j: Tensor, *, weight: float = 0.1, kind: str = "l2", c: float = 0.001
) -> Tensor:
    """CoSeC temporal self-contrastive term lambda E[D(T^{I_i,p}, T^{I_j,p})] (eq. 7-8).

    t_i, t_j: (B, F, F) self-dependency matrices of the student's predicted clips for the same poses with two
    intra-source references (`self_dependency_matrix(frames_as_rows(x0_hat))`). Default D = mean squared error
    over the matrix entries (bounded: entries are cosines in [-1, 1]).
    """
    if t_i.ndim == 2:
        t_i, t_j = t_i.unsqueeze(0), t_j.unsqueeze(0)
    return weight * distance(t_i, t_j, kind, c).mean()
