"""``run(RenderConfig)``: read the reference and poses, load the model, sample, write mp4 + preview."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from animlcm.errors import AnimlcmError
from animlcm.stages.render import align, precheck, preview, sources, videoio
from animlcm.stages.render.config import RenderConfig
from animlcm.stages.render.pipeline import (
    RenderModel,
    RenderOutput,
    SamplerSettings,
    check_steps,
    reference_face,
    render_clip,
    resolve_device,
)

BUILTIN_DANCE_FRAMES = 48
BUILTIN_DANCE_FPS = 16.0


@dataclass
class RenderResult:
    video: Path
    preview: Path
    num_frames: int
    fps: float
    height: int
    width: int
    steps: int
    sampler: str
    timings: dict[str, float] = field(default_factory=dict)
    frames_dir: Path | None = None

    @property
    def seconds_per_frame(self) -> float:
        return sum(self.timings.values()) / max(self.num_frames, 1)


def preview_path(video: Path) -> Path:
    """``OUT.mp4`` -> ``OUT.preview.png`` (next to the video)."""
    video = Path(video)
    return video.with_name(video.stem + ".preview.png")


def builtin_dance(height: int, width: int, num_frames: int | None, seed: int = 0) -> sources.PoseClip:
    """The synthetic dance (``animlcm.synth.motion``) drawn with the extract stage's skeleton routine."""
    from animlcm.stages.extract.skeleton import pad_layout
    from animlcm.synth.motion import dance_keypoints

    n = num_frames or BUILTIN_DANCE_FRAMES
    keypoints = pad_layout(dance_keypoints(seed, n, (height, width), fps=BUILTIN_DANCE_FPS))
    skeleton = sources.draw_skeletons(keypoints, height, width)
    return sources.PoseClip(
        skeleton, BUILTIN_DANCE_FPS, "built-in dance", "builtin-dance", keypoints=keypoints
    )


def align_clip(
    clip: sources.PoseClip,
    reference_full: np.ndarray,
    height: int,
    width: int,
    where: str = "reference image",
) -> sources.PoseClip:
    """Fit one scale + offset that moves the first driving skeleton onto the reference person's skeleton
    (both as drawn boxes), and apply it to every frame."""
    try:
        ref_kp = sources.detect_keypoints(reference_full[None], where)
    except AnimlcmError:
        raise AnimlcmError(
            f"{where}: no person found to align the poses to; render with --no-align"
        ) from None
    ref_kp = sources.fit_points(ref_kp, reference_full.shape[:2], height, width)
    dst = align.skeleton_bbox(sources.draw_skeletons(ref_kp, height, width)[0])
    src = align.skeleton_bbox(clip.skeleton[0])
    if dst is None or src is None:
        raise AnimlcmError(f"{clip.source}: cannot align: no skeleton in the first frame or on the reference")
    scale, offset = align.fit_scale_offset(align.box_corners(src), align.box_corners(dst))
    keypoints = None if clip.keypoints is None else align.apply_to_points(clip.keypoints, scale, offset)
    if keypoints is not None:  # redraw from points: lines keep their width
        skeleton = sources.draw_skeletons(keypoints, height, width)
    else:
        skeleton = align.apply_to_images(clip.skeleton, scale, offset)
    return dataclasses.replace(clip, skeleton=skeleton, keypoints=keypoints)


def _progress(enabled: bool, total: int, label: str):
    """A rich progress bar (or a no-op) and the advance function the sampler callback calls."""
    from contextlib import nullcontext

    if not enabled:
        return nullcontext(), None
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        transient=True,
    )
    task = bar.add_task(label, total=total)
    return bar, lambda i: bar.update(task, completed=i)


def _both(first: Callable[[int], None] | None, second: Callable[[int], None]) -> Callable[[int], None]:
    """One step callback that advances the terminal bar (when there is one) and then calls ``second``."""

    def advance(i: int) -> None:
        if first is not None:
            first(i)
        second(i)

    return advance


def load_model(cfg: RenderConfig) -> RenderModel:
    """The network ``cfg`` renders with (``--model``, the built-in student, ``--teacher``'s, ``--random``),
    on ``cfg``'s device and dtype; ``run`` calls it, and a server calls it once and keeps the result."""
    from animlcm.stages.render.model import load_render_model

    device, dtype = resolve_device(cfg.device, cfg.dtype)
    return load_render_model(
        cfg.model, preset=cfg.preset, random=cfg.random, teacher=cfg.teacher, device=device, dtype=dtype
    )


def run(
    cfg: RenderConfig,
    *,
    model: RenderModel | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> RenderResult:
    """Render ``cfg``: inputs checked first, then the model (``model`` if given: ``load_model(cfg)``'s result
    kept by a caller that renders many times), sampling, and the files written.

    ``on_step(i, steps)`` is called after each sampling step (a web page's progress bar); an exception it
    raises stops the render there (a cancelled job frees its worker at the next step).
    """
    h, w = cfg.height, cfg.width
    # 1. inputs first: every check that needs no model (sizes, --steps, --out, files) before one is built
    reference_full = precheck.check_all(cfg)
    if cfg.pose is None:
        clip = builtin_dance(h, w, cfg.max_frames, cfg.seed)
    else:
        clip = sources.load_pose_source(cfg.pose, h, w, cfg.max_frames, cfg.pose_kind)
    if clip.num_frames == 0:
        raise AnimlcmError(f"{clip.source}: the pose source has no frames")
    reference = sources.fit_frames(reference_full[None], h, w)[0]
    if cfg.align:
        clip = align_clip(clip, reference_full, h, w, str(cfg.reference))

    # 2. the model
    if model is None:
        model = load_model(cfg)
    settings = SamplerSettings(
        steps=cfg.steps,
        teacher=cfg.teacher,
        cfg=cfg.cfg,
        segments=cfg.segments,
        deterministic=cfg.deterministic,
        seed=cfg.seed,
        window=cfg.window,
        overlap=cfg.overlap,
    )
    check_steps(model, settings)  # before the face detector runs
    face = reference_face(reference_full) if getattr(model.net, "face_projector", None) is not None else None

    # 3. sample
    bar, advance = _progress(cfg.progress, cfg.steps, f"rendering {clip.num_frames} frames")
    if on_step is not None:
        advance = _both(advance, lambda i: on_step(i, cfg.steps))
    with bar:
        out: RenderOutput = render_clip(
            model, reference, clip.skeleton, settings, face=face, progress=advance
        )

    # 4. write: video, preview, optional frames
    video = Path(cfg.out)
    videoio.write_video(video, out.frames, clip.fps)
    prev = preview_path(video)
    videoio.write_image(prev, preview.preview_grid(reference, clip.skeleton, out.frames))
    if cfg.frames_dir is not None:
        videoio.write_frames_dir(cfg.frames_dir, out.frames)
    return RenderResult(
        video=video,
        preview=prev,
        num_frames=len(out.frames),
        fps=clip.fps,
        height=h,
        width=w,
        steps=cfg.steps,
        sampler=out.sampler,
        timings=out.timings,
        frames_dir=cfg.frames_dir,
    )
