"""Distillation learns: a problem whose probability-flow ODE is known, distilled with the project's own parts.

The data are a 2-D Gaussian mixture per class (two classes, two components each); the teacher is its exact
denoiser E[x0 | x_t] in closed form, for a class (conditional) and for the mixture of both classes
(unconditional), so classifier-free guidance changes where the ODE goes. A small MLP student is distilled with
`sample_timestep_pairs`, `cd_target` / `student_prediction` (targets.py), `cd_loss` (losses.py) and the EMA
target (`make_target`, `update_ema`), then sampled with `sample_consistency` (1 step) or `sample_segmented`
(a K = 2 DanceLCM student, 2 steps: x_T -> x_499 -> x_0 without fresh noise). Both land on the teacher's own
50-step DDIM + CFG solution from the same x_T.

Measured (2000 steps each, ~9 s per student on one CPU core): mean distance to the teacher's solution 0.062
(1 step) and 0.018 (2 steps), against a spread of the solutions of 0.92; tolerances 0.15 and 0.06. Each of
these mutations of the project's code, tried once, fails both: t_n and t_{n+k} swapped in `cd_target` (1.5 /
217), the CFG sign flipped in `teacher_ddim_cfg_step` (1.17 / 1.07), the EMA target replaced by the online
student (`update_ema` copying the student: 1.11 / 0.18).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
from torch import Tensor, nn

from animlcm.diffusion.param import add_noise, consistency_from_output, to_v
from animlcm.diffusion.sampling import sample_consistency, sample_ddim_cfg, sample_segmented
from animlcm.diffusion.schedule import NoiseSchedule
from animlcm.diffusion.timesteps import sample_timestep_pairs, segment_edges, teacher_timesteps
from animlcm.stages.distill.ema import make_target, update_ema
from animlcm.stages.distill.losses import cd_loss
from animlcm.stages.distill.targets import cd_target, student_prediction

SCHEDULE = NoiseSchedule.zero_snr_v()  # the real teachers' parametrisation: v-prediction, zero terminal SNR
ABAR = SCHEDULE.alphas_cumprod()
KIND = SCHEDULE.prediction_type
# (class, component, xy): class 0 on the left, class 1 on the right; the unconditional mixture holds all four
MEANS = torch.tensor([[[-1.0, 0.6], [-1.0, -0.6]], [[1.0, 0.6], [1.0, -0.6]]], dtype=torch.float64)
STD = 0.3
W = 1.0  # LCM's w: x0 = x0_c + w (x0_c - x0_u), CFG scale 1 + w
STEPS, BATCH, LR, EMA = 2000, 256, 3e-2, 0.95
TOLERANCE = {1: 0.15, 2: 0.06}  # mean distance to the teacher's solution: K = 1 (1 step), K = 2 (2 steps)


def posterior_mean(x_t: Tensor, abar_t: Tensor, means: Tensor) -> Tensor:
    """E[x0 | x_t] for an equal-weight mixture of N(mu_m, STD^2 I), ``means`` (B, M, 2): per component the
    Gaussian posterior mean, weighted by the component's responsibility for x_t."""
    x, a = x_t.double()[:, None], abar_t.double().view(-1, 1, 1)
    var = a * STD**2 + 1 - a  # x_t | component m ~ N(sqrt(a) mu_m, var I)
    centred = x - a.sqrt() * means
    resp = torch.softmax(-(centred**2).sum(-1) / (2 * var[..., 0]), dim=1)[..., None]
    return (resp * (means + a.sqrt() * STD**2 / var * centred)).sum(1)


def teacher(x_t: Tensor, t: Tensor, c: Tensor, *, uncond: bool) -> Tensor:
    """The exact teacher's v-prediction for classes ``c`` (or, ``uncond``, for the whole mixture)."""
    a = ABAR[t.long()]
    means = MEANS.reshape(1, 4, 2).expand(len(c), 4, 2) if uncond else MEANS[c]
    x0 = posterior_mean(x_t, a, means)
    eps = (x_t.double() - a.sqrt()[:, None] * x0) / (1 - a).sqrt()[:, None]
    return to_v(x0, eps, a).float()


