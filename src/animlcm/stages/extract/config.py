"""``ExtractConfig``: every setting of ``animlcm extract`` (preset <- YAML <- flags, see animlcm.config)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from animlcm.config import SIZES, check_preset, config_hash
from animlcm.errors import AnimlcmError

POSE_BACKENDS = ("mediapipe", "dwpose", "groundtruth")

# Fields that change what is written: a cached video is reused only when these (and the VAE) match.
HASHED_FIELDS = (
    "preset",
    "height",
    "width",
    "fps",
    "max_frames",
    "min_frames",
    "pose",
    "detect_size",
    "min_pose_rate",
    "keypoint_threshold",
    "face_margin",
    "motion_delta",
    "smpl_model",
)


@dataclass(frozen=True)
class ExtractConfig:
    preset: str = "tiny"
    """Size preset: tiny (128x128) or sd15 (768x512, H x W)."""
    height: int = 128
    """Output frame height (pixels, multiple of 8)."""
    width: int = 128
    """Output frame width (pixels, multiple of 8)."""
    fps: float | None = None
    """Resample to this frame rate (None keeps the source rate)."""
    max_frames: int | None = None
    """Keep at most this many (resampled) frames per video."""
    min_frames: int = 8
    """Videos with fewer frames fail as too short (default: the preset's clip length)."""
    pose: str = "mediapipe"
    """Pose backend: mediapipe (embedded), dwpose (ONNX via rtmlib) or groundtruth (VIDEO.pose.npz)."""
    dwpose_weights: Path | None = None
    """Folder holding yolox_l.onnx and dw-ll_ucoco_384.onnx (DWPose); None tries the hub."""
    detect_size: int | None = None
    """Run pose/face detection with the longer side resized to this (None: source resolution)."""
    min_pose_rate: float = 0.5
    """Videos with a body in fewer frames than this fraction fail as person-less."""
    keypoint_threshold: float = 0.3
    """Keypoints below this confidence are not drawn (DWPose's own threshold)."""
    face_margin: float = 0.5
    """Face crops are squares of side (1 + margin) x the detected face box's longer side."""
    motion_delta: float = 0.2
    """DanceLCM eq. 6 threshold on frame differences (frames in [0, 1])."""
    vae: str | None = None
    """VAE: a diffusers folder or hub id (None: the tiny preset's built-in VAE)."""
    teacher: Path | None = None
    """A teacher folder: its vae/ is used when --vae is not given."""
    smpl_model: Path | None = None
    """SMPL model folder: when given, depth/normal/semantic guidance maps are rendered too."""
    shard: str = "0/1"
    """Process the i-th of n deterministic slices of the input list ("i/n", 0-based)."""
    device: str = "auto"
    """auto (CUDA when present), cpu or cuda[:N]."""
    decode_batch_size: int = 32
    vae_batch_size: int = 16
    retry_failed: bool = False
    """Retry videos that failed before although neither they nor the config changed."""
    progress: bool = True

    @classmethod
    def from_preset(cls, name: str) -> ExtractConfig:
        size = SIZES[check_preset(name)]
        return cls(
            preset=name,
            height=size.height,
            width=size.width,
            min_frames=size.num_frames,
            vae_batch_size=32 if name == "tiny" else 8,
        )

    def validate(self) -> None:
        if self.pose not in POSE_BACKENDS:
            raise AnimlcmError(f"--pose {self.pose}: choose one of {', '.join(POSE_BACKENDS)}")
        if self.height % 8 or self.width % 8 or self.height <= 0 or self.width <= 0:
            raise AnimlcmError(
                f"frame size {self.height}x{self.width}: height and width must be multiples of 8"
            )
        if self.fps is not None and self.fps <= 0:
            raise AnimlcmError(f"--fps {self.fps}: must be positive")
        if self.max_frames is not None and self.max_frames < 1:
            raise AnimlcmError(f"--max-frames {self.max_frames}: must be at least 1")
        if self.max_frames is not None and self.max_frames < self.min_frames:
            raise AnimlcmError(
                f"--max-frames {self.max_frames} is below min_frames {self.min_frames} (one clip): "
                f"raise --max-frames or lower min_frames"
            )
        if not 0.0 <= self.motion_delta < 1.0:
            raise AnimlcmError(
                f"--motion-delta {self.motion_delta}: must be in [0, 1) (frames are in [0, 1])"
            )
        if self.detect_size is not None and self.detect_size < 64:
            raise AnimlcmError(f"--detect-size {self.detect_size}: must be at least 64 pixels")
        self.shard_index()

    def shard_index(self) -> tuple[int, int]:
        """``shard`` as (i, n)."""
        try:
            i_s, n_s = self.shard.split("/")
            i, n = int(i_s), int(n_s)
        except ValueError:
            raise AnimlcmError(f"--shard {self.shard}: expected i/n, e.g. 0/4 (0-based)") from None
        if n < 1 or not 0 <= i < n:
            raise AnimlcmError(f"--shard {self.shard}: need n >= 1 and 0 <= i < n (0-based, e.g. 0/4 .. 3/4)")
        return i, n

    def hash(self, vae_fingerprint: str) -> str:
        """What decides whether a cached video is still valid: the output-shaping fields and the VAE."""
        return config_hash(self, HASHED_FIELDS) + "-" + vae_fingerprint[:8]
