"""``run(EvalConfig)``: render every cached test video from its first frame and its poses, compare with the
real frames, and write ``metrics.json``, ``metrics.md`` and ``quality.png``.

Timing covers the whole render of a clip (conditioning + denoising + decode), after one warm-up render per
model, so seconds per frame is what a user waits. Peak memory is the CUDA allocator's peak per row on GPU,
and the process's peak resident memory on CPU (a high-water mark: it never goes down between rows).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import resource
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from animlcm.errors import AnimlcmError
from animlcm.stages.evaluate import metrics, report
from animlcm.stages.evaluate.config import EvalConfig
from animlcm.stages.render.pipeline import (
    RenderModel,
    SamplerSettings,
    check_steps,
    render_clip,
    resolve_device,
)
from animlcm.stages.render.sources import PoseClip, load_pose_source


@dataclass
class EvalResult:
    rows: list[report.MetricRow]
    metrics_json: Path
    table: Path
    plot: Path
    videos: list[str]
    skipped_steps: list[int] = dataclasses.field(default_factory=list)
    """Student step counts of the sweep left out: fewer than the student's segments."""


def load_clips(
    cache: Path, height: int, width: int, max_videos: int | None, max_frames: int | None
) -> list[PoseClip]:
    """Every ok video of the cache as a PoseClip with its real frames (the ground truth) and, for synthetic
    clips, their body-part labels."""
    from animlcm.cache.reader import CacheReader

    names = CacheReader(cache).videos[:max_videos]
    if not names:
        raise AnimlcmError(f"{cache}: no complete videos in this cache; run `animlcm extract` first")
    clips = [load_pose_source(f"{cache}:{name}", height, width, max_frames) for name in names]
    return [c for c in clips if c.num_frames > 0]


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (2**20 if sys.platform == "darwin" else 2**10)


def evaluate(
    model: RenderModel,
    clips: list[PoseClip],
    settings: SamplerSettings,
    *,
    method: str,
    ablation: str = "",
    lpips_net=None,
    fid_net=None,
    fvd_net=None,
    teacher_frames: list[np.ndarray] | None = None,
) -> report.MetricRow:
    """One row: render every clip with ``settings``, average the metrics over clips, time it.

    FID (over all frames) and FVD (over clips) are set-level, so they come once per row, not per clip.
    ``teacher_frames`` (one array per clip) adds ``psnr_vs_teacher``: PSNR against the teacher's render.
    Clips with body-part labels (synthetic ones) add the appearance measure, averaged over those clips."""
    per_clip, seconds, frames, generated, looks = [], 0.0, 0, [], []
    if model.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(model.device)
    for i, clip in enumerate(clips):
        out = render_clip(model, clip.frames[0], clip.skeleton, settings, face=clip.face)
        seconds += sum(out.timings.values())
        frames += len(out.frames)
        m = metrics.frame_metrics(out.frames, clip.frames)
        if lpips_net is not None:
            m["lpips"] = float(lpips_net(metrics.to_unit(out.frames), metrics.to_unit(clip.frames)).mean())
        if teacher_frames is not None:
            m["psnr_vs_teacher"] = metrics.frame_metrics(out.frames, teacher_frames[i])["psnr"]
        if clip.labels is not None:
            looks.append(metrics.appearance_metrics(out.frames, clip.frames, clip.labels, clip.part_names))
        per_clip.append(m)
        generated.append(out.frames)
    avg = metrics.mean_rows(per_clip)
    extra = {k: v for k, v in avg.items() if k not in ("l1", "psnr", "ssim")}
    if fid_net is not None:
        from animlcm.stages.evaluate.frechet import fid

        real_frames = np.concatenate([c.frames for c in clips])
        extra["fid"] = fid(fid_net, np.concatenate(generated), real_frames)
    if fvd_net is not None:
        from animlcm.stages.evaluate.frechet import fvd

        extra["fvd"] = fvd(fvd_net, generated, [c.frames for c in clips])
    return report.MetricRow(
        method=method,
        ablation=ablation,
        steps=settings.steps,
        l1=avg["l1"],
        psnr=avg["psnr"],
        ssim=avg["ssim"],
        seconds_per_frame=seconds / max(frames, 1),
        peak_memory_mb=_peak_mb(model.device),
        extra=extra,
        **metrics.mean_appearance(looks),
    )


def reference_cfg(cfg: EvalConfig, meta: dict) -> float:
    """The teacher's CFG scale for ``--vs-teacher``: as given, else the student's distillation guidance
    (x0_c + w (x0_c - x0_u) is CFG scale 1 + w), else the teacher rows' ``--cfg``."""
    if cfg.vs_teacher_cfg is not None:
        return cfg.vs_teacher_cfg
    w = meta.get("guidance_w")
    return 1.0 + float(w) if w is not None else cfg.cfg


def teacher_renders(
    teacher: RenderModel,
    teacher_dir: Path,
    clips: list[PoseClip],
    settings: SamplerSettings,
    cache: Path | None = None,
) -> list[np.ndarray]:
    """The teacher's render of every clip with ``settings``; with ``cache``, kept in one ``.npz`` per
    (teacher weights, clips, settings, device, dtype) and read back by later evals."""

    def fresh() -> list[np.ndarray]:
        return [render_clip(teacher, c.frames[0], c.skeleton, settings, face=c.face).frames for c in clips]

    if cache is None:
        return fresh()
    weights = sorted(Path(teacher_dir).rglob("*.safetensors"))
    key = json.dumps(
        {
            "weights": [(str(w.resolve()), w.stat().st_size, w.stat().st_mtime_ns) for w in weights],
            "clips": [_digest(c.frames, c.skeleton, c.face) for c in clips],
            "settings": dataclasses.asdict(settings),
            "device": str(teacher.device),
            "dtype": str(teacher.dtype),
        },
        sort_keys=True,
        default=str,
    )
    path = Path(cache) / f"teacher-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"
    if path.exists():
        with np.load(path) as saved:
            return [saved[f"clip{i}"] for i in range(len(clips))]
    frames = fresh()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, **{f"clip{i}": f for i, f in enumerate(frames)})
    tmp.replace(path)
    path.with_suffix(".json").write_text(key)
    return frames


