"""Where the driving poses come from: an RGB video, a skeleton video, a folder of skeleton images, or a
cache entry (``CACHE_DIR:video_name``). Each becomes a ``PoseClip`` at the render resolution."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from animlcm.errors import AnimlcmError
from animlcm.stages.render import videoio

# a skeleton render is mostly black background; an RGB video almost never is
SKELETON_DARK_FRACTION = 0.6
DARK_LEVEL = 24


@dataclass
class PoseClip:
    """Driving signal at render size: skeletons uint8 (F, H, W, 3), fps, optional keypoints (F, K, 3) in
    render pixels, optional real frames uint8 (F, H, W, 3) (cache entries: the ground truth for eval), and
    for cache entries of synthetic clips their body-part labels uint8 (F, H, W) with ``part_names``."""

    skeleton: np.ndarray
    fps: float
    source: str
    kind: str  # "skeleton-video" | "rgb-video" | "image-folder" | "cache" | "builtin-dance"
    keypoints: np.ndarray | None = None
    frames: np.ndarray | None = None
    face: np.ndarray | None = None  # cache entries: frame 0's 256x256 face crop (eval's reference face)
    labels: np.ndarray | None = None  # synthetic cache entries: label per pixel of ``frames``; else None
    part_names: tuple[str, ...] = ()

    @property
    def num_frames(self) -> int:
        return len(self.skeleton)


def fit_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 (F, h, w, 3) -> (F, height, width, 3): scaled to fit whole and padded with black, centred; the
    extract stage's own transform (``plan_crop`` without a person box), so the reference, the driving
    skeletons and the cached training frames share one geometry and no limb is cut off."""
    from animlcm.stages.extract.decode import plan_crop

    if frames.shape[1:3] == (height, width):
        return frames
    return plan_crop(frames.shape[1:3], (height, width), None).apply_frames(frames)


def fit_labels(labels: np.ndarray, height: int, width: int) -> np.ndarray:
    """Label maps uint8 (F, h, w) -> (F, height, width) in the geometry of ``fit_frames``, nearest-neighbour
    (padding is label 0, the background)."""
    from animlcm.stages.extract.decode import plan_crop

    if labels.shape[1:3] == (height, width):
        return labels
    return plan_crop(labels.shape[1:3], (height, width), None).apply_labels(labels)


def fit_points(points: np.ndarray, src_hw: tuple[int, int], height: int, width: int) -> np.ndarray:
    """Keypoints (..., 3) in source pixels -> the same points after ``fit_frames``."""
    from animlcm.stages.extract.decode import plan_crop

    if tuple(src_hw) == (height, width):
        return np.asarray(points, np.float32)
    return plan_crop(tuple(src_hw), (height, width), None).apply_points(np.asarray(points, np.float32))


def looks_like_skeleton(frames: np.ndarray) -> bool:
    """True when the frames are mostly black background (a rendered skeleton), False for RGB footage."""
    sample = frames[:: max(1, len(frames) // 8)][:8]
    dark = (sample.max(-1) < DARK_LEVEL).mean()
    return bool(dark > SKELETON_DARK_FRACTION)


def parse_cache_spec(spec: str) -> tuple[Path, str] | None:
    """``CACHE_DIR:video_name`` -> (cache folder, name) when the left part is a cache folder, else None."""
    if ":" not in spec:
        return None
    root, name = spec.rsplit(":", 1)
    root_path = Path(root)
    if name and (root_path / "manifest.json").is_file():
        return root_path, name
    return None


def load_pose_source(
    spec: str | Path, height: int, width: int, max_frames: int | None = None, kind: str = "auto"
) -> PoseClip:
    """Read SOURCE (see the module doc) and return its poses at ``height`` x ``width``.

    ``kind``: "auto" tells skeleton from RGB videos by their dark background; "skeleton" / "rgb" force it.
    """
    spec_s = str(spec)
    cache = parse_cache_spec(spec_s)
    if cache is not None:
        return _from_cache(*cache, height, width, max_frames)
    path = Path(spec_s)
    if path.is_dir():
        images = videoio.read_image_folder(path, max_frames)
        return PoseClip(fit_frames(images, height, width), 30.0, spec_s, "image-folder")
    if not path.exists():
        raise AnimlcmError(
            f"{spec_s}: pose source not found; pass a video, a folder of skeleton images or "
            "CACHE_DIR:video_name"
        )
    frames, fps = videoio.read_video(path, max_frames)
    is_skeleton = kind == "skeleton" or (kind == "auto" and looks_like_skeleton(frames))
    if is_skeleton:
        return PoseClip(fit_frames(frames, height, width), fps, spec_s, "skeleton-video")
    keypoints = detect_keypoints(frames, spec_s)
    keypoints = fit_points(keypoints, frames.shape[1:3], height, width)
    return PoseClip(draw_skeletons(keypoints, height, width), fps, spec_s, "rgb-video", keypoints=keypoints)


def detect_keypoints(frames: np.ndarray, where: str) -> np.ndarray:
    """RGB frames (any size) -> openpose134 keypoints in their pixels, with the extract stage's MediaPipe
    backend (one tracker per video), so render sees the same poses the cache would hold."""
    from animlcm.stages.extract.pose import MediaPipePose
    from animlcm.stages.extract.skeleton import body_found

    backend = MediaPipePose()
    try:
        keypoints = backend(frames, np.arange(len(frames)))
    finally:
        backend.close()
    if not body_found(keypoints).any():
        raise AnimlcmError(f"{where}: no person found in any frame; pass a skeleton video or a clearer video")
    return keypoints


def draw_skeletons(keypoints: np.ndarray, height: int, width: int) -> np.ndarray:
    """The extract stage's one drawing routine (OpenPose colours), so render and cache maps look alike."""
    from animlcm.stages.extract.skeleton import draw_skeletons as draw

    return draw(keypoints, height, width)


def open_cache_entry(root: Path, name: str):
    """The cache entry ``name`` opened for reading, or one line listing the names the cache does hold."""
    from animlcm.cache.reader import CacheReader

    reader = CacheReader(root)
    # a name the manifest knows opens or says why not (failed during extract, file missing)
    if name not in {e.name for e in reader.entries}:
        if not reader.videos:
            raise AnimlcmError(f"{root}: the cache holds no complete video; run `animlcm extract` first")
        more = ", ..." if len(reader.videos) > 10 else ""
        raise AnimlcmError(
            f"{root}: no video '{name}' in this cache; choose one of: {', '.join(reader.videos[:10])}{more}"
        )
    return reader.open(name)


def _from_cache(root: Path, name: str, height: int, width: int, max_frames: int | None) -> PoseClip:
    with open_cache_entry(root, name) as entry:
        n = entry.num_frames if max_frames is None else min(max_frames, entry.num_frames)
        sel = slice(0, n)
        skeleton, frames = entry.skeleton(sel), entry.frames(sel)
        keypoints = entry.keypoints(sel)
        src_hw = (entry.height, entry.width)
        fps = float(entry.fps)
        face = entry.face_crop(0) if bool(entry.face_found(0)) else None
        labels = entry.part_labels(sel) if entry.has_parts else None
        part_names = entry.part_names
    return PoseClip(
        fit_frames(skeleton, height, width),
        fps,
        f"{root}:{name}",
        "cache",
        keypoints=fit_points(keypoints, src_hw, height, width),
        frames=fit_frames(frames, height, width),
        face=face,
        labels=None if labels is None else fit_labels(labels, height, width),
        part_names=part_names,
    )
