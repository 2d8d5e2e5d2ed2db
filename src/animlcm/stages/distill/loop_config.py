"""`LoopSettings`: the fields ``trainer.train`` reads, shared by ``DistillConfig`` and ``TeacherTrainConfig``.

Both configs inherit from it (frozen dataclasses; a subclass that redeclares a field changes only its default
and keeps its place), so the loop's settings, their YAML keys and their checks are written once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from animlcm.config import SIZES
from animlcm.errors import AnimlcmError

STAGES = ("spatial", "temporal")
MIXED_PRECISION = ("no", "fp16", "bf16")

# Settings that may change between a run and its ``--resume`` (everything else must match the checkpoint).
RESUMABLE_CHANGES = frozenset(
    {
        "max_steps",
        "max_minutes",
        "resume",
        "progress",
        "checkpoint_every",
        "keep_checkpoints",
        "num_workers",
        "preload",
        "log_every",
        "reuse_reference",  # exact: the same numbers either way
        "standalone",  # how the result folder is written, not what is trained
        "share_base",  # exact, and its checkpoints name the target's weights the same way
    }
)


@dataclass(frozen=True)
class LoopSettings:
    """Run folder, stage and training-loop settings of a `distill` or `train-teacher` run."""

    preset: str = "tiny"
    # --- inputs / outputs
    cache: Path | None = None
    """Cache folder written by `animlcm extract`."""
    out: Path | None = None
    """Run folder: config.yaml, log.jsonl, checkpoints/ and the result folder."""
    init: Path | None = None
    """Start from this run's (or model folder's) network."""
    resume: bool = False
    """Continue from the newest checkpoint in `out` (bit-exact)."""
    stage: str = "spatial"
    """spatial: single frames, motion modules off; temporal: clips, motion modules on."""

    # --- loop
    max_steps: int = 1000
    max_minutes: float | None = None
    """Wall-clock budget of this run: stop (checkpoint and result written) after the first step past it."""
    batch_size: int = 1
    grad_accum: int = 1
    num_frames: int | None = None
    """Frames per clip in the temporal stage (None: the size preset's); the spatial stage uses 1."""
    frame_stride: int = 1
    lr: float | None = None
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    adam_8bit: bool = False
    """8-bit AdamW where bitsandbytes is importable (else plain AdamW with a warning)."""
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 1
    seed: int = 0
    num_workers: int = 0
    preload: bool = False
    """Read the whole cache into memory before training (no HDF5 reads in the loop; needs the RAM)."""
    progress: bool = True

    @property
    def frames_per_sample(self) -> int:
        return 1 if self.stage == "spatial" else int(self.num_frames or SIZES[self.preset].num_frames)

    def validate_loop(self, bad: Callable[[str], AnimlcmError]) -> None:
        """The loop's checks; ``bad(msg)`` makes the error (prefixed with the command's name)."""
        if self.mixed_precision not in MIXED_PRECISION:
            raise bad(f"mixed_precision '{self.mixed_precision}': choose no, fp16 or bf16")
        for name in (
            "max_steps",
            "batch_size",
            "grad_accum",
            "frame_stride",
            "checkpoint_every",
            "log_every",
        ):
            if getattr(self, name) < 1:
                raise bad(f"{name} must be >= 1 (got {getattr(self, name)})")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise bad(f"max_minutes must be > 0 (got {self.max_minutes})")
