"""`make bench-quality`: the held-out quality table of teacher and students on the synthetic world.

Held-out dancers (identities and dances never produced by the train split) are generated and extracted;
every student variant is distilled from the same teacher on the training cache with the same budget; then
the teacher (DDIM + CFG at 4, 25, 50 steps) and each student (1, 2, 4, 8 steps) re-animate each held-out clip
from its first frame, compared with ground truth (L1, PSNR, SSIM). Writes ``quality.json`` (the row schema of
``animlcm eval``'s metrics.json, plus a ``budget`` header), ``quality.md`` and ``quality.png``.

Everything is made with the project's own commands; finished pieces in ``--work`` are reused, so a killed
run resumes. The defaults use the built-in teacher and make the training split of ``make models`` (the same
synth call, extracted with that teacher's VAE) in ``--work``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# variant name -> (method, extra distill flags); ablations name what they remove
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "lcm": ("lcm", []),
    "dancelcm": ("dancelcm", []),
    "cosec": ("cosec", []),
    "animatelcm": ("animatelcm", []),
    "dancelcm-no-segments": ("dancelcm", ["--segments", "1"]),
    "dancelcm-no-aux": ("dancelcm", ["--aux-head", "0"]),
    "dancelcm-no-motion": ("dancelcm", ["--motion-weight", "0"]),
    "dancelcm-no-face": ("dancelcm", ["--no-face-tokens"]),
    "dancelcm-K4": ("dancelcm", ["--segments", "4"]),
    "cosec-no-eta": ("cosec", ["--eta", "0"]),
    "cosec-no-cons": ("cosec", ["--cons", "0"]),
    "cosec-no-temporal-sdm": ("cosec", ["--temporal-sdm", "0"]),
}


THREADS = {"OMP_NUM_THREADS": "1"}  # per command; main() sets it from --jobs


def animlcm(*args: str) -> None:
    print("$ animlcm " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "animlcm", *args], check=True, env={**os.environ, **THREADS})


def main() -> int:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "quality")
    assets = ROOT / "src" / "animlcm" / "assets" / "tiny"
    parser.add_argument("--teacher", type=Path, default=assets / "teacher")
    parser.add_argument(
        "--train-cache", type=Path, default=None,
        help="cache to distil the variants on (default: made in --work, as `make models` makes its own)",
    )  # fmt: skip
    parser.add_argument("--builtin", type=Path, default=assets / "student", help="also evaluate this student")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--jobs", type=int, default=2, help="pieces (evals, variants) run at once")
    parser.add_argument(
        "--threads", type=int, default=None, help="CPU threads per piece (default: CPU cores / --jobs)"
    )
    parser.add_argument("--batch", type=int, default=2, help="spatial distillation batch (frames)")
    parser.add_argument("--temporal-batch", type=int, default=2, help="temporal distillation batch (clips)")
    parser.add_argument("--num-workers", type=int, default=0, help="data-loader workers per distill run")
    parser.add_argument("--device", default="auto", help="eval's device (auto: the GPU if there is one)")
    parser.add_argument("--dtype", default="float32", help="eval's dtype (float32: CPU and GPU agree)")
    # the defaults give each variant about the built-in student's sample budget (~3000 frames, ~300 clips)
    parser.add_argument("--spatial-steps", type=int, default=1500)
    parser.add_argument("--temporal-steps", type=int, default=150)
    parser.add_argument(
        "--lr", type=float, default=1e-4, help="the same for every variant (see build_models)"
    )
    parser.add_argument(
        "--w", type=float, default=0.5, help="teacher CFG weight in distillation (see build_models)"
    )
    parser.add_argument("--identities", type=int, default=4)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument(
        "--vs-teacher", type=int, default=25, help="every row's PSNR also against the teacher at N steps"
    )
    parser.add_argument("--cfg", type=float, default=3.5, help="the teacher rows' CFG scale")
    parser.add_argument("--student-steps", default="1,2,4,8")
    parser.add_argument("--teacher-steps", default="4,25,50")
    args = parser.parse_args()
    THREADS["OMP_NUM_THREADS"] = str(args.threads or max(1, (os.cpu_count() or 1) // max(1, args.jobs)))
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    if args.train_cache is not None and not (args.train_cache / "manifest.json").exists():
        print(f"{args.train_cache}: not a cache; pass a folder from `animlcm extract`, or drop --train-cache")
        return 2
    pending = [n for n in args.variants if not (work / f"{n}_temporal" / "student").exists()]
    if args.train_cache is None:
        args.train_cache = work / "train_cache"
        if pending and not (args.train_cache / "manifest.json").exists():
            # the training split of `make models` (its synth call), extracted with the teacher's VAE
            videos = work / "train_videos"
            if not (videos / "synth.json").exists():
                synth = "--identities 12 --clips 4 --frames 48 --size 128 --seed 0"
                animlcm("synth", "--out", str(videos), *synth.split())
            animlcm("extract", str(videos), "--out", str(args.train_cache), "--pose", "groundtruth",
                    "--teacher", str(args.teacher))  # fmt: skip

    # every row is also compared with the teacher's render along the trajectory the students imitate: the
    # teacher guided as in distillation (x0_c + w (x0_c - x0_u) is CFG scale 1 + w)
    student_cfg = 1.0 + args.w
    eval_flags = ["--device", args.device, "--dtype", args.dtype, "--vs-teacher", str(args.vs_teacher),
                  "--vs-teacher-cfg", str(student_cfg)]  # fmt: skip
    heldout, cache = work / "heldout", work / "heldout_cache"
    if not (heldout / "synth.json").exists():
        synth = f"--identities {args.identities} --clips 1 --frames {args.frames} --size 128 --seed 0"
        animlcm("synth", "--out", str(heldout), *synth.split(), "--split", "heldout")
    if not (cache / "manifest.json").exists():
        animlcm(
            "extract",
            str(heldout),
            "--out",
            str(cache),
            "--pose",
            "groundtruth",
            "--teacher",
            str(args.teacher),
        )

    from animlcm.models.teacher import folder_info

    budget = {
        "teacher": str(args.teacher),
        "teacher_build": _read_json(args.teacher.parent / "build.json"),
        "builtin_student": str(args.builtin) if args.builtin else None,
        "variants": {
            "spatial_steps": args.spatial_steps,
            "temporal_steps": args.temporal_steps,
            "batch": [args.batch, args.temporal_batch],
            "lr": args.lr,
            "w": args.w,
        },
        "heldout": {"identities": args.identities, "clips": 1, "frames": args.frames, "size": 128},
        "sizes": {"teacher": folder_info(args.teacher).total},
        "run": _machine(args),
        "vs_teacher_steps": args.vs_teacher,
        "vs_teacher_cfg": student_cfg,
        "teacher_cfg": args.cfg,
    }

    def teacher_rows(cfg: float, folder: str, label: str) -> list[dict]:
        """The teacher's DDIM + CFG rows at ``cfg`` (``label`` goes in the ablation column)."""
        result = work / folder
        if not (result / "metrics.json").exists():
            steps = _steps_yaml(work, "", args.teacher_steps)
            animlcm("eval", "--model", str(args.teacher), "--teacher", str(args.teacher),
                    "--cache", str(cache), "--out", str(result), "--sweep", "--config", str(steps),
                    "--cfg", str(cfg), *eval_flags)  # fmt: skip
        rows = [r for r in _rows(result) if r["method"] == "teacher"]
        return [{**r, "model": "built-in", "ablation": label} for r in rows]

    def builtin_rows() -> list[dict]:
        result = work / "eval_builtin"
        if not (result / "metrics.json").exists():
            steps = _steps_yaml(work, args.student_steps, "")
            animlcm("eval", "--model", str(args.builtin), "--teacher", str(args.teacher),
                    "--cache", str(cache), "--out", str(result), "--sweep", "--config", str(steps),
                    *eval_flags)  # fmt: skip
        return [{**r, "model": "built-in"} for r in _rows(result) if r["method"] != "teacher"]

    def variant(name: str) -> list[dict]:
        method, flags = VARIANTS[name]
        spatial, temporal = work / f"{name}_spatial", work / f"{name}_temporal"
        common = ["--cache", str(args.train_cache), "--teacher", str(args.teacher), "--method", method,
                  *flags, "--lr", str(args.lr), "--w", str(args.w),
                  "--num-workers", str(args.num_workers)]  # fmt: skip
        if not (spatial / "student").exists():
            animlcm("distill", *common, "--stage", "spatial", "--out", str(spatial), *_resume(spatial),
                    "--max-steps", str(args.spatial_steps), "--batch-size", str(args.batch))  # fmt: skip
        if not (temporal / "student").exists():
            animlcm("distill", *common, "--stage", "temporal", "--init", str(spatial),
                    "--out", str(temporal), *_resume(temporal), "--max-steps", str(args.temporal_steps),
                    "--batch-size", str(args.temporal_batch))  # fmt: skip
        result = work / f"eval_{name}"
        if not (result / "metrics.json").exists():
            steps = _steps_yaml(work, args.student_steps, "")
            animlcm("eval", "--model", str(temporal), "--cache", str(cache), "--out", str(result), "--sweep",
                    "--config", str(steps), *eval_flags)  # fmt: skip
        return [{**r, "model": "variant"} for r in _rows(result) if r["method"] != "teacher"]

    # every piece is independent: --jobs N runs N at once (a tiny network leaves a GPU mostly idle, and two
    # one-thread processes use 2 CPU cores better than one). The table is rewritten as each piece finishes,
    # always in the same order, so a long run shows as it goes and a killed one resumes from its pieces.
    # the teacher at its usual CFG, and at the guidance the students were distilled with
    pieces: dict[str, Callable[[], list[dict]]] = {
        "teacher": lambda: teacher_rows(args.cfg, "eval_teacher", ""),
        "teacher-student-cfg": lambda: teacher_rows(student_cfg, "eval_teacher_cfg", f"cfg={student_cfg:g}"),
    }
    if args.builtin:
        pieces["built-in"] = builtin_rows
    pieces.update({name: (lambda name=name: variant(name)) for name in args.variants})
    done: dict[str, list[dict]] = {}
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {pool.submit(run): name for name, run in pieces.items()}
        for future in as_completed(futures):
            done[futures[future]] = future.result()
            _write(args.out, budget, [r for name in pieces if name in done for r in done[name]])
    print((args.out / "quality.md").read_text())
    return 0


