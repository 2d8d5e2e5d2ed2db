"""One consistency-distillation target as a pure function of tensors (DESIGN section 4).

The distill step (`step.py`) reads like LCM's Algorithm 1 on top of these:

    pairs = sample_timestep_pairs(B, edges=..., generator=g)              # 1. t_{n+k}, t_n (and s_o)
    x_t = add_noise(x0_real, noise, abar[pairs.t_start])                  # 2. z_{t_{n+k}}
    f_student = student_prediction(student_fn, x_t, t_start, ...)         # 3. online prediction
    x_hat, f_target = cd_target(x_t, t_start, t_end, target_fn=..., teacher_fn=... | None)   # 4.-5.
    loss = cd_loss(f_student, f_target, ...)                              # 6. losses.py

Callables see (x, t) with conditioning bound in their closures (the reference features computed once per
batch and shared by teacher, target and student: ReferenceLCM):
- `teacher_fn(x_t, t) -> (out_cond, out_uncond | None)`: the teacher's raw outputs (eps or v),
- `target_fn(x, t) -> out` and `student_fn(x, t) -> out`: raw outputs of the EMA target / online student,
  in the schedule's prediction type.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from animlcm.diffusion.param import add_noise, consistency_from_output, ddim_step, expand_as, to_eps, to_x0
from animlcm.diffusion.schedule import NoiseSchedule
from animlcm.errors import AnimlcmError

TeacherFn = Callable[[Tensor, Tensor], tuple[Tensor, Tensor | None]]
ModelFn = Callable[[Tensor, Tensor], Tensor]


class TeacherStep(NamedTuple):
    x_prev: Tensor
    """x_hat_{t_n}: the DDIM (eta = 0) step from x_{t_{n+k}} with the guided x0/eps."""
    x0: Tensor
    """The CFG-augmented x0 = x0_c + w (x0_c - x0_u)."""
    eps: Tensor
    """The CFG-augmented eps = eps_c + w (eps_c - eps_u)."""


class Prediction(NamedTuple):
    f: Tensor
    """The consistency output (LCM f(x_t, t), or segmented f(x_t, t, s))."""
    x0: Tensor
    """The x0 the raw output implies (for CoSeC's ETA/CoNS on x0 and DanceLCM's aux head input)."""


class CDTarget(NamedTuple):
    x_prev: Tensor
    """x_hat_{t_n} (teacher DDIM step, or the teacher-free re-noised real latent)."""
    f: Tensor
    """f_target(x_hat_{t_n}, t_n[, s]): the regression target, detached."""


def _table(schedule: NoiseSchedule, like: Tensor) -> Tensor:
    return schedule.alphas_cumprod(device=like.device)


def _check_prev(t_prev: Tensor) -> Tensor:
    # a negative step would silently index abar from the end (abar[-1] = abar[T-1]); the grid's floor is 0
    if bool((t_prev < 0).any()):
        raise ValueError(f"t_prev must be >= 0 (the boundary step), got {t_prev.tolist()}")
    return t_prev.long()


def teacher_ddim_cfg_step(
    out_cond: Tensor,
    out_uncond: Tensor | None,
    x_t: Tensor,
    t: Tensor,
    t_prev: Tensor,
    w: Tensor | float,
    schedule: NoiseSchedule,
) -> TeacherStep:
    """The CFG-augmented DDIM solver step of LCD (LCM; AnimateLCM eq. 7-8; CoSeC eq. 3 / App. B.1).

    x0 = x0_c + w (x0_c - x0_u) and eps = eps_c + w (eps_c - eps_u) (LCM's convention: w = 0 is no guidance,
    diffusers' guidance_scale is w + 1), then x_hat_{t_n} = sqrt(abar_{t_n}) x0 + sqrt(1 - abar_{t_n}) eps.
    `w` is a float or a (B,) tensor (drawn per sample from [w_min, w_max]). `out_uncond` None: no guidance.
    For a pose-guided teacher the unconditional branch keeps the pose and drops the reference (the caller's
    `Conditioning.uncond()`).
    """
    abar = _table(schedule, x_t)
    a_t = abar[t.long()]
    kind = schedule.prediction_type
    x0 = to_x0(out_cond, x_t, a_t, kind)
    eps = to_eps(out_cond, x_t, a_t, kind)
    if out_uncond is not None:
        w_ = expand_as(w, x_t)
        x0 = x0 + w_ * (x0 - to_x0(out_uncond, x_t, a_t, kind))
        eps = eps + w_ * (eps - to_eps(out_uncond, x_t, a_t, kind))
    return TeacherStep(ddim_step(x0, eps, abar[_check_prev(t_prev)]), x0, eps)


def teacher_free_target(x0_real: Tensor, eps: Tensor, t_prev: Tensor, schedule: NoiseSchedule) -> Tensor:
    """AnimateLCM teacher-free adaptation (eq. 11-12): x_hat_{t_n} = sqrt(abar_n) x0 + sqrt(1 - abar_n) eps.

    `eps` must be the SAME noise that made x_{t_{n+k}} from `x0_real`: with it, the one-step score estimate's
    noise prediction is exactly eps, and its DDIM step lands on this point (no teacher call).
    """
    return add_noise(x0_real, eps, _table(schedule, x0_real)[_check_prev(t_prev)])


def student_prediction(
    student_fn: ModelFn,
    x_t: Tensor,
    t: Tensor,
    schedule: NoiseSchedule,
    *,
    boundary: Tensor | None = None,
) -> Prediction:
    """The online student's consistency output f_theta(x_{t_{n+k}}, t_{n+k}[, s_o]) (with gradients)."""
    abar = _table(schedule, x_t)
    out = student_fn(x_t, t)
    f = consistency_from_output(out, x_t, t, abar=abar, kind=schedule.prediction_type, s=boundary)
    return Prediction(f, to_x0(out, x_t, abar[t.long()], schedule.prediction_type))


@torch.no_grad()
def cd_target(
    x_t: Tensor,
    t: Tensor,
    t_prev: Tensor,
    *,
    target_fn: ModelFn,
    schedule: NoiseSchedule,
    teacher_fn: TeacherFn | None = None,
    w: Tensor | float = 0.0,
    boundary: Tensor | None = None,
    x0_real: Tensor | None = None,
    noise: Tensor | None = None,
) -> CDTarget:
    """The CD regression target f_{theta^-}(x_hat_{t_n}, t_n[, s_o]) (DanceLCM eq. 3-4, AnimateLCM eq. 10).

    With `teacher_fn`: x_hat from `teacher_ddim_cfg_step`. Without (teacher-free): from `x0_real` and the same
    `noise` that made x_t. `boundary` (s_o per sample) switches to the segmented parametrisation; the target
    maps x_hat_{t_n} to the same edge the student maps x_{t_{n+k}} to. No gradients flow (EMA target).
    """
    if teacher_fn is not None:
        out_c, out_u = teacher_fn(x_t, t)
        x_prev = teacher_ddim_cfg_step(out_c, out_u, x_t, t, t_prev, w, schedule).x_prev
    else:
        if x0_real is None or noise is None:
            raise AnimlcmError("teacher-free target needs x0_real and the noise that made x_t (got None)")
        x_prev = teacher_free_target(x0_real, noise, t_prev, schedule)
    abar = _table(schedule, x_t)
    out = target_fn(x_prev, t_prev)
    f = consistency_from_output(out, x_prev, t_prev, abar=abar, kind=schedule.prediction_type, s=boundary)
    return CDTarget(x_prev, f)
