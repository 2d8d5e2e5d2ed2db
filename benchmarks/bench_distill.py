"""Seconds per distillation step and peak memory, per method and stage.

    python benchmarks/bench_distill.py                      # tiny, CPU (or the GPU if there is one)
    python benchmarks/bench_distill.py --preset sd15 --random --frames 16 --methods dancelcm
                                                            # real size, random weights: for a GPU

Each (method, stage) runs in a fresh subprocess so that its peak memory is its own: the process's peak
RSS on CPU (``ru_maxrss``), ``torch.cuda.max_memory_allocated`` on a GPU, next to what the memory planner
(``distill --dry-run``) estimated for the same run. The data is a synthetic cache of
the preset's size written through the cache writer (content does not change the cost of a step), and the
teacher is ``animlcm teacher init`` of the preset (``--random`` at sd15: the real architecture, random
weights). Seconds per step are the median of the logged step times after the first (warm-up) step.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

METHODS = ("lcm", "dancelcm", "cosec", "animatelcm")


def write_cache(root: Path, height: int, width: int, frames: int, videos: int = 2) -> Path:
    """A synthetic cache of the right geometry (random frames, latents, masks)."""
    import numpy as np

    from animlcm.cache import Manifest, ManifestEntry, VideoWriter, schema

    if (root / "manifest.json").exists():
        return root
    rng = np.random.default_rng(0)
    h, w = height // 8, width // 8
    for v in range(videos):
        name = f"bench{v}"
        with VideoWriter(root, name) as wr:
            wr.write(schema.FRAMES, rng.integers(0, 255, (frames, height, width, 3), dtype=np.uint8))
            wr.write(schema.KEYPOINTS, rng.random((frames, 18, 3), dtype=np.float32))
            wr.write(schema.SKELETON, rng.integers(0, 255, (frames, height, width, 3), dtype=np.uint8))
            wr.write(schema.POSE_FOUND, np.ones(frames, bool))
            wr.write(schema.FACE_CROP, rng.integers(0, 255, (frames, 256, 256, 3), dtype=np.uint8))
            wr.write(schema.FACE_BOX, np.zeros((frames, 4), np.float32))
            wr.write(schema.FACE_FOUND, np.ones(frames, bool))
            wr.write(schema.LATENTS, rng.standard_normal((frames, 4, h, w)).astype(np.float16))
            wr.write(schema.MOTION_MASK, rng.random((frames, h, w)) > 0.8, {"delta": 0.2})
            wr.write(schema.SOURCE_INDEX, np.arange(frames))
            wr.set_attrs(fps=8.0, num_frames=frames, height=height, width=width, name=name)
            wr.commit()
        Manifest(root).update(ManifestEntry(name=name, status="ok", source=name, frames=frames, fps=8.0))
    return root


def one(args: argparse.Namespace) -> dict:
    """Run one (method, stage) in this process and report its numbers (called in a subprocess)."""
    import resource

    import torch

    from animlcm.config import resolve_config
    from animlcm.stages.distill.config import DistillConfig
    from animlcm.stages.distill.memory import GB, plan_distill
    from animlcm.stages.distill.trainer import run

    overrides = dict(
        cache=args.cache, teacher=args.teacher, out=args.out, method=args.method, stage=args.stage,
        max_steps=args.steps, num_frames=args.frames, checkpoint_every=10**9, progress=False,
        mixed_precision=args.mixed_precision, gradient_checkpointing=args.gradient_checkpointing or None,
        batched_cfg=args.batched_cfg or None,
    )  # fmt: skip
    cfg = resolve_config(DistillConfig, args.preset, None, overrides)
    planned = plan_distill(cfg).total / GB  # the --dry-run estimate, next to what the GPU measures
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    result = run(cfg)
    total = time.perf_counter() - t0
    secs = [json.loads(x)["sec"] for x in (Path(args.out) / "log.jsonl").read_text().splitlines()]
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "method": args.method,
        "stage": args.stage,
        "preset": args.preset,
        "frames": 1 if args.stage == "spatial" else args.frames,
        "steps": result.steps,
        "sec_per_step": statistics.median(secs[1:] or secs),
        "first_step_sec": secs[0],
        "total_sec": round(total, 2),
        "peak_rss_gb": round(rss_kb / 2**20, 3),
        "peak_cuda_gb": round(torch.cuda.max_memory_allocated() / 2**30, 3) if cuda else None,
        "planned_gb": round(planned, 3),
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "mixed_precision": args.mixed_precision,
        "gradient_checkpointing": bool(args.gradient_checkpointing),
        "batched_cfg": bool(args.batched_cfg),
        "last_terms": result.last_terms,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny", choices=("tiny", "sd15"))
    p.add_argument("--random", action="store_true", help="sd15: random weights (no downloads)")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--stages", default="spatial,temporal")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--frames", type=int, default=None, help="clip length (default: the preset's)")
    p.add_argument("--mixed-precision", default=None, help="no | fp16 | bf16 (default: the preset's)")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--batched-cfg", action="store_true", help="the teacher's CFG branches in one call")
    p.add_argument(
        "--work", type=Path, default=Path("bench_work"), help="scratch folder (cache, teacher, runs)"
    )
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/distill.json"))
    # internal: one measurement in a subprocess
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--method", help=argparse.SUPPRESS)
    p.add_argument("--stage", help=argparse.SUPPRESS)
    p.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--teacher", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--run-out", dest="run_out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        args.out = args.run_out
        print("RESULT " + json.dumps(one(args)))
        return

    from animlcm.config import SIZES
    from animlcm.models.teacher import TeacherInitConfig, init_teacher

    size = SIZES[args.preset]
    frames = args.frames or size.num_frames
    if args.preset == "sd15" and not args.random:
        sys.exit("--preset sd15 needs --random here (no real weights to download)")
    work = args.work / args.preset
    cache = write_cache(work / "cache", size.height, size.width, frames + 2)
    teacher = work / "teacher"
    if not (teacher / "animlcm.json").exists():
        init_teacher(TeacherInitConfig(preset=args.preset, random=args.random, out=teacher))
    rows = []
    for method in args.methods.split(","):
        for stage in args.stages.split(","):
            run_dir = work / f"run_{method}_{stage}"
            shutil.rmtree(run_dir, ignore_errors=True)
            cmd = [
                sys.executable,
                __file__,
                "--one",
                "--preset",
                args.preset,
                "--method",
                method,
                "--stage",
                stage,
                "--cache",
                str(cache),
                "--teacher",
                str(teacher),
                "--run-out",
                str(run_dir),
                "--steps",
                str(args.steps),
                "--frames",
                str(frames),
            ]
            if args.mixed_precision:
                cmd += ["--mixed-precision", args.mixed_precision]
            if args.gradient_checkpointing:
                cmd += ["--gradient-checkpointing"]
            if args.batched_cfg:
                cmd += ["--batched-cfg"]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            if proc.returncode != 0 or not line:
                row = {
                    "method": method,
                    "stage": stage,
                    "error": (proc.stderr.strip().splitlines() or ["?"])[-1],
                }
            else:
                row = json.loads(line[0][len("RESULT ") :])
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "last_terms"}), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    previous[f"{args.preset}{'-random' if args.random else ''}"] = rows
    args.out.write_text(json.dumps(previous, indent=1) + "\n")
    print("| method | stage | frames | s/step | peak RSS GB | peak CUDA GB | planned GB | device |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['method']} | {r['stage']} | error: {r['error']} | | | | | |")
        else:
            cells = [r["method"], r["stage"], r["frames"], f"{r['sec_per_step']:.3f}", r["peak_rss_gb"],
                     r["peak_cuda_gb"], r["planned_gb"], r["device"]]  # fmt: skip
            print("| " + " | ".join(str(c) for c in cells) + " |")


if __name__ == "__main__":
    main()
