"""Learning curves of candidate teachers: held-out quality against samples seen.

Each candidate is a fresh tiny teacher (``animlcm teacher init`` with its architecture flags) trained by
``animlcm train-teacher --stage spatial`` in segments; after each segment the teacher renders every eval
cache (its first frame the reference, its own poses driving, DDIM at ``--eval-steps`` with CFG) and the
rows land in ``curves.jsonl``. A killed run resumes: finished (candidate, step, split) rows are skipped and
the training run continues from its checkpoint. ``curves.png`` plots PSNR and the part-colour error against
samples seen, one colour per candidate, held-out splits solid and training dancers dashed.

    python benchmarks/teacher_curves.py --cache TRAIN_CACHE --eval heldout0=CACHE --eval heldout1=CACHE \\
        --eval train=CACHE --candidate w32 --steps 500,1000,2000 --out runs/curves
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

# name -> (teacher init flags, train-teacher flags); every candidate trains at batch 8 unless it says
CANDIDATES: dict[str, tuple[list[str], list[str]]] = {
    "w32": (["--widths", "32,64"], ["--lr", "4e-4"]),
    "w32-lr2e-4": (["--widths", "32,64"], ["--lr", "2e-4"]),
    "w32-b16": (["--widths", "32,64"], ["--lr", "4e-4", "--batch-size", "16"]),
    "w48": (["--widths", "48,96"], ["--lr", "4e-4"]),
    "w64": (["--widths", "64,128"], ["--lr", "3e-4"]),
    "w32-heads4": (["--widths", "32,64", "--heads", "4"], ["--lr", "4e-4"]),
    "w32-face": (["--widths", "32,64", "--face-tokens"], ["--lr", "4e-4"]),
}
BATCH = 8


def animlcm(*args: str, threads: int) -> None:
    env_cmd = [sys.executable, "-m", "animlcm", *args]
    print("$ animlcm " + " ".join(args), flush=True)
    import os

    subprocess.run(env_cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})


def done_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def evaluate_model(
    folder: Path, cache: Path, args: argparse.Namespace, steps: int | None = None, seed: int = 0
) -> dict:
    """One eval row of a teacher (DDIM + CFG) or student (its consistency sampler) on one cache: the
    ``animlcm eval`` code path, every clip's first frame the reference and its own poses driving."""
    import torch

    from animlcm.stages.evaluate.run import evaluate, load_clips
    from animlcm.stages.render.model import load_render_model
    from animlcm.stages.render.pipeline import SamplerSettings

    torch.set_num_threads(args.threads)
    clips = load_clips(cache, 128, 128, args.eval_videos, args.eval_frames)
    model = load_render_model(folder, preset="tiny", device=torch.device("cpu"), dtype=torch.float32)
    teacher = model.kind == "teacher"
    settings = SamplerSettings(
        steps=steps or (args.eval_steps if teacher else 4), teacher=teacher, cfg=args.cfg, seed=seed,
        window=min(args.eval_frames, 16), overlap=0 if args.eval_frames <= 16 else 4,
    )  # fmt: skip
    row = evaluate(model, clips, settings, method=model.kind)
    out = {"psnr": row.psnr, "ssim": row.ssim, "l1": row.l1, "steps": settings.steps, "seed": seed}
    for key in ("part_colour_error", "psnr_person", "psnr_background", "part_colour_errors"):
        value = getattr(row, key, None)
        if value is not None:
            out[key] = value
    return {**out, **row.extra}


def score(specs: list[str], args: argparse.Namespace) -> None:
    """``--score NAME=FOLDER[@STEPS]``: rows of finished models in ``scores.jsonl`` (one per split and
    seed), for tables with a spread; finished rows are skipped, so a killed run resumes."""
    log = args.out / "scores.jsonl"
    for spec in specs:
        name, _, rest = spec.partition("=")
        folder, _, steps = rest.partition("@")
        for split, cache in args.eval.items():
            for seed in args.seeds:
                done = [
                    r for r in done_rows(log) if (r["name"], r["split"], r["seed"]) == (name, split, seed)
                ]
                if done:
                    continue
                row = evaluate_model(Path(folder), cache, args, int(steps) if steps else None, seed)
                row = {"name": name, "folder": folder, "split": split, **row}
                with open(log, "a") as f:
                    f.write(json.dumps(row) + "\n")
                print(json.dumps(row), flush=True)


