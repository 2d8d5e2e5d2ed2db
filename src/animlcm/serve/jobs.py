"""One render request from the page (or the API) -> the render stage's ``run``, the CLI's only path.

The request's uploads are checked against the limits, turned into what ``animlcm render`` takes (a reference
path, a pose video or folder, or no pose: the built-in dance), and rendered into the job's own folder. Errors
come back as the CLI's one-line messages with the upload's own name in place of the server's temp path.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from animlcm.errors import AnimlcmError
from animlcm.serve.limits import UploadLimits, check_image, check_video, gather_images, unpack_zip
from animlcm.serve.models import ModelPool
from animlcm.stages.render.config import RenderConfig
from animlcm.stages.render.videoio import IMAGE_SUFFIXES

TEACHER_STEPS = 25  # the teacher's DDIM steps for the comparison (render --teacher's usual setting)


class Cancelled(Exception):
    """Raised inside the sampler's step callback when the visitor pressed Cancel: the worker stops there."""


@dataclass
class CancelToken:
    """Set by the Cancel button (any thread), read at every sampling step of the render it belongs to."""

    event: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        self.event.set()

    def check(self) -> None:
        if self.event.is_set():
            raise Cancelled("render cancelled")


@dataclass(frozen=True)
class RenderRequest:
    """What the page sends. ``motion`` empty: the built-in dance; one file: a video or a zip of skeleton
    images; several files: skeleton images, in the order of their names."""

    reference: Path
    motion: tuple[Path, ...] = ()
    model: Path | None = None
    steps: int = 4
    seed: int = 0
    frames: int = 16
    window: int | None = None
    pose_kind: str = "auto"
    compare_teacher: bool = False
    teacher_steps: int = TEACHER_STEPS
    names: dict[str, str] = field(default_factory=dict)
    """Server path -> the name the visitor's file had (what messages call it)."""


@dataclass
class JobResult:
    video: Path
    preview: Path
    teacher_video: Path | None
    summary: str
    seconds: float


def upload_name(path: Path, names: dict[str, str]) -> str:
    return names.get(str(path), Path(path).name)


def visitor_message(message: str, names: dict[str, str], workdir: Path) -> str:
    """A CLI message with server paths replaced by the visitor's file names (the server's folders are
    neither useful to the visitor nor theirs to know)."""
    for path, name in sorted(names.items(), key=lambda pn: -len(pn[0])):  # longest first: no partial hits
        message = message.replace(path, name)
    return message.replace(str(workdir) + "/", "")


def _safe_stem(name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(name).stem).strip("_")[:40]
    return stem or "render"


def pose_source(req: RenderRequest, job_dir: Path, limits: UploadLimits) -> str | None:
    """The ``--pose`` value for the request's motion upload (None: the built-in dance), limits checked."""
    if not req.motion:
        return None
    names = [upload_name(p, req.names) for p in req.motion]
    if len(req.motion) > 1 or Path(names[0]).suffix.lower() in IMAGE_SUFFIXES:
        return str(gather_images(list(req.motion), job_dir / "poses", limits, names))
    path, name = req.motion[0], names[0]
    if Path(name).suffix.lower() == ".zip":
        return str(unpack_zip(path, job_dir / "poses", limits, name))
    check_video(path, limits, name)
    return str(path)


def build_config(req: RenderRequest, pose: str | None, out: Path, preset: str, teacher: bool = False):
    """The ``RenderConfig`` ``animlcm render`` would build from the same flags (``resolve_config``)."""
    from animlcm.config import resolve_config

    overrides = dict(
        reference=req.reference,
        pose=pose,
        model=req.model,
        out=out,
        steps=req.teacher_steps if teacher else req.steps,
        teacher=teacher or None,
        seed=req.seed,
        window=req.window,
        max_frames=req.frames,
        pose_kind=req.pose_kind,
        progress=False,  # no terminal bar in a server's log
    )
    return resolve_config(RenderConfig, preset, None, overrides)


def render_request(
    req: RenderRequest,
    *,
    pool: ModelPool,
    workdir: Path,
    job_dir: Path,
    limits: UploadLimits,
    preset: str = "tiny",
    on_step: Callable[[str, int, int], None] | None = None,
) -> JobResult:
    """Render ``req`` into ``job_dir`` (the student, then the teacher when asked); ``AnimlcmError`` on bad
    input, with the visitor's file names; ``on_step(phase, i, total)`` after each sampling step."""
    from animlcm.stages.render.domain import builtin_model_note
    from animlcm.stages.render.run import run

    start = time.perf_counter()
    try:
        name = upload_name(req.reference, req.names)
        check_image(req.reference, limits, name)
        if not 1 <= req.frames <= limits.max_frames:
            raise AnimlcmError(f"frames {req.frames}: choose 1 to {limits.max_frames}")
        pose = pose_source(req, job_dir, limits)
        out = job_dir / f"{_safe_stem(name)}_animlcm.mp4"
        cfg = build_config(req, pose, out, preset)

        def step(phase: str) -> Callable[[int, int], None] | None:
            return None if on_step is None else (lambda i, n: on_step(phase, i, n))

        result = run(cfg, model=pool.get(cfg), on_step=step("student"))
        teacher_video = None
        if req.compare_teacher:
            tcfg = build_config(req, pose, job_dir / f"{_safe_stem(name)}_teacher.mp4", preset, teacher=True)
            teacher_video = run(tcfg, model=pool.get(tcfg), on_step=step("teacher")).video
    except AnimlcmError as exc:
        raise AnimlcmError(visitor_message(str(exc), req.names, workdir)) from None
    seconds = time.perf_counter() - start
    summary = (
        f"{result.num_frames} frames at {result.fps:g} fps, {result.height}x{result.width}, "
        f"{result.sampler}, {result.steps} steps, seed {req.seed}: {seconds:.1f} s"
    )
    note = builtin_model_note(cfg)
    if note is not None:
        summary += "\n\n" + note
    return JobResult(result.video, result.preview, teacher_video, summary, seconds)