class Student(nn.Module):
    """An MLP of (x_t, t, class) -> v. It only ever sees the skipping grid's timesteps, hence a table."""

    def __init__(self, width: int = 128):
        super().__init__()
        self.time = nn.Embedding(1000, 32)
        self.net = nn.Sequential(
            nn.Linear(2 + 32 + 2, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
            nn.Linear(width, width), nn.SiLU(), nn.Linear(width, 2),
        )  # fmt: skip

    def forward(self, x: Tensor, t: Tensor, c: Tensor) -> Tensor:
        onehot = nn.functional.one_hot(c, 2).float()
        return self.net(torch.cat([x.float(), self.time(t.long()), onehot], dim=1))


def sample_data(n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    c = torch.randint(0, 2, (n,), generator=g)
    component = torch.randint(0, 2, (n,), generator=g)
    x0 = MEANS[c, component] + STD * torch.randn(n, 2, generator=g, dtype=torch.float64)
    return x0.float(), c


@contextmanager
def one_thread() -> Iterator[None]:
    # a 2-D MLP is latency-bound: extra threads only add synchronisation (and the CPU is shared)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def distill(segments: int, seed: int = 0) -> Student:
    """LCM's Algorithm 1 (DanceLCM's segmented form for K > 1) with the project's own parts."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    student = Student()
    target = make_target(student)
    names = [n for n, _ in student.named_parameters()]
    opt = torch.optim.Adam(student.parameters(), lr=LR)
    lr_decay = torch.optim.lr_scheduler.CosineAnnealingLR(opt, STEPS)
    edges = segment_edges(segments) if segments > 1 else None
    for _ in range(STEPS):
        x0, c = sample_data(BATCH, g)
        pairs = sample_timestep_pairs(BATCH, edges=edges, generator=g)
        boundary = pairs.boundary if edges is not None else None
        x_t = add_noise(x0, torch.randn(x0.shape, generator=g), ABAR[pairs.t_start]).float()
        tgt = cd_target(
            x_t,
            pairs.t_start,
            pairs.t_end,
            target_fn=lambda x, t, c=c: target(x, t, c),
            schedule=SCHEDULE,
            teacher_fn=lambda x, t, c=c: (teacher(x, t, c, uncond=False), teacher(x, t, c, uncond=True)),
            w=W,
            boundary=boundary,
        )
        pred = student_prediction(lambda x, t, c=c: student(x, t, c), x_t, pairs.t_start, SCHEDULE,
                                  boundary=boundary)  # fmt: skip
        loss = cd_loss(pred.f, tgt.f)
        opt.zero_grad()
        loss.backward()
        opt.step()
        lr_decay.step()
        update_ema(target, student, names, EMA)
    return student


def errors(student: Student, segments: int, n: int = 2000) -> tuple[float, float]:
    """(mean distance of the student's samples to the teacher's 50-step DDIM + CFG solutions from the same
    x_T, the solutions' spread)."""
    g = torch.Generator().manual_seed(123)
    c = torch.randint(0, 2, (n,), generator=g)
    x_T = torch.randn(n, 2, generator=g)
    exact = sample_ddim_cfg(
        lambda x, t, uncond: teacher(x, t, c, uncond=uncond), x_T.double(), teacher_timesteps(50, SCHEDULE),
        cond=False, uncond=True, cfg=1.0 + W, schedule=SCHEDULE,
    )  # fmt: skip
    with torch.no_grad():
        if segments == 1:
            out = sample_consistency(
                lambda x, t: consistency_from_output(student(x, t, c), x, t, abar=ABAR, kind=KIND),
                x_T, [999], abar=ABAR,
            )  # fmt: skip
        else:
            out = sample_segmented(
                lambda x, t, s: consistency_from_output(student(x, t, c), x, t, abar=ABAR, kind=KIND, s=s),
                x_T, segment_edges(segments), abar=ABAR,
            )  # fmt: skip
    return float((out.double() - exact).norm(dim=1).mean()), float(exact.std(dim=0).mean())


def test_teacher_is_the_exact_denoiser():
    """The closed form is E[x0 | x_t]: its residual is orthogonal to functions of x_t (checked on samples),
    and guidance has something to do: the class and the mixture disagree about x0."""
    g = torch.Generator().manual_seed(0)
    x0, c = sample_data(200_000, g)
    t = torch.full((len(c),), 499)
    x_t = add_noise(x0, torch.randn(x0.shape, generator=g), ABAR[t]).float()
    residual = x0.double() - posterior_mean(x_t, ABAR[t], MEANS[c])
    for feature in (torch.ones_like(x_t), x_t, torch.tanh(3 * x_t), x_t.flip(1) ** 2):
        assert (residual * feature.double()).mean(0).abs().max() < 0.01
    assert (x0.double() - 0.9 * posterior_mean(x_t, ABAR[t], MEANS[c])).pow(2).mean() > residual.pow(2).mean()
    # zero-SNR t = 999: x0 = -v = the prior mean of the class (left / right) or of the whole mixture (0)
    x, c = torch.tensor([[0.3, -0.4], [-1.2, 0.5]]), torch.tensor([0, 1])
    t = torch.full((2,), 999)
    assert torch.allclose(-teacher(x, t, c, uncond=False), torch.tensor([[-1.0, 0.0], [1.0, 0.0]]), atol=1e-5)
    assert torch.allclose(-teacher(x, t, c, uncond=True), torch.zeros(2, 2), atol=1e-5)


@pytest.mark.parametrize("segments", [1, 2])
def test_distilled_student_lands_on_the_teachers_ode_solution(segments):
    with one_thread():
        student = distill(segments)
        err, spread = errors(student, segments)
    assert spread > 0.5  # the solutions are spread out: a constant answer cannot pass
    assert err < TOLERANCE[segments], f"K={segments}: mean distance {err:.3f} to the teacher's solutions"
