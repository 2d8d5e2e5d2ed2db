"""``SynthConfig``: the settings of ``animlcm synth`` (preset <- YAML <- flags, see ``animlcm.config``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from animlcm.config import SIZES, check_preset
from animlcm.errors import AnimlcmError
from animlcm.synth.seeds import SPLITS


@dataclass(frozen=True)
class SynthConfig:
    preset: str = "tiny"
    out: Path = Path("videos")
    """Folder for the clips (idNNN_clipMM.mp4 + .pose.npz + .parts.npz) and synth.json."""
    identities: int = 8
    """Number of dancers (looks)."""
    clips: int = 4
    """Clips per dancer, each with its own motion and background."""
    frames: int = 48
    """Frames per clip."""
    height: int = 128
    width: int = 128
    seed: int = 0
    split: str = "train"
    """train or heldout: heldout identities and motions are never produced by the train split."""
    fps: float = 16.0
    crf: int = 14
    """H.264 constant rate factor (lower = better); 12-16 keeps the textures."""
    refs: bool = False
    """Also write refs/idNNN.png: each identity in a neutral pose (a reference image for render)."""
    jobs: int = 1
    """Processes drawing identities in parallel (the files do not depend on it)."""

    @classmethod
    def from_preset(cls, name: str) -> SynthConfig:
        size = SIZES[check_preset(name)]
        return cls(preset=name, height=size.height, width=size.width)

    def validate(self) -> None:
        for name in ("identities", "clips", "frames", "height", "width", "jobs"):
            if getattr(self, name) < 1:
                raise AnimlcmError(f"synth: --{name} must be >= 1, got {getattr(self, name)}")
        if self.height < 32 or self.width < 32:
            raise AnimlcmError(
                f"synth: frames of {self.height}x{self.width} are too small to draw a dancer; use >= 32"
            )
        if self.height % 2 or self.width % 2:
            raise AnimlcmError(f"synth: H.264 yuv420p needs even sizes, got {self.height}x{self.width}")
        if self.split not in SPLITS:
            raise AnimlcmError(f"synth: unknown --split '{self.split}'; choose one of {', '.join(SPLITS)}")
        if self.seed < 0:
            raise AnimlcmError(f"synth: --seed must be >= 0, got {self.seed}")
        if not 0 < self.fps <= 240:
            raise AnimlcmError(f"synth: --fps must be in (0, 240], got {self.fps}")
        if not 0 <= self.crf <= 51:
            raise AnimlcmError(f"synth: --crf must be in [0, 51], got {self.crf}")
