"""The noise schedule of a teacher/student: betas -> alphas_cumprod, computed by diffusers' own scheduler.

`abar_t = prod_{i<=t} (1 - beta_i)` comes from `diffusers.DDIMScheduler` (incl. `rescale_betas_zero_snr`,
Lin et al. 2024 alg. 1) rather than a copy of its code, so our abar is bit-identical to the one the teachers
were trained with (diffusers computes betas in float32; we return them widened to float64).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any

import torch

from animlcm.errors import AnimlcmError

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")


@dataclass(frozen=True)
class NoiseSchedule:
    """Everything that defines abar_t and how a network's output is read. JSON-serialisable (`to_dict`)."""

    num_train_timesteps: int = 1000
    """Discrete training steps T; timesteps are integers in [0, T-1]."""
    beta_start: float = 0.00085
    beta_end: float = 0.012
    beta_schedule: str = "scaled_linear"
    """diffusers beta schedule name: linear | scaled_linear | squaredcos_cap_v2."""
    prediction_type: str = "epsilon"
    """What the network predicts: epsilon | v_prediction | sample."""
    zero_snr: bool = False
    """Rescale betas to zero terminal SNR (abar_{T-1} = 0): diffusers' `rescale_betas_zero_snr`."""
    timestep_spacing: str = "leading"
    """How the teacher's DDIM sampler spaces its timesteps (diffusers `timestep_spacing`)."""
    steps_offset: int = 0
    """diffusers `steps_offset` for `leading` spacing (SD1.5's own scheduler config uses 1)."""

    def __post_init__(self) -> None:
        checks = (
            ("beta_schedule", self.beta_schedule, BETA_SCHEDULES),
            ("prediction_type", self.prediction_type, PREDICTION_TYPES),
            ("timestep_spacing", self.timestep_spacing, TIMESTEP_SPACINGS),
        )
        for name, value, allowed in checks:
            if value not in allowed:
                raise AnimlcmError(f"noise schedule: {name}={value!r} is not supported; use one of {allowed}")
        if self.num_train_timesteps < 2:
            raise AnimlcmError(
                f"noise schedule: num_train_timesteps={self.num_train_timesteps}; use at least 2 (1000 usual)"
            )

    # -- presets ---------------------------------------------------------------------------------------
    @classmethod
    def sd15(cls) -> NoiseSchedule:
        """Stable Diffusion 1.5: epsilon, scaled_linear betas 0.00085..0.012, leading spacing, offset 1."""
        return cls(prediction_type="epsilon", zero_snr=False, timestep_spacing="leading", steps_offset=1)

    @classmethod
    def zero_snr_v(cls) -> NoiseSchedule:
        """The real ReferenceNet teachers (Animate Anyone, Champ, UniAnimate): v-pred, zero-SNR, trailing."""
        return cls(prediction_type="v_prediction", zero_snr=True, timestep_spacing="trailing", steps_offset=0)

    # -- (de)serialisation -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NoiseSchedule:
        """Inverse of `to_dict`; missing keys take defaults, unknown keys are an error (typos fail loudly)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise AnimlcmError(f"noise schedule: unknown keys {unknown}; allowed keys are {sorted(known)}")
        return cls(**data)

    # -- diffusers bridge -------------------------------------------------------------------------------
    def scheduler_kwargs(self) -> dict[str, Any]:
        """The constructor arguments shared by diffusers' DDIM/LCM/TCD schedulers."""
        return {
            "num_train_timesteps": self.num_train_timesteps,
            "beta_start": self.beta_start,
            "beta_end": self.beta_end,
            "beta_schedule": self.beta_schedule,
            "prediction_type": self.prediction_type,
            "rescale_betas_zero_snr": self.zero_snr,
            "timestep_spacing": self.timestep_spacing,
            "steps_offset": self.steps_offset,
            "clip_sample": False,
            "set_alpha_to_one": True,
        }

    def make_scheduler(self, kind: str = "ddim", **overrides: Any) -> Any:
        """A diffusers scheduler (`ddim` | `lcm` | `tcd`) configured like this schedule (pipelines, tests)."""
        from diffusers import DDIMScheduler, LCMScheduler, TCDScheduler

        classes = {"ddim": DDIMScheduler, "lcm": LCMScheduler, "tcd": TCDScheduler}
        if kind not in classes:
            raise AnimlcmError(
                f"noise schedule: scheduler kind {kind!r} unknown; use one of {sorted(classes)}"
            )
        return classes[kind](**{**self.scheduler_kwargs(), **overrides})

    def alphas_cumprod(self, device: torch.device | str | None = None, dtype: torch.dtype = torch.float64):
        """abar_t for t = 0..T-1, shape (T,). Cached per (schedule, device, dtype): do not modify in place."""
        return _alphas_cumprod(self, str(torch.device(device or "cpu")), dtype)


@functools.lru_cache(maxsize=32)
def _alphas_cumprod(schedule: NoiseSchedule, device: str, dtype: torch.dtype) -> torch.Tensor:
    abar = schedule.make_scheduler("ddim").alphas_cumprod
    return abar.to(device=device, dtype=dtype)
