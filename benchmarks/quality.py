"""`make bench-quality`: the held-out quality table of teacher and students on the synthetic world.

Held-out dancers (identities and dances never produced by the train split) are generated and extracted;
every student variant is distilled from the same teacher on the training cache with the same budget; then
the teacher (DDIM + CFG at 4, 25, 50 steps) and each student (1, 2, 4, 8 steps) re-animate each held-out clip
from its first frame, compared with ground truth (L1, PSNR, SSIM). Writes ``quality.json`` (the row schema of
``animlcm eval``'s metrics.json, plus a ``budget`` header), ``quality.md`` and ``quality.png``.

Everything is made with the project's own commands; finished pieces in ``--work`` are reused, so a killed
run resumes. The defaults use the built-in teacher and the training cache of ``make models``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
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


def animlcm(*args: str) -> None:
    print("$ animlcm " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "animlcm", *args], check=True)


def main() -> int:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "quality")
    assets = ROOT / "src" / "animlcm" / "assets" / "tiny"
    parser.add_argument("--teacher", type=Path, default=assets / "teacher")
    parser.add_argument("--train-cache", type=Path, default=ROOT / "runs" / "build_models" / "cache")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--spatial-steps", type=int, default=200)
    parser.add_argument("--temporal-steps", type=int, default=50)
    parser.add_argument(
        "--lr", type=float, default=1e-4, help="the same for every variant (see build_models)"
    )
    parser.add_argument(
        "--w", type=float, default=0.5, help="teacher CFG weight in distillation (see build_models)"
    )
    parser.add_argument("--identities", type=int, default=4)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--student-steps", default="1,2,4,8")
    parser.add_argument("--teacher-steps", default="4,25,50")
    args = parser.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    if not (args.train_cache / "manifest.json").exists():
        print(f"{args.train_cache}: no training cache; run `make models` first (or pass --train-cache)")
        return 2

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

    budget = {
        "teacher": str(args.teacher),
        "teacher_build": _read_json(args.teacher.parent / "build.json"),
        "distill": {
            "spatial_steps": args.spatial_steps,
            "temporal_steps": args.temporal_steps,
            "lr": args.lr,
        },
        "heldout": {"identities": args.identities, "clips": 1, "frames": args.frames, "size": 128},
    }
    teacher_eval = work / "eval_teacher"
    if not (teacher_eval / "metrics.json").exists():
        steps = _steps_yaml(work, "", args.teacher_steps)
        animlcm("eval", "--model", str(args.teacher), "--teacher", str(args.teacher), "--cache", str(cache),
                "--out", str(teacher_eval), "--sweep", "--config", str(steps))  # fmt: skip
    rows = [r for r in _rows(teacher_eval) if r["method"] == "teacher"]
    _write(args.out, budget, rows)

    for name in args.variants:  # results are rewritten after every variant: a long run shows as it goes
        method, flags = VARIANTS[name]
        spatial, temporal = work / f"{name}_spatial", work / f"{name}_temporal"
        common = [
            "--cache",
            str(args.train_cache),
            "--teacher",
            str(args.teacher),
            "--method",
            method,
            *flags,
        ]
        common += ["--lr", str(args.lr), "--w", str(args.w)]
        if not (spatial / "student").exists():
            animlcm("distill", *common, "--stage", "spatial", "--out", str(spatial),
                    "--max-steps", str(args.spatial_steps))  # fmt: skip
        if not (temporal / "student").exists():
            animlcm("distill", *common, "--stage", "temporal", "--init", str(spatial), "--out", str(temporal),
                    "--max-steps", str(args.temporal_steps))  # fmt: skip
        result = work / f"eval_{name}"
        if not (result / "metrics.json").exists():
            steps = _steps_yaml(work, args.student_steps, "")
            animlcm("eval", "--model", str(temporal), "--cache", str(cache), "--out", str(result), "--sweep",
                    "--config", str(steps))  # fmt: skip
        rows += [r for r in _rows(result) if r["method"] != "teacher"]
        _write(args.out, budget, rows)
    print((args.out / "quality.md").read_text())
    return 0


def _write(out: Path, budget: dict, rows: list[dict]) -> None:
    from animlcm.stages.evaluate import report

    out.mkdir(parents=True, exist_ok=True)
    (out / "quality.json").write_text(json.dumps({"budget": budget, "rows": rows}, indent=2))
    fields = report.MetricRow.__dataclass_fields__
    metric_rows = [report.MetricRow(**{k: r[k] for k in fields if k in r}) for r in rows]
    (out / "quality.md").write_text(report.markdown_table(metric_rows))
    report.plot_sweep(metric_rows, out / "quality.png")


def _steps_yaml(work: Path, student: str, teacher: str) -> Path:
    """eval's step lists as a config file (an empty list skips that side of the sweep)."""
    path = work / f"steps_{student or 'none'}_{teacher or 'none'}.yaml".replace(",", "-")
    as_list = lambda s: [int(x) for x in s.split(",") if x]  # noqa: E731
    path.write_text(json.dumps({"student_steps": as_list(student), "teacher_steps": as_list(teacher)}))
    return path


def _rows(eval_dir: Path) -> list[dict]:
    return json.loads((eval_dir / "metrics.json").read_text())["rows"]


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


if __name__ == "__main__":
    sys.exit(main())