def _write(out: Path, budget: dict, rows: list[dict]) -> None:
    """quality.json (eval's rows plus ``model``: built-in or variant), quality.md (one table per kind of
    model, each headed by the models and budgets that made it), quality.png (teacher, built-in student and
    the four methods) and quality_ablations.png (teacher, DanceLCM and CoSeC with their ablations)."""
    from dataclasses import replace

    from animlcm.stages.evaluate import report

    out.mkdir(parents=True, exist_ok=True)
    (out / "quality.json").write_text(json.dumps({"budget": budget, "rows": rows}, indent=2))
    as_metric = lambda rs: [report.MetricRow.from_json(r) for r in rs]  # noqa: E731
    builtin = as_metric([r for r in rows if r.get("model") != "variant"])
    variants = as_metric([r for r in rows if r.get("model") == "variant"])
    text = (
        "Every row re-animates each held-out clip from its first frame; L1, PSNR, SSIM against the real "
        f"frames; PSNR vs teacher: against the teacher's own {budget['vs_teacher_steps']}-step DDIM render "
        f"at CFG {budget['vs_teacher_cfg']:g} (the guidance the students were distilled with) from the same "
        "starting noise: how closely a row reproduces what the students imitate. Teacher rows use DDIM + CFG "
        f"{budget['teacher_cfg']:g}, or the CFG in their ablation column.\n\n"
    )
    if any(r.part_colour_error is not None for r in builtin + variants):
        text += (
            "Appearance, from the held-out clips' body-part label maps: part colour err is the RGB distance "
            "(0-255) between the mean colours of the render and of the truth inside each part's true mask, "
            "averaged over frames and clips, then over the parts; PSNR person / bg: PSNR over the "
            "person's / the background's pixels only.\n\n"
        )
    if "run" in budget:
        r = budget["run"]
        text += (
            f"Measured {r['date']} on {r['machine']}, {r['jobs']} evals or distillations at once with "
            f"{r['threads_per_job']} thread(s) each (seconds per frame are from that shared machine).\n\n"
        )
    text += "### Built-in teacher and student\n\n" + _builtin_budget(budget) + "\n\n"
    text += report.markdown_table(builtin)
    if variants:
        v = budget["variants"]
        text += (
            "\n### Variants: every method and ablation distilled from the built-in teacher, one budget\n\n"
            f"{v['spatial_steps']} spatial steps at batch {v['batch'][0]} frames, then {v['temporal_steps']} "
            f"temporal steps at batch {v['batch'][1]} clips; lr {v['lr']}, teacher guidance w {v['w']}; "
            "every other setting is the method's own.\n\n" + report.markdown_table(variants)
        )
    (out / "quality.md").write_text(text)
    teacher = [r for r in builtin if r.method == "teacher"]
    # the built-in student gets its own line, apart from the variant of the same method
    shipped = [replace(r, method=f"{r.method} (built-in)") for r in builtin if r.method != "teacher"]
    full = [r for r in variants if not r.ablation]
    report.plot_sweep(teacher + shipped + full, out / "quality.png")
    ablations = [r for r in variants if r.method in ("dancelcm", "cosec")]
    if any(r.ablation for r in ablations):
        report.plot_sweep(teacher + ablations, out / "quality_ablations.png")


