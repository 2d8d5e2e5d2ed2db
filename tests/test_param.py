"""Parametrisation: eps/v/x0 conversions, DDIM step, boundary scalings, consistency and segmented outputs."""

from __future__ import annotations

import json
import math

import pytest
import torch

from animlcm.diffusion.param import (
    add_noise,
    boundary_scalings,
    consistency_from_output,
    consistency_output,
    ddim_step,
    segmented_output,
    to_eps,
    to_v,
    to_x0,
)
from animlcm.diffusion.schedule import NoiseSchedule
from animlcm.errors import AnimlcmError

SCHEDULES = {"scaled_linear": NoiseSchedule.sd15(), "zero_snr": NoiseSchedule.zero_snr_v()}


@pytest.fixture(scope="module")
def spec(shared_dir):
    return json.loads((shared_dir / "data" / "spec_vectors.json").read_text())


def t64(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def test_hand_values_eps_and_v():
    x_t, out, abar = t64([1.0]), t64([0.5]), 0.64  # sqrt(abar) = 0.8, sqrt(1 - abar) = 0.6
    assert to_x0(out, x_t, abar, "epsilon").item() == pytest.approx((1 - 0.6 * 0.5) / 0.8)
    assert to_eps(out, x_t, abar, "epsilon").item() == pytest.approx(0.5)
    assert to_x0(out, x_t, abar, "v_prediction").item() == pytest.approx(0.8 * 1 - 0.6 * 0.5)  # 0.5
    assert to_eps(out, x_t, abar, "v_prediction").item() == pytest.approx(0.6 * 1 + 0.8 * 0.5)  # 1.0
    assert add_noise(t64([0.5]), t64([1.0]), abar).item() == pytest.approx(1.0)  # recombines to x_t
    assert to_v(t64([0.5]), t64([1.0]), abar).item() == pytest.approx(0.8 * 1.0 - 0.6 * 0.5)
    assert ddim_step(t64([0.5]), t64([1.0]), 0.36).item() == pytest.approx(0.6 * 0.5 + 0.8 * 1.0)
    assert torch.equal(ddim_step(t64([0.5]), t64([1.0]), 1.0), t64([0.5]))


def test_per_sample_abar_broadcasts():
    x0, eps = torch.randn(3, 4, 2, 5, 5, dtype=torch.float64), torch.randn(3, 4, 2, 5, 5, dtype=torch.float64)
    abar = t64([0.9, 0.5, 0.1])
    x_t = add_noise(x0, eps, abar)
    assert torch.allclose(x_t[1], math.sqrt(0.5) * x0[1] + math.sqrt(0.5) * eps[1])
    v = to_v(x0, eps, abar)
    for kind, out in (("epsilon", eps), ("v_prediction", v), ("sample", x0)):
        assert torch.allclose(to_x0(out, x_t, abar, kind), x0)
        assert torch.allclose(to_eps(out, x_t, abar, kind), eps)


def test_ddim_steps_match_spec_vectors(spec):
    cases = spec["ddim_steps"]
    assert {(c["prediction"], c["schedule"]) for c in cases} == {
        (p, s) for p in ("epsilon", "v_prediction") for s in SCHEDULES
    }
    for c in cases:
        abar = SCHEDULES[c["schedule"]].alphas_cumprod()
        x_t, out = t64(c["x_t"])[None], t64(c["model_out"])[None]
        a_t = abar[c["t"]]
        x0 = to_x0(out, x_t, a_t, c["prediction"])
        eps = to_eps(out, x_t, a_t, c["prediction"])
        x_prev = ddim_step(x0, eps, abar[c["t_prev"]])
        for ours, key in ((x0, "x0"), (eps, "eps"), (x_prev, "x_prev_ddim")):
            assert torch.allclose(ours[0], t64(c[key]), rtol=1e-5, atol=1e-6), (c["prediction"], c["t"], key)


def test_zero_snr_t999_exact_for_v_and_error_for_eps():
    abar = NoiseSchedule.zero_snr_v().alphas_cumprod()
    x_t, v = torch.randn(2, 4), torch.randn(2, 4)
    assert torch.equal(to_x0(v, x_t, abar[999], "v_prediction"), -v)
    assert torch.equal(to_eps(v, x_t, abar[999], "v_prediction"), x_t)
    with pytest.raises(AnimlcmError, match="zero-terminal-SNR"):
        to_x0(v, x_t, abar[999], "epsilon")
    with pytest.raises(AnimlcmError, match="not supported"):
        to_x0(v, x_t, abar[999], "x0")


def test_boundary_scalings_spec_hand_and_diffusers(spec):
    lcm = NoiseSchedule.sd15().make_scheduler("lcm")
    for t, (c_skip_ref, c_out_ref) in spec["boundary_scalings"].items():
        c_skip, c_out = boundary_scalings(int(t))
        assert c_skip.item() == pytest.approx(c_skip_ref, rel=1e-12, abs=1e-15)
        assert c_out.item() == pytest.approx(c_out_ref, rel=1e-12, abs=1e-15)
        d_skip, d_out = lcm.get_scalings_for_boundary_condition_discrete(int(t))
        assert c_skip.item() == pytest.approx(d_skip, rel=1e-12) and c_out.item() == pytest.approx(
            d_out, abs=1e-15
        )
    c_skip, c_out = boundary_scalings(1)  # (10 t)^2 = 100: 0.25 / 100.25, 10 / sqrt(100.25)
    assert c_skip.item() == pytest.approx(0.25 / 100.25) and c_out.item() == pytest.approx(
        10 / math.sqrt(100.25)
    )
    c_skip, c_out = boundary_scalings(torch.tensor([0, 1]))
    assert c_skip.tolist()[0] == 1.0 and c_out.tolist()[0] == 0.0


def test_consistency_output_boundary_and_mix():
    x_t, x0 = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    assert torch.equal(consistency_output(x0, x_t, 0), x_t)  # f(x, 0) = x
    f = consistency_output(x0, x_t, torch.tensor([0, 1]))
    assert torch.equal(f[0], x_t[0])
    assert torch.allclose(f[1], (0.25 / 100.25) * x_t[1] + (10 / math.sqrt(100.25)) * x0[1])


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction"])
def test_segmented_output_boundary_condition_and_k1(kind):
    schedule = NoiseSchedule(prediction_type=kind)
    abar = schedule.alphas_cumprod()
    x_t, out = (
        torch.randn(3, 4, 2, 3, 3, dtype=torch.float64),
        torch.randn(3, 4, 2, 3, 3, dtype=torch.float64),
    )
    t = torch.tensor([499, 499, 259])
    a_t = abar[t]
    x0, eps = to_x0(out, x_t, a_t, kind), to_eps(out, x_t, a_t, kind)
    # t = s: the DDIM jump returns x_t exactly (boundary condition by construction)
    s = torch.tensor([499, 499, 259])
    assert torch.allclose(segmented_output(x0, eps, x_t, t, s, abar[s]), x_t, atol=1e-12)
    # s = 0 is the LCM form (so K = 1 is plain LCD); s > 0 the jump; mixed per sample
    s = torch.tensor([0, 259, 0])
    f = segmented_output(x0, eps, x_t, t, s, abar[s])
    lcm = consistency_output(x0, x_t, t)
    assert torch.equal(f[0], lcm[0]) and torch.equal(f[2], lcm[2])
    assert torch.allclose(f[1], abar[259].sqrt() * x0[1] + (1 - abar[259]).sqrt() * eps[1])
    # the one-call helper agrees
    g = consistency_from_output(out, x_t, t, abar=abar, kind=kind, s=s)
    assert torch.allclose(g, f)
    assert torch.allclose(consistency_from_output(out, x_t, t, abar=abar, kind=kind), lcm)


def test_segmented_hand_value():
    # x0 = 0.5, eps = 1.0, abar_s = 0.36 -> 0.6 * 0.5 + 0.8 * 1.0 = 1.1
    f = segmented_output(t64([0.5]), t64([1.0]), t64([7.0]), torch.tensor([499]), torch.tensor([259]), 0.36)
    assert f.item() == pytest.approx(1.1)


@pytest.mark.parametrize("schedule", [NoiseSchedule.sd15(), NoiseSchedule.zero_snr_v()], ids=["eps", "v"])
def test_consistency_matches_lcm_scheduler_denoised(schedule):
    lcm = schedule.make_scheduler("lcm")
    lcm.set_timesteps(4, original_inference_steps=50)
    abar = schedule.alphas_cumprod()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 8, 8, generator=g)
    for t in lcm.timesteps.tolist():
        out = torch.randn(1, 4, 8, 8, generator=g)
        ref = lcm.step(out, t, x, generator=torch.Generator().manual_seed(1)).denoised
        ours = consistency_from_output(out, x, torch.tensor([t]), abar=abar, kind=schedule.prediction_type)
        assert torch.allclose(ours, ref, rtol=1e-5, atol=1e-5)


def test_half_precision_inputs_are_computed_in_float32():
    abar = NoiseSchedule.sd15().alphas_cumprod()
    x0, eps = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    t = torch.tensor([0, 19])
    x_t = add_noise(x0, eps, abar[t])
    out = to_x0(eps.bfloat16(), x_t.bfloat16(), abar[t], "epsilon")
    assert out.dtype == torch.float32
    # in bfloat16 abar_0 = 0.99915 would round to 1.0 and x0 would collapse to x_t
    assert torch.allclose(out, x0, atol=0.05) and not torch.allclose(out, x_t.bfloat16().float(), atol=1e-3)
    assert consistency_output(x0.half(), x_t.half(), t).dtype == torch.float32
