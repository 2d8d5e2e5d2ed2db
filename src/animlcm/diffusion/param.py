"""Parametrisation: reading a network's output as x0 / eps, the DDIM step, and the consistency functions.

Conventions (DESIGN section 4): x_t = sqrt(abar) x0 + sqrt(1 - abar) eps,
v = sqrt(abar) eps - sqrt(1 - abar) x0. `abar_t` arguments are per-sample values, shape () or (B,);
they are broadcast to the tensor's rank inside. Timesteps `t` are integer steps in [0, T-1].
Half-precision inputs are computed and returned in float32: abar_0 = 0.99915 rounds to 1.0 in bfloat16,
which would make x0 at small t meaningless.

The loss (distill) and the sampler (render) both import these functions, so training and sampling cannot drift
apart (k-diffusion's `Denoiser.loss`/`forward` share `get_scalings` for the same reason).
"""

from __future__ import annotations

import torch
from torch import Tensor

from animlcm.errors import AnimlcmError

SIGMA_DATA = 0.5
TIMESTEP_SCALING = 10.0


def _up(x: Tensor) -> Tensor:
    """Half-precision tensors in float32 (abar_0 = 0.99915 is 1.0 in bfloat16); float32/64 unchanged."""
    return x.to(torch.promote_types(x.dtype, torch.float32)) if x.is_floating_point() else x


def expand_as(a: Tensor | float, x: Tensor) -> Tensor:
    """`a` (scalar, () or (B,)) on x's device, in x's dtype (at least float32), shaped (B, 1, ..., 1)."""
    a = torch.as_tensor(a, device=x.device)
    if a.is_floating_point() or x.is_floating_point():
        a = a.to(torch.promote_types(x.dtype, torch.float32))
    if a.ndim == 0:
        return a
    return a.reshape(a.shape[0], *([1] * (x.ndim - 1)))


def _check_kind(kind: str) -> None:
    if kind not in ("epsilon", "v_prediction", "sample"):
        raise AnimlcmError(f"prediction type {kind!r} is not supported; use epsilon, v_prediction or sample")


def to_x0(out: Tensor, x_t: Tensor, abar_t: Tensor | float, kind: str) -> Tensor:
    """The x0 an output implies at x_t (eps: (x_t - sqrt(1-a) eps)/sqrt(a); v: sqrt(a) x_t - sqrt(1-a) v).

    v-prediction is exact at zero terminal SNR (abar = 0 gives x0 = -v); epsilon there has no x0 (division by
    zero) and raises instead of returning inf.
    """
    _check_kind(kind)
    out, x_t = _up(out), _up(x_t)
    a = expand_as(abar_t, x_t)
    if kind == "sample":
        return out
    if kind == "v_prediction":
        return a.sqrt() * x_t - (1 - a).sqrt() * out
    if bool((a <= 0).any()):
        raise AnimlcmError(
            "epsilon prediction at abar_t = 0 (the zero-terminal-SNR step t = T-1) has no x0 (division by "
            "zero): use a v_prediction model with zero-SNR schedules, or a schedule with zero_snr: false"
        )
    return (x_t - (1 - a).sqrt() * out) / a.sqrt()


def to_eps(out: Tensor, x_t: Tensor, abar_t: Tensor | float, kind: str) -> Tensor:
    """The noise a network output implies at x_t (v: sqrt(1-a) x_t + sqrt(a) v; sample: from x0 and x_t)."""
    _check_kind(kind)
    out, x_t = _up(out), _up(x_t)
    a = expand_as(abar_t, x_t)
    if kind == "epsilon":
        return out
    if kind == "v_prediction":
        return (1 - a).sqrt() * x_t + a.sqrt() * out
    return (x_t - a.sqrt() * out) / (1 - a).sqrt()


def to_v(x0: Tensor, eps: Tensor, abar_t: Tensor | float) -> Tensor:
    """The v-prediction target v = sqrt(abar) eps - sqrt(1 - abar) x0 (Salimans & Ho 2022)."""
    x0, eps = _up(x0), _up(eps)
    a = expand_as(abar_t, x0)
    return a.sqrt() * eps - (1 - a).sqrt() * x0


def add_noise(x0: Tensor, eps: Tensor, abar_t: Tensor | float) -> Tensor:
    """Forward process x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps (DanceLCM eq. 1)."""
    x0, eps = _up(x0), _up(eps)
    a = expand_as(abar_t, x0)
    return a.sqrt() * x0 + (1 - a).sqrt() * eps


