"""`SamplingSettings`: the size and sampling fields shared by ``RenderConfig`` and ``EvalConfig``.

Both configs inherit from it (frozen dataclasses), so these fields, their YAML keys, their preset sizing
(``from_preset``) and the window check are written once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from animlcm.config import SIZES
from animlcm.errors import AnimlcmError

S = TypeVar("S", bound="SamplingSettings")


@dataclass(frozen=True)
class SamplingSettings:
    """Frame size, context windows, seed and device of a render (one clip, or each clip of an eval)."""

    preset: str = "tiny"
    seed: int = 0
    window: int = 16
    """Frames per context window."""
    overlap: int = 4
    """Frames shared by neighbouring windows."""
    max_frames: int | None = None
    height: int = 128
    width: int = 128
    device: str = "auto"
    dtype: str = "auto"
    """auto (bf16 on CUDA when supported, else fp16; fp32 on CPU) | fp32 | fp16 | bf16."""
    progress: bool = True

    @classmethod
    def from_preset(cls: type[S], name: str) -> S:
        size = SIZES[name]
        return cls(
            preset=name,
            height=size.height,
            width=size.width,
            window=size.num_frames,
            overlap=size.num_frames // 4,
        )

    def validate_window(self) -> None:
        if self.window < 1 or not 0 <= self.overlap < self.window:
            raise AnimlcmError(f"--window {self.window} --overlap {self.overlap}: need 0 <= overlap < window")