def _digest(*arrays: np.ndarray | None) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(b"-" if a is None else np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _warm_up(model: RenderModel, clip: PoseClip, settings: SamplerSettings) -> None:
    """One short render so lazy initialisation (kernels, allocator) is not billed to the first row."""
    n = min(clip.num_frames, settings.window)
    quick = dataclasses.replace(settings, steps=model.min_steps(settings))
    render_clip(model, clip.frames[0], clip.skeleton[:n], quick)


def run(cfg: EvalConfig) -> EvalResult:
    from animlcm.outputs import check_output
    from animlcm.stages.render.model import load_render_model, teacher_of

    cfg.validate()
    check_output(Path(cfg.out), "--out", folder=True)  # before the sweep, not after it
    clips = load_clips(cfg.cache, cfg.height, cfg.width, cfg.max_videos, cfg.max_frames)
    device, dtype = resolve_device(cfg.device, cfg.dtype)
    student = load_render_model(cfg.model, preset=cfg.preset, device=device, dtype=dtype)
    lpips_net = None
    if cfg.lpips_weights is not None:
        from animlcm.stages.evaluate.lpips import load_lpips

        lpips_net = load_lpips(cfg.lpips_weights)
    from animlcm.stages.evaluate.frechet import load_feature_net

    fid_net = None if cfg.fid_model is None else load_feature_net(cfg.fid_model, device)
    fvd_net = None if cfg.fvd_model is None else load_feature_net(cfg.fvd_model, device)
    method = str(student.meta.get("method") or "student")
    ablation = str(student.meta.get("ablation") or "")
    base = dict(cfg=cfg.cfg, seed=cfg.seed, window=cfg.window, overlap=cfg.overlap)

    # (model, settings, method) for every row; the teacher loads only for a sweep or --vs-teacher. A
    # K-segment student samples in K steps at least: a sweep leaves out the step counts below that
    wanted = [SamplerSettings(steps=s, **base) for s in (cfg.student_steps if cfg.sweep else (cfg.steps,))]
    if not cfg.sweep:
        check_steps(student, wanted[0])
    plan = [(student, s, method) for s in wanted if s.steps >= student.min_steps(s)]
    skipped = [s.steps for s in wanted if s.steps < student.min_steps(s)]
    teacher = None
    if cfg.sweep or cfg.vs_teacher:
        teacher_dir = cfg.teacher
        if teacher_dir is None:
            teacher_dir = (
                cfg.model if student.kind == "teacher" else teacher_of(student.meta, Path(cfg.model))
            )
        teacher = load_render_model(teacher_dir, preset=cfg.preset, device=device, dtype=dtype)
    teacher_frames, reference = None, None
    if cfg.vs_teacher:
        # the same seed gives the teacher the same starting noise as every row: a distilled student should
        # land where the teacher's ODE from that noise lands
        reference = SamplerSettings(
            steps=cfg.vs_teacher, teacher=True, **{**base, "cfg": reference_cfg(cfg, student.meta)}
        )
        teacher_frames = teacher_renders(teacher, teacher_dir, clips, reference, cfg.reference_cache)
    if cfg.sweep:
        plan += [
            (teacher, SamplerSettings(steps=s, teacher=True, **base), "teacher") for s in cfg.teacher_steps
        ]

    rows: list[report.MetricRow] = []
    warmed: set[int] = set()
    bar, advance = _progress(cfg.progress, len(plan))
    with bar:
        for i, (model, settings, name) in enumerate(plan):
            if id(model) not in warmed:
                _warm_up(model, clips[0], settings)
                warmed.add(id(model))
            row_ablation = "" if name == "teacher" else ablation
            rows.append(
                evaluate(
                    model,
                    clips,
                    settings,
                    method=name,
                    ablation=row_ablation,
                    lpips_net=lpips_net,
                    fid_net=fid_net,
                    fvd_net=fvd_net,
                    # the reference row itself would compare with itself (infinite PSNR): left blank
                    teacher_frames=None if settings == reference else teacher_frames,
                )
            )
            advance(i + 1)

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"model": str(cfg.model), "cache": str(cfg.cache), "videos": len(clips), "device": str(device),
            "dtype": str(dtype).replace("torch.", ""), "height": cfg.height, "width": cfg.width,
            "vs_teacher_steps": cfg.vs_teacher, "student_steps_below_segments": skipped,
            "vs_teacher_cfg": reference.cfg if reference is not None else None}  # fmt: skip
    report.write_metrics_json(rows, out / "metrics.json", meta)
    table = out / "metrics.md"
    tmp = table.with_name(table.name + ".tmp")
    tmp.write_text(report.markdown_table(rows))
    tmp.replace(table)
    report.plot_sweep(rows, out / "quality.png")
    return EvalResult(
        rows, out / "metrics.json", table, out / "quality.png", [c.source for c in clips], skipped
    )


def _progress(enabled: bool, total: int):
    from contextlib import nullcontext

    if not enabled:
        return nullcontext(), lambda _i: None
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("eval"), BarColumn(), TextColumn("{task.completed}/{task.total} settings"),
                   TimeElapsedColumn(), transient=True)  # fmt: skip
    task = bar.add_task("eval", total=total)
    return bar, lambda i: bar.update(task, completed=i)
