"""One CD target: CFG-augmented teacher DDIM step, teacher-free target, student/target consistency outputs."""

from __future__ import annotations

import json

import pytest
import torch

from animlcm.diffusion.param import add_noise, consistency_from_output, ddim_step, to_v, to_x0
from animlcm.diffusion.schedule import NoiseSchedule
from animlcm.errors import AnimlcmError
from animlcm.stages.distill.losses import cd_loss
from animlcm.stages.distill.targets import (
    cd_target,
    student_prediction,
    teacher_ddim_cfg_step,
    teacher_free_target,
)

SD, ZV = NoiseSchedule.sd15(), NoiseSchedule.zero_snr_v()


@pytest.fixture(scope="module")
def spec(shared_dir):
    return json.loads((shared_dir / "data" / "spec_vectors.json").read_text())


def _t(v: int, b: int = 1) -> torch.Tensor:
    return torch.full((b,), v, dtype=torch.long)


def test_no_guidance_is_the_spec_ddim_step(spec):
    schedules = {"scaled_linear": SD, "zero_snr": ZV}
    for c in spec["ddim_steps"]:
        schedule = NoiseSchedule.from_dict(
            {**schedules[c["schedule"]].to_dict(), "prediction_type": c["prediction"]}
        )
        x_t = torch.tensor([c["x_t"]], dtype=torch.float64)
        out = torch.tensor([c["model_out"]], dtype=torch.float64)
        step = teacher_ddim_cfg_step(out, None, x_t, _t(c["t"]), _t(c["t_prev"]), 3.0, schedule)
        assert torch.allclose(step.x_prev[0], torch.tensor(c["x_prev_ddim"], dtype=torch.float64), atol=1e-6)


def test_cfg_hand_value_at_zero_snr():
    # v-pred at t = 999 under zero-SNR: x0 = -v, eps = x_t; x0 = x0_c + w (x0_c - x0_u)
    x_t = torch.tensor([[0.3, -0.2]], dtype=torch.float64)
    v_c, v_u = (
        torch.tensor([[1.0, 2.0]], dtype=torch.float64),
        torch.tensor([[0.5, -1.0]], dtype=torch.float64),
    )
    step = teacher_ddim_cfg_step(v_c, v_u, x_t, _t(999), _t(979), 2.0, ZV)
    assert step.x0[0].tolist() == pytest.approx([-1.0 + 2.0 * (-1.0 + 0.5), -2.0 + 2.0 * (-2.0 - 1.0)])
    assert step.eps[0].tolist() == pytest.approx(x_t[0].tolist())  # eps_c = eps_u = x_t: guidance leaves it
    abar = ZV.alphas_cumprod()
    assert torch.allclose(step.x_prev, ddim_step(step.x0, step.eps, abar[979]))


@pytest.mark.parametrize("schedule", [SD, ZV], ids=["eps", "v"])
def test_cfg_step_matches_diffusers_ddim_on_guided_output(schedule):
    g = torch.Generator().manual_seed(0)
    x_t, out_c, out_u = (torch.randn(2, 4, 3, 3, generator=g) for _ in range(3))
    w = 1.5
    ddim = schedule.make_scheduler("ddim", timestep_spacing="trailing", steps_offset=0)
    ddim.set_timesteps(50)  # trailing 50: 999, 979, ...: prev = t - 20
    for t in (999, 759, 39):
        if t == 999 and schedule.prediction_type == "epsilon":
            continue
        guided = out_c + w * (out_c - out_u)  # LCM's x0_c + w (x0_c - x0_u) is guidance_scale w + 1
        ref = ddim.step(guided, t, x_t).prev_sample
        ours = teacher_ddim_cfg_step(out_c, out_u, x_t, _t(t, 2), _t(t - 20, 2), w, schedule).x_prev
        assert torch.allclose(ours, ref, atol=2e-5), t


def test_per_sample_w():
    x_t, out_c, out_u = torch.randn(2, 4, 2, 2), torch.randn(2, 4, 2, 2), torch.randn(2, 4, 2, 2)
    both = teacher_ddim_cfg_step(out_c, out_u, x_t, _t(499, 2), _t(479, 2), torch.tensor([0.0, 3.0]), SD)
    zero = teacher_ddim_cfg_step(out_c, None, x_t, _t(499, 2), _t(479, 2), 0.0, SD)
    three = teacher_ddim_cfg_step(out_c, out_u, x_t, _t(499, 2), _t(479, 2), 3.0, SD)
    assert torch.allclose(both.x_prev[0], zero.x_prev[0]) and torch.allclose(both.x_prev[1], three.x_prev[1])


