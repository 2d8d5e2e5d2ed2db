"""Samplers as functions over a model callable (k-diffusion style): the only state is the local `x`.

Conditioning (pose maps, reference features, tokens) is bound in the callable's closure, so the reference net
and the image/face tokens are computed once per clip by the caller, not here. Timesteps passed to the callable
are (B,) long tensors. `callback({"x", "i", "t", "denoised"})` runs after each model call (previews, logs).
The step math runs in float32 at least (`param`), so half-precision inputs come back as float32: cast (or
autocast) inside the callable.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from animlcm.diffusion.param import add_noise, ddim_step, to_eps, to_x0
from animlcm.diffusion.timesteps import segmented_plan
from animlcm.errors import AnimlcmError

Denoiser = Callable[[Tensor, Tensor], Tensor]
"""denoise(x_t, t) -> f(x_t, t): the student's consistency output (an x0 estimate)."""
SegmentDenoiser = Callable[[Tensor, Tensor, Tensor], Tensor]
"""denoise(x_t, t, s) -> f(x_t, t, s): the estimate of x at the segment edge s (x0 when s = 0)."""
NoiseFn = Callable[[Tensor, int], Tensor]
"""noise_fn(like, i) -> fresh N(0, I) noise shaped like `like`, for re-noising after call i (tests)."""
Callback = Callable[[dict[str, Any]], None]


def _full(t: int, x: Tensor) -> Tensor:
    return torch.full((x.shape[0],), int(t), dtype=torch.long, device=x.device)


def _fresh_noise(like: Tensor, i: int, noise_fn: NoiseFn | None, generator: torch.Generator | None) -> Tensor:
    if noise_fn is not None:
        return noise_fn(like, i)
    # as diffusers' randn_tensor: draw on the generator's device (a CPU generator with CUDA latents draws on
    # the CPU and moves), so a seeded run matches LCMScheduler.step and is the same on every device
    device = generator.device if generator is not None else like.device
    return torch.randn(like.shape, generator=generator, device=device, dtype=like.dtype).to(like.device)


def _check_steps(timesteps: Sequence[int]) -> list[int]:
    ts = [int(t) for t in timesteps]
    if not ts:
        raise AnimlcmError("sampling: no timesteps given; use at least one step (--steps 1 or more)")
    if any(b >= a for a, b in zip(ts, ts[1:], strict=False)):
        raise AnimlcmError(f"sampling: timesteps {ts} must be strictly decreasing")
    return ts


# The step math after each model call, shared by the samplers below and by the schedulers that sample the
# same way one step at a time (`animlcm.diffusion.scheduler`): one definition, so both give the same bits.
def consistency_renoise(
    x: Tensor, x0: Tensor, t: int, t_next: int, *, abar: Tensor, draw: Callable[[Tensor], Tensor] | None
) -> Tensor:
    """LCM's move from the estimate x0 (made at x_t) to the next timestep t': sqrt(abar_t') x0 +
    sqrt(1 - abar_t') z, z = draw(x0) fresh noise or (draw None) the noise the prediction implies."""
    if draw is None:
        a = abar[t].to(torch.promote_types(x.dtype, torch.float32))
        noise = (x - a.sqrt() * x0) / (1 - a).sqrt()
    else:
        noise = draw(x0)
    return add_noise(x0, noise, abar[t_next])


def segment_renoise(
    x: Tensor,
    y: Tensor,
    t: int,
    s: int,
    t_next: int,
    *,
    abar: Tensor,
    draw: Callable[[Tensor], Tensor] | None,
) -> Tensor:
    """The segmented sampler's move from the edge estimate y = f(x_t, t, s) to the next timestep t'.

    On the next segment's starting point (t' = s) y is the next input as it is (no noise drawn); else
    x_t' = sqrt(abar_t'/abar_s) y + sqrt(1 - abar_t'/abar_s) z (abar_s = 1 at s = 0), z = draw(y) or (draw
    None) the z implied by (x_t, y).
    """
    if t_next == s:
        return y
    a_s = torch.ones((), dtype=abar.dtype, device=abar.device) if s == 0 else abar[s]
    if draw is None:
        r = (abar[t] / a_s).to(torch.promote_types(x.dtype, torch.float32))
        noise = (x - r.sqrt() * y) / (1 - r).sqrt()
    else:
        noise = draw(y)
    return add_noise(y, noise, abar[t_next] / a_s)


