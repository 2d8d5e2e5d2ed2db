"""``RenderConfig``: every setting of ``animlcm render`` (preset <- YAML <- flags, see ``animlcm.config``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from animlcm.errors import AnimlcmError
from animlcm.stages.sampling_config import SamplingSettings


@dataclass(frozen=True)
class RenderConfig(SamplingSettings):
    """Seed, window/overlap, max_frames, height/width, device, dtype: ``SamplingSettings``'."""

    reference: Path | None = None
    """Reference image (the person to animate)."""
    pose: str | None = None
    """RGB video, skeleton video, folder of skeleton images or CACHE_DIR:video_name; None = built-in dance."""
    pose_kind: str = "auto"
    """auto | skeleton | rgb: how to read a pose video (auto looks at the background)."""
    model: Path | None = None
    """Student run folder or teacher folder; None = the built-in tiny student."""
    out: Path = Path("out.mp4")
    steps: int = 4
    teacher: bool = False
    """Render with the teacher's DDIM + CFG sampler instead of consistency sampling."""
    cfg: float = 3.5
    """Classifier-free guidance scale for --teacher (reference dropped in the unconditional branch)."""
    segments: int | None = None
    """Walk K segment edges (segmented CD students); None = the student's own setting."""
    deterministic: bool = False
    """No fresh noise between consistency steps."""
    frames_dir: Path | None = None
    align: bool = False
    """Scale and shift the driving skeleton so its first frame covers the reference person."""
    random: bool = False
    """Build the preset's network with random weights (time real-size rendering without weights)."""

    def validate(self) -> None:
        if self.steps < 1:
            raise AnimlcmError(f"--steps {self.steps}: need at least 1 sampling step")
        if self.height % 8 or self.width % 8 or self.height < 8 or self.width < 8:
            raise AnimlcmError(
                f"resolution {self.height}x{self.width} (HxW) is not divisible by 8 (the VAE works at 1/8); "
                "pick --height/--width that are multiples of 8"
            )
        self.validate_window()
        if self.max_frames is not None and self.max_frames < 1:
            raise AnimlcmError(f"--max-frames {self.max_frames}: need at least 1 frame")
        if self.segments is not None and self.segments < 1:
            raise AnimlcmError(f"--segments {self.segments}: need at least 1 segment")
        if self.pose_kind not in ("auto", "skeleton", "rgb"):
            raise AnimlcmError(f"pose_kind '{self.pose_kind}': choose auto, skeleton or rgb")
        if self.dtype not in ("auto", "fp32", "fp16", "bf16"):
            raise AnimlcmError(f"dtype '{self.dtype}': choose auto, fp32, fp16 or bf16")
        self.check_outputs()

    def check_outputs(self) -> None:
        """The video (H.264 in an mp4 container) and its ``.preview.png`` never land on an input file.

        Checked before the model loads, so a bad --out costs nothing and never destroys the user's file.
        """
        out = Path(self.out)
        if out.suffix.lower() != ".mp4":
            raise AnimlcmError(f"--out {out}: render writes an H.264 mp4; give a path ending in .mp4")
        preview = out.with_name(out.stem + ".preview.png")
        inputs = [("reference image", self.reference)]
        if self.pose and ":" not in str(self.pose):  # CACHE:name reads the cache, not a file to overwrite
            inputs.append(("pose video", Path(self.pose)))
        for name, path in inputs:
            if path is None or not Path(path).exists():
                continue
            for written in (out, preview):
                if written.exists() and written.samefile(path):
                    raise AnimlcmError(
                        f"--out {out}: would overwrite the {name} {path}; choose another --out"
                    )
        if out.is_dir():
            raise AnimlcmError(f"--out {out} is a folder; give a file path ending in .mp4")