def run_candidate(name: str, args: argparse.Namespace) -> None:
    init_flags, train_flags = CANDIDATES[name]
    root = args.out / name
    init, run = root / "init", root / "run"
    log = args.out / "curves.jsonl"
    if not (init / "animlcm.json").exists():
        face = [] if "--face-tokens" in init_flags else ["--no-face-tokens"]
        animlcm("teacher", "init", "--preset", "tiny", "--vae", str(args.vae), "--out", str(init),
                *init_flags, *face, threads=args.threads)  # fmt: skip
    batch = (
        int(train_flags[train_flags.index("--batch-size") + 1]) if "--batch-size" in train_flags else BATCH
    )
    flags = train_flags if "--batch-size" in train_flags else [*train_flags, "--batch-size", str(BATCH)]
    started = time.time()
    for steps in args.steps:
        have = {(r["split"]) for r in done_rows(log) if r["candidate"] == name and r["step"] == steps}
        if have >= set(args.eval):
            continue
        resume = ["--resume"] if any((run / "checkpoints").glob("step-*")) else []
        t0 = time.time()
        animlcm("train-teacher", "--cache", str(args.cache), "--init", str(init), "--out", str(run),
                "--stage", "spatial", "--max-steps", str(steps), "--checkpoint-every", "100000",
                "--no-progress", "--preload", *flags, *resume, threads=args.threads)  # fmt: skip
        train_s = time.time() - t0
        snapshot = root / "teachers" / f"step-{steps}"  # so a later metric can be computed on it
        if not snapshot.exists():
            shutil.copytree(run / "teacher", snapshot)
        for split, cache in args.eval.items():
            if split in have:
                continue
            row = evaluate_model(run / "teacher", cache, args)
            row = {"candidate": name, "step": steps, "samples": steps * batch, "split": split,
                   "train_seconds": round(train_s, 1), **row}  # fmt: skip
            with open(log, "a") as f:
                f.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
        if args.max_minutes and time.time() - started > 60 * args.max_minutes:
            print(f"{name}: --max-minutes {args.max_minutes} reached after step {steps}", flush=True)
            break


def plot(out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = done_rows(out / "curves.jsonl")
    metrics = [("psnr", "PSNR (dB)"), ("part_colour_error", "part colour error (0-255)")]
    metrics = [m for m in metrics if any(m[0] in r for r in rows)]
    fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 4.2), squeeze=False)
    names = sorted({r["candidate"] for r in rows})
    bases = sorted({n.split("+")[0] for n in names})  # "w32+anneal" is drawn in w32's colour, as stars
    colours = plt.get_cmap("tab10")
    for ax, (key, label) in zip(axes[0], metrics, strict=True):
        for name in names:
            i, star = bases.index(name.split("+")[0]), "+" in name
            for split in sorted({r["split"] for r in rows if r["candidate"] == name}):
                pts = sorted((r["samples"], r[key]) for r in rows
                             if r["candidate"] == name and r["split"] == split and key in r)  # fmt: skip
                if not pts:
                    continue
                xs, ys = zip(*pts, strict=True)
                style = "--" if split.startswith("train") else "-"
                ax.plot(xs, ys, style, marker="*" if star else "o", ms=11 if star else 3, color=colours(i),
                        label=f"{name} {split}", alpha=0.75 if split.endswith("2") else 1.0)  # fmt: skip
        ax.set_xscale("log")
        ax.set_xlabel("training samples seen")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.suptitle("candidate teachers: held-out (solid) vs training dancers (dashed); stars: + lr anneal")
    fig.tight_layout()
    path = out / "curves.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cache", type=Path, help="training cache (animlcm extract of synth clips)")
    parser.add_argument("--eval", action="append", default=[], help="SPLIT=CACHE, repeatable")
    parser.add_argument("--candidate", action="append", default=[], choices=sorted(CANDIDATES))
    parser.add_argument("--steps", default="250,500,1000,2000,4000", help="eval after these steps")
    parser.add_argument("--vae", type=Path, default=Path("src/animlcm/assets/tiny/vae"))
    parser.add_argument("--out", type=Path, default=Path("runs/teacher_curves"))
    parser.add_argument("--eval-videos", type=int, default=4)
    parser.add_argument("--eval-frames", type=int, default=8)
    parser.add_argument("--eval-steps", type=int, default=25)
    parser.add_argument("--cfg", type=float, default=3.5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-minutes", type=float, default=None, help="stop a candidate after this")
    parser.add_argument("--plot-only", action="store_true")
    parser.add_argument("--score", action="append", default=[], help="NAME=FOLDER[@STEPS]: score models")
    parser.add_argument("--seeds", default="0", help="--score: sampling seeds (noise), comma-separated")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    args.eval = {k: Path(v) for k, v in (e.split("=", 1) for e in args.eval)}
    if args.score:
        args.seeds = [int(s) for s in args.seeds.split(",")]
        score(args.score, args)
        return 0
    if not args.plot_only:
        args.steps = [int(s) for s in args.steps.split(",")]
        for name in args.candidate:
            run_candidate(name, args)
    print(f"plot: {plot(args.out)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
