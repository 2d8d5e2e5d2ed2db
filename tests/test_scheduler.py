"""The schedulers a model folder ships sample exactly as render's sampler does (same noise, same bits)."""

from __future__ import annotations

import pytest
import torch

from animlcm.diffusion.param import consistency_from_output
from animlcm.diffusion.sampling import sample_consistency, sample_ddim_cfg, sample_segmented
from animlcm.diffusion.schedule import NoiseSchedule
from animlcm.diffusion.scheduler import SegmentedConsistencyScheduler, folder_scheduler, schedule_of
from animlcm.diffusion.timesteps import lcm_timesteps, segment_edges, teacher_timesteps
from animlcm.errors import AnimlcmError

SCHEDULES = [NoiseSchedule.sd15(), NoiseSchedule.zero_snr_v()]
IDS = ["eps", "v"]
SHAPE = (1, 4, 3, 4, 4)


def toy_model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A deterministic stand-in network output that depends on x and t."""
    t = torch.as_tensor(t).reshape(-1)[:1].expand(x.shape[0])
    return 0.3 * x + torch.sin(t.float() / 100).reshape(-1, 1, 1, 1, 1)


def drive(scheduler, x_T: torch.Tensor, steps: int, seed: int, **step_kwargs) -> torch.Tensor:
    """The usual diffusers loop: set_timesteps, then step through scheduler.timesteps."""
    scheduler.set_timesteps(steps)
    g, x, denoised = torch.Generator().manual_seed(seed), x_T, None
    for t in scheduler.timesteps:
        out = scheduler.step(toy_model(x, t), t, x, generator=g, return_dict=False, **step_kwargs)
        x, denoised = out[0], out[1] if len(out) > 1 else None
    return x, denoised


@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
@pytest.mark.parametrize(("segments", "steps"), [(1, 1), (1, 4), (2, 2), (2, 4), (2, 5), (4, 4), (4, 8)])
@pytest.mark.parametrize("deterministic", [False, True])
def test_segmented_scheduler_is_the_render_sampler(schedule, segments, steps, deterministic):
    abar = schedule.alphas_cumprod()
    kind = schedule.prediction_type
    x_T = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    sched = SegmentedConsistencyScheduler.from_config(
        folder_scheduler("student", schedule, {"segments": 2}).config,
        num_segments=segments,
        deterministic=deterministic,
    )
    ours, _ = drive(sched, x_T, steps, seed=7)
    if segments == 1:
        render = sample_consistency(
            lambda x, t: consistency_from_output(toy_model(x, t), x, t, abar=abar, kind=kind),
            x_T,
            lcm_timesteps(steps, 50),
            abar=abar,
            generator=torch.Generator().manual_seed(7),
            deterministic=deterministic,
        )
    else:
        render = sample_segmented(
            lambda x, t, s: consistency_from_output(toy_model(x, t), x, t, abar=abar, kind=kind, s=s),
            x_T,
            segment_edges(segments, 50),
            abar=abar,
            steps=steps,
            num_ddim_steps=50,
            generator=torch.Generator().manual_seed(7),
            deterministic=deterministic,
        )
    assert (sched.config.num_segments, sched.config.deterministic) == (segments, deterministic)
    assert torch.equal(ours, render)
    # and the noise matters: another seed gives other samples (unless nothing is drawn)
    other, _ = drive(sched, x_T, steps, seed=8)
    drawn = not deterministic and steps > segments
    assert torch.equal(other, render) != drawn


@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
@pytest.mark.parametrize("steps", [1, 2, 4])
def test_lcm_scheduler_of_a_k1_student_matches_render(schedule, steps):
    """K = 1 students ship diffusers' LCMScheduler: the same timesteps and noise as render. LCMScheduler
    computes the boundary scalings in float32 where ours are float64 rounded once, so equal to ~1 ulp."""
    abar = schedule.alphas_cumprod()
    kind = schedule.prediction_type
    lcm = folder_scheduler("student", schedule, {"segments": 1, "num_ddim_steps": 20})
    assert type(lcm).__name__ == "LCMScheduler"
    assert lcm.config.original_inference_steps == 20 and lcm.config.timestep_scaling == 10.0
    lcm.set_timesteps(steps)
    assert lcm.timesteps.tolist() == lcm_timesteps(steps, 20)
    x_T = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    _, denoised = drive(lcm, x_T, steps, seed=7)
    render = sample_consistency(
        lambda x, t: consistency_from_output(toy_model(x, t), x, t, abar=abar, kind=kind),
        x_T,
        lcm_timesteps(steps, 20),
        abar=abar,
        generator=torch.Generator().manual_seed(7),
    )
    assert torch.allclose(denoised, render, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
@pytest.mark.parametrize("steps", [1, 4, 25])
def test_ddim_scheduler_of_a_teacher_is_the_render_sampler(schedule, steps):
    """A teacher ships DDIMScheduler: stepping it with the guided output is render's DDIM+CFG, bit for bit."""
    ddim = folder_scheduler("teacher", schedule, {})
    assert type(ddim).__name__ == "DDIMScheduler"
    x_T = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    cfg = 2.5

    def guided(x, t):
        cond, uncond = toy_model(x, t), 0.5 * toy_model(x, t) - 0.1
        return uncond + cfg * (cond - uncond)

    ddim.set_timesteps(steps)
    x = x_T
    for t in ddim.timesteps:
        x = ddim.step(guided(x, t), t, x, eta=0.0, return_dict=False)[0]
    render = sample_ddim_cfg(
        lambda x, t, c: toy_model(x, t) if c == "c" else 0.5 * toy_model(x, t) - 0.1,
        x_T,
        teacher_timesteps(steps, schedule),
        cond="c",
        uncond="u",
        cfg=cfg,
        schedule=schedule,
    )
    assert torch.equal(x, render)


def test_scheduler_config_round_trip(tmp_path):
    sched = folder_scheduler("student", NoiseSchedule.zero_snr_v(), {"segments": 4, "num_ddim_steps": 20})
    sched.save_pretrained(tmp_path)
    back = SegmentedConsistencyScheduler.from_pretrained(tmp_path)
    assert back.config.num_segments == 4 and back.config.original_inference_steps == 20
    assert schedule_of(back.config) == NoiseSchedule.zero_snr_v()
    back.set_timesteps(4)
    assert back.timesteps.tolist() == [999, 749, 499, 249]  # the 20-point grid, not the default 50
    assert back.edges == [0, 249, 499, 749, 999]


def test_scheduler_refuses_misuse():
    sched = SegmentedConsistencyScheduler(num_segments=2)
    x = torch.zeros(SHAPE)
    with pytest.raises(AnimlcmError, match="set_timesteps"):
        sched.step(x, 999, x)
    with pytest.raises(AnimlcmError, match="fewer than the 2 segments"):
        sched.set_timesteps(1)
    sched.set_timesteps(2)
    with pytest.raises(AnimlcmError, match="the plan is at 999"):
        sched.step(x, 499, x)
