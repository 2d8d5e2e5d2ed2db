"""FID/FVD: the Fréchet distance against closed forms, and the TorchScript feature path with stand-in nets."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from animlcm.errors import AnimlcmError
from animlcm.stages.evaluate.frechet import feature_stats, fid, frechet_distance, fvd, load_feature_net


def test_diagonal_covariances_match_the_closed_form():
    # for diagonal S1, S2: FD = |mu1 - mu2|^2 + sum (sqrt(s1) - sqrt(s2))^2
    mu1, mu2 = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, 0.0])
    s1, s2 = torch.tensor([1.0, 4.0, 9.0]), torch.tensor([4.0, 1.0, 9.0])
    expected = (1 + 0 + 4) + ((1 - 2) ** 2 + (2 - 1) ** 2 + 0)
    assert frechet_distance(mu1, torch.diag(s1), mu2, torch.diag(s2)) == pytest.approx(expected, abs=1e-9)


def test_rotated_covariances_and_identity():
    # rotating both covariances by the same orthogonal matrix leaves the distance unchanged
    angle = 0.7
    rot = torch.tensor(
        [[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]], dtype=torch.float64
    )
    s1, s2 = torch.diag(torch.tensor([2.0, 0.5])).double(), torch.diag(torch.tensor([1.0, 3.0])).double()
    mu = torch.zeros(2)
    plain = frechet_distance(mu, s1, mu, s2)
    rotated = frechet_distance(mu, rot @ s1 @ rot.T, mu, rot @ s2 @ rot.T)
    assert rotated == pytest.approx(plain, abs=1e-9)
    assert plain == pytest.approx((math.sqrt(2) - 1) ** 2 + (math.sqrt(0.5) - math.sqrt(3)) ** 2, abs=1e-9)
    assert frechet_distance(mu, s1, mu, s1) == pytest.approx(0.0, abs=1e-9)


def test_feature_stats():
    f = torch.tensor([[1.0, 2.0], [3.0, 6.0]])
    mu, sigma = feature_stats(f)
    assert mu.tolist() == [2.0, 4.0]
    assert sigma.tolist() == [[2.0, 4.0], [4.0, 8.0]]


class StandInFrames(torch.nn.Module):
    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        return torch.stack([x.mean((2, 3)), x.std((2, 3))], dim=-1).flatten(1)


class StandInClips(torch.nn.Module):
    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        return torch.cat([x.mean((2, 3, 4)), (x[:, :, 1:] - x[:, :, :-1]).abs().mean((2, 3, 4))], dim=1)


def test_fid_and_fvd_with_torchscript_stand_ins(tmp_path):
    torch.jit.save(torch.jit.script(StandInFrames()), tmp_path / "fid.pt")
    torch.jit.save(torch.jit.script(StandInClips()), tmp_path / "fvd.pt")
    fid_net, fvd_net = load_feature_net(tmp_path / "fid.pt"), load_feature_net(tmp_path / "fvd.pt")
    rng = np.random.default_rng(0)
    real = rng.integers(0, 255, (6, 4, 32, 32, 3), dtype=np.uint8)
    far = np.clip(real.astype(int) // 2 + 100, 0, 255).astype(np.uint8)
    assert fid(fid_net, real.reshape(-1, 32, 32, 3), real.reshape(-1, 32, 32, 3), size=16) == pytest.approx(
        0, abs=1e-6
    )
    assert fid(fid_net, far.reshape(-1, 32, 32, 3), real.reshape(-1, 32, 32, 3), size=16) > 1.0
    assert fvd(fvd_net, list(real), list(real), size=16) == pytest.approx(0, abs=1e-6)
    assert fvd(fvd_net, list(far), list(real), size=16) > 1e-3


def test_feature_net_errors_are_one_line(tmp_path):
    with pytest.raises(AnimlcmError, match="feature network not found"):
        load_feature_net(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a zip")
    with pytest.raises(AnimlcmError, match="not a TorchScript network"):
        load_feature_net(bad)
