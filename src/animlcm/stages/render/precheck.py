"""Every check of ``animlcm render`` that needs no model, run before torch is even imported, so a wrong flag
or a bad file costs a second, not a model load: sizes, --steps against the model's grid (read from the
folder's ``animlcm.json``, no weights), --out and --frames-dir, the reference image, the pose source.

Whatever cannot be judged without the weights (a damaged ``model.safetensors``) is left to the loader,
which reports it in one line too.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from animlcm.errors import AnimlcmError
from animlcm.outputs import check_output
from animlcm.stages.render.config import RenderConfig

BUILTIN_STUDENT = Path(__file__).resolve().parents[2] / "assets" / "tiny" / "student"
MIN_REFERENCE_SIDE = 32  # below this a person cannot be seen, let alone animated
DEFAULT_GRID = 50  # LCM's skipping grid, for folders that record none (teachers, older students)
DEFAULT_TRAIN_TIMESTEPS = 1000


def segment_lengths(segments: int, grid: int, train_timesteps: int = DEFAULT_TRAIN_TIMESTEPS) -> list[int]:
    """Grid points in each of K segments, bottom up (``timesteps.segment_edges`` without torch)."""
    k = train_timesteps // grid
    descending = [(grid - j) * k - 1 for j in range(grid)]
    inner = sorted(descending[math.floor(i * (grid / segments))] for i in range(1, segments))
    levels = [0] + [(i + 1) * k - 1 for i in range(grid)]
    edges = [0, *inner, levels[-1]]
    idx = [levels.index(e) for e in edges]
    return [hi - lo for lo, hi in zip(idx, idx[1:], strict=False)]


def max_student_steps(segments: int, grid: int, train_timesteps: int = DEFAULT_TRAIN_TIMESTEPS) -> int:
    """The most steps a K-segment student samples on its N-point grid (``timesteps.segmented_plan`` gives the
    first ``steps % K`` segments from the top one extra step, and no segment more steps than its points)."""
    if segments <= 1:
        return grid
    lengths = segment_lengths(segments, grid, train_timesteps)[::-1]  # top first, as the plan walks them

    def fits(steps: int) -> bool:
        base, extra = divmod(steps, segments)
        return all(base + (r < extra) <= n for r, n in enumerate(lengths))

    best = segments
    for steps in range(segments, grid + 1):
        if fits(steps):
            best = steps
    return best


def _folder_json(model: Path | None) -> tuple[Path, dict] | None:
    """(folder, animlcm.json) of --model (or its run folder's student/teacher), None where unreadable:
    the loader reports a broken folder with its own line."""
    folder = BUILTIN_STUDENT if model is None else Path(model)
    if not (folder / "animlcm.json").exists():
        for inner in ("student", "teacher"):
            if (folder / inner / "animlcm.json").exists():
                folder = folder / inner
    try:
        data = json.loads((folder / "animlcm.json").read_text())
    except (OSError, ValueError):
        return None
    return (folder, data) if isinstance(data, dict) else None


def check_steps(cfg: RenderConfig) -> None:
    """--steps and --segments against what the model's folder says it can sample, in plain words."""
    if cfg.random:
        meta: dict = {}
        schedule: dict = {}
        kind = "random"
    else:
        found = _folder_json(cfg.model)
        if found is None:
            return
        folder, data = found
        meta, schedule = dict(data.get("meta") or {}), dict(data.get("schedule") or {})
        kind = data.get("kind")
        if cfg.teacher and kind != "teacher":
            from animlcm.models.linked import meta_target, teacher_key

            key = teacher_key(meta)
            if key is not None:
                try:
                    t = meta_target(meta, key, folder, what="teacher", hub=False)
                except AnimlcmError:
                    t = None  # the loader names the missing teacher
                tf = _folder_json(t) if t is not None else None
                schedule = dict(tf[1].get("schedule") or {}) if tf else schedule
    train_t = int(schedule.get("num_train_timesteps") or DEFAULT_TRAIN_TIMESTEPS)
    if cfg.teacher:
        if cfg.steps > train_t:
            raise AnimlcmError(
                f"--steps {cfg.steps}: the teacher's DDIM sampler takes at most {train_t} steps (its "
                f"training timesteps); use --steps 25 to 50"
            )
        return
    grid = int(meta.get("num_ddim_steps") or DEFAULT_GRID)
    segments = int(cfg.segments if cfg.segments is not None else meta.get("segments") or 1)
    if segments > grid:
        raise AnimlcmError(
            f"--segments {segments}: this {kind} samples on a {grid}-point grid, so at most {grid} segments"
        )
    most = max_student_steps(segments, grid, train_t)
    if cfg.steps > most:
        split = f" split into {segments} segments" if segments > 1 else ""
        raise AnimlcmError(
            f"--steps {cfg.steps}: this {kind} samples in at most {most} steps (its {grid}-point grid"
            f"{split}); use --steps {max(segments, 1)} to {most} (4 is usual), or --teacher for more"
        )
    if cfg.steps < segments:
        raise AnimlcmError(
            f"--steps {cfg.steps}: this student was distilled with {segments} segments and samples in at "
            f"least {segments} steps (--steps {segments}); distill it with --segments 1 for 1-step sampling"
        )


def read_reference(path: Path | None, height: int, width: int) -> np.ndarray:
    """The reference image as uint8 RGB (transparency on white), at least ``MIN_REFERENCE_SIDE`` a side."""
    from animlcm.stages.render import videoio

    if path is None:
        raise AnimlcmError("no reference image given: pass REF_IMAGE (the person to animate)")
    # a cut-out's transparent pixels become a white studio wall, not the black PIL would leave
    image = videoio.read_image(path, alpha_background=255)
    if min(image.shape[:2]) < MIN_REFERENCE_SIDE:
        rh, rw = image.shape[:2]
        raise AnimlcmError(
            f"{path}: the reference is {rw}x{rh} pixels; pass an image of at least {MIN_REFERENCE_SIDE}x"
            f"{MIN_REFERENCE_SIDE} showing the person (it is resized to {width}x{height})"
        )
    return image


def check_pose(spec: str | None) -> None:
    """The pose source exists and opens: a cache name the cache knows, a folder with images, a video that
    decodes (probed: header and first frame only)."""
    from animlcm.stages.render.sources import parse_cache_spec

    if spec is None:
        return
    cache = parse_cache_spec(spec)
    if cache is not None:
        from animlcm.stages.render.sources import open_cache_entry

        with open_cache_entry(*cache):
            return
    path = Path(spec)
    if path.is_dir():
        return  # read_image_folder names an empty or mixed folder itself, quickly
    if not path.exists():
        raise AnimlcmError(
            f"{spec}: pose source not found; pass a video, a folder of skeleton images or "
            "CACHE_DIR:video_name"
        )
    from animlcm.videoread import probe

    probe(path)


def check_all(cfg: RenderConfig) -> np.ndarray:
    """Everything above, cheapest first; returns the reference image (so it is read once)."""
    cfg.validate()
    check_output(Path(cfg.out), "--out", folder=False, suffix=".mp4")
    if cfg.frames_dir is not None:
        check_output(Path(cfg.frames_dir), "--frames-dir", folder=True)
    check_steps(cfg)
    reference = read_reference(cfg.reference, cfg.height, cfg.width)
    check_pose(cfg.pose)
    return reference
