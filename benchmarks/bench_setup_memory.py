"""The weights a distillation run holds once teacher, student and EMA target are built (``build_networks``,
the run's own setup), per method and stage: the bytes of distinct tensors, and the process's peak RSS.

    python benchmarks/bench_setup_memory.py                                 # tiny (seconds)
    python benchmarks/bench_setup_memory.py --preset sd15 --teacher /tmp/t  # real size: an sd15 teacher
                                            # (animlcm teacher init --preset sd15 --random --out /tmp/t)

Each (method, stage) is built in a fresh subprocess on the CPU, so its peak is its own; the networks stay in
fp32 there (the bf16 teacher copy of a GPU run is not made on a CPU). "held" counts every distinct parameter
tensor of student, target and teacher once: what the host holds, and what the device would.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

RUNS = (("animatelcm", "spatial"), ("animatelcm", "temporal"), ("lcm", "spatial"), ("lcm", "temporal"))


def one(preset: str, teacher: Path, method: str, stage: str) -> dict:
    """Build the run's networks in this process and report (called in a subprocess)."""
    import resource

    import torch

    from animlcm.stages.distill.config import DistillConfig
    from animlcm.stages.distill.trainer import build_networks

    cfg = dataclasses.replace(DistillConfig.from_preset(preset), method=method, stage=stage, teacher=teacher)
    nets = build_networks(cfg.with_method_defaults(), torch.device("cpu"))
    modules = [nets.student, nets.target, nets.teacher]
    held = {id(p): p for m in modules if m is not None for p in m.parameters()}
    student = {id(p) for p in nets.student.parameters()}
    return {
        "method": method,
        "stage": stage,
        "preset": preset,
        "held_gb": round(sum(p.nbytes for p in held.values()) / 2**30, 3),
        "student_gb": round(sum(p.nbytes for p in nets.student.parameters()) / 2**30, 3),
        "beyond_student_gb": round(sum(p.nbytes for k, p in held.items() if k not in student) / 2**30, 3),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny", choices=("tiny", "sd15"))
    p.add_argument("--teacher", type=Path, default=None, help="teacher folder (default: a tiny one, made)")
    p.add_argument("--work", type=Path, default=Path("/tmp/bench_setup_memory"))
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--one", nargs=2, metavar=("METHOD", "STAGE"), help=argparse.SUPPRESS)
    args = p.parse_args()

    teacher = args.teacher
    if args.one:
        print(json.dumps(one(args.preset, teacher, *args.one)))
        return
    if teacher is None:
        if args.preset != "tiny":
            p.error("--preset sd15 needs --teacher (animlcm teacher init --preset sd15 --random --out DIR)")
        from animlcm.models.teacher import TeacherInitConfig, init_teacher

        teacher = init_teacher(TeacherInitConfig(out=args.work / "teacher", face_tokens=False))
    rows = []
    for method, stage in RUNS:
        cmd = [sys.executable, __file__, "--preset", args.preset, "--teacher", str(teacher),
               "--one", method, stage]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:  # an OOM kill or a failure: reported, the others still run
            rows.append({"method": method, "stage": stage, "error": done.stderr.strip().splitlines()[-1:]})
            continue
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print("| method | stage | weights held GB | student GB | beyond the student GB | peak RSS GB |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['method']} | {r['stage']} | failed: {r['error']} | | | |")
        else:
            print(f"| {r['method']} | {r['stage']} | {r['held_gb']} | {r['student_gb']} | "
                  f"{r['beyond_student_gb']} | {r['peak_rss_gb']} |")  # fmt: skip
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
