"""Generating a synthetic dancer set: mp4 clips with their exact poses, and ``synth.json``.

For identity ``i`` and clip ``c`` of a set (seed ``S``, split ``P``)::

    idNNN_clipMM.mp4        H.264 yuv420p, crf ~14 (textures survive), ``frames`` frames at ``fps``
    idNNN_clipMM.pose.npz   keypoints float32 (F, 18, 3) coco18, x/y in pixels, visibility 1/0;
                            face_box float32 (F, 4) x0 y0 x1 y1 pixels; identity int; fps float;
                            layout "coco18"; seed, split, clip
    idNNN_clipMM.parts.npz  labels uint8 (F, H, W) body-part label maps; names (``layout.PART_NAMES``)
    synth.json              the set: seed, split, sizes, fps, identities, clips, and the list of videos
    refs/idNNN.png          (optional) the identity in a neutral pose, for ``animlcm render``

NNN has 3 digits, more when a set has over 1000 identities (so names sort in order); MM likewise for clips.
The look depends on (S, P, i), the motion and background on (S, P, i, c); every file is written to a
``.tmp`` name and renamed when complete.
"""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from fractions import Fraction
from functools import partial
from pathlib import Path

import cv2
import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from animlcm.errors import AnimlcmError
from animlcm.synth import layout
from animlcm.synth.background import make_background
from animlcm.synth.config import SynthConfig
from animlcm.synth.draw import draw_layers, reference_image
from animlcm.synth.identity import Identity, identity_for
from animlcm.synth.motion import DanceMotion, dance
from animlcm.synth.parts import parts_path, write_parts
from animlcm.synth.seeds import generator, seed_sequence, split_code

SYNTH_JSON = "synth.json"
FORMAT_VERSION = 1


def index_digits(count: int, minimum: int) -> int:
    """Digits that number ``count`` items from 0 so that names sort in order: at least ``minimum`` (the
    names earlier sets had, so their caches stay valid), more only when ``count - 1`` needs them."""
    return max(minimum, len(str(max(count - 1, 0))))


def identity_name(identity: int, identities: int = 0) -> str:
    """``idNNN`` for identity ``identity`` of a set of ``identities`` (3 digits up to 1000 identities)."""
    return f"id{identity:0{index_digits(identities, 3)}d}"


def clip_name(identity: int, clip: int, identities: int = 0, clips: int = 0) -> str:
    return f"{identity_name(identity, identities)}_clip{clip:0{index_digits(clips, 2)}d}"


def pose_path(video: Path) -> Path:
    """``X.mp4`` -> ``X.pose.npz`` (the ground-truth pose file beside a synthetic clip)."""
    return video.with_name(video.stem + ".pose.npz")


@dataclass(frozen=True)
class Clip:
    """One rendered clip in memory: uint8 frames (F, H, W, 3), their body-part labels uint8 (F, H, W)
    (``layout.PART_NAMES``) and the motion that made them."""

    identity: Identity
    motion: DanceMotion
    frames: np.ndarray
    labels: np.ndarray

    @property
    def face_box(self) -> np.ndarray:
        return face_boxes(self.motion, self.frames.shape[1:3])


def face_boxes(motion: DanceMotion, size: tuple[int, int]) -> np.ndarray:
    """A square box (F, 4) x0 y0 x1 y1 around each frame's head (hair included), clipped to the frame."""
    h, w = size
    cx, cy, r = motion.head[:, 0], motion.head[:, 1], motion.head[:, 2] * 1.25
    box = np.stack([cx - r, cy - r, cx + r, cy + r], -1)
    box[:, [0, 2]] = np.clip(box[:, [0, 2]], 0, w - 1)
    box[:, [1, 3]] = np.clip(box[:, [1, 3]], 0, h - 1)
    return box.astype(np.float32)


def clip_background(
    seed: int,
    split: str,
    identity: int,
    clip: int,
    ident: Identity,
    motion: DanceMotion,
    size: tuple[int, int],
) -> np.ndarray:
    """The static background of a clip, float32 (H, W, 3), with its floor where the dancer stands."""
    # the floor: where the lower foot usually is (ankles plus the shoe's height)
    ankles = motion.keypoints[:, [layout.L_ANKLE, layout.R_ANKLE], 1].max(axis=1)
    floor_y = float(np.median(ankles) + ident.body.leg_r * float(np.median(motion.unit)))
    return make_background(generator(seed, split, "background", identity, clip), size, floor_y)