def ddim_step(x0: Tensor, eps: Tensor, abar_prev: Tensor | float) -> Tensor:
    """Deterministic DDIM (eta = 0) step to the earlier level: sqrt(abar_prev) x0 + sqrt(1 - abar_prev) eps.

    This is `add_noise` with the model's own x0/eps; with abar_prev = 1 (past the last step) it returns x0.
    """
    return add_noise(x0, eps, abar_prev)


def boundary_scalings(
    t: Tensor | int | float, sigma_data: float = SIGMA_DATA, timestep_scaling: float = TIMESTEP_SCALING
) -> tuple[Tensor, Tensor]:
    """LCM boundary scalings of a discrete step t.

    Equal to diffusers' LCMScheduler.get_scalings_for_boundary_condition_discrete:

    c_skip = sigma_data^2 / ((s t)^2 + sigma_data^2), c_out = s t / sqrt((s t)^2 + sigma_data^2), s = 10,
    so c_skip(0) = 1, c_out(0) = 0: f(x, 0) = x (AnimateLCM eq. 3, CoSeC eq. 2). Computed in float64.
    """
    t = torch.as_tensor(t, dtype=torch.float64)
    scaled = t * timestep_scaling
    c_skip = sigma_data**2 / (scaled**2 + sigma_data**2)
    c_out = scaled / (scaled**2 + sigma_data**2).sqrt()
    return c_skip, c_out


def consistency_output(
    x0: Tensor,
    x_t: Tensor,
    t: Tensor | int,
    *,
    sigma_data: float = SIGMA_DATA,
    timestep_scaling: float = TIMESTEP_SCALING,
) -> Tensor:
    """LCM consistency function f(x_t, t) = c_skip(t) x_t + c_out(t) x0_pred (AnimateLCM eq. 6)."""
    c_skip, c_out = boundary_scalings(t, sigma_data, timestep_scaling)
    x0, x_t = _up(x0), _up(x_t)
    return expand_as(c_skip.to(x_t.device), x_t) * x_t + expand_as(c_out.to(x_t.device), x_t) * x0


def segmented_output(
    x0: Tensor,
    eps: Tensor,
    x_t: Tensor,
    t: Tensor | int,
    s: Tensor | int,
    abar_s: Tensor | float,
    *,
    sigma_data: float = SIGMA_DATA,
    timestep_scaling: float = TIMESTEP_SCALING,
) -> Tensor:
    """Segmented consistency function f(x_t, t, s): the estimate of x at the segment's lower edge s.

    DanceLCM eq. 4. For s > 0: a DDIM jump with the network's own prediction,
    f = sqrt(abar_s) x0_hat + sqrt(1 - abar_s) eps_hat.
    At t = s it returns x_t exactly (x0_hat/eps_hat come from one output, so they recombine to x_t), so the
    boundary condition holds by construction, as in Phased Consistency Models.
    For s = 0 the target is the clean sample, and we use the LCM boundary form c_skip(t) x_t + c_out(t) x0_hat
    instead of the DDIM jump to abar_0 = 0.99915 (which would leave a little noise in): so with K = 1 segment
    the segmented model is exactly plain LCD/LCM, and a K = 1 student samples with LCM's own scheduler.
    `s` may differ per sample ((B,) tensor); the two forms are selected per sample.
    """
    jump = add_noise(x0, eps, abar_s)
    lcm = consistency_output(x0, x_t, t, sigma_data=sigma_data, timestep_scaling=timestep_scaling)
    s = torch.as_tensor(s, device=x_t.device)
    return torch.where(expand_as(s, x_t) == 0, lcm, jump)


def consistency_from_output(
    out: Tensor,
    x_t: Tensor,
    t: Tensor,
    *,
    abar: Tensor,
    kind: str,
    s: Tensor | None = None,
    sigma_data: float = SIGMA_DATA,
    timestep_scaling: float = TIMESTEP_SCALING,
) -> Tensor:
    """Raw network output -> consistency output: f(x_t, t) (s is None, LCM) or f(x_t, t, s) (segmented).

    `abar` is the whole (T,) alphas_cumprod table (NoiseSchedule.alphas_cumprod()); `t`, `s` are (B,) long.
    The one helper the distill step (student and EMA target) and the renderer's denoiser both call.
    """
    t = torch.as_tensor(t, device=abar.device).long()
    abar_t = abar[t]
    x0 = to_x0(out, x_t, abar_t, kind)
    if s is None:
        return consistency_output(x0, x_t, t, sigma_data=sigma_data, timestep_scaling=timestep_scaling)
    s = torch.as_tensor(s, device=abar.device).long()
    eps = to_eps(out, x_t, abar_t, kind)
    return segmented_output(
        x0, eps, x_t, t, s, abar[s], sigma_data=sigma_data, timestep_scaling=timestep_scaling
    )
