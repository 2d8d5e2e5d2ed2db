"""Schedulers that sample each model the way it was trained, for a model folder's ``scheduler/``.

- a teacher: diffusers' ``DDIMScheduler`` with the teacher's schedule (``NoiseSchedule.make_scheduler``);
- a K = 1 student: diffusers' ``LCMScheduler`` on the student's skipping grid (``original_inference_steps``)
  with the boundary scalings it was distilled with (``timestep_scaling`` 10);
- a K > 1 (segmented, DanceLCM) student: :class:`SegmentedConsistencyScheduler`, this project's, since LCM's
  step reads every output as an x0 estimate while a segmented student maps x_t to its segment's lower edge.

:class:`SegmentedConsistencyScheduler` runs the segmented sampler one step at a time: the same plan
(``segmented_plan``), the same consistency function (``consistency_from_output``) and the same re-noising
(``sampling.segment_renoise``) as ``sampling.sample_segmented``, which ``render`` uses: one sampler, two ways
to drive it, the same bits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import ConfigMixin, SchedulerMixin
from diffusers.configuration_utils import register_to_config
from diffusers.utils import BaseOutput

from animlcm.diffusion.param import TIMESTEP_SCALING, consistency_from_output
from animlcm.diffusion.sampling import segment_renoise
from animlcm.diffusion.schedule import NoiseSchedule
from animlcm.diffusion.timesteps import segment_edges, segmented_plan
from animlcm.errors import AnimlcmError

__all__ = ["SegmentedConsistencyScheduler", "SegmentedSchedulerOutput", "folder_scheduler", "schedule_of"]

DEFAULT_GRID = 50  # LCM's skipping grid, for students that record none


@dataclass
class SegmentedSchedulerOutput(BaseOutput):
    """``prev_sample``: the next step's input (the result after the last step); ``denoised``: this step's
    estimate at the segment's lower edge (x0 on the last segment)."""

    prev_sample: torch.Tensor
    denoised: torch.Tensor