def render_clip(
    seed: int, split: str, identity: int, clip: int, frames: int, size: tuple[int, int], fps: float = 16.0
) -> Clip:
    """Render clip ``clip`` of identity ``identity`` in memory (deterministic)."""
    ident = identity_for(seed, identity, split)
    motion = dance(seed_sequence(seed, split, "motion", identity, clip), frames, size, fps, ident.body)
    background = clip_background(seed, split, identity, clip, ident, motion, size)
    drawn = [draw_layers(ident, motion.frame(f), background) for f in range(frames)]
    return Clip(
        identity=ident,
        motion=motion,
        frames=np.stack([d.frame for d in drawn]),
        labels=np.stack([d.labels for d in drawn]),
    )


def write_mp4(path: Path, frames: np.ndarray, fps: float, crf: int = 14) -> None:
    """uint8 RGB frames (F, H, W, 3) -> H.264 yuv420p mp4 via PyAV, written to ``path.tmp`` then renamed."""
    import av

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    _, h, w, _ = frames.shape
    try:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            stream.options = {"crf": str(crf), "preset": "medium"}
            for frame in frames:
                container.mux(
                    stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24"))
                )
            container.mux(stream.encode(None))
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(path)


def write_pose(
    path: Path, keypoints: np.ndarray, face_box: np.ndarray, identity: int, fps: float, **extra: object
) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:  # a file object keeps numpy from appending ".npz" to the tmp name
        np.savez(
            f,
            keypoints=keypoints.astype(np.float32),
            face_box=face_box.astype(np.float32),
            identity=np.int64(identity),
            fps=np.float64(fps),
            layout=np.str_(layout.LAYOUT),
            **{k: np.asarray(v) for k, v in extra.items()},
        )
    tmp.replace(path)


@dataclass(frozen=True)
class PoseFile:
    keypoints: np.ndarray  # (F, 18, 3) float32
    face_box: np.ndarray  # (F, 4) float32
    identity: int
    fps: float


def load_pose(path: Path) -> PoseFile:
    """Read a ``.pose.npz`` written by ``animlcm synth`` (clear error when it is not one)."""
    path = Path(path)
    if not path.exists():
        raise AnimlcmError(
            f"{path}: pose file not found; ground-truth poses exist only for clips made by `animlcm synth`"
        )
    try:
        with np.load(path, allow_pickle=False) as z:
            kp, box = z["keypoints"], z["face_box"]
            ident, fps = int(z["identity"]), float(z["fps"])
    except (KeyError, ValueError, OSError) as exc:
        raise AnimlcmError(
            f"{path}: not a synth pose file ({exc}); regenerate it with `animlcm synth`"
        ) from None
    if kp.ndim != 3 or kp.shape[1:] != (layout.NUM_KEYPOINTS, 3) or box.shape != (len(kp), 4):
        raise AnimlcmError(
            f"{path}: keypoints {kp.shape} / face_box {box.shape} are not (F, 18, 3) / (F, 4); "
            "regenerate it with `animlcm synth`"
        )
    return PoseFile(keypoints=kp.astype(np.float32), face_box=box.astype(np.float32), identity=ident, fps=fps)


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def _previous_files(out_dir: Path) -> set[str]:
    """Clip, pose and part-label file names listed by an earlier ``synth.json`` in ``out_dir`` (empty if
    none; sets written before label maps existed list no ``parts``)."""
    try:
        meta = json.loads((out_dir / SYNTH_JSON).read_text())
        return {Path(e[k]).name for e in meta["videos"] for k in ("video", "pose", "parts") if k in e}
    except (OSError, ValueError, KeyError, TypeError):
        return set()


