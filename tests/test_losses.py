"""Loss terms: hand values, spec vectors, the signs of ETA/CoNS, and the same weights at every size."""

from __future__ import annotations

import json
import math

import pytest
import torch

from animlcm.errors import AnimlcmError
from animlcm.stages.distill.losses import (
    aux_loss,
    cd_loss,
    cons_loss,
    distance,
    eta_loss,
    frames_as_rows,
    l2,
    pseudo_huber,
    self_dependency_matrix,
    temporal_sdm_loss,
    timestep_weight,
)


@pytest.fixture(scope="module")
def spec(shared_dir):
    return json.loads((shared_dir / "data" / "spec_vectors.json").read_text())


def test_pseudo_huber_is_per_element():
    # per element, then the mean over a sample's elements:
    # [[3, 0]] vs [[0, 4]] -> ((sqrt(10) - 1) + (sqrt(17) - 1)) / 2
    d = pseudo_huber(
        torch.tensor([[[3.0, 0.0]], [[1.0, 1.0]]]), torch.tensor([[[0.0, 4.0]], [[1.0, 1.0]]]), c=1.0
    )
    assert d.shape == (2,)
    assert d.tolist() == pytest.approx([((math.sqrt(10) - 1) + (math.sqrt(17) - 1)) / 2, 0.0])
    # quadratic far below c, |d| far above it (diffusers' LCM script: sqrt(d^2 + c^2) - c, c = 0.001)
    one = torch.ones(1, 8)
    assert pseudo_huber(one * 1e-4, 0 * one, c=1e-3).item() == pytest.approx(0.5 * 1e-8 / 1e-3, rel=1e-2)
    assert pseudo_huber(one * 2.0, 0 * one, c=1e-3).item() == pytest.approx(2.0, rel=1e-3)


def _terms(shape: tuple[int, ...], num_frames: int) -> dict[str, float]:
    """Every loss term of a step for predictions of ``shape`` whose per-element errors follow one fixed
    pattern (the same multiset of values at every size), with the methods' weights."""
    pattern = torch.tensor([0.05, -0.2, 0.3, -0.01, 0.12, -0.07, 0.0, 0.4])
    n = math.prod(shape)
    err = pattern.repeat(n // len(pattern)).reshape(shape)
    pred, target = torch.zeros(shape), err
    mask = (torch.arange(n // shape[1]) % 4 == 0).reshape(shape[0], *shape[2:])  # a quarter of the cells
    sdm = pattern.repeat(shape[0] * num_frames * num_frames // len(pattern)).reshape(shape[0], num_frames, -1)
    return {
        "cd": cd_loss(pred, target).item(),
        "cd_motion": cd_loss(pred, target, mask=mask, motion_weight=0.5).item(),
        "aux": aux_loss(pred, target, weight=0.1).item(),
        "eta": eta_loss(pred, target, weight=0.1).item(),
        "cons": cons_loss(pred, target, weight=0.02).item(),
        "temporal_sdm": temporal_sdm_loss(torch.zeros_like(sdm), sdm, weight=0.1).item(),
    }


def test_paper_weights_mean_the_same_at_every_size():
    """The same per-element errors at tiny (2 x 16x16 latents) and sd15 (16 x 96x64) size give the same terms,
    so each paper weight's share of the total does not change with resolution or frame count."""
    tiny = _terms((2, 4, 2, 16, 16), num_frames=2)
    sd15 = _terms((2, 4, 16, 96, 64), num_frames=16)
    for name in tiny:
        assert sd15[name] / sd15["cd"] == pytest.approx(tiny[name] / tiny["cd"], rel=1e-4), name
    assert tiny["cd"] == pytest.approx(sd15["cd"], rel=1e-4) and tiny["cd"] > 0.1


def test_l2_and_distance_dispatch():
    x, y = torch.tensor([[1.0, 3.0]]), torch.tensor([[0.0, 1.0]])
    assert l2(x, y).tolist() == pytest.approx([(1 + 4) / 2])
    assert distance(x, y, "l2").item() == pytest.approx(2.5)
    with pytest.raises(AnimlcmError, match="not supported"):
        distance(x, y, "l1")


def _clip(values):  # (1, C=1, F=1, h=1, w=len) clip
    return torch.tensor(values, dtype=torch.float32).reshape(1, 1, 1, 1, -1)


def test_cd_loss_motion_mask_hand_values():
    pred, target = _clip([1.0, 2.0]), _clip([0.0, 0.0])
    mask = torch.tensor([[[[True, False]]]])  # (B, F, h, w)
    # huber, c = 0: per element |d|, so d = (1 + 2) / 2, d_M = (1 + 0) / 2 (the unmasked cell zeroed in both)
    loss = cd_loss(pred, target, kind="huber", c=0.0, mask=mask, motion_weight=0.5)
    assert loss.item() == pytest.approx(1.5 + 0.5 * 0.5)
    assert loss.item() == pytest.approx((1.5 * 1 + 1.0 * 2) / 2)  # a per-element weight 1 + lambda_1 M
    # l2 (mean over all elements): d = 2.5, d_M = 1/2: the same as a per-element weight 1 + lambda_1 M
    loss = cd_loss(pred, target, kind="l2", mask=mask, motion_weight=0.5)
    assert loss.item() == pytest.approx(2.5 + 0.5 * 0.5)
    assert loss.item() == pytest.approx((1.5 * 1 + 1.0 * 4) / 2)
    # full mask -> (1 + lambda_1) d; empty mask or lambda_1 = 0 -> d
    full, empty = torch.ones_like(mask), torch.zeros_like(mask)
    assert cd_loss(pred, target, kind="l2", mask=full, motion_weight=0.5).item() == pytest.approx(1.5 * 2.5)
    assert cd_loss(pred, target, kind="l2", mask=empty, motion_weight=0.5).item() == pytest.approx(2.5)
    assert cd_loss(pred, target, kind="l2", mask=mask, motion_weight=0.0).item() == pytest.approx(2.5)


def test_cd_loss_mask_broadcasts_over_channels_and_frames_mode():
    pred = torch.zeros(2, 4, 3, 2, 2)
    target = torch.ones(2, 4, 3, 2, 2)
    mask = torch.zeros(2, 3, 2, 2, dtype=torch.bool)
    mask[1, 0, 0, 0] = True  # one cell, all 4 channels
    per_elem = 1.0 + 0.5 * mask.unsqueeze(1).float()
    expected = per_elem.flatten(1).mean(1).mean()
    assert cd_loss(pred, target, kind="l2", mask=mask, motion_weight=0.5).item() == pytest.approx(
        expected.item()
    )
    frames, fmask = pred[:, :, 0], mask[:, 0]  # spatial stage: (N, C, h, w) with (N, h, w)
    assert cd_loss(frames, target[:, :, 0], kind="l2", mask=fmask, motion_weight=0.5).item() > 1.0
    with pytest.raises(AnimlcmError, match="motion mask shape"):
        cd_loss(pred, target, mask=mask[:, :, :1], motion_weight=0.5)


def test_cd_loss_timestep_weights():
    pred, target = torch.zeros(2, 1, 2), torch.ones(2, 1, 2)
    w = torch.tensor([1.0, 0.25])
    assert cd_loss(pred, target, kind="l2", weights=w).item() == pytest.approx((1.0 + 0.25) / 2)


def test_aux_loss_weight():
    x, y = torch.zeros(3, 4, 2, 2), torch.ones(3, 4, 2, 2)
    assert aux_loss(x, y, weight=0.1, kind="l2").item() == pytest.approx(0.1)
    assert aux_loss(x, y, weight=0.1, kind="huber", c=0.0).item() == pytest.approx(0.1 * 1.0)  # mean |1|


def test_timestep_weight_spec_and_hand(spec):
    v = spec["timestep_weight"]
    ours = timestep_weight(torch.tensor(v["n"]), v["N"], v["delta"], v["gamma"])
    assert ours.tolist() == pytest.approx(v["value"])
    assert timestep_weight(10, 50, 0.5, 2.0).item() == pytest.approx((1 - 0.5 * 10 / 50) ** 2)
    assert bool((torch.diff(timestep_weight(torch.arange(50))) < 0).all())  # decays as n grows
    with pytest.raises(AnimlcmError):
        timestep_weight(1, 50, 1.5, 2.0)


def test_self_dependency_matrix_spec_and_properties(spec):
    v = spec["self_dependency_matrix"]
    z = torch.tensor(v["Z_frames_by_features"], dtype=torch.float64)
    assert torch.allclose(
        self_dependency_matrix(z).double(), torch.tensor(v["T"], dtype=torch.float64), atol=1e-6
    )
    # hand: two frames at 90 degrees and one parallel
    t = self_dependency_matrix(torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]]))
    assert t.tolist() == [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 1.0]]
    batch = torch.randn(2, 4, 5, 3, 3)  # (B, C, F, h, w)
    rows = frames_as_rows(batch)
    assert rows.shape == (2, 5, 36) and torch.equal(rows[1, 2], batch[1, :, 2].flatten())
    m = self_dependency_matrix(rows)
    assert m.shape == (2, 5, 5) and torch.allclose(m, m.transpose(1, 2))
    assert torch.isfinite(self_dependency_matrix(torch.zeros(3, 4))).all()  # zero frames: no NaN


