"""``EvalConfig``: every setting of ``animlcm eval`` (preset <- YAML <- flags, see ``animlcm.config``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from animlcm.errors import AnimlcmError
from animlcm.stages.sampling_config import SamplingSettings


@dataclass(frozen=True)
class EvalConfig(SamplingSettings):
    """Seed, window/overlap, max_frames, height/width, device, dtype: ``SamplingSettings``'."""

    model: Path | None = None
    """Student run folder (or a teacher folder evaluated with the consistency sampler)."""
    cache: Path | None = None
    """Cache folder (from `animlcm extract`): each video's first frame is the reference, its poses drive."""
    out: Path = Path("eval")
    sweep: bool = False
    """Student at `student_steps`, teacher at `teacher_steps`; else the student at `steps` only."""
    teacher: Path | None = None
    """Teacher folder for the sweep; default: the teacher recorded in the student's run folder."""
    steps: int = 4
    student_steps: tuple[int, ...] = (1, 2, 4, 8)
    teacher_steps: tuple[int, ...] = (4, 25, 50)
    cfg: float = 3.5
    """The teacher's CFG scale."""
    lpips_weights: Path | None = None
    """LPIPS-AlexNet weights (safetensors, see stages/evaluate/lpips.py): adds an lpips column."""
    fid_model: Path | None = None
    """TorchScript FID network (clean-fid's inception-2015-12-05.pt): adds a fid column (over all frames)."""
    fvd_model: Path | None = None
    """TorchScript FVD network (StyleGAN-V's i3d_torchscript.pt): adds an fvd column (over clips)."""
    max_videos: int | None = None
    vs_teacher: int | None = None
    """Also compare every row with the teacher's own render at N steps from the same noise (the seed): adds
    a psnr_vs_teacher column, how closely a student reproduces what it was distilled to imitate."""
    vs_teacher_cfg: float | None = None
    """CFG scale of that reference render; default: the guidance the student was distilled with (1 + w,
    from its meta), else ``cfg``."""
    reference_cache: Path | None = None
    """Folder keeping the ``--vs-teacher`` renders between evals: students compared with the same teacher,
    clips, seed and settings reuse them (a benchmark's evals would otherwise re-render the teacher each)."""

    def validate(self) -> None:
        if self.cache is None:
            raise AnimlcmError("eval needs --cache DIR (a cache folder from `animlcm extract`)")
        steps = (self.steps, *self.student_steps, *self.teacher_steps)
        if min(steps) < 1:
            raise AnimlcmError(f"eval: every step count must be >= 1 (got {steps})")
        if self.height % 8 or self.width % 8:
            raise AnimlcmError(
                f"resolution {self.height}x{self.width} (HxW) is not divisible by 8; pick multiples of 8"
            )
        self.validate_window()
        for name in ("max_videos", "max_frames", "vs_teacher"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise AnimlcmError(f"--{name.replace('_', '-')} {v}: need at least 1")
