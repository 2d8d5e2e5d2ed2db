"""SMPL guidance maps: fit and render frames/s at the sd15 size (512 x 768), CPU (and CUDA when present).

The real SMPL cannot be shipped, so the body is the synthetic SMPL-format humanoid refined to the real
model's size for rendering (``sides=32, rings=9``: 6,965 vertices, 13,824 faces; SMPL: 6,890 / 13,776).
Pass ``--smpl-model DIR`` to time your own SMPL instead. Keypoints come from the model itself (a 2-second
dance at 16 fps), so the fit runs its full schedule on a realistic motion.

    python benchmarks/bench_smpl.py [--frames 32] [--device cpu|cuda] [--smpl-model DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from animlcm.stages.extract.smpl.fit import FitConfig, JointModel, coco_from_smpl, fit_smpl, project
from animlcm.stages.extract.smpl.maps import vertex_colors
from animlcm.stages.extract.smpl.model import load_body_model
from animlcm.stages.extract.smpl.render import render_maps
from animlcm.stages.extract.smpl.synthetic import write_synthetic_smpl

HEIGHT, WIDTH = 768, 512


def dance_keypoints(body, frames: int, device: str) -> np.ndarray:
    """coco18 keypoints of a smooth arm/leg/turn motion, person filling ~80 % of the frame height."""
    t = torch.linspace(0, 2 * np.pi, frames, device=device)
    pose = torch.zeros(frames, 69, device=device)
    pose[:, 47] = -0.9 + 0.5 * torch.sin(t)  # left shoulder
    pose[:, 50] = 0.9 - 0.5 * torch.cos(t)  # right shoulder
    pose[:, 52] = -0.6 * (1 + torch.sin(2 * t)) / 2  # left elbow
    pose[:, 9] = 0.4 * (1 + torch.sin(t)) / 2  # left knee
    orient = torch.stack([torch.zeros_like(t), 0.4 * torch.sin(t), torch.zeros_like(t)], 1)
    joints, lm = JointModel(body)(torch.zeros(1, 10, device=device), pose, orient)
    camera = torch.tensor([[0.8 * HEIGHT / 1.7, WIDTH / 2, HEIGHT / 2]], device=device).expand(frames, -1)
    xy = project(coco_from_smpl(joints, lm), camera)
    return torch.cat([xy, torch.ones(frames, 18, 1, device=device)], -1).cpu().numpy()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: both where available)")
    parser.add_argument("--smpl-model", type=Path, default=None)
    args = parser.parse_args()
    devices = [args.device] if args.device else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.smpl_model or Path(tmp)
        if args.smpl_model is None:
            write_synthetic_smpl(model_dir, sides=32, rings=9)
        print(f"SMPL fit + render at {WIDTH}x{HEIGHT}, {args.frames} frames, torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads")  # fmt: skip
        print(
            "fit: one shared shape + per-frame pose/camera, default FitConfig; render: posing, rasterising"
            " and encoding the 3 maps. frames/s from wall time; CPU s = process time (machine may be shared)."
        )
        print(
            f"{'device':7} {'mesh':>13} {'fit f/s':>8} {'render f/s':>11} {'fit CPU s':>10} "
            f"{'render CPU s':>13}"
        )
        for device in devices:
            body = load_body_model(model_dir, device)
            kp = dance_keypoints(body, args.frames, device)
            colors = vertex_colors(body.parts.cpu().numpy())
            fit_smpl(body, kp[:2], cfg=FitConfig(iters_camera=2, iters_full=2))  # warm-up
            wall, cpu = _clock(device)
            fit = fit_smpl(body, kp)
            t_fit, c_fit = _since(device, wall, cpu)
            render_maps(body, fit.betas, fit.body_pose[:2], fit.global_orient[:2], fit.camera[:2],
                        (HEIGHT, WIDTH), colors)  # fmt: skip
            wall, cpu = _clock(device)
            maps = render_maps(
                body, fit.betas, fit.body_pose, fit.global_orient, fit.camera, (HEIGHT, WIDTH), colors
            )
            t_render, c_render = _since(device, wall, cpu)
            cover = (maps["depth"][..., 0] > 0).mean()
            mesh = f"{body.num_vertices}v/{body.faces.shape[0]}f"
            print(f"{device:7} {mesh:>13} {args.frames / t_fit:8.2f} {args.frames / t_render:11.2f} "
                  f"{c_fit:10.1f} {c_render:13.1f}   (reprojection {np.mean(fit.error_px):.2f} px, "
                  f"person covers {cover:.0%} of the frame)")  # fmt: skip


def _clock(device: str) -> tuple[float, float]:
    _sync(device)
    return time.perf_counter(), time.process_time()


def _since(device: str, wall: float, cpu: float) -> tuple[float, float]:
    _sync(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


if __name__ == "__main__":
    main()