@torch.no_grad()
def sample_consistency(
    denoise: Denoiser,
    x_T: Tensor,
    timesteps: Sequence[int],
    *,
    abar: Tensor,
    generator: torch.Generator | None = None,
    noise_fn: NoiseFn | None = None,
    deterministic: bool = False,
    callback: Callback | None = None,
) -> Tensor:
    """LCM multistep sampling (LCM Algorithm 3; = diffusers LCMScheduler.step): x0 = f(x_t, t), then re-noise
    x_{t'} = sqrt(abar_t') x0 + sqrt(1 - abar_t') z for the next t', and return the last x0.

    z is fresh noise (`generator` / `noise_fn`), or with `deterministic` the noise the prediction implies,
    z = (x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t) (TCD with gamma = 0: no fresh noise between steps).
    `abar` is the (T,) alphas_cumprod table (NoiseSchedule.alphas_cumprod(device)).
    """
    ts = _check_steps(timesteps)
    x = x_T
    for i, t in enumerate(ts):
        x0 = denoise(x, _full(t, x))
        if callback is not None:
            callback({"x": x, "i": i, "t": t, "denoised": x0})
        if i == len(ts) - 1:
            return x0
        draw = None if deterministic else (lambda like, i=i: _fresh_noise(like, i, noise_fn, generator))
        x = consistency_renoise(x, x0, t, ts[i + 1], abar=abar, draw=draw)
    raise AssertionError("unreachable")


@torch.no_grad()
def sample_segmented(
    denoise: SegmentDenoiser,
    x_T: Tensor,
    edges: Sequence[int],
    *,
    abar: Tensor,
    steps: int | None = None,
    num_ddim_steps: int = 50,
    generator: torch.Generator | None = None,
    noise_fn: NoiseFn | None = None,
    deterministic: bool = False,
    callback: Callback | None = None,
) -> Tensor:
    """Segmented consistency sampling (DanceLCM; Multistep CM): walk the edges s_K -> ... -> s_0.

    With steps = K (default) each call maps x at s_{o+1} straight to s_o: no noise is ever added. With more
    steps each segment is split evenly on the grid (`segmented_plan`); after a call that lands on edge s below
    the next timestep t', the edge estimate is re-noised forward, x_t' = sqrt(abar_t'/abar_s) x_s +
    sqrt(1 - abar_t'/abar_s) z (abar_s = 1 at s = 0, which makes K = 1 exactly `sample_consistency`), with
    fresh z or, `deterministic`, the z implied by (x_t, x_s).
    """
    plan = segmented_plan(list(edges), steps, num_ddim_steps, abar.shape[0])
    x = x_T
    for i, (t, s) in enumerate(plan):
        y = denoise(x, _full(t, x), _full(s, x))
        if callback is not None:
            callback({"x": x, "i": i, "t": t, "s": s, "denoised": y})
        if i == len(plan) - 1:
            return y
        draw = None if deterministic else (lambda like, i=i: _fresh_noise(like, i, noise_fn, generator))
        x = segment_renoise(x, y, t, s, plan[i + 1][0], abar=abar, draw=draw)
    raise AssertionError("unreachable")


@torch.no_grad()
def sample_ddim_cfg(
    model_out: Callable[[Tensor, Tensor, Any], Tensor],
    x_T: Tensor,
    timesteps: Sequence[int],
    *,
    cond: Any,
    uncond: Any = None,
    cfg: float = 1.0,
    schedule,
    callback: Callback | None = None,
) -> Tensor:
    """The teacher's sampler: DDIM (eta = 0) with classifier-free guidance on the model output.

    model_out(x_t, t, c) returns the raw output (eps or v, per `schedule.prediction_type`); guided output =
    out_u + cfg (out_c - out_u), diffusers' `guidance_scale` convention (cfg = 1: conditional only, one call
    per step; uncond None also means no guidance). Guidance is linear in the output, so this equals guiding
    x0 and eps. Each step goes to the next timestep in the list, the last one to abar = 1 (x0), like
    DDIMScheduler with set_alpha_to_one on `leading`/`trailing` grids; `timesteps` from
    `teacher_timesteps(steps, schedule)`.
    """
    ts = _check_steps(timesteps)
    abar = schedule.alphas_cumprod(device=x_T.device)
    kind = schedule.prediction_type
    x = x_T
    for i, t in enumerate(ts):
        t_vec = _full(t, x)
        out = model_out(x, t_vec, cond)
        if uncond is not None and cfg != 1.0:
            out_u = model_out(x, t_vec, uncond)
            out = out_u + cfg * (out - out_u)
        x0 = to_x0(out, x, abar[t], kind)
        eps = to_eps(out, x, abar[t], kind)
        if callback is not None:
            callback({"x": x, "i": i, "t": t, "denoised": x0})
        x = ddim_step(x0, eps, abar[ts[i + 1]] if i + 1 < len(ts) else 1.0)
    return x