def test_temporal_sdm_loss():
    a = self_dependency_matrix(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))  # identity
    b = self_dependency_matrix(torch.tensor([[1.0, 0.0], [1.0, 0.0]]))  # all ones
    assert temporal_sdm_loss(a, a, weight=0.1).item() == 0.0
    # l2 over the 4 entries: two differ by 1 -> mean 0.5, times lambda
    assert temporal_sdm_loss(a, b, weight=0.1).item() == pytest.approx(0.1 * 0.5)


def test_eta_decreases_when_predictions_get_closer():
    base, other = torch.zeros(2, 4, 3, 3), torch.ones(2, 4, 3, 3)
    far = eta_loss(base, other, weight=0.1)
    near = eta_loss(base, 0.5 * other, weight=0.1)
    assert 0.0 < near.item() < far.item()
    assert eta_loss(base, base, weight=0.1).item() == pytest.approx(0.0, abs=1e-6)
    # a gradient step on the loss moves the two predictions toward each other
    p = (0.5 * other).clone().requires_grad_(True)
    eta_loss(base, p, weight=0.1).backward()
    assert eta_loss(base, p.detach() - 0.1 * p.grad, weight=0.1).item() < near.item()


def test_cons_decreases_when_farther_until_the_bound():
    a = torch.zeros(2, 4, 3, 3)
    values = [cons_loss(a, a + d, weight=0.02, margin=1.0).item() for d in (0.0, 0.25, 0.5, 0.9)]
    assert values == sorted(values, reverse=True) and values[0] == pytest.approx(0.02)
    assert values[2] == pytest.approx(0.02 * (1.0 - 0.25))  # l2 = 0.5^2
    # beyond the margin: bounded at 0, no gradient pushing further
    p = (a + 2.0).requires_grad_(True)
    loss = cons_loss(a, p, weight=0.02, margin=1.0)
    loss.backward()
    assert loss.item() == 0.0 and not p.grad.any()
    # inside the margin the gradient pushes them apart
    q = (a + 0.5).requires_grad_(True)
    cons_loss(a, q, weight=0.02, margin=1.0).backward()
    assert bool((q.grad < 0).all())  # descending the loss increases q - a
