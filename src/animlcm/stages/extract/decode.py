"""Video decoding (``animlcm.videoread``: decord, else PyAV), fps resampling, and the output-frame geometry.

The output frame keeps the whole person: when the person's box (union over the video) fits inside a
crop window of the output aspect ratio, the video is cropped around it; otherwise (or when no pose is
known) it is scaled to fit and padded with black. One transform per video, so nothing jitters.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from animlcm.errors import AnimlcmError

# one reader for extract, render and eval (decord, PyAV where decord cannot), re-exported for the stage
from animlcm.videoread import VIDEO_EXTENSIONS as VIDEO_EXTENSIONS
from animlcm.videoread import VideoInfo as VideoInfo
from animlcm.videoread import probe as probe
from animlcm.videoread import read_frames as read_frames


def sample_indices(num_src: int, src_fps: float, fps: float | None, max_frames: int | None) -> np.ndarray:
    """Source frame indices after resampling to ``fps`` (nearest frame in time) and the ``max_frames`` cap."""
    if fps is None or abs(fps - src_fps) < 1e-6:
        idx = np.arange(num_src)
    else:
        n_out = max(1, int(np.floor(num_src * fps / src_fps + 1e-6)))
        idx = np.minimum(np.round(np.arange(n_out) * src_fps / fps).astype(np.int64), num_src - 1)
    if max_frames is not None:
        idx = idx[:max_frames]
    return idx.astype(np.int64)


@dataclass(frozen=True)
class CropTransform:
    """Source -> output pixels: resize by (sx, sy) to (rw, rh), then shift by (ox, oy) (crop < 0 < pad)."""

    sx: float
    sy: float
    rw: int
    rh: int
    ox: int
    oy: int
    out_h: int
    out_w: int
    mode: str  # "crop" | "pad"

    def apply_frames(self, frames: np.ndarray) -> np.ndarray:
        out = np.zeros((len(frames), self.out_h, self.out_w, 3), np.uint8)
        # Destination and source windows of the resized frame that overlap the output.
        dx0, dy0 = max(self.ox, 0), max(self.oy, 0)
        sx0, sy0 = max(-self.ox, 0), max(-self.oy, 0)
        w = min(self.rw - sx0, self.out_w - dx0)
        h = min(self.rh - sy0, self.out_h - dy0)
        for i, frame in enumerate(frames):
            interp = cv2.INTER_AREA if self.sx < 1 else cv2.INTER_LINEAR
            resized = cv2.resize(frame, (self.rw, self.rh), interpolation=interp)
            out[i, dy0 : dy0 + h, dx0 : dx0 + w] = resized[sy0 : sy0 + h, sx0 : sx0 + w]
        return out

    def apply_labels(self, labels: np.ndarray) -> np.ndarray:
        """Label maps (n, H, W) uint8 -> the output frame, like ``apply_frames`` but nearest-neighbour (a
        blend of two labels is no label) and padded with 0 (background)."""
        out = np.zeros((len(labels), self.out_h, self.out_w), np.uint8)
        dx0, dy0 = max(self.ox, 0), max(self.oy, 0)
        sx0, sy0 = max(-self.ox, 0), max(-self.oy, 0)
        w = min(self.rw - sx0, self.out_w - dx0)
        h = min(self.rh - sy0, self.out_h - dy0)
        for i, frame in enumerate(labels):
            # the exact variant samples at pixel centres, the convention of the frames' linear/area resize
            resized = cv2.resize(
                np.ascontiguousarray(frame, np.uint8),
                (self.rw, self.rh),
                interpolation=cv2.INTER_NEAREST_EXACT,
            )
            out[i, dy0 : dy0 + h, dx0 : dx0 + w] = resized[sy0 : sy0 + h, sx0 : sx0 + w]
        return out

    def apply_points(self, kp: np.ndarray) -> np.ndarray:
        """(..., 3) x, y, conf in source pixels -> output pixels; points that leave the frame get conf 0."""
        out = kp.astype(np.float32).copy()
        out[..., 0] = kp[..., 0] * self.sx + self.ox
        out[..., 1] = kp[..., 1] * self.sy + self.oy
        outside = (
            (out[..., 0] < 0) | (out[..., 0] >= self.out_w) | (out[..., 1] < 0) | (out[..., 1] >= self.out_h)
        )
        out[..., 2] = np.where(outside, 0.0, out[..., 2])
        out[..., :2] = np.where(out[..., 2:3] > 0, out[..., :2], 0.0)
        return out

    def apply_boxes(self, boxes: np.ndarray) -> np.ndarray:
        """(n, 4) x0, y0, x1, y1 source -> output pixels, clipped to the frame."""
        out = boxes.astype(np.float32).copy()
        out[:, [0, 2]] = np.clip(boxes[:, [0, 2]] * self.sx + self.ox, 0, self.out_w)
        out[:, [1, 3]] = np.clip(boxes[:, [1, 3]] * self.sy + self.oy, 0, self.out_h)
        return out


def plan_crop(
    src_hw: tuple[int, int], out_hw: tuple[int, int], person_box: np.ndarray | None, margin: float = 0.1
) -> CropTransform:
    """Crop to the output aspect around ``person_box`` (x0, y0, x1, y1, source px) when it fits, else pad."""
    src_h, src_w = src_hw
    out_h, out_w = out_hw
    if person_box is not None:
        s = max(out_w / src_w, out_h / src_h)  # fill: the output window covers win_w x win_h source pixels
        win_w, win_h = out_w / s, out_h / s
        x0, y0, x1, y1 = (float(v) for v in person_box)
        mx, my = (x1 - x0) * margin, (y1 - y0) * margin
        x0, y0, x1, y1 = max(x0 - mx, 0), max(y0 - my, 0), min(x1 + mx, src_w), min(y1 + my, src_h)
        if x1 - x0 <= win_w + 0.5 and y1 - y0 <= win_h + 0.5:
            cx = np.clip((x0 + x1) / 2 - win_w / 2, 0, src_w - win_w)
            cy = np.clip((y0 + y1) / 2 - win_h / 2, 0, src_h - win_h)
            rw, rh = max(out_w, round(src_w * s)), max(out_h, round(src_h * s))
            return CropTransform(
                sx=rw / src_w, sy=rh / src_h, rw=rw, rh=rh,
                ox=-round(cx * rw / src_w), oy=-round(cy * rh / src_h),
                out_h=out_h, out_w=out_w, mode="crop",
            )  # fmt: skip
    s = min(out_w / src_w, out_h / src_h)
    rw, rh = min(out_w, max(1, round(src_w * s))), min(out_h, max(1, round(src_h * s)))
    return CropTransform(
        sx=rw / src_w, sy=rh / src_h, rw=rw, rh=rh,
        ox=(out_w - rw) // 2, oy=(out_h - rh) // 2, out_h=out_h, out_w=out_w, mode="pad",
    )  # fmt: skip


def detection_scale(src_hw: tuple[int, int], detect_size: int | None) -> float:
    """Factor that brings the longer side to ``detect_size`` (1.0 = detect at the source resolution)."""
    if detect_size is None:
        return 1.0
    return min(1.0, detect_size / max(src_hw))


def resize_for_detection(frame: np.ndarray, scale: float) -> np.ndarray:
    if scale == 1.0:
        return frame
    h, w = frame.shape[:2]
    return cv2.resize(
        frame, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA
    )


def find_videos(paths: list[Path]) -> list[Path]:
    """Video files named directly, plus those found recursively in folders (sorted, de-duplicated)."""
    found: dict[Path, None] = {}
    for p in paths:
        p = Path(p)
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.suffix.lower() in VIDEO_EXTENSIONS and (f.is_file() or f.is_symlink()):
                    found[f] = None
        elif p.exists() or p.is_symlink():
            found[p] = None
        else:
            raise AnimlcmError(f"{p}: no such file or folder; pass video files or folders of videos")
    return list(found)
