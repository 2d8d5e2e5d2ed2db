"""Render speed: teacher (DDIM, 25 steps + CFG) vs student (4 consistency steps), 16 frames, one run.

Prints seconds per frame, the end-to-end and denoising-loop speed-ups, the share of time in each part
(reference net + CLIP conditioning, denoising loop, VAE decode), peak memory, and FLOPs counted with
``torch.utils.flop_counter.FlopCounterMode`` on one call of each part (-> achieved TFLOP/s).

    python benchmarks/bench_render.py                          # tiny, CPU (what `make bench` runs)
    python benchmarks/bench_render.py --preset sd15 --random   # 768x512, random weights, bf16 on a GPU

FLOPs: the uncond CFG call is counted as a full call (it skips only the reference K/V, a few percent);
SDPA kernels are counted on CUDA (flash/efficient/cudnn); the CPU SDPA kernel is not, so CPU FLOPs are a
little low.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np
import torch

from animlcm.config import SIZES
from animlcm.stages.render.model import load_render_model
from animlcm.stages.render.pipeline import (
    SamplerSettings,
    clip_tensor,
    encode_reference,
    pose_maps,
    render_clip,
    resolve_device,
)
from animlcm.stages.render.run import builtin_dance

REAL_REF = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "ref_person_1.png"


def count_flops(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc, torch.no_grad():
        fn()
    return float(fc.get_total_flops())


def reference_image(height: int, width: int) -> np.ndarray:
    from animlcm.stages.render import sources, videoio

    if REAL_REF.exists():
        return sources.fit_frames(videoio.read_image(REAL_REF)[None], height, width)[0]
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (height, width, 3), dtype=np.uint8)


def peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # CPU: process peak RSS (Linux KiB)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny", choices=("tiny", "sd15"))
    p.add_argument("--random", action="store_true", help="random weights (always at tiny without --model)")
    p.add_argument("--model", type=Path, default=None, help="a model folder instead of random weights")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--student-steps", type=int, default=4)
    p.add_argument("--teacher-steps", type=int, default=25)
    p.add_argument("--cfg", type=float, default=3.5)
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--repeats", type=int, default=1, help="timed runs per sampler (the fastest is kept)")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = p.parse_args()

    size = SIZES[args.preset]
    h, w, f = size.height, size.width, args.frames
    device, dtype = resolve_device(args.device, args.dtype)
    model = load_render_model(
        args.model, preset=args.preset, random=args.model is None, device=device, dtype=dtype
    )
    ref = reference_image(h, w)
    skeleton = builtin_dance(h, w, f).skeleton

    # FLOPs of one call of each part
    cond = encode_reference(model, ref)
    x = torch.randn(1, 4, f, h // 8, w // 8, device=device, dtype=dtype)
    t = torch.full((1,), 999, dtype=torch.long, device=device)
    pose = pose_maps(model.net, clip_tensor(skeleton, device, dtype))
    flops = {
        "conditioning": count_flops(lambda: encode_reference(model, ref)),
        "call": count_flops(lambda: model.net(x, t, pose, cond)),
        "decode": count_flops(
            lambda: model.vae.decode(torch.zeros(1, 4, h // 8, w // 8, device=device, dtype=dtype))
        )
        * f,
    }

    results = {}
    for name, settings in (
        ("student", SamplerSettings(steps=args.student_steps, window=f, overlap=0)),
        (
            "teacher",
            SamplerSettings(steps=args.teacher_steps, teacher=True, cfg=args.cfg, window=f, overlap=0),
        ),
    ):
        warm = SamplerSettings(steps=model.min_steps(settings), teacher=settings.teacher)
        render_clip(model, ref, skeleton[: min(f, 4)], warm)  # warm-up
        best = None
        for _ in range(args.repeats):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            out = render_clip(model, ref, skeleton, settings)
            total = sum(out.timings.values())
            if best is None or total < best[0]:
                best = (total, out, peak_mb(device))
        total, out, peak = best
        work = flops["conditioning"] + out.calls * flops["call"] + flops["decode"]
        results[name] = {
            "steps": settings.steps,
            "calls": out.calls,
            "seconds": total,
            "seconds_per_frame": total / f,
            "timings": out.timings,
            "share": {k: v / total for k, v in out.timings.items()},
            "tflop": work / 1e12,
            "tflops_per_s": work / total / 1e12,
            "denoise_tflops_per_s": out.calls * flops["call"] / out.timings["denoising"] / 1e12,
            "peak_memory_mb": peak,
        }

    s, te = results["student"], results["teacher"]
    summary = {
        "preset": args.preset,
        "size_hw": [h, w],
        "frames": f,
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU ({platform.machine()})",
        "dtype": str(dtype).replace("torch.", ""),
        "torch": torch.__version__,
        "flops_per_part_tflop": {k: v / 1e12 for k, v in flops.items()},
        "speedup_end_to_end": te["seconds"] / s["seconds"],
        "speedup_denoising": te["timings"]["denoising"] / s["timings"]["denoising"],
        "results": results,
    }
    print(
        f"render benchmark: {args.preset} {h}x{w} (HxW), {f} frames, {summary['device']}, {summary['dtype']}"
    )
    print(
        f"FLOPs: conditioning {flops['conditioning'] / 1e12:.4f} T, "
        f"one UNet call {flops['call'] / 1e12:.4f} T "
        f"({flops['call'] / f / 1e12:.4f} T/frame), VAE decode {flops['decode'] / 1e12:.4f} T "
        f"({flops['decode'] / f / 1e12:.4f} T/frame)"
    )
    head = f"{'':8} {'steps':>5} {'calls':>5} {'s/frame':>9} {'cond %':>7} {'loop %':>7} {'decode %':>8} "
    print(head + f"{'TFLOP':>8} {'TFLOP/s':>8} {'peak MB':>8}")
    for name, r in results.items():
        sh = r["share"]
        print(
            f"{name:8} {r['steps']:5d} {r['calls']:5d} {r['seconds_per_frame']:9.4f} "
            f"{100 * sh['conditioning']:6.1f}% {100 * sh['denoising']:6.1f}% {100 * sh['decode']:7.1f}% "
            f"{r['tflop']:8.2f} {r['tflops_per_s']:8.2f} "
            f"{r['peak_memory_mb']:8.0f}"
        )
    print(
        f"speed-up teacher/student: end to end {summary['speedup_end_to_end']:.2f}x, "
        f"denoising loop {summary['speedup_denoising']:.2f}x"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