def _machine(args: argparse.Namespace) -> dict:
    """Where and how the table was made (seconds per frame mean nothing without it)."""
    import datetime

    import torch

    gpu = torch.cuda.is_available() and args.device in ("auto", "cuda")
    return {
        "date": datetime.date.today().isoformat(),
        "machine": torch.cuda.get_device_name() if gpu else f"CPU, {os.cpu_count()} cores",
        "jobs": args.jobs,
        "threads_per_job": int(THREADS["OMP_NUM_THREADS"]),
    }


def _builtin_budget(budget: dict) -> str:
    """One paragraph: which models made the built-in rows, their sizes and training budgets."""
    build = budget.get("teacher_build") or {}
    sizes = budget.get("sizes", {})
    args, runs = build.get("args", {}), build.get("runs", {})
    parts = [f"Built on {build.get('machine', 'an unrecorded machine')} (`assets/tiny/build.json`)."]
    if "teacher" in sizes:
        parts.append(
            f"Teacher: {sizes['teacher']:,} parameters (denoiser with motion modules, reference net, pose "
            "guider, image and face encoders)."
        )
    for name, label, batch, unit in (
        ("teacher_spatial", "Teacher spatial", "teacher_batch", "frames"),
        ("teacher_temporal", "Teacher temporal", "teacher_temporal_batch", "clips"),
        ("student_spatial", f"Student ({args.get('method', '?')}) spatial", "student_batch", "frames"),
        ("student_temporal", "Student temporal", "student_temporal_batch", "clips"),
    ):
        if name in runs:
            parts.append(f"{label}: {runs[name]['steps']} steps at batch {args.get(batch, '?')} {unit}.")
    if "vae" in build:
        vae = build["vae"]
        size = f"{vae['parameters']:,} parameters, " if "parameters" in vae else ""
        parts.append(f"VAE: {size}{vae.get('steps', '?')} steps, {vae['psnr']:.1f} dB on training frames.")
    return " ".join(parts)


def _steps_yaml(work: Path, student: str, teacher: str) -> Path:
    """eval's step lists as a config file (an empty list skips that side of the sweep)."""
    path = work / f"steps_{student or 'none'}_{teacher or 'none'}.yaml".replace(",", "-")
    as_list = lambda s: [int(x) for x in s.split(",") if x]  # noqa: E731
    path.write_text(json.dumps({"student_steps": as_list(student), "teacher_steps": as_list(teacher)}))
    return path


def _resume(run: Path) -> list[str]:
    """``--resume`` for a run a killed benchmark left with checkpoints, so it continues rather than fails."""
    return ["--resume"] if any((run / "checkpoints").glob("step-*")) else []


def _rows(eval_dir: Path) -> list[dict]:
    return json.loads((eval_dir / "metrics.json").read_text())["rows"]


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


if __name__ == "__main__":
    sys.exit(main())
