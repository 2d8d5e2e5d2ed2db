"""``run(cfg, inputs, out)``: videos -> resumable HDF5 cache (DESIGN section 2).

Per video: probe -> frame indices -> pass 1 (decode, pose, face on the source frames) -> output geometry
from the person's box -> pass 2 (frames into the output frame) -> skeleton maps, latents, motion masks,
optional SMPL maps, optional body-part labels (``VIDEO.parts.npz`` beside a synthetic clip) ->
``NAME.h5.tmp`` renamed to ``NAME.h5`` -> manifest entry. A failure marks the video
``failed`` with a one-line reason and the run goes on.

Resume: a video is skipped when its manifest entry is ok, its file exists and the config hash matches;
a complete ``NAME.h5`` without a manifest entry (killed between rename and manifest update) is adopted;
a leftover ``NAME.h5.tmp`` is deleted and the video redone. Failed videos are retried when the config,
or the file (size, mtime), changed, or with ``retry_failed``.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import animlcm
from animlcm.cache import schema
from animlcm.cache.writer import STATUS_FAILED, STATUS_OK, Manifest, ManifestEntry, VideoWriter
from animlcm.errors import AnimlcmError
from animlcm.outputs import disk_errno, disk_errors
from animlcm.stages.extract import decode, face, labels, motion, pose, skeleton
from animlcm.stages.extract.config import ExtractConfig

# Keep the decoded source frames between the two passes when they fit in this many bytes; else decode twice.
KEEP_SOURCE_BYTES = 768 * 2**20


@dataclass
class VideoResult:
    name: str
    source: str
    status: str  # "ok" | "failed" | "skipped" (ok earlier, same config) | "failed-earlier"
    frames: int = 0
    seconds: float = 0.0
    error: str | None = None
    pose_rate: float | None = None


@dataclass
class ExtractSummary:
    out: Path
    results: list[VideoResult] = field(default_factory=list)

    @property
    def failed(self) -> list[VideoResult]:
        return [r for r in self.results if r.status in ("failed", "failed-earlier")]

    @property
    def exit_code(self) -> int:
        """1 when any video of this shard is failed, else 0."""
        return 1 if self.failed else 0


# -- naming and sharding -------------------------------------------------------------------------------
def assign_names(videos: list[Path]) -> list[tuple[str, Path]]:
    """Deterministic cache names: the file stem (sanitised), plus a path hash where stems collide."""

    def clean(p: Path) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "_", p.stem) or "video"

    counts: dict[str, int] = {}
    for v in videos:
        counts[clean(v)] = counts.get(clean(v), 0) + 1
    named = []
    for v in videos:
        name = clean(v)
        if counts[name] > 1:
            name += "-" + hashlib.sha1(str(Path(v).absolute()).encode()).hexdigest()[:8]
        named.append((name, Path(v)))
    return sorted(named)


def shard_slice(items: list, index: int, count: int) -> list:
    """The ``index``-th of ``count`` round-robin slices of a sorted list: every item in exactly one shard."""
    return items[index::count]


# -- one video -------------------------------------------------------------------------------------------
@dataclass
class _Tools:
    """Models shared by all videos of a run (loaded once)."""

    cfg: ExtractConfig
    encoder: object  # latents.LatentEncoder
    face_detector: face.FaceDetector | None
    dwpose: pose.DWPose | None = None

    def pose_backend(self, video: Path, num_src: int, scale: float) -> pose.PoseBackend:
        if self.cfg.pose == "dwpose":
            if self.dwpose is None:
                self.dwpose = pose.DWPose(self.cfg.dwpose_weights, self.encoder.device)  # type: ignore[attr-defined]
            return self.dwpose
        return pose.make_pose_backend(self.cfg.pose, video, num_src, scale, None, "cpu")


def _source_signature(path: Path) -> tuple[int, float]:
    try:
        st = path.stat()
        return st.st_size, st.st_mtime
    except OSError:
        return 0, 0.0


def _pass_one(
    cfg: ExtractConfig, path: Path, indices: np.ndarray, det_scale: float, backend: pose.PoseBackend,
    tools: _Tools, kp_src: np.ndarray, face_src: np.ndarray, face_found: np.ndarray, crops: np.ndarray,
    kept: list[np.ndarray] | None, advance: Callable[..., None], decoder: str = "decord",
) -> int:  # fmt: skip
    """Decode the source frames once: pose, face boxes and 256 px face crops (filled in place)."""
    pos = 0
    for batch in decode.read_frames(path, indices, cfg.decode_batch_size, decoder):
        b = len(batch)
        small = np.stack([decode.resize_for_detection(f, det_scale) for f in batch])
        kp = backend(small, indices[pos : pos + b])
        kp[..., :2] /= det_scale
        kp_src[pos : pos + b] = kp
        if tools.face_detector is not None:
            boxes, found = tools.face_detector(small)
            boxes /= det_scale
        else:  # synthetic dancers: the head keypoints are exact
            boxes, found = face.boxes_from_keypoints(kp, cfg.keypoint_threshold)
        face_src[pos : pos + b], face_found[pos : pos + b] = boxes, found
        crops[pos : pos + b] = face.crop_faces(batch, face.square_boxes(boxes, cfg.face_margin), found)
        if kept is not None:
            kept.append(batch)
        pos += b
        advance("pose + face", b)
    return pos


def extract_video(
    cfg: ExtractConfig, name: str, path: Path, out: Path, tools: _Tools, cfg_hash: str,
    advance: Callable[..., None] = lambda *a, **k: None,
) -> tuple[int, float, float]:  # fmt: skip
    """Extract one video into ``out/NAME.h5``; returns (frames, fps, pose_rate). Bad input: AnimlcmError."""
    info = decode.probe(path)
    indices = decode.sample_indices(info.num_frames, info.fps, cfg.fps, cfg.max_frames)
    fps = cfg.fps or info.fps
    if len(indices) < cfg.min_frames:
        raise AnimlcmError(
            f"{path}: too short: {len(indices)} frames at {fps:g} fps, below min_frames={cfg.min_frames} "
            "(one training clip); use a longer video or lower min_frames"
        )
    n = len(indices)
    advance("pose + face", 0, n)
    src_hw = (info.height, info.width)
    det_scale = decode.detection_scale(src_hw, cfg.detect_size)
    parts = labels.labels_beside(path, info.num_frames, src_hw)  # before the slow passes: fail early

    # Pass 1 on the source frames: pose, face boxes and crops (keep the frames when they fit).
    keep = n * info.height * info.width * 3 <= KEEP_SOURCE_BYTES
    kept: list[np.ndarray] = []
    kp_src = np.zeros((n, skeleton.NUM_KEYPOINTS, 3), np.float32)
    face_src = np.zeros((n, 4), np.float32)
    face_found = np.zeros(n, bool)
    crops = np.zeros((n, face.FACE_SIZE, face.FACE_SIZE, 3), np.uint8)
    pos = 0
    with pose.quiet_native_stderr():  # MediaPipe logs from its own threads, so cover the whole pass
        backend = tools.pose_backend(path, info.num_frames, det_scale)
        try:
            pos = _pass_one(
                cfg,
                path,
                indices,
                det_scale,
                backend,
                tools,
                kp_src,
                face_src,
                face_found,
                crops,
                kept if keep else None,
                advance,
                info.backend,
            )
            world = getattr(backend, "world_landmarks", None)
        finally:
            if backend is not tools.dwpose:
                backend.close()
    if pos < n:
        raise AnimlcmError(f"{path}: truncated: decoded {pos} of {n} frames; re-download or re-encode it")

    found = skeleton.body_found(kp_src, cfg.keypoint_threshold)
    pose_rate = float(found.mean())
    if pose_rate < cfg.min_pose_rate:
        raise AnimlcmError(
            f"{path}: no person: a body in {int(found.sum())}/{n} frames ({pose_rate:.0%} < min_pose_rate "
            f"{cfg.min_pose_rate:g}); skeleton renders and empty scenes are not training videos"
        )

    # The output geometry, from where the person is over the whole video.
    crop = decode.plan_crop(
        src_hw, (cfg.height, cfg.width), skeleton.person_box(kp_src[found], cfg.keypoint_threshold)
    )
    if keep:
        frames = crop.apply_frames(np.concatenate(kept))
    else:
        frames = np.concatenate(
            [
                crop.apply_frames(b)
                for b in decode.read_frames(path, indices, cfg.decode_batch_size, info.backend)
            ]
        )
    del kept
    kp_out = crop.apply_points(kp_src)
    # the same source frames and the same geometry as the frames, so label f belongs to frame f
    part_labels = None if parts is None else crop.apply_labels(parts.labels[indices])
    face_box = crop.apply_boxes(face_src) * face_found[:, None]
    advance("skeleton", 0)
    skel = skeleton.draw_skeletons(kp_out, cfg.height, cfg.width, cfg.keypoint_threshold)
    advance("latents", 0)
    latents = tools.encoder.encode(frames)  # type: ignore[attr-defined]
    advance("motion", 0)
    latent_hw = (cfg.height // 8, cfg.width // 8)
    mask = motion.motion_mask_uint8(frames, cfg.motion_delta, latent_hw)
    smpl = None
    if cfg.smpl_model is not None:
        advance("smpl", 0)
        world_arr = np.stack(world) if world and len(world) == n else None
        smpl = _smpl_maps(kp_out, (cfg.height, cfg.width), cfg.smpl_model, tools.encoder.device, world_arr)  # type: ignore[attr-defined]

    advance("writing", 0)
    with VideoWriter(out, name) as w:
        w.write(schema.FRAMES, frames)
        w.write(
            schema.KEYPOINTS, kp_out, {"layout": skeleton.LAYOUT, "num_keypoints": skeleton.NUM_KEYPOINTS}
        )
        w.write(schema.SKELETON, skel, {"convention": "openpose-dwpose", "threshold": cfg.keypoint_threshold})
        w.write(schema.POSE_FOUND, found)
        w.write(schema.FACE_CROP, crops)
        w.write(schema.FACE_BOX, face_box)
        w.write(schema.FACE_FOUND, face_found)
        w.write(schema.LATENTS, latents, {
            "vae_id": tools.encoder.id, "scaling_factor": tools.encoder.scaling_factor,  # type: ignore[attr-defined]
        })  # fmt: skip
        w.write(
            schema.MOTION_MASK,
            mask,
            {"delta": cfg.motion_delta, "source_resolution": [cfg.height, cfg.width]},
        )
        w.write(schema.SOURCE_INDEX, indices)
        if smpl is not None:
            for map_name, arr in smpl.maps.items():
                w.write(schema.smpl_map_path(map_name), arr)
            for pname, arr in smpl.params.items():
                w.write(f"{schema.SMPL_PARAMS}/{pname}", np.asarray(arr, np.float32))
            w.write(schema.SMPL_VALID, np.asarray(smpl.valid, bool))
        if part_labels is not None:
            w.write(schema.PART_LABELS, part_labels, {"names": list(parts.names)})  # type: ignore[union-attr]
        w.set_attrs(
            name=name, source=str(path), fps=float(fps), num_frames=n, height=cfg.height, width=cfg.width,
            config_hash=cfg_hash, tool_version=animlcm.__version__, pose_backend=cfg.pose,
            keypoint_layout=skeleton.LAYOUT, num_keypoints=skeleton.NUM_KEYPOINTS, crop_mode=crop.mode,
            crop=[crop.sx, crop.sy, crop.ox, crop.oy], source_resolution=[info.height, info.width],
            source_fps=info.fps, preset=cfg.preset,
        )  # fmt: skip
        w.commit()
    return n, float(fps), pose_rate


def _smpl_maps(
    keypoints: np.ndarray, frame_hw: tuple[int, int], model_dir: Path, device: str, world: np.ndarray | None
):
    try:
        from animlcm.stages.extract.smpl import compute_smpl_maps
    except ImportError as exc:
        raise AnimlcmError(
            f"--smpl-model {model_dir}: SMPL guidance maps are not available in this build ({exc}); "
            "run without --smpl-model"
        ) from None
    return compute_smpl_maps(keypoints, frame_hw, Path(model_dir), device, world_landmarks=world)


# -- resume decisions ------------------------------------------------------------------------------------
def _adopt_complete_file(out: Path, name: str, cfg_hash: str) -> ManifestEntry | None:
    """A finished NAME.h5 missing from the manifest (killed between rename and manifest update)."""
    import h5py

    path = out / schema.h5_name(name)
    try:
        with h5py.File(path, "r") as f:
            a = f.attrs
            if not bool(a.get("complete", False)) or a.get("config_hash") != cfg_hash:
                return None
            return ManifestEntry(
                name=name, status=STATUS_OK, source=str(a["source"]), frames=int(a["num_frames"]),
                fps=float(a["fps"]), config_hash=cfg_hash, tool_version=str(a["tool_version"]),
            )  # fmt: skip
    except (OSError, KeyError):
        return None


def _decide(
    cfg: ExtractConfig, name: str, path: Path, out: Path, entries: dict[str, ManifestEntry], cfg_hash: str
) -> tuple[str, ManifestEntry | None]:
    """ "skip" (done), "adopt" (done, not in the manifest), "failed-earlier", or "do"."""
    e = entries.get(name)
    final = out / schema.h5_name(name)
    if e is not None and e.status == STATUS_OK and e.config_hash == cfg_hash and final.exists():
        return "skip", e
    if final.exists():
        adopted = _adopt_complete_file(out, name, cfg_hash)
        if adopted is not None:
            return "adopt", adopted
    if (
        e is not None
        and e.status == STATUS_FAILED
        and e.config_hash == cfg_hash
        and not cfg.retry_failed
        and (e.source_size, e.source_mtime) == _source_signature(path)
    ):
        return "failed-earlier", e
    return "do", None


# -- the run ---------------------------------------------------------------------------------------------
def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _process(
    cfg: ExtractConfig, name: str, path: Path, out: Path, tools: _Tools, cfg_hash: str, manifest: Manifest,
    advance: Callable[..., None],
) -> VideoResult:  # fmt: skip
    """Extract one video and record the outcome in the manifest; never raises for a bad video."""
    t0 = time.perf_counter()
    size, mtime = _source_signature(path)
    common = dict(
        name=name, source=str(path), config_hash=cfg_hash, tool_version=animlcm.__version__,
        source_size=size, source_mtime=mtime,
    )  # fmt: skip
    try:
        frames, fps, rate = extract_video(cfg, name, path, out, tools, cfg_hash, advance)
    except Exception as exc:  # bad input (AnimlcmError) or a bug: never stop the other videos
        (out / schema.tmp_name(name)).unlink(missing_ok=True)
        if disk_errno(exc) is not None:
            raise  # a full or read-only disk fails every later video too: stop, keeping the finished ones
        if isinstance(exc, AnimlcmError):
            msg = _one_line(exc)
        else:
            msg = f"{path}: internal error {type(exc).__name__}: {_one_line(exc)} (please report it)"
        (out / schema.h5_name(name)).unlink(missing_ok=True)  # an older file no longer matches the manifest
        manifest.update(ManifestEntry(status=STATUS_FAILED, error=msg, **common))  # type: ignore[arg-type]
        return VideoResult(name, str(path), "failed", 0, time.perf_counter() - t0, msg)
    manifest.update(ManifestEntry(status=STATUS_OK, frames=frames, fps=fps, **common))  # type: ignore[arg-type]
    return VideoResult(name, str(path), "ok", frames, time.perf_counter() - t0, pose_rate=rate)


def run(cfg: ExtractConfig, inputs: list[Path], out: Path, console=None) -> ExtractSummary:
    """Extract every video under ``inputs`` (this shard's slice) into the cache folder ``out``.

    A full or read-only disk stops the run with one line; the videos finished before stay in the cache."""
    from animlcm.outputs import check_output

    cfg.validate()
    out = Path(out)
    check_output(out, "--out", folder=True)  # before any model loads
    videos = decode.find_videos([Path(p) for p in inputs])
    if not videos:
        raise AnimlcmError(
            f"no videos ({', '.join(decode.VIDEO_EXTENSIONS)}) found in {', '.join(map(str, inputs))}"
        )
    shard_i, shard_n = cfg.shard_index()
    mine = shard_slice(assign_names(videos), shard_i, shard_n)
    summary = ExtractSummary(out=out)
    with disk_errors(out, lambda: _kept(summary)):
        return _run(cfg, out, mine, summary, console)


def _kept(summary: ExtractSummary) -> str:
    done = sum(r.status in ("ok", "skipped") for r in summary.results)
    return f"the {done} finished videos are kept and are not redone" if done else "no video was finished yet"


def _run(
    cfg: ExtractConfig, out: Path, mine: list[tuple[str, Path]], summary: ExtractSummary, console
) -> ExtractSummary:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from animlcm.stages.extract.latents import LatentEncoder

    out.mkdir(parents=True, exist_ok=True)

    encoder = LatentEncoder(cfg.vae, cfg.teacher, cfg.preset, cfg.device, cfg.vae_batch_size)
    cfg_hash = cfg.hash(encoder.id)
    manifest = Manifest(out)
    manifest.cleanup()
    entries = manifest.read()
    needs_faces = cfg.pose != "groundtruth"
    # DWPose weights (or their absence) are a run-level matter: find out before any video
    dwpose = pose.DWPose(cfg.dwpose_weights, encoder.device) if cfg.pose == "dwpose" else None
    with pose.quiet_native_stderr():
        tools = _Tools(cfg, encoder, face.FaceDetector() if needs_faces else None, dwpose)

    progress = (
        Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )  # fmt: skip
        if cfg.progress
        else None
    )
    with progress if progress is not None else nullcontext():
        overall = progress.add_task(f"extract ({len(mine)} videos)", total=len(mine)) if progress else None
        try:
            for name, path in mine:
                decision, entry = _decide(cfg, name, path, out, entries, cfg_hash)
                if decision != "do":
                    if decision == "adopt":
                        manifest.update(entry)  # type: ignore[arg-type]
                    status = "failed-earlier" if decision == "failed-earlier" else "skipped"
                    summary.results.append(
                        VideoResult(name, str(path), status, entry.frames, error=entry.error)  # type: ignore[union-attr]
                    )
                    if progress:
                        progress.advance(overall)
                    continue
                (out / schema.tmp_name(name)).unlink(missing_ok=True)  # a killed run's leftover
                task = progress.add_task(f"  {name}", total=None) if progress else None

                def advance(step: str, k: int, total: int | None = None, _task=task, _name=name) -> None:
                    if progress is not None:
                        progress.update(_task, advance=k, total=total, description=f"  {_name}: {step}")

                summary.results.append(_process(cfg, name, path, out, tools, cfg_hash, manifest, advance))
                if progress:
                    progress.remove_task(task)
                    progress.advance(overall)
        finally:
            if tools.face_detector is not None:
                with pose.quiet_native_stderr():
                    tools.face_detector.close()
    return summary
