"""Frames per second of each `animlcm extract` step on this machine (real dance video).

    python benchmarks/bench_extract.py [REAL_DIR] [--frames N]

Pose and face detection run on the source frames (692x1108), so they do not depend on the preset;
resizing into the output frame, skeleton drawing and motion masks are timed at each preset's size;
the VAE at ``tiny`` (sd15 needs a real VAE folder). The VAE runs on CUDA when present.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

DEFAULT_REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
VIDEO = "dance_rgb_692x1108.mp4"


def _timed(fn: Callable[[], object], frames: int) -> tuple[float, float]:
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    return seconds, frames / seconds if seconds > 0 else float("inf")


def bench_extract(real_dir: Path = DEFAULT_REAL, frames: int = 32) -> list[dict]:
    """One row per (step, preset): frames, seconds, frames_per_s, device."""
    from animlcm.config import SIZES
    from animlcm.stages.extract import decode, face, motion, pose, skeleton
    from animlcm.stages.extract.latents import LatentEncoder

    path = Path(real_dir) / VIDEO
    if not path.exists():
        raise SystemExit(f"{path}: sample video not found; pass the folder holding {VIDEO}")
    info = decode.probe(path)
    idx = np.arange(min(frames, info.num_frames))
    n = len(idx)
    rows: list[dict] = []

    def add(step: str, preset: str, seconds: float, fps: float, device: str = "cpu") -> None:
        rows.append(
            dict(
                step=step,
                preset=preset,
                frames=n,
                seconds=round(seconds, 3),
                frames_per_s=round(fps, 1),
                device=device,
            )
        )

    src: list[np.ndarray] = []
    s, f = _timed(lambda: src.extend(decode.read_frames(path, idx, 32)), n)
    add(f"decode {info.width}x{info.height}", "any", s, f)
    src_frames = np.concatenate(src)

    with pose.quiet_native_stderr():
        mp_pose = pose.MediaPipePose()
        mp_pose(src_frames[:2], idx[:2])  # warm-up: graph start
        kp: list[np.ndarray] = []
        s, f = _timed(lambda: kp.append(mp_pose(src_frames, idx)), n)
        mp_pose.close()
        add("pose mediapipe holistic", "any", s, f)
        det = face.FaceDetector()
        det(src_frames[:2])
        s, f = _timed(lambda: det(src_frames), n)
        det.close()
        add("face detect", "any", s, f)
    keypoints = kp[0]

    for preset in ("tiny", "sd15"):
        size = SIZES[preset]
        box = skeleton.person_box(keypoints)
        crop = decode.plan_crop((info.height, info.width), (size.height, size.width), box)
        start = time.perf_counter()
        out = crop.apply_frames(src_frames)
        s = time.perf_counter() - start
        add(f"resize/crop -> {size.height}x{size.width}", preset, s, n / s)
        kp_out = crop.apply_points(keypoints)
        s, f = _timed(
            lambda kp_out=kp_out, size=size: skeleton.draw_skeletons(kp_out, size.height, size.width), n
        )
        add("skeleton drawing", preset, s, f)
        s, f = _timed(lambda out=out, size=size: motion.motion_mask_uint8(out, 0.2, size.latent_hw), n)
        add("motion mask", preset, s, f)
        if preset == "tiny":
            enc = LatentEncoder(None, None, "tiny", "auto", batch_size=32)
            enc.encode(out[:2])
            s, f = _timed(lambda enc=enc, out=out: enc.encode(out), n)
            add("VAE encode (tiny VAE)", preset, s, f, enc.device)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("real_dir", nargs="?", type=Path, default=DEFAULT_REAL)
    parser.add_argument("--frames", type=int, default=32)
    args = parser.parse_args()
    from rich.console import Console
    from rich.table import Table

    rows = bench_extract(args.real_dir, args.frames)
    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    table = Table(title=f"extract steps, {os.cpu_count()} CPU cores, OMP_NUM_THREADS={threads}")
    for col in ("step", "preset", "frames", "seconds", "frames/s", "device"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["step"],
            r["preset"],
            str(r["frames"]),
            f"{r['seconds']:.2f}",
            f"{r['frames_per_s']:.1f}",
            r["device"],
        )
    Console().print(table)


if __name__ == "__main__":
    main()
