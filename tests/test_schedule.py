"""NoiseSchedule: abar from diffusers (spec vectors), presets, (de)serialisation, bad values."""

from __future__ import annotations

import json

import pytest
import torch

from animlcm.diffusion.schedule import NoiseSchedule
from animlcm.errors import AnimlcmError


@pytest.fixture(scope="module")
def spec(shared_dir):
    return json.loads((shared_dir / "data" / "spec_vectors.json").read_text())


def test_sd15_abar_matches_spec_and_hand_formula(spec):
    abar = NoiseSchedule.sd15().alphas_cumprod()
    assert abar.shape == (1000,) and abar.dtype == torch.float64
    for t, value in spec["abar"].items():
        assert abar[int(t)].item() == pytest.approx(value, rel=2e-6)
    # by hand: scaled_linear betas = linspace(sqrt(b0), sqrt(b1))^2, abar_t = prod(1 - beta)
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    assert abar[0].item() == pytest.approx(1 - 0.00085, rel=1e-7)
    assert torch.allclose(abar, torch.cumprod(1 - betas, 0), rtol=2e-6)


def test_zero_snr_abar_matches_spec_and_ends_at_zero(spec):
    schedule = NoiseSchedule.zero_snr_v()
    abar = schedule.alphas_cumprod()
    for t, value in spec["abar_zero_snr"].items():
        assert abar[int(t)].item() == pytest.approx(value, rel=2e-6, abs=1e-12)
    assert abar[999].item() == 0.0  # exactly zero terminal SNR
    assert bool((abar[1:] < abar[:-1]).all())  # strictly decreasing
    assert (schedule.prediction_type, schedule.timestep_spacing) == ("v_prediction", "trailing")


def test_round_trip_and_cache():
    for schedule in (NoiseSchedule.sd15(), NoiseSchedule.zero_snr_v(), NoiseSchedule(beta_schedule="linear")):
        data = schedule.to_dict()
        assert json.loads(json.dumps(data)) == data
        assert NoiseSchedule.from_dict(data) == schedule
    s = NoiseSchedule.sd15()
    assert s.alphas_cumprod() is s.alphas_cumprod()  # cached, no diffusers call per step
    assert s.alphas_cumprod(dtype=torch.float32).dtype == torch.float32


def test_from_dict_defaults_and_unknown_keys():
    assert NoiseSchedule.from_dict({"prediction_type": "v_prediction"}).prediction_type == "v_prediction"
    with pytest.raises(AnimlcmError, match="unknown keys"):
        NoiseSchedule.from_dict({"predicton_type": "epsilon"})


@pytest.mark.parametrize(
    "kwargs",
    [{"prediction_type": "x0"}, {"beta_schedule": "cosine"}, {"timestep_spacing": "even"}],
)
def test_bad_values_raise_one_line(kwargs):
    with pytest.raises(AnimlcmError, match="use one of"):
        NoiseSchedule(**kwargs)


def test_make_scheduler_uses_same_abar():
    s = NoiseSchedule.zero_snr_v()
    for kind in ("ddim", "lcm", "tcd"):
        sched = s.make_scheduler(kind)
        assert sched.config.prediction_type == "v_prediction"
        assert torch.equal(sched.alphas_cumprod.double(), s.alphas_cumprod())
    with pytest.raises(AnimlcmError):
        s.make_scheduler("euler")