@pytest.mark.parametrize("schedule", [SD, ZV], ids=["eps", "v"])
def test_teacher_free_equals_oracle_teacher(schedule):
    # the teacher-free target is the DDIM step of a teacher that knows x0 and the very noise used
    g = torch.Generator().manual_seed(2)
    x0, eps = (
        torch.randn(3, 4, 2, 4, 4, generator=g, dtype=torch.float64),
        torch.randn(3, 4, 2, 4, 4, generator=g, dtype=torch.float64),
    )
    abar = schedule.alphas_cumprod()
    t, t_prev = torch.tensor([759, 259, 19]), torch.tensor([739, 239, 0])
    x_t = add_noise(x0, eps, abar[t])
    oracle = eps if schedule.prediction_type == "epsilon" else to_v(x0, eps, abar[t])
    via_teacher = teacher_ddim_cfg_step(oracle, None, x_t, t, t_prev, 0.0, schedule).x_prev
    free = teacher_free_target(x0, eps, t_prev, schedule)
    assert torch.allclose(free, via_teacher, atol=1e-10)
    assert torch.allclose(free, add_noise(x0, eps, abar[t_prev]))


def test_cd_target_paths_and_boundary():
    schedule = ZV
    abar = schedule.alphas_cumprod()
    x0, eps = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    t, t_prev = torch.tensor([519, 499]), torch.tensor([499, 479])
    x_t = add_noise(x0, eps, abar[t])
    target_fn = lambda x, tt: torch.zeros_like(x) + 0.1  # noqa: E731  a stand-in EMA network (v output)
    free = cd_target(x_t, t, t_prev, target_fn=target_fn, schedule=schedule, x0_real=x0, noise=eps)
    assert torch.allclose(free.x_prev, add_noise(x0, eps, abar[t_prev]))
    expected = consistency_from_output(
        torch.full_like(x_t, 0.1), free.x_prev, t_prev, abar=abar, kind="v_prediction"
    )
    assert torch.allclose(free.f, expected)
    # segmented: a target evaluated exactly on its edge returns x_hat itself (boundary condition)
    boundary = torch.tensor([499, 0])
    seg = cd_target(
        x_t, t, t_prev, target_fn=target_fn, schedule=schedule, x0_real=x0, noise=eps, boundary=boundary
    )
    assert torch.allclose(seg.f[0], seg.x_prev[0], atol=1e-6)
    teacher_fn = lambda x, tt: (torch.zeros_like(x), torch.ones_like(x))  # noqa: E731
    with_teacher = cd_target(
        x_t, t, t_prev, target_fn=target_fn, schedule=schedule, teacher_fn=teacher_fn, w=2.0
    )
    step = teacher_ddim_cfg_step(torch.zeros_like(x_t), torch.ones_like(x_t), x_t, t, t_prev, 2.0, schedule)
    assert torch.allclose(with_teacher.x_prev, step.x_prev) and not with_teacher.f.requires_grad
    with pytest.raises(AnimlcmError, match="teacher-free"):
        cd_target(x_t, t, t_prev, target_fn=target_fn, schedule=schedule)


@pytest.mark.parametrize("schedule", [SD, ZV], ids=["eps", "v"])
def test_oracle_models_give_zero_loss_on_a_point_dataset(schedule):
    """Data = one point x*: the exact model predicts x0 = x*, so teacher, target and student agree."""
    abar = schedule.alphas_cumprod()
    x_star = torch.randn(1, 4, 2, 3, 3, dtype=torch.float64).expand(4, -1, -1, -1, -1)

    def oracle(x, tt):  # the exact network output for a point-mass data distribution
        a = abar[tt].reshape(-1, 1, 1, 1, 1)
        eps = (x - a.sqrt() * x_star) / (1 - a).sqrt()
        return eps if schedule.prediction_type == "epsilon" else to_v(x_star, eps, abar[tt])

    # t_n > 0: at t_n = 0 the boundary f(x, 0) = x keeps x_0's own sqrt(1 - abar_0) noise (LCM's bias)
    t, t_prev = torch.tensor([979, 759, 259, 39]), torch.tensor([959, 739, 239, 19])
    x_t = add_noise(x_star, torch.randn_like(x_star), abar[t])
    student_fn = lambda x, tt: oracle(x, tt).requires_grad_(True)  # noqa: E731
    pred = student_prediction(student_fn, x_t, t, schedule)
    assert torch.allclose(pred.x0, x_star, atol=1e-9)
    target = cd_target(
        x_t,
        t,
        t_prev,
        target_fn=oracle,
        schedule=schedule,
        teacher_fn=lambda x, tt: (oracle(x, tt),) * 2,
        w=3.0,
    )
    # c_skip(t) x_t leaks a tiny amount of x_t into f at t > 0, so compare with the LCM scalings' scale
    assert cd_loss(pred.f, target.f, kind="l2").item() < 1e-6
    assert pred.f.requires_grad
    x0_target = to_x0(oracle(target.x_prev, t_prev), target.x_prev, abar[t_prev], schedule.prediction_type)
    assert torch.allclose(x0_target, x_star, atol=1e-9)  # the teacher's step stays on the trajectory


def test_negative_t_prev_is_rejected_not_wrapped():
    x = torch.zeros(1, 4, 2, 2)
    with pytest.raises(ValueError, match="t_prev must be >= 0"):
        teacher_ddim_cfg_step(x, None, x, _t(19), _t(-1), 0.0, SD)
    with pytest.raises(ValueError, match="t_prev must be >= 0"):
        teacher_free_target(x, x, _t(-1), SD)