def _write_identity(
    out_dir: Path,
    seed: int,
    split: str,
    identities: int,
    clips: int,
    frames: int,
    size: tuple[int, int],
    fps: float,
    crf: int,
    refs: bool,
    i: int,
) -> list[dict]:
    """Write identity ``i``'s reference (optional) and clips; return their synth.json entries."""
    if refs:
        (out_dir / "refs").mkdir(exist_ok=True)
        ref = reference_image(identity_for(seed, i, split), size)
        ref_name = identity_name(i, identities)
        tmp = out_dir / "refs" / f"{ref_name}.tmp.png"
        cv2.imwrite(str(tmp), cv2.cvtColor(ref, cv2.COLOR_RGB2BGR))
        tmp.replace(out_dir / "refs" / f"{ref_name}.png")
    entries = []
    for c in range(clips):
        clip = render_clip(seed, split, i, c, frames, size, fps)
        name = clip_name(i, c, identities, clips)
        video = out_dir / f"{name}.mp4"
        # pose and labels first: a video present without them would look complete to extract
        write_parts(parts_path(video), clip.labels)
        write_pose(
            pose_path(video), clip.motion.keypoints, clip.face_box, i, fps, seed=seed, split=split, clip=c
        )
        write_mp4(video, clip.frames, fps, crf)
        entries.append(
            {"name": name, "video": video.name, "pose": pose_path(video).name,
             "parts": parts_path(video).name, "identity": i, "clip": c, "frames": frames}
        )  # fmt: skip
    return entries


def generate(
    out_dir: Path,
    identities: int,
    clips: int,
    frames: int,
    size: int | tuple[int, int] = 128,
    seed: int = 0,
    split: str = "train",
    fps: float = 16.0,
    *,
    crf: int = 14,
    refs: bool = False,
    progress: bool = True,
    jobs: int = 1,
) -> list[Path]:
    """Write ``identities x clips`` clips, their pose files and ``synth.json``; return the mp4 paths.

    ``size`` is an int (square) or (height, width); ``jobs`` processes render identities in parallel (the
    clips are the same with any number).
    """
    split_code(split)  # fails early on an unknown split
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stale = _previous_files(out_dir)
    videos: list[Path] = []
    entries = []
    columns = (
        TextColumn("[bold]synth[/] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with ExitStack() as stack, Progress(*columns, disable=not progress) as bar:
        task = bar.add_task(f"{split} {h}x{w}", total=identities * clips)
        job = partial(
            _write_identity, out_dir, seed, split, identities, clips, frames, (h, w), fps, crf, refs
        )
        if jobs <= 1:
            done = map(job, range(identities))
        else:  # identities are independent: render and encode them in parallel, gather them in order
            pool = ProcessPoolExecutor(max_workers=jobs)
            stack.callback(pool.shutdown, cancel_futures=True)
            done = pool.map(job, range(identities), chunksize=8)
        for written in done:
            for entry in written:
                videos.append(out_dir / entry["video"])
                entries.append(entry)
                bar.advance(task)
    # clips of an earlier set in this folder that this set did not overwrite would silently join it
    # (e.g. train clips in a heldout folder): remove exactly the files the earlier synth.json listed
    written = {p.name for v in videos for p in (v, pose_path(v), parts_path(v))}
    for name in sorted(stale - written):
        (out_dir / name).unlink(missing_ok=True)
    _write_json(
        out_dir / SYNTH_JSON,
        {
            "format": "animlcm-synth",
            "version": FORMAT_VERSION,
            "seed": seed,
            "split": split,
            "identities": identities,
            "clips": clips,
            "frames": frames,
            "height": h,
            "width": w,
            "fps": fps,
            "crf": crf,
            "layout": layout.LAYOUT,
            "part_names": list(layout.PART_NAMES),
            "videos": entries,
        },
    )
    return videos


def run(cfg: SynthConfig, progress: bool = True) -> list[Path]:
    """The ``animlcm synth`` stage."""
    cfg.validate()
    return generate(
        cfg.out,
        cfg.identities,
        cfg.clips,
        cfg.frames,
        (cfg.height, cfg.width),
        cfg.seed,
        cfg.split,
        cfg.fps,
        crf=cfg.crf,
        refs=cfg.refs,
        progress=progress,
        jobs=cfg.jobs,
    )
