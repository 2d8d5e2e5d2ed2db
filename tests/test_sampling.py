"""Samplers: against diffusers' LCMScheduler/DDIMScheduler step by step, and on closed-form denoisers."""

from __future__ import annotations

import pytest
import torch

from animlcm.diffusion.param import add_noise, consistency_from_output, to_v
from animlcm.diffusion.sampling import sample_consistency, sample_ddim_cfg, sample_segmented
from animlcm.diffusion.schedule import NoiseSchedule
from animlcm.diffusion.timesteps import lcm_timesteps, segment_edges, teacher_timesteps
from animlcm.errors import AnimlcmError

SCHEDULES = [NoiseSchedule.sd15(), NoiseSchedule.zero_snr_v()]
IDS = ["eps", "v"]
SHAPE = (2, 4, 3, 4, 4)  # (B, C, F, h, w)


def toy_model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A deterministic stand-in network output that depends on x and t."""
    return 0.3 * x + torch.sin(t.float() / 100).reshape(-1, 1, 1, 1, 1)


def point_oracle(schedule: NoiseSchedule, x_star: torch.Tensor):
    """Exact raw output of a network whose data distribution is the single point x_star."""
    abar = schedule.alphas_cumprod()

    def out(x, t, cond=None):
        a = abar[t].reshape(-1, 1, 1, 1, 1).to(x.dtype)
        eps = (x - a.sqrt() * x_star) / (1 - a).sqrt()
        return eps if schedule.prediction_type == "epsilon" else to_v(x_star, eps, abar[t].to(x.dtype))

    return out


@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
@pytest.mark.parametrize("steps", [1, 2, 4])
def test_consistency_matches_lcm_scheduler(schedule, steps):
    abar = schedule.alphas_cumprod()
    x_T = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    lcm = schedule.make_scheduler("lcm")
    lcm.set_timesteps(steps, original_inference_steps=50)
    g, x = torch.Generator().manual_seed(7), x_T
    for t in lcm.timesteps:
        x, denoised = lcm.step(toy_model(x, t.reshape(1).expand(2)), t, x, generator=g, return_dict=False)
    kind = schedule.prediction_type
    ours = sample_consistency(
        lambda x, t: consistency_from_output(toy_model(x, t), x, t, abar=abar, kind=kind),
        x_T,
        lcm_timesteps(steps),
        abar=abar,
        generator=torch.Generator().manual_seed(7),
    )
    assert torch.allclose(ours, denoised, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
def test_consistency_recovers_point_data(schedule):
    abar = schedule.alphas_cumprod(dtype=torch.float64)
    x_star = torch.randn(SHAPE, dtype=torch.float64)
    oracle = point_oracle(schedule, x_star)
    kind = schedule.prediction_type

    def denoise(x, t):
        return consistency_from_output(oracle(x, t), x, t, abar=abar, kind=kind)

    eps0 = torch.randn(SHAPE, dtype=torch.float64)
    x_T = add_noise(x_star, eps0, abar[999])
    seen = []

    def no_fresh_noise(like, i):
        raise AssertionError("deterministic sampling must not draw noise")

    for deterministic in (False, True):
        out = sample_consistency(
            denoise,
            x_T,
            [999, 759, 499, 259],
            abar=abar,
            deterministic=deterministic,
            noise_fn=no_fresh_noise if deterministic else None,
            callback=seen.append,
        )
        assert torch.allclose(out, x_star, atol=1e-6)
    # deterministic: the second input is x* re-noised with the SAME noise the first input implied
    second = [s for s in seen if s["i"] == 1][-1]
    assert second["t"] == 759
    assert torch.allclose(second["x"], add_noise(x_star, eps0, abar[759]), atol=1e-6)


def test_segmented_k1_is_lcm_sampling():
    schedule = NoiseSchedule.zero_snr_v()
    abar = schedule.alphas_cumprod()
    x_T = torch.randn(SHAPE)

    def seg(x, t, s):
        return consistency_from_output(toy_model(x, t), x, t, abar=abar, kind="v_prediction", s=s)

    def plain(x, t):
        return consistency_from_output(toy_model(x, t), x, t, abar=abar, kind="v_prediction")

    a = sample_segmented(
        seg, x_T, segment_edges(1), abar=abar, steps=4, generator=torch.Generator().manual_seed(3)
    )
    b = sample_consistency(
        plain, x_T, lcm_timesteps(4), abar=abar, generator=torch.Generator().manual_seed(3)
    )
    assert torch.equal(a, b)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
def test_segmented_walks_edges_and_recovers_point_data(schedule):
    abar = schedule.alphas_cumprod(dtype=torch.float64)
    x_star = torch.randn(SHAPE, dtype=torch.float64)
    oracle, kind = point_oracle(schedule, x_star), schedule.prediction_type

    def seg(x, t, s):
        return consistency_from_output(oracle(x, t), x, t, abar=abar, kind=kind, s=s)

    eps0 = torch.randn(SHAPE, dtype=torch.float64)
    x_T = add_noise(x_star, eps0, abar[999])
    calls, noise_draws = [], []

    def counting_noise(like, i):
        noise_draws.append(i)
        return torch.randn_like(like)

    out = sample_segmented(
        seg, x_T, segment_edges(2), abar=abar, noise_fn=counting_noise, callback=calls.append
    )
    assert [(c["t"], c["s"]) for c in calls] == [(999, 499), (499, 0)] and noise_draws == []
    assert torch.allclose(calls[1]["x"], add_noise(x_star, eps0, abar[499]), atol=1e-6)  # exact edge jump
    assert torch.allclose(out, x_star, atol=1e-6)
    calls.clear()
    out = sample_segmented(
        seg, x_T, segment_edges(2), abar=abar, steps=4, noise_fn=counting_noise, callback=calls.append
    )
    assert [(c["t"], c["s"]) for c in calls] == [(999, 499), (759, 499), (499, 0), (259, 0)]
    assert noise_draws == [0, 2]  # re-noise inside a segment only
    assert torch.allclose(out, x_star, atol=1e-6)
    with pytest.raises(AnimlcmError, match="fewer than the 2 segments"):
        sample_segmented(seg, x_T, segment_edges(2), abar=abar, steps=1)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
@pytest.mark.parametrize("cfg", [1.0, 3.5])
def test_ddim_cfg_matches_diffusers(schedule, cfg):
    ddim = schedule.make_scheduler("ddim")
    ddim.set_timesteps(10)
    x_T = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    x = x_T
    for t in ddim.timesteps:
        tt = t.reshape(1).expand(2)
        out_c, out_u = toy_model(x, tt), toy_model(x, tt) * 0.5 - 0.1
        x = ddim.step(out_u + cfg * (out_c - out_u), t, x).prev_sample
    uncond_calls = []

    def model_out(x, t, cond):
        if cond == "uncond":
            uncond_calls.append(int(t[0]))
            return toy_model(x, t) * 0.5 - 0.1
        return toy_model(x, t)

    ours = sample_ddim_cfg(
        model_out,
        x_T,
        teacher_timesteps(10, schedule),
        cond="cond",
        uncond="uncond",
        cfg=cfg,
        schedule=schedule,
    )
    assert torch.allclose(ours, x, rtol=1e-4, atol=1e-4)
    assert len(uncond_calls) == (0 if cfg == 1.0 else 10)  # cfg = 1 costs one call per step


@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
def test_ddim_exact_teacher_recovers_point_data(schedule):
    x_star = torch.randn(SHAPE, dtype=torch.float64)
    x_T = add_noise(x_star, torch.randn(SHAPE, dtype=torch.float64), schedule.alphas_cumprod()[999])
    oracle = point_oracle(schedule, x_star)
    out = sample_ddim_cfg(oracle, x_T, teacher_timesteps(5, schedule), cond=None, schedule=schedule)
    assert torch.allclose(out, x_star, atol=1e-8)


def test_bad_timesteps():
    abar = NoiseSchedule.sd15().alphas_cumprod()
    x = torch.zeros(1, 4, 2, 2)
    with pytest.raises(AnimlcmError, match="at least one step"):
        sample_consistency(lambda x, t: x, x, [], abar=abar)
    with pytest.raises(AnimlcmError, match="strictly decreasing"):
        sample_consistency(lambda x, t: x, x, [259, 499], abar=abar)
