"""`make models`: rebuild the built-in tiny VAE, teacher and 4-step student from nothing, with the
project's own commands (synth -> train VAE -> teacher init -> extract -> train-teacher -> distill).

Each step is skipped when its output already exists in ``--work``, so a killed build resumes.
The results are copied to ``--out`` (``src/animlcm/assets/tiny`` by default): ``vae/``, ``teacher/``,
``student/`` and ``build.json`` (the commands, step counts and wall times that made them).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np

# wall-clock caps of a CPU build (minutes); a GPU build passes its own
CPU_MINUTES = {"teacher": 75.0, "teacher-anneal": 6.0, "teacher-temporal": 8.0, "student": 10.0,
               "student-temporal": 5.0}  # fmt: skip
SHIPPED_VAE = Path(__file__).resolve().parents[1] / "assets" / "tiny" / "vae"


def animlcm(*args: str) -> None:
    if args[0] in ("train-teacher", "distill"):
        out = Path(args[args.index("--out") + 1])
        if any((out / "checkpoints").glob("step-*")):  # a killed build: continue its run bit-exactly
            args = (*args, "--resume")
    cmd = [sys.executable, "-m", "animlcm", *args]
    print("$ animlcm " + " ".join(args), flush=True)
    subprocess.run(cmd, check=True)


def animlcm_shards(args: list[str], jobs: int) -> None:
    """``jobs`` processes of one command, each on its ``--shard i/jobs`` (the cache manifest is shared)."""
    if jobs <= 1:
        return animlcm(*args)
    print(f"$ animlcm {' '.join(args)} --shard i/{jobs}  (i = 0..{jobs - 1}, in parallel)", flush=True)
    procs = [
        subprocess.Popen([sys.executable, "-m", "animlcm", *args, "--shard", f"{i}/{jobs}"])
        for i in range(jobs)
    ]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SystemExit(f"extract shards exited with {codes}")


def read_frames(videos: Path) -> np.ndarray:
    frames = []
    for path in sorted(videos.glob("*.mp4")):
        with av.open(str(path)) as container:
            frames += [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return np.stack(frames)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("src/animlcm/assets/tiny"))
    parser.add_argument("--work", type=Path, default=Path("runs/build_models"))
    # many dancers, one clip each: a teacher that sees a few looks learns them by heart instead of learning
    # to copy the reference (benchmarks/README.md, "Teacher generalisation")
    parser.add_argument("--identities", type=int, default=2000)
    parser.add_argument("--clips", type=int, default=1)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--vae-steps", type=int, default=4000)
    parser.add_argument(
        "--vae-from",
        default=str(SHIPPED_VAE),
        help="reuse this VAE folder (default: the shipped GPU-trained one); 'train' fits a new one here",
    )
    # the defaults are the build that ships (2026-12-02, 2-core CPU); the --*-minutes caps keep a CPU
    # rebuild under ~2 hours
    parser.add_argument("--teacher-steps", type=int, default=5000, help="spatial teacher steps")
    parser.add_argument("--teacher-anneal-steps", type=int, default=600, help="spatial steps at a lower lr")
    parser.add_argument("--teacher-anneal-factor", type=float, default=0.125, help="their lr / --teacher-lr")
    parser.add_argument("--teacher-temporal-steps", type=int, default=400)
    parser.add_argument("--student-steps", type=int, default=1500, help="spatial distillation steps")
    parser.add_argument("--student-temporal-steps", type=int, default=350)
    parser.add_argument("--method", default="dancelcm")
    # a tiny network trained from scratch in a few thousand steps needs a larger step than SD fine-tuning
    parser.add_argument("--teacher-lr", type=float, default=3e-4)
    parser.add_argument("--student-lr", type=float, default=1e-4)
    # the teacher's CFG weight w (x0_c + w (x0_c - x0_u)) during distillation: lower than the papers' 2.5,
    # since high guidance amplifies the artifacts of a teacher trained for minutes on a CPU
    parser.add_argument("--student-w", type=float, default=0.5)
    # where a GPU is lent: a wider VAE, larger batches and loader workers (see benchmarks/README.md)
    parser.add_argument("--device", default="auto", help="VAE training device: auto, cpu or cuda")
    parser.add_argument("--vae-channels", default="8,16,32,32", help="the VAE's four block widths")
    parser.add_argument(
        "--teacher-widths", default="64,128", help="the teacher UNets' block widths (32,64: ~4x smaller)"
    )
    parser.add_argument("--teacher-heads", type=int, default=None, help="attention heads (default 1)")
    # face tokens are DanceLCM's student-side addition (the papers' teachers have none), and encoding a
    # 256 px face crop through the VAE every step costs ~3/4 of a tiny teacher's CPU step
    parser.add_argument("--face-tokens", action=argparse.BooleanOptionalAction, default=False,
                        help="face tokens in the teacher and the student")  # fmt: skip
    parser.add_argument("--vae-batch", type=int, default=16)
    parser.add_argument("--vae-crop", type=int, default=64, help="VAE training crop (128: whole frames)")
    parser.add_argument("--teacher-batch", type=int, default=8, help="frames (spatial) / clips (temporal)")
    parser.add_argument("--teacher-temporal-batch", type=int, default=4)
    parser.add_argument("--student-batch", type=int, default=4)
    parser.add_argument("--student-temporal-batch", type=int, default=1)
    parser.add_argument("--extract-jobs", type=int, default=1, help="synth processes and extract shards")
    parser.add_argument("--num-workers", type=int, default=0, help="data-loader workers of train/distill")
    parser.add_argument("--preload", action=argparse.BooleanOptionalAction, default=True,
                        help="train/distill read the cache into memory (~3 GB, 2000 clips)")  # fmt: skip
    # wall-clock budgets (minutes) per training run, for a lent GPU's fixed time: the step count is then
    # whatever fits, up to the --*-steps maximum; the build log records both
    for name in ("vae", "teacher", "teacher-anneal", "teacher-temporal", "student", "student-temporal"):
        parser.add_argument(f"--{name}-minutes", type=float, default=CPU_MINUTES.get(name))
    args = parser.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    import torch

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    machine = torch.cuda.get_device_name() if device.startswith("cuda") else f"cpu ({os.cpu_count()} cores)"
    log: dict[str, object] = {
        "machine": machine,
        "args": {k: str(v) for k, v in vars(args).items()},
        "steps": {},
    }

    def flags(batch: int, minutes: float | None) -> list[str]:
        budget = [] if minutes is None else ["--max-minutes", str(minutes)]
        preload = ["--preload"] if args.preload else []
        return ["--batch-size", str(batch), "--num-workers", str(args.num_workers), *preload, *budget]

    def step(name: str, done: Path, fn) -> None:
        if done.exists():
            print(f"= {name}: {done} exists, skipped", flush=True)
            return
        t0 = time.time()
        fn()
        log["steps"][name] = {"seconds": round(time.time() - t0, 1)}  # type: ignore[index]

    videos, vae_dir, cache = work / "videos", work / "vae", work / "cache"
    teacher_a = work / "teacher_anneal"
    teacher0, teacher_s, teacher_t = (
        work / "teacher_init",
        work / "teacher_spatial",
        work / "teacher_temporal",
    )
    student_s, student_t = work / f"{args.method}_spatial", work / f"{args.method}_temporal"

    step("synth", videos / "synth.json", lambda: animlcm(
        "synth", "--out", str(videos), "--identities", str(args.identities), "--clips", str(args.clips),
        "--frames", str(args.frames), "--size", "128", "--seed", "0",
        "--jobs", str(args.extract_jobs)))  # fmt: skip

    def train_vae() -> None:
        from animlcm.synth.train_vae import train_tiny_vae

        channels = tuple(int(c) for c in args.vae_channels.split(","))
        stats = train_tiny_vae(
            read_frames(videos), vae_dir, steps=args.vae_steps, batch_size=args.vae_batch,
            crop=args.vae_crop, device=device, channels=channels, max_minutes=args.vae_minutes,
        )  # fmt: skip
        log["vae"] = stats
        print(f"tiny VAE: reconstruction PSNR {stats['psnr']:.2f} dB on training frames", flush=True)

    def copy_vae() -> None:
        source = Path(args.vae_from)
        if not (source / "config.json").exists():
            raise SystemExit(f"--vae-from {source}: not a VAE folder (no config.json); pass --vae-from train")
        tmp = vae_dir.with_name(vae_dir.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(source, tmp)
        tmp.rename(vae_dir)
        log["vae"] = {"reused": str(source)}
        print(f"tiny VAE: reused {source}", flush=True)

    # a CPU rebuild must not silently replace the GPU-trained VAE (26.4 dB) with a weaker one (21.2 dB)
    step("train VAE" if args.vae_from == "train" else "reuse VAE", vae_dir / "config.json",
         train_vae if args.vae_from == "train" else copy_vae)  # fmt: skip
    widths = ["--widths", args.teacher_widths] if args.teacher_widths else []
    widths += ["--heads", str(args.teacher_heads)] if args.teacher_heads else []
    face = ["--face-tokens"] if args.face_tokens else ["--no-face-tokens"]
    step("teacher init", teacher0 / "animlcm.json", lambda: animlcm(
        "teacher", "init", "--preset", "tiny", "--vae", str(vae_dir), "--out", str(teacher0),
        *widths, *face))  # fmt: skip
    extract = ["extract", str(videos), "--out", str(cache), "--preset", "tiny", "--pose", "groundtruth",
               "--teacher", str(teacher0)]  # fmt: skip
    step("extract", cache / "manifest.json", lambda: animlcm_shards(extract, args.extract_jobs))
    step("train teacher (spatial)", teacher_s / "teacher" / "animlcm.json", lambda: animlcm(
        "train-teacher", "--cache", str(cache), "--init", str(teacher0), "--out", str(teacher_s),
        "--stage", "spatial", "--max-steps", str(args.teacher_steps),
        "--lr", str(args.teacher_lr), *flags(args.teacher_batch, args.teacher_minutes)))  # fmt: skip
    # a short spatial run at a lower learning rate: the constant-lr weights jitter around their optimum
    # (+0.4 dB held-out for 500 steps at lr/8, benchmarks/README.md "Teacher generalisation")
    spatial = teacher_s / "teacher"
    if args.teacher_anneal_steps > 0:
        step("anneal teacher (spatial)", teacher_a / "teacher" / "animlcm.json", lambda: animlcm(
            "train-teacher", "--cache", str(cache), "--init", str(teacher_s / "teacher"),
            "--out", str(teacher_a),
            "--stage", "spatial", "--max-steps", str(args.teacher_anneal_steps),
            "--lr", str(args.teacher_lr * args.teacher_anneal_factor),
            *flags(args.teacher_batch, args.teacher_anneal_minutes)))  # fmt: skip
        spatial = teacher_a / "teacher"
    step("train teacher (temporal)", teacher_t / "teacher" / "animlcm.json", lambda: animlcm(
        "train-teacher", "--cache", str(cache), "--init", str(spatial), "--out", str(teacher_t),
        "--stage", "temporal", "--max-steps", str(args.teacher_temporal_steps),
        "--lr", str(args.teacher_lr),
        *flags(args.teacher_temporal_batch, args.teacher_temporal_minutes)))  # fmt: skip
    teacher = teacher_t / "teacher"
    step("distill (spatial)", student_s / "student", lambda: animlcm(
        "distill", "--cache", str(cache), "--teacher", str(teacher), "--method", args.method,
        "--stage", "spatial", "--out", str(student_s), "--max-steps", str(args.student_steps),
        "--lr", str(args.student_lr), "--w", str(args.student_w), *face,
        *flags(args.student_batch, args.student_minutes)))  # fmt: skip
    step("distill (temporal)", student_t / "student", lambda: animlcm(
        "distill", "--cache", str(cache), "--teacher", str(teacher), "--method", args.method,
        "--stage", "temporal", "--init", str(student_s), "--out", str(student_t),
        "--max-steps", str(args.student_temporal_steps),
        "--lr", str(args.student_lr), "--w", str(args.student_w), *face,
        *flags(args.student_temporal_batch, args.student_temporal_minutes)))  # fmt: skip

    # the steps each run really made (a --*-minutes budget may end it before its --*-steps)
    runs = {"teacher_spatial": teacher_s, "teacher_temporal": teacher_t}
    if args.teacher_anneal_steps > 0:
        runs["teacher_anneal"] = teacher_a
    runs |= {"student_spatial": student_s, "student_temporal": student_t}
    log["runs"] = {name: _run_summary(run) for name, run in runs.items()}

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    _ship(vae_dir, teacher, student_t / "student", out)
    previous = out / "build.json"
    if previous.exists():  # a resumed build keeps the timings of the steps done before
        log["steps"] = {**json.loads(previous.read_text()).get("steps", {}), **log["steps"]}  # type: ignore[dict-item]
    (out / "build.json").write_text(json.dumps(log, indent=2))
    print(f"built-in models written to {out}", flush=True)
    return 0


def _ship(vae_dir: Path, teacher: Path, student: Path, out: Path) -> None:
    """Write the built-in models into ``out`` as they ship: float16 networks (the VAE keeps float32), the
    student linking the parts it shares with the teacher beside it by relative path only (the build folder
    does not ship), both checked to load back to what was trained (``animlcm convert``)."""
    from animlcm.models.convert import convert_folder

    staged = out / "models.tmp"
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir(parents=True)
    shutil.copytree(vae_dir, staged / "vae")
    convert_folder(teacher, staged / "teacher", dtype="float16", absolute_links=False)
    convert_folder(
        student, staged / "student", teacher=staged / "teacher", dtype="float16", absolute_links=False
    )
    meta_file = staged / "student" / "animlcm.json"
    data = json.loads(meta_file.read_text())
    data["meta"].pop("spatial_run", None)  # a build-folder run that does not ship
    data["meta"].pop("spatial_run_absolute", None)
    meta_file.write_text(json.dumps(data, indent=1))
    for name in ("vae", "teacher", "student"):
        shutil.rmtree(out / name, ignore_errors=True)
        (staged / name).rename(out / name)
    staged.rmdir()


def _run_summary(run: Path) -> dict[str, float]:
    """Steps made, median seconds per step and the last loss, from a run's log.jsonl."""
    lines = (run / "log.jsonl").read_text().splitlines()
    rows = [json.loads(x) for x in lines if x.strip()]
    if not rows:
        return {"steps": 0}
    secs = sorted(r["sec"] for r in rows[1:] or rows)
    return {"steps": rows[-1]["step"], "s_per_step": secs[len(secs) // 2], "last_loss": rows[-1]["loss"]}


if __name__ == "__main__":
    sys.exit(main())