class SegmentedConsistencyScheduler(SchedulerMixin, ConfigMixin):
    """Segmented consistency sampling (DanceLCM eq. 4; Multistep CM) for a student of ``num_segments``
    segments on a skipping grid of ``original_inference_steps`` points.

    ``set_timesteps(n)`` (n >= K) splits the segments evenly on the grid; ``step`` maps x_t to its segment's
    lower edge with the student's output and re-noises to the next timestep (fresh noise from ``generator``,
    or with ``deterministic`` the noise the estimate implies). The schedule keys are diffusers' own
    (``DDIMScheduler``'s), so ``from_config`` works across the three schedulers.
    """

    order = 1
    config_name = "scheduler_config.json"

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.00085,
        beta_end: float = 0.012,
        beta_schedule: str = "scaled_linear",
        prediction_type: str = "epsilon",
        rescale_betas_zero_snr: bool = False,
        timestep_spacing: str = "leading",
        steps_offset: int = 0,
        num_segments: int = 2,
        original_inference_steps: int = DEFAULT_GRID,
        timestep_scaling: float = TIMESTEP_SCALING,
        deterministic: bool = False,
    ):
        self.schedule = schedule_of(self.config)
        self.edges = segment_edges(num_segments, original_inference_steps, num_train_timesteps)
        self.alphas_cumprod = self.schedule.alphas_cumprod()
        self.init_noise_sigma = 1.0
        self.plan: list[tuple[int, int]] = []
        self.timesteps = torch.empty(0, dtype=torch.long)
        self.num_inference_steps: int | None = None
        self._step_index = 0

    def set_timesteps(self, num_inference_steps: int | None = None, device: str | torch.device | None = None):
        """The (t, edge) plan for ``num_inference_steps`` (default: one step per segment)."""
        self.plan = segmented_plan(
            self.edges,
            num_inference_steps,
            self.config.original_inference_steps,
            self.config.num_train_timesteps,
        )
        self.timesteps = torch.tensor([t for t, _ in self.plan], dtype=torch.long, device=device)
        self.num_inference_steps = len(self.plan)
        self._step_index = 0

    @property
    def step_index(self) -> int:
        return self._step_index

    def scale_model_input(self, sample: torch.Tensor, timestep: int | None = None) -> torch.Tensor:
        return sample  # the student sees x_t as it is

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
    ) -> SegmentedSchedulerOutput | tuple[torch.Tensor, torch.Tensor]:
        """One step: the edge estimate f(x_t, t, s) from the raw output, then x at the next timestep."""
        if not self.plan:
            raise AnimlcmError("SegmentedConsistencyScheduler.step: call set_timesteps(n) first")
        if self._step_index >= len(self.plan):
            raise AnimlcmError(f"SegmentedConsistencyScheduler.step: all {len(self.plan)} steps are done")
        i = self._step_index
        t, s = self.plan[i]
        if int(timestep) != t:
            raise AnimlcmError(
                f"SegmentedConsistencyScheduler.step: timestep {int(timestep)}, the plan is at {t}"
            )
        abar = self.schedule.alphas_cumprod(device=sample.device)
        b = sample.shape[0]
        t_vec = torch.full((b,), t, dtype=torch.long, device=sample.device)
        s_vec = torch.full((b,), s, dtype=torch.long, device=sample.device)
        denoised = consistency_from_output(
            model_output,
            sample,
            t_vec,
            abar=abar,
            kind=self.config.prediction_type,
            s=s_vec,
            timestep_scaling=self.config.timestep_scaling,
        )
        if i == len(self.plan) - 1:
            prev = denoised
        else:
            draw = None if self.config.deterministic else (lambda like: _randn(like, generator))
            prev = segment_renoise(sample, denoised, t, s, self.plan[i + 1][0], abar=abar, draw=draw)
        self._step_index += 1
        if not return_dict:
            return prev, denoised
        return SegmentedSchedulerOutput(prev_sample=prev, denoised=denoised)

    def __len__(self) -> int:
        return self.config.num_train_timesteps


def _randn(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    # as diffusers' randn_tensor (and sampling._fresh_noise): drawn on the generator's device, then moved
    device = generator.device if generator is not None else like.device
    return torch.randn(like.shape, generator=generator, device=device, dtype=like.dtype).to(like.device)


def schedule_of(config) -> NoiseSchedule:
    """The :class:`NoiseSchedule` a diffusers scheduler config describes (DDIM / LCM / segmented)."""
    return NoiseSchedule(
        num_train_timesteps=int(config["num_train_timesteps"]),
        beta_start=float(config["beta_start"]),
        beta_end=float(config["beta_end"]),
        beta_schedule=str(config["beta_schedule"]),
        prediction_type=str(config["prediction_type"]),
        zero_snr=bool(config.get("rescale_betas_zero_snr", False)),
        timestep_spacing=str(config.get("timestep_spacing", "leading")),
        steps_offset=int(config.get("steps_offset", 0)),
    )


def folder_scheduler(kind: str, schedule: NoiseSchedule, meta: dict):
    """The scheduler a model folder ships: DDIM for a teacher, LCM for a K = 1 student, segmented for K > 1
    (``meta``: the student's ``segments`` and ``num_ddim_steps``)."""
    if kind != "student":
        return schedule.make_scheduler("ddim")
    grid = int(meta.get("num_ddim_steps") or DEFAULT_GRID)
    segments = int(meta.get("segments") or 1)
    if segments == 1:
        return schedule.make_scheduler(
            "lcm", original_inference_steps=grid, timestep_scaling=TIMESTEP_SCALING
        )
    kwargs = {
        k: v for k, v in schedule.scheduler_kwargs().items() if k not in ("clip_sample", "set_alpha_to_one")
    }
    return SegmentedConsistencyScheduler(
        **kwargs, num_segments=segments, original_inference_steps=grid, timestep_scaling=TIMESTEP_SCALING
    )
